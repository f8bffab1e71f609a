//! Authentication (who are you?) and authorization (may you?).
//!
//! Both are narrow async traits so a source can be local (config users),
//! remote (the rabbitmq-auth-backend-http protocol) or JavaScript callbacks
//! in the Node addon. Edges ask; they never decide. Permissions follow
//! RabbitMQ: per vhost, three regular expressions (configure, write, read)
//! matched against exchange and queue names; topic permissions check the
//! routing key for topic exchanges.
//!
//! The engine builds a [`Chain`] from `[auth]`: a JWT as the password
//! ([`JwtAuth`]), then the HTTP backend ([`HttpBackend`]), then `[[users]]`
//! ([`ConfigUsers`]) for their own names and the application's MongoDB
//! users (`MongoUsers`) for every other name. Password hashes are verified by [`crate::password`] on one
//! bounded [`pool::HashPool`].

pub(crate) mod cache;
pub mod chain;
pub mod config_users;
pub mod http;
#[cfg(feature = "jwt")]
pub mod jwt;
#[cfg(feature = "mongodb")]
pub mod mongo_users;
pub mod policy;
pub mod pool;
pub mod sasl;
#[cfg(all(test, feature = "http-auth"))]
pub(crate) mod testutil;
pub mod throttle;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::session::Protocol;

pub use chain::Chain;
pub use config_users::{ConfigUsers, DefaultPermissions};
pub use http::HttpBackend;
#[cfg(feature = "jwt")]
pub use jwt::JwtAuth;
#[cfg(feature = "mongodb")]
pub use mongo_users::MongoUsers;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The authentication and authorization sources in use; swappable at run time
/// (the Node addon installs JS callbacks after construction).
#[derive(Clone)]
pub struct AuthSources {
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
}

/// Who is logging in, besides the credentials: given to every auth source
/// (the HTTP backend sends the address as `ip`, JS callbacks get it). The
/// address is the transport's `Peer::addr`, which is the real client behind
/// a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    pub addr: Option<std::net::SocketAddr>,
    /// `stomp` or `xmpp` (`local` for the application's own calls).
    pub protocol: Protocol,
    /// `tcp`, `tls`, `ws`, `sockjs`, `bosh`, ...
    pub transport: crate::transport::Transport,
}

impl ClientInfo {
    /// No client: the application itself, tests.
    pub const LOCAL: ClientInfo =
        ClientInfo { addr: None, protocol: Protocol::Local, transport: crate::transport::Transport::Local };

    pub fn new(peer: &crate::transport::Peer, protocol: Protocol) -> ClientInfo {
        ClientInfo { addr: peer.addr, protocol, transport: peer.transport }
    }

    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.addr.map(|a| a.ip())
    }

    /// The address as the HTTP backend's `ip` parameter: empty when unknown.
    pub fn ip_string(&self) -> String {
        self.ip().map(|ip| ip.to_string()).unwrap_or_default()
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id: STOMP login, XMPP local part.
    pub uid: String,
    /// RabbitMQ-style user tags (`administrator`, `monitoring`, ...).
    pub tags: Vec<String>,
    /// Which source accepted the login. The chain gives `[[users]]`
    /// permissions only to logins `[[users]]` accepted: a MongoDB document
    /// or a JWT naming a config user must not inherit that user's rights.
    pub source: Source,
}

/// The source that authenticated an [`Identity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `[[users]]` (password or SCRAM).
    ConfigUsers,
    /// A JWT as the password (`[auth.jwt]`).
    Jwt,
    /// The HTTP backend (`[auth.http]`).
    Http,
    /// The application's MongoDB users (`[auth.mongodb]`).
    MongoDb,
    /// The embedding application (Node callbacks, tests).
    Application,
}

impl Identity {
    /// An identity from a source other than `[[users]]` (the application's own).
    pub fn new(uid: impl Into<String>, tags: Vec<String>) -> Identity {
        Identity { uid: uid.into(), tags, source: Source::Application }
    }
}

/// The tag that lifts the `[access]` rules (`policy`): the application's own
/// operators. Resource and topic permissions still apply.
pub const ADMINISTRATOR: &str = "administrator";

impl Identity {
    pub fn is_administrator(&self) -> bool {
        self.tags.iter().any(|t| t == ADMINISTRATOR)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    Configure,
    Write,
    Read,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Configure => "configure",
            Permission::Write => "write",
            Permission::Read => "read",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Exchange,
    Queue,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Exchange => "exchange",
            ResourceKind::Queue => "queue",
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Wrong user or password, or the source said `deny`.
    #[error("access refused")]
    Refused,
    /// The source could not answer (HTTP backend down, JS callback threw);
    /// callers fail closed.
    #[error("authentication backend unavailable: {0}")]
    Unavailable(String),
    /// Too much password hashing in progress (`[login]` hash pool full or
    /// its wait timed out): the password was not checked; retry later.
    #[error("server busy: too many logins in progress, retry later")]
    Busy,
}

/// Checks credentials. Implementations must be cheap to call concurrently
/// and must not block the runtime (hashing runs on the bounded
/// [`pool::HashPool`]). Sessions do not call this directly but through
/// `Engine::login`, which applies the failed-login limits.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(
        &'a self,
        login: &'a str,
        password: &'a str,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<Identity, AuthError>>;

    /// Whether every user this source accepts can use SCRAM. XMPP offers
    /// the SCRAM mechanisms only then: clients pick the strongest offered
    /// mechanism, and a user known only to an HTTP backend or by a JWT has
    /// no stored credentials, so SCRAM would fail where PLAIN works.
    fn offers_scram(&self) -> bool {
        false
    }

    /// Stored SCRAM credentials for `login`, for sources that keep them
    /// server-side (XMPP SCRAM-SHA-1/256). `None`: this user (or source)
    /// can only use PLAIN. The default has none.
    fn scram_credentials<'a>(
        &'a self,
        _login: &'a str,
        _mechanism: sasl::Mechanism,
    ) -> BoxFuture<'a, Result<Option<(sasl::ScramCredentials, Identity)>, AuthError>> {
        Box::pin(async { Ok(None) })
    }
}

/// Answers permission questions. `Ok(false)` is a denial; `Err` means the
/// source could not answer, which callers also treat as a denial.
pub trait Authorizer: Send + Sync + 'static {
    /// May `who`, connecting as `client`, open `vhost`?
    fn vhost<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;
    fn resource<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        kind: ResourceKind,
        name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;
    fn topic<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        exchange: &'a str,
        routing_key: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;

    /// Whether this source decides routing keys itself (an HTTP backend
    /// with `topic_path`, a JS `topic` callback): then its answer stands and
    /// the `[access]` rules on the addressing model are not applied on top.
    fn decides_topics(&self) -> bool {
        false
    }

    /// Whether this source decides queue names itself (an HTTP backend with
    /// `resource_path`, a JS `resource` callback): then the `[access]` rule
    /// on users' own queues is not applied on top.
    fn decides_resources(&self) -> bool {
        false
    }
}
