//! Errors as JavaScript sees them: an `Error` whose string `code` says which
//! layer failed and whose message (the core error's own text) names the cause.
//!
//! | code | when |
//! |------|------|
//! | `ERR_HERALD_CONFIG` | the config object: unknown key, wrong type, invalid value |
//! | `ERR_HERALD_LISTEN` | a listener could not bind |
//! | `ERR_HERALD_TLS` | TLS certificate or key could not be loaded |
//! | `ERR_HERALD_STATE` | started twice; `useExpressAuth` without the package entry point |
//! | `ERR_HERALD_ROUTE` | no such vhost, exchange or queue |
//! | `ERR_HERALD_DESTINATION` | a destination that is not a STOMP destination Herald routes |
//! | `ERR_HERALD_PRESENCE` | the presence store (e.g. Redis) failed |
//! | `ERR_HERALD_DIRECTORY` | the project directory (e.g. MongoDB) failed |
//! | `ERR_HERALD_ARGUMENT` | an argument out of its domain (unknown presence state or event name) |
//! | `ERR_HERALD_ENGINE` | any other engine failure |

use herald_core::engine::{EngineError, PublishError};
use napi::bindgen_prelude::{JsError, Unknown};
use napi::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Config,
    Listen,
    Tls,
    State,
    Route,
    Destination,
    Presence,
    Directory,
    Argument,
    Engine,
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        match self {
            Code::Config => "ERR_HERALD_CONFIG",
            Code::Listen => "ERR_HERALD_LISTEN",
            Code::Tls => "ERR_HERALD_TLS",
            Code::State => "ERR_HERALD_STATE",
            Code::Route => "ERR_HERALD_ROUTE",
            Code::Destination => "ERR_HERALD_DESTINATION",
            Code::Presence => "ERR_HERALD_PRESENCE",
            Code::Directory => "ERR_HERALD_DIRECTORY",
            Code::Argument => "ERR_HERALD_ARGUMENT",
            Code::Engine => "ERR_HERALD_ENGINE",
        }
    }
}

/// A failure on its way to JavaScript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeraldError {
    pub code: Code,
    pub message: String,
}

/// What sync methods return: napi-rs throws an `Error` with `code` set to [`Code`].
pub type Result<T> = std::result::Result<T, napi::Error<Code>>;

impl HeraldError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        HeraldError { code, message: message.into() }
    }

    /// The JS `Error` object (with `code`), wrapped so napi-rs rejects a
    /// promise with exactly that object. Runs on the JS thread.
    pub fn into_js(self, env: &Env) -> napi::Error {
        let raw = unsafe { JsError::from(napi::Error::new(self.code, self.message)).into_value(env.raw()) };
        napi::Error::from(unsafe { Unknown::from_raw_unchecked(env.raw(), raw) })
    }
}

impl From<HeraldError> for napi::Error<Code> {
    fn from(e: HeraldError) -> Self {
        napi::Error::new(e.code, e.message)
    }
}

impl From<EngineError> for HeraldError {
    fn from(e: EngineError) -> Self {
        let code = match &e {
            EngineError::Config(_) => Code::Config,
            EngineError::Route(_) => Code::Route,
            EngineError::Listen { .. } => Code::Listen,
            EngineError::Tls(_) => Code::Tls,
            EngineError::AlreadyStarted => Code::State,
            EngineError::Presence(_) => Code::Presence,
            EngineError::Directory(_) => Code::Directory,
            #[allow(unreachable_patterns)] // core may grow variants
            _ => Code::Engine,
        };
        HeraldError::new(code, e.to_string())
    }
}

impl From<PublishError> for HeraldError {
    fn from(e: PublishError) -> Self {
        let code = match &e {
            PublishError::Destination(_) => Code::Destination,
            PublishError::Route(_) => Code::Route,
            #[allow(unreachable_patterns)]
            _ => Code::Engine,
        };
        HeraldError::new(code, e.to_string())
    }
}

impl From<herald_core::engine::HistoryError> for HeraldError {
    fn from(e: herald_core::engine::HistoryError) -> Self {
        use herald_core::engine::HistoryError;
        match e {
            HistoryError::Publish(p) => p.into(),
            HistoryError::NotHistory(_) => HeraldError::new(Code::Destination, e.to_string()),
            #[allow(unreachable_patterns)]
            _ => HeraldError::new(Code::Route, e.to_string()),
        }
    }
}

impl From<herald_core::router::RouteError> for HeraldError {
    fn from(e: herald_core::router::RouteError) -> Self {
        HeraldError::new(Code::Route, e.to_string())
    }
}

impl From<herald_core::presence::PresenceError> for HeraldError {
    fn from(e: herald_core::presence::PresenceError) -> Self {
        HeraldError::new(Code::Presence, e.to_string())
    }
}

impl From<herald_core::directory::DirectoryError> for HeraldError {
    fn from(e: herald_core::directory::DirectoryError) -> Self {
        HeraldError::new(Code::Directory, e.to_string())
    }
}

impl From<herald_core::config::ConfigError> for HeraldError {
    fn from(e: herald_core::config::ConfigError) -> Self {
        HeraldError::new(Code::Config, e.to_string())
    }
}
