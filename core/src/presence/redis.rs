//! The Redis presence store, readable by the team's other services.
//!
//! # Key layout
//!
//! Every key starts with a configurable prefix, `herald:` by default
//! ([`DEFAULT_PREFIX`]). The layout is the one the team's ejabberd
//! customisation wrote, so services that read it keep working:
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `<prefix>presence:<uid>` | hash | `state`: the availability (`online`, `away`, `dnd`, `xa`, `chat` or `offline`); `status`: free text, may be empty; `node`: the node holding the user's sessions; `updated`: milliseconds since the Unix epoch of the last change, in decimal. Written whole by every change (`HSET`), deleted when the user goes away (`DEL`). |
//! | `<prefix>online:<projectId>` | set | uids online in the project (`SADD`, `SREM`, `SMEMBERS`); Redis drops the key when the set empties. |
//! | `<prefix>node:<node>` | string | the node's last heartbeat, milliseconds since the Unix epoch, with a TTL ([`RedisPresence::heartbeat`]); the key expires when the node stops beating. |
//!
//! Example with the default prefix: `HGETALL herald:presence:alice` gives
//! `state online status "" node n1 updated 1767225600000`, and
//! `SMEMBERS herald:online:p1` gives `alice bob`.
//!
//! # Failures
//!
//! Connections go through a [`ConnectionManager`], which reconnects by itself
//! after Redis restarts. Every call is bounded by a timeout
//! ([`DEFAULT_TIMEOUT`] unless given to [`RedisPresence::connect_with_timeout`]),
//! so a stuck or stopped Redis cannot hang a session: the call fails with
//! [`PresenceError::Unavailable`], like every other Redis error. A presence
//! hash whose `state` cannot be parsed is reported as `Unavailable` too.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Availability, BoxFuture, PresenceError, PresenceStore, UserPresence};

/// The key prefix used when the configuration names none.
pub const DEFAULT_PREFIX: &str = "herald:";

/// Bound on every Redis call (and on connecting) unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A [`PresenceStore`] in Redis; cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPresence")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(format!("redis: {e}"))
}

impl RedisPresence {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]` or
    /// `redis+unix:///path`; TLS `rediss://` is not built in) with
    /// [`DEFAULT_TIMEOUT`]. Fails with `Unavailable` when Redis cannot be
    /// reached in time.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisPresence, PresenceError> {
        Self::connect_with_timeout(url, prefix, DEFAULT_TIMEOUT).await
    }

    /// [`connect`](Self::connect) with `timeout` bounding the connection and
    /// every later call.
    pub async fn connect_with_timeout(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<RedisPresence, PresenceError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| PresenceError::Unavailable(format!("redis: could not connect within {timeout:?}")))?
            .map_err(unavailable)?;
        Ok(RedisPresence { conn, prefix: prefix.to_owned(), timeout })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>presence:<uid>`
    pub fn user_key(&self, uid: &str) -> String {
        format!("{}presence:{uid}", self.prefix)
    }

    /// `<prefix>online:<project>`
    pub fn online_key(&self, project: &str) -> String {
        format!("{}online:{project}", self.prefix)
    }

    /// `<prefix>node:<node>`
    pub fn node_key(&self, node: &str) -> String {
        format!("{}node:{node}", self.prefix)
    }

    /// Marks `node` alive: sets `<prefix>node:<node>` to the current time in
    /// milliseconds, expiring after `ttl` (at least 1 ms). Call it more often
    /// than `ttl`; the key disappears when the node stops.
    pub async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<(), PresenceError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.node_key(node)).arg(now_ms()).arg("PX").arg(ttl_ms);
        self.run(&cmd).await
    }

    /// Runs one command under the timeout.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, PresenceError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { cmd.query_async::<T>(&mut conn).await }).await
    }

    async fn bounded<T>(&self, f: impl Future<Output = redis::RedisResult<T>>) -> Result<T, PresenceError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(PresenceError::Unavailable(format!("redis: no reply within {:?}", self.timeout))),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) fn parse_user(key: &str, mut h: HashMap<String, String>) -> Result<Option<UserPresence>, PresenceError> {
    if h.is_empty() {
        return Ok(None);
    }
    let state = h.get("state").map(String::as_str).unwrap_or("");
    let availability = Availability::parse(state)
        .ok_or_else(|| PresenceError::Unavailable(format!("redis: {key} has an unknown state {state:?}")))?;
    let updated_ms = match h.get("updated") {
        None => 0,
        Some(s) => {
            s.parse().map_err(|_| PresenceError::Unavailable(format!("redis: {key} has a malformed updated {s:?}")))?
        }
    };
    Ok(Some(UserPresence {
        availability,
        status: h.remove("status").unwrap_or_default(),
        node: h.remove("node").unwrap_or_default(),
        updated_ms,
    }))
}

impl PresenceStore for RedisPresence {
    fn set_user<'a>(&'a self, uid: &'a str, presence: &'a UserPresence) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(self.user_key(uid))
                .arg("state")
                .arg(presence.availability.as_str())
                .arg("status")
                .arg(&presence.status)
                .arg("node")
                .arg(&presence.node)
                .arg("updated")
                .arg(presence.updated_ms);
            self.run::<()>(&cmd).await
        })
    }

    fn get_user<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Option<UserPresence>, PresenceError>> {
        Box::pin(async move {
            let key = self.user_key(uid);
            let h: HashMap<String, String> = self.run(redis::cmd("HGETALL").arg(&key)).await?;
            parse_user(&key, h)
        })
    }

    fn clear_user<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move { self.run::<()>(redis::cmd("DEL").arg(self.user_key(uid))).await })
    }

    fn add_online<'a>(&'a self, project: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move { self.run::<()>(redis::cmd("SADD").arg(self.online_key(project)).arg(uid)).await })
    }

    fn remove_online<'a>(&'a self, project: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move { self.run::<()>(redis::cmd("SREM").arg(self.online_key(project)).arg(uid)).await })
    }

    fn online<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<String>, PresenceError>> {
        Box::pin(async move { self.run(redis::cmd("SMEMBERS").arg(self.online_key(project))).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_hashes() {
        assert_eq!(parse_user("k", HashMap::new()).unwrap(), None);
        let full = h(&[("state", "dnd"), ("status", "x"), ("node", "n1"), ("updated", "42")]);
        assert_eq!(
            parse_user("k", full).unwrap(),
            Some(UserPresence {
                availability: Availability::Dnd,
                status: "x".into(),
                node: "n1".into(),
                updated_ms: 42
            })
        );
        let sparse = parse_user("k", h(&[("state", "busy")])).unwrap().unwrap();
        assert_eq!((sparse.availability, sparse.status.as_str(), sparse.updated_ms), (Availability::Dnd, "", 0));
        assert!(matches!(parse_user("k", h(&[("state", "zzz")])), Err(PresenceError::Unavailable(_))));
        assert!(matches!(parse_user("k", h(&[("status", "x")])), Err(PresenceError::Unavailable(_))));
        assert!(matches!(
            parse_user("k", h(&[("state", "away"), ("updated", "x")])),
            Err(PresenceError::Unavailable(_))
        ));
    }
}
