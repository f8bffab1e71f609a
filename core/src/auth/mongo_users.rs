//! `[auth.mongodb]`: users and password hashes in the application's own
//! MongoDB collection, as a Node (or PHP, Python…) app stores them:
//!
//! ```text
//! { _id: ObjectId(…), username: "alice", password: "$2b$10$…", disabled: false, roles: ["admin"] }
//! ```
//!
//! A login is one `findOne({<uid_field>: login})` (projected to the fields
//! in use), then the hash is verified (password.rs) on the bounded
//! [`HashPool`] shared with `[[users]]`. This source authenticates only;
//! permissions come from `auth.default_permissions` (or the HTTP backend).
//!
//! - **Timing**: a missing user or an unusable hash (unknown format, over
//!   the cost ceilings) still costs one verification against a fixed
//!   cost-10 bcrypt decoy, so a missing user looks like a user whose hash
//!   is a cost-10 bcrypt. The decoy is fixed, never a hash from the
//!   collection: a decoy that follows the last hash verified is steered by
//!   whoever logs in last, and its timing then tells users apart. Users
//!   whose hashes cost something else remain distinguishable by timing
//!   (docs/security.md: use one cost for every user).
//! - **Cache**: outcomes (accepted with tags, or refused) are kept for
//!   `cache_ttl_ms`, keyed by a keyed hash of the login and password (32
//!   bytes per entry whatever their length; never the password), bounded in
//!   entries. A changed password, flag or
//!   tag counts once the entries made before it expire. Busy and unreachable
//!   are never cached.
//! - **Failing closed**: MongoDB unreachable, or no reply within
//!   `timeout_ms`: [`AuthError::Unavailable`] (the login is refused and
//!   does not count as a failed login), logged at most every 10 s with the
//!   driver's reason; the client is told only that the backend is unavailable.
//! - The client connects lazily, on the first login, so an engine starts
//!   (and its config users log in) while MongoDB is down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::cache::{TtlCache, WarnLimiter};
use super::pool::HashPool;
use super::{AuthError, Authenticator, BoxFuture, ClientInfo, Identity, Source};
use crate::config::{MatchValue, MongoAuthConfig};
use crate::password::{self as hash, HashError};

/// Distinct unknown hash formats warned about (each once per process).
const MAX_UNKNOWN_FORMATS: usize = 32;

/// What the client is told when MongoDB cannot answer (the log has why).
const UNREACHABLE: &str = "users database unreachable";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Allow(Vec<String>),
    Deny,
}

/// A user's document, as far as a login needs it.
struct Found {
    hash: Option<String>,
    disabled: bool,
    tags: Vec<String>,
}

pub struct MongoUsers {
    config: MongoAuthConfig,
    timeout: Duration,
    coll: tokio::sync::OnceCell<Collection<Document>>,
    pool: Arc<HashPool>,
    cache: Option<TtlCache<[u8; 32], Outcome>>,
    /// Per process: a cache key is `sha256(key || login length || login ||
    /// password)`, the same 32 bytes whatever the login's length (a STOMP
    /// `login` may be 8 KiB), and never the password.
    key: [u8; 32],
    warn: WarnLimiter,
    unknown_formats: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for MongoUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoUsers")
            .field("database", &self.config.database)
            .field("collection", &self.config.collection)
            .field("uid_field", &self.config.uid_field)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A field by dotted path (`flags.disabled`), as MongoDB resolves it.
fn field<'d>(doc: &'d Document, path: &str) -> Option<&'d Bson> {
    let mut parts = path.split('.');
    let mut value = doc.get(parts.next()?)?;
    for part in parts {
        value = match value {
            Bson::Document(d) => d.get(part)?,
            _ => return None,
        };
    }
    Some(value)
}

fn matches(value: &Bson, want: &MatchValue) -> bool {
    match (value, want) {
        (Bson::Boolean(b), MatchValue::Bool(w)) => b == w,
        (Bson::Int32(i), MatchValue::Int(w)) => i64::from(*i) == *w,
        (Bson::Int64(i), MatchValue::Int(w)) => i == w,
        (Bson::Double(d), MatchValue::Int(w)) => *d == *w as f64,
        (Bson::String(s), MatchValue::Str(w)) => s == w,
        _ => false,
    }
}

fn tags_of(value: Option<&Bson>) -> Vec<String> {
    match value {
        Some(Bson::Array(a)) => a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
        Some(Bson::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

impl MongoUsers {
    /// From a validated `[auth.mongodb]`, hashing on `pool`. Does not
    /// connect (the first login does).
    pub fn new(config: &MongoAuthConfig, pool: Arc<HashPool>) -> MongoUsers {
        MongoUsers {
            config: config.clone(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            coll: tokio::sync::OnceCell::new(),
            pool,
            cache: (config.cache_ttl_ms > 0)
                .then(|| TtlCache::new(Duration::from_millis(config.cache_ttl_ms), config.cache_max_entries)),
            key: rand::random(),
            warn: WarnLimiter::default(),
            unknown_formats: Mutex::default(),
        }
    }

    async fn collection(&self) -> Result<&Collection<Document>, String> {
        self.coll
            .get_or_try_init(|| async {
                let mut opts = ClientOptions::parse(&self.config.uri).await.map_err(|e| e.to_string())?;
                crate::directory::mongo::bound_options(&mut opts, self.timeout);
                let client = Client::with_options(opts).map_err(|e| e.to_string())?;
                Ok(client.database(&self.config.database).collection::<Document>(&self.config.collection))
            })
            .await
    }

    fn projection(&self) -> Document {
        let c = &self.config;
        let mut p = doc! { "_id": 0, c.password_field.as_str(): 1 };
        for f in [&c.disabled_field, &c.tags_field].into_iter().flatten() {
            p.insert(f.as_str(), 1);
        }
        p
    }

    /// The user's document; `Err` (the reason, for the log) when MongoDB
    /// could not answer in time.
    async fn find(&self, login: &str) -> Result<Option<Found>, String> {
        let lookup = async {
            let coll = self.collection().await?;
            coll.find_one(doc! { self.config.uid_field.as_str(): login })
                .projection(self.projection())
                .await
                .map_err(|e| e.to_string())
        };
        let doc = match tokio::time::timeout(self.timeout, lookup).await {
            Ok(r) => r?,
            Err(_) => return Err(format!("no reply within {} ms", self.timeout.as_millis())),
        };
        let c = &self.config;
        Ok(doc.map(|d| Found {
            hash: field(&d, &c.password_field).and_then(Bson::as_str).map(str::to_owned),
            disabled: c
                .disabled_field
                .as_deref()
                .and_then(|f| field(&d, f))
                .is_some_and(|v| matches(v, &c.disabled_value)),
            tags: tags_of(c.tags_field.as_deref().and_then(|f| field(&d, f))),
        }))
    }

    fn cache_key(&self, login: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((login.len() as u64).to_le_bytes());
        h.update(login.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Warns once per process for each unknown or malformed format.
    fn unusable(&self, login: &str, e: &HashError) {
        let kind = match e {
            HashError::Unknown { prefix } => prefix.clone(),
            HashError::Malformed { scheme, .. } => format!("malformed {}", scheme.as_str()),
            // Once per scheme: the parameters vary per document.
            HashError::TooCostly { scheme, .. } => format!("too costly {}", scheme.as_str()),
        };
        let mut seen = self.unknown_formats.lock();
        if seen.len() < MAX_UNKNOWN_FORMATS && seen.insert(kind) {
            drop(seen);
            tracing::warn!(
                login,
                field = self.config.password_field.as_str(),
                error = %e,
                "[auth.mongodb]: a user's password hash cannot be verified; its logins are refused (logged once per format)"
            );
        }
    }

    async fn check(&self, login: &str, password: &str) -> Result<Outcome, AuthError> {
        let found = self.find(login).await.map_err(|why| {
            if let Some(suppressed) = self.warn.due() {
                tracing::warn!(
                    database = self.config.database.as_str(),
                    collection = self.config.collection.as_str(),
                    error = why.as_str(),
                    suppressed,
                    "[auth.mongodb] unavailable; failing closed"
                );
            }
            AuthError::Unavailable(UNREACHABLE.into())
        })?;
        // A usable hash, or the decoy (the outcome is then a refusal anyway).
        let (stored, usable) = match found.as_ref().and_then(|f| f.hash.as_deref()) {
            Some(h) => match hash::check(h) {
                Ok(_) => (h.to_owned(), true),
                Err(e) => {
                    self.unusable(login, &e);
                    (hash::DECOY_BCRYPT.to_owned(), false)
                }
            },
            None => (hash::DECOY_BCRYPT.to_owned(), false),
        };
        let pw = password.to_owned();
        let verified = self.pool.run(move || hash::verify(&stored, pw.as_bytes())).await?;
        if let (Err(e), true) = (&verified, usable) {
            self.unusable(login, e);
        }
        Ok(match (found, verified) {
            (Some(f), Ok(true)) if usable && !f.disabled => Outcome::Allow(f.tags),
            _ => Outcome::Deny,
        })
    }
}

impl Authenticator for MongoUsers {
    fn authenticate<'a>(
        &'a self,
        login: &'a str,
        password: &'a str,
        _client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let key = self.cache.as_ref().map(|_| self.cache_key(login, password));
            let cached = self.cache.as_ref().zip(key.as_ref()).and_then(|(c, k)| c.get(k));
            let outcome = match cached {
                Some(o) => o,
                None => {
                    let o = self.check(login, password).await?;
                    if let (Some(c), Some(k)) = (&self.cache, key) {
                        c.insert(k, o.clone());
                    }
                    o
                }
            };
            match outcome {
                Outcome::Allow(tags) => Ok(Identity { uid: login.to_owned(), tags, source: Source::MongoDb }),
                Outcome::Deny => Err(AuthError::Refused),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_by_dotted_path_and_disabled_values() {
        let d = doc! { "u": "a", "flags": { "banned": 1, "state": "off" }, "active": false, "roles": ["x", "y"] };
        assert_eq!(field(&d, "flags.banned"), Some(&Bson::Int32(1)));
        assert_eq!(field(&d, "u.x"), None);
        assert!(matches(field(&d, "flags.banned").unwrap(), &MatchValue::Int(1)));
        assert!(!matches(field(&d, "flags.banned").unwrap(), &MatchValue::Bool(true)), "types must agree");
        assert!(matches(field(&d, "flags.state").unwrap(), &MatchValue::Str("off".into())));
        assert!(matches(field(&d, "active").unwrap(), &MatchValue::Bool(false)));
        assert_eq!(tags_of(field(&d, "roles")), ["x", "y"]);
        assert_eq!(tags_of(Some(&Bson::String("a  b".into()))), ["a", "b"]);
        assert!(tags_of(Some(&Bson::Int32(3))).is_empty());
    }

    #[tokio::test]
    async fn unreachable_mongodb_fails_closed_within_the_timeout_and_is_not_cached() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = MongoAuthConfig {
            uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            database: "app".into(),
            timeout_ms: 300,
            ..MongoAuthConfig::default()
        };
        let users = MongoUsers::new(&config, Arc::new(HashPool::new(1, 4, Duration::from_secs(5))));
        for _ in 0..2 {
            let t = std::time::Instant::now();
            let r = users.authenticate("alice", "pw", &ClientInfo::LOCAL).await;
            assert_eq!(r, Err(AuthError::Unavailable(UNREACHABLE.into())));
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
        assert_eq!(users.cache.as_ref().unwrap().len(), 0);
    }
}
