//! Authentication and authorization answered by JavaScript.
//!
//! - [`callbacks`]: `engine.useAuth({ user, vhost, resource, topic })`, sync or async functions.
//! - [`express`]: `engine.useExpressAuth(app)`, an Express app's own
//!   rabbitmq-auth-backend-http routes, called in-process (`express-auth.js`).
//!
//! Both are `herald_core::auth::{Authenticator, Authorizer}` installed with
//! `Engine::set_auth`; the engine asks, core decides what a denial means.
//! [`express`] is core's `HttpBackend` (the rabbitmq-auth-backend-http
//! protocol, its timeout and failing closed) over an in-process transport.
//! Every callback call goes through [`ask`]: it runs on the Node main
//! thread through a weak threadsafe function (`call_async_catch`, so a throw
//! is an error, not a crashed process), is awaited if it returned a promise,
//! and is bounded by a timeout. A throw, a rejection, a timeout or an answer
//! that means neither allow nor deny is logged and denies
//! (`AuthError::Unavailable`: callers fail closed).

pub mod callbacks;
pub mod express;

use std::future::Future;
use std::time::Duration;

use herald_core::auth::AuthError;
use serde_json::Value;

use crate::js::Eventually;

/// Default bound on one JS auth answer.
pub const DEFAULT_TIMEOUT_MS: u32 = 5000;

pub fn timeout_from(ms: Option<u32>) -> Duration {
    Duration::from_millis(u64::from(ms.unwrap_or(DEFAULT_TIMEOUT_MS).max(1)))
}

/// Calls into JS (`call`), awaits a returned promise, all within `timeout`.
/// Failures are logged with `what` (e.g. `user callback`) and become
/// `AuthError::Unavailable`.
pub async fn ask<T, F>(what: &str, timeout: Duration, call: F) -> Result<T, AuthError>
where
    T: napi::bindgen_prelude::FromNapiValue + Send + 'static,
    F: Future<Output = napi::Result<Eventually<T>>> + Send,
{
    match tokio::time::timeout(timeout, async { call.await?.settle().await }).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::warn!(error = %e.reason, "{what} failed; denying");
            Err(AuthError::Unavailable(format!("{what} failed: {}", e.reason)))
        }
        Err(_) => {
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "{what} timed out; denying");
            Err(AuthError::Unavailable(format!("{what} timed out after {} ms", timeout.as_millis())))
        }
    }
}

/// What a login check answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserVerdict {
    /// Allowed, with RabbitMQ-style tags (`administrator`, ...).
    Allow(Vec<String>),
    Deny,
}

/// Reads a rabbitmq-auth-backend-http body: `allow [tag…]`, `deny` or
/// `deny <reason>`; case-insensitive, surrounding whitespace ignored.
/// `None`: neither.
pub fn parse_body(body: &str) -> Option<UserVerdict> {
    let body = body.trim();
    let mut words = body.split_whitespace();
    let first = words.next()?.to_ascii_lowercase();
    match first.as_str() {
        "deny" => Some(UserVerdict::Deny),
        "allow" => Some(UserVerdict::Allow(words.map(str::to_owned).collect())),
        _ => None,
    }
}

/// Interprets a `user` callback's answer: `true`/`false`, `'allow'`/`'deny'`
/// (also `'allow tag1 tag2'`), or `{ allow, tags? }`.
pub fn user_verdict(answer: &Value) -> Result<UserVerdict, String> {
    match answer {
        Value::Bool(true) => Ok(UserVerdict::Allow(Vec::new())),
        Value::Bool(false) => Ok(UserVerdict::Deny),
        Value::String(s) => parse_body(s).ok_or_else(|| format!("answered {s:?}, expected 'allow' or 'deny'")),
        Value::Object(o) => {
            let allow = match o.get("allow") {
                Some(Value::Bool(b)) => *b,
                _ => return Err(format!("answered {answer}, expected `allow` to be a boolean")),
            };
            if !allow {
                return Ok(UserVerdict::Deny);
            }
            let tags = match o.get("tags") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|t| {
                        t.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("answered {answer}, expected `tags` to hold strings"))
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(format!("answered {answer}, expected `tags` to be an array of strings")),
            };
            Ok(UserVerdict::Allow(tags))
        }
        other => Err(format!("answered {other}, expected a boolean, 'allow', 'deny' or {{ allow, tags }}")),
    }
}

/// Interprets a permission callback's answer: `true`/`false`, `'allow'`/`'deny'`,
/// or `{ allow }`. Tags after `allow` mean nothing here and are ignored.
pub fn permission_verdict(answer: &Value) -> Result<bool, String> {
    user_verdict(answer).map(|v| matches!(v, UserVerdict::Allow(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_follow_rabbitmq_auth_backend_http() {
        assert_eq!(parse_body("allow"), Some(UserVerdict::Allow(vec![])));
        assert_eq!(
            parse_body(" ALLOW administrator management\n"),
            Some(UserVerdict::Allow(vec!["administrator".into(), "management".into()]))
        );
        assert_eq!(parse_body("deny"), Some(UserVerdict::Deny));
        assert_eq!(parse_body("deny not today"), Some(UserVerdict::Deny));
        assert_eq!(parse_body("allowed"), None);
        assert_eq!(parse_body(""), None);
        assert_eq!(parse_body("<html>"), None);
    }

    #[test]
    fn callback_answers() {
        assert_eq!(user_verdict(&json!(true)), Ok(UserVerdict::Allow(vec![])));
        assert_eq!(user_verdict(&json!(false)), Ok(UserVerdict::Deny));
        assert_eq!(user_verdict(&json!("allow admin")), Ok(UserVerdict::Allow(vec!["admin".into()])));
        assert_eq!(
            user_verdict(&json!({ "allow": true, "tags": ["a", "b"] })),
            Ok(UserVerdict::Allow(vec!["a".into(), "b".into()]))
        );
        assert_eq!(user_verdict(&json!({ "allow": false, "tags": ["a"] })), Ok(UserVerdict::Deny));
        assert!(user_verdict(&json!(null)).is_err());
        assert!(user_verdict(&json!(1)).is_err());
        assert!(user_verdict(&json!({ "allow": "yes" })).is_err());
        assert!(user_verdict(&json!({ "allow": true, "tags": "a" })).is_err());
        assert_eq!(permission_verdict(&json!("deny")), Ok(false));
        assert_eq!(permission_verdict(&json!(true)), Ok(true));
    }
}
