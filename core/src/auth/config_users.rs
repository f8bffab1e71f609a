//! Users and permissions from the config file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::Regex;

use super::pool::HashPool;
use super::sasl::{Mechanism, ScramCredentials};
use super::{AuthError, Authenticator, Authorizer, BoxFuture, ClientInfo, Identity, Permission, ResourceKind, Source};
use crate::config::{Config, PermissionConfig, TopicPermissions};

#[derive(Debug)]
enum Secret {
    /// Development only.
    Plain(String),
    /// A hash (argon2 PHC, bcrypt, scrypt, PBKDF2: password.rs), verified
    /// on the hashing pool.
    Hash(String),
}

#[derive(Debug)]
struct Patterns {
    configure: Option<Regex>,
    write: Option<Regex>,
    read: Option<Regex>,
}

impl Patterns {
    fn compile(p: &PermissionConfig) -> Patterns {
        // Anchored like RabbitMQ's `^(?:...)$`; "" grants nothing. Config
        // validation already compiled each pattern, so errors cannot occur here.
        let re = |s: &str| if s.is_empty() { None } else { Regex::new(&format!("^(?:{s})$")).ok() };
        Patterns { configure: re(&p.configure), write: re(&p.write), read: re(&p.read) }
    }

    fn allows(&self, permission: Permission, name: &str) -> bool {
        let re = match permission {
            Permission::Configure => &self.configure,
            Permission::Write => &self.write,
            Permission::Read => &self.read,
        };
        re.as_ref().is_some_and(|re| re.is_match(name))
    }
}

/// One topic-permission pattern: compiled once when it has no placeholder,
/// else expanded per user and vhost and compiled through [`RegexCache`].
#[derive(Debug)]
enum TopicPattern {
    /// `""`: grants nothing.
    Never,
    Fixed(Regex),
    Template(String),
}

impl TopicPattern {
    fn compile(s: &str) -> TopicPattern {
        if s.is_empty() {
            TopicPattern::Never
        } else if s.contains("{username}") || s.contains("{vhost}") {
            TopicPattern::Template(s.to_owned())
        } else {
            // Validated by Config::validate; an error cannot occur here.
            Regex::new(&format!("^(?:{s})$")).map_or(TopicPattern::Never, TopicPattern::Fixed)
        }
    }

    fn matches(&self, cache: &RegexCache, uid: &str, vhost: &str, key: &str) -> bool {
        match self {
            TopicPattern::Never => false,
            TopicPattern::Fixed(re) => re.is_match(key),
            TopicPattern::Template(t) => {
                let expanded = expand(t, uid, vhost);
                cache.get(&expanded).is_some_and(|re| re.is_match(key))
            }
        }
    }
}

/// `{username}` and `{vhost}` replaced by the values, regex-escaped (a uid
/// like `a.b` must not become a wildcard), as RabbitMQ expands them.
pub(crate) fn expand(template: &str, uid: &str, vhost: &str) -> String {
    template.replace("{username}", &regex::escape(uid)).replace("{vhost}", &regex::escape(vhost))
}

/// Compiled expansions of topic-permission templates, shared by every user:
/// compiling costs tens of microseconds, a SEND should not pay it each time.
/// Bounded: cleared when full (a new user's first check compiles again).
#[derive(Debug, Default)]
pub(crate) struct RegexCache(parking_lot::Mutex<HashMap<String, Arc<Regex>>>);

const REGEX_CACHE_MAX: usize = 4096;

impl RegexCache {
    fn get(&self, pattern: &str) -> Option<Arc<Regex>> {
        if let Some(re) = self.0.lock().get(pattern) {
            return Some(re.clone());
        }
        let re = Arc::new(Regex::new(&format!("^(?:{pattern})$")).ok()?);
        let mut map = self.0.lock();
        if map.len() >= REGEX_CACHE_MAX {
            map.clear();
        }
        map.insert(pattern.to_owned(), re.clone());
        Some(re)
    }
}

/// Topic permissions of one user (or the defaults): vhost → exchange →
/// (write, read).
#[derive(Debug, Default)]
pub(crate) struct TopicRules(BTreeMap<String, BTreeMap<String, (TopicPattern, TopicPattern)>>);

impl TopicRules {
    pub(crate) fn compile(p: &TopicPermissions) -> TopicRules {
        TopicRules(
            p.iter()
                .map(|(vhost, xs)| {
                    let xs = xs
                        .iter()
                        .map(|(x, t)| (x.clone(), (TopicPattern::compile(&t.write), TopicPattern::compile(&t.read))))
                        .collect();
                    (vhost.clone(), xs)
                })
                .collect(),
        )
    }

    /// RabbitMQ's rule: no topic permissions for this vhost and exchange
    /// grant; otherwise the `write` or `read` pattern must match the key.
    pub(crate) fn allows(
        &self,
        cache: &RegexCache,
        uid: &str,
        vhost: &str,
        exchange: &str,
        key: &str,
        permission: Permission,
    ) -> bool {
        let Some((write, read)) = self.0.get(vhost).and_then(|xs| xs.get(exchange)) else { return true };
        match permission {
            Permission::Write => write.matches(cache, uid, vhost, key),
            Permission::Read => read.matches(cache, uid, vhost, key),
            // Topic permissions have no configure pattern.
            Permission::Configure => false,
        }
    }
}

#[derive(Debug)]
struct User {
    secret: Secret,
    tags: Vec<String>,
    /// vhost → patterns, shared with every user that has the same ones.
    permissions: HashMap<String, Arc<Patterns>>,
    /// Own topic permissions, or the shared defaults.
    topics: Arc<TopicRules>,
}

/// Compiles each distinct permission triple once. A compiled `Regex` costs
/// tens of KiB (and a search cache per clone), and most users share
/// `auth.default_permissions`: compiled per user, 18k config users held
/// ~600 MiB of identical regexes.
#[derive(Default)]
struct PatternCache(HashMap<(String, String, String), Arc<Patterns>>);

impl PatternCache {
    fn get(&mut self, p: &PermissionConfig) -> Arc<Patterns> {
        let key = (p.configure.clone(), p.write.clone(), p.read.clone());
        self.0.entry(key).or_insert_with(|| Arc::new(Patterns::compile(p))).clone()
    }
}

/// The `[[users]]` of the config: both authenticator and authorizer.
#[derive(Debug)]
pub struct ConfigUsers {
    users: HashMap<String, User>,
    topic_cache: RegexCache,
    /// SCRAM credentials derived from plain passwords, once per user and
    /// mechanism (PBKDF2 is deliberately slow). The salt is random per process.
    scram: parking_lot::Mutex<HashMap<(String, Mechanism), ScramCredentials>>,
    salt: [u8; 16],
    /// Hash verification and PBKDF2 derivation run here, bounded; shared
    /// with the other sources of the chain.
    pool: Arc<HashPool>,
    /// Hashed users' last verified password, as SHA-256 over a key drawn per
    /// process and the password: a user who logged in once gets in again
    /// without argon2, so a flood of wrong passwords that fills the pool
    /// does not lock out users who are already working. One entry per
    /// hashed user at most.
    verified: parking_lot::Mutex<HashMap<String, [u8; 32]>>,
    verify_key: [u8; 32],
}

/// The same count as the fake credentials of unknown users, so the two
/// cannot be told apart (RFC 7677 recommends at least 4096).
const SCRAM_ITERATIONS: u32 = super::sasl::DEFAULT_ITERATIONS;

impl ConfigUsers {
    pub fn from_config(config: &Config) -> ConfigUsers {
        Self::with_pool(config, Arc::new(HashPool::from_config(&config.login)))
    }

    /// Hashing on `pool` (the chain's, shared by every source).
    pub fn with_pool(config: &Config, pool: Arc<HashPool>) -> ConfigUsers {
        let mut users = HashMap::new();
        let mut cache = PatternCache::default();
        let mut plain = Vec::new();
        let default_topics = Arc::new(TopicRules::compile(&config.auth.default_topic_permissions));
        for u in &config.users {
            let secret = match (&u.password, &u.password_hash) {
                (_, Some(h)) => Secret::Hash(h.clone()),
                (Some(p), None) => {
                    plain.push(u.name.as_str());
                    Secret::Plain(p.clone())
                }
                (None, None) => continue, // rejected by Config::validate
            };
            let perms = u.permissions.as_ref().unwrap_or(&config.auth.default_permissions);
            let permissions = perms.iter().map(|(v, p)| (v.clone(), cache.get(p))).collect();
            let topics = u
                .topic_permissions
                .as_ref()
                .map_or_else(|| default_topics.clone(), |t| Arc::new(TopicRules::compile(t)));
            users.insert(u.name.clone(), User { secret, tags: u.tags.clone(), permissions, topics });
        }
        if !plain.is_empty() {
            // One line, not one per user: a generated config may hold thousands.
            let first: Vec<&str> = plain.iter().take(5).copied().collect();
            tracing::warn!(count = plain.len(), first = ?first, "plain-text passwords in config: use password_hash outside development");
        }
        ConfigUsers {
            users,
            topic_cache: RegexCache::default(),
            scram: Default::default(),
            salt: rand::random(),
            pool,
            verified: Default::default(),
            verify_key: rand::random(),
        }
    }

    fn patterns(&self, who: &Identity, vhost: &str) -> Option<&Patterns> {
        self.users.get(&who.uid)?.permissions.get(vhost).map(|p| &**p)
    }

    fn verified_tag(&self, password: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.verify_key);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `uid` is one of the `[[users]]`.
    pub fn contains(&self, uid: &str) -> bool {
        self.users.contains_key(uid)
    }
}

/// `auth.default_permissions` and `auth.default_topic_permissions` as an
/// authorizer, for users authenticated by another source (a JWT) that are
/// not `[[users]]`.
#[derive(Debug)]
pub struct DefaultPermissions {
    /// vhost → patterns.
    permissions: HashMap<String, Patterns>,
    topics: TopicRules,
    topic_cache: RegexCache,
}

impl DefaultPermissions {
    pub fn from_config(config: &Config) -> DefaultPermissions {
        let permissions =
            config.auth.default_permissions.iter().map(|(v, p)| (v.clone(), Patterns::compile(p))).collect();
        let topics = TopicRules::compile(&config.auth.default_topic_permissions);
        DefaultPermissions { permissions, topics, topic_cache: RegexCache::default() }
    }
}

impl Authorizer for DefaultPermissions {
    fn vhost<'a>(
        &'a self,
        _who: &'a Identity,
        vhost: &'a str,
        _client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move { Ok(self.permissions.contains_key(vhost)) })
    }

    fn resource<'a>(
        &'a self,
        _who: &'a Identity,
        vhost: &'a str,
        _kind: ResourceKind,
        name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move { Ok(self.permissions.get(vhost).is_some_and(|p| p.allows(permission, name))) })
    }

    fn topic<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        exchange: &'a str,
        routing_key: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            Ok(self.topics.allows(&self.topic_cache, &who.uid, vhost, exchange, routing_key, permission))
        })
    }
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator for ConfigUsers {
    fn authenticate<'a>(
        &'a self,
        login: &'a str,
        password: &'a str,
        _client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let user = self.users.get(login).ok_or(AuthError::Refused)?;
            let ok = match &user.secret {
                Secret::Plain(p) => constant_time_eq(p.as_bytes(), password.as_bytes()),
                Secret::Hash(h) => {
                    let tag = self.verified_tag(password);
                    if self.verified.lock().get(login).is_some_and(|t| constant_time_eq(t, &tag)) {
                        true
                    } else {
                        let (h, pw) = (h.clone(), password.to_owned());
                        let ok = self.pool.run(move || crate::password::verify(&h, pw.as_bytes()) == Ok(true)).await?;
                        if ok {
                            self.verified.lock().insert(login.to_owned(), tag);
                        }
                        ok
                    }
                }
            };
            if ok {
                Ok(Identity { uid: login.to_owned(), tags: user.tags.clone(), source: Source::ConfigUsers })
            } else {
                Err(AuthError::Refused)
            }
        })
    }

    fn offers_scram(&self) -> bool {
        // Hashed users can only use PLAIN.
        self.users.values().all(|u| matches!(u.secret, Secret::Plain(_)))
    }

    fn scram_credentials<'a>(
        &'a self,
        login: &'a str,
        mechanism: Mechanism,
    ) -> BoxFuture<'a, Result<Option<(ScramCredentials, Identity)>, AuthError>> {
        Box::pin(async move {
            // Only plain-password users: a stored hash cannot give SCRAM keys.
            let Some(user) = self.users.get(login) else { return Ok(None) };
            let Secret::Plain(password) = &user.secret else { return Ok(None) };
            let identity = Identity { uid: login.to_owned(), tags: user.tags.clone(), source: Source::ConfigUsers };
            let key = (login.to_owned(), mechanism);
            if let Some(c) = self.scram.lock().get(&key) {
                return Ok(Some((c.clone(), identity)));
            }
            let (password, salt) = (password.clone(), self.salt);
            let Some(creds) =
                self.pool.run(move || ScramCredentials::derive(mechanism, &password, &salt, SCRAM_ITERATIONS)).await?
            else {
                return Ok(None); // PLAIN has no SCRAM credentials
            };
            self.scram.lock().insert(key, creds.clone());
            Ok(Some((creds, identity)))
        })
    }
}

impl Authorizer for ConfigUsers {
    fn vhost<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        _client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move { Ok(self.patterns(who, vhost).is_some()) })
    }

    fn resource<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        _kind: ResourceKind,
        name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move { Ok(self.patterns(who, vhost).is_some_and(|p| p.allows(permission, name))) })
    }

    fn topic<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        exchange: &'a str,
        routing_key: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        // RabbitMQ grants topic access when no topic permissions are set
        // for the vhost and exchange.
        Box::pin(async move {
            Ok(self.users.get(&who.uid).is_some_and(|u| {
                u.topics.allows(&self.topic_cache, &who.uid, vhost, exchange, routing_key, permission)
            }))
        })
    }
}

/// Hashes a password for `password_hash` (`herald hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> ConfigUsers {
        let hash = hash_password("s3cret").unwrap();
        // `plain2` repeats `plain`'s (default) permissions: they share one compiled set.
        let text = format!(
            r#"
[auth.default_permissions."/"]
configure = "^$"
write = ".*"
read = "feed|amq\\.topic"

[[users]]
name = "plain"
password = "pw"

[[users]]
name = "plain2"
password = "pw"

[[users]]
name = "hashed"
password_hash = "{hash}"
tags = ["administrator"]

[[users]]
name = "limited"
password = "pw"
permissions = {{ "/" = {{ configure = "", write = "", read = "q-.*" }} }}
"#
        );
        ConfigUsers::from_config(&Config::from_toml_str(&text).unwrap())
    }

    #[tokio::test]
    async fn plain_and_argon2_logins() {
        let u = users();
        assert_eq!(u.authenticate("plain", "pw", &ClientInfo::LOCAL).await.unwrap().uid, "plain");
        assert_eq!(u.authenticate("plain", "nope", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert_eq!(u.authenticate("ghost", "pw", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        let id = u.authenticate("hashed", "s3cret", &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(id.tags, ["administrator"]);
        assert_eq!(u.authenticate("hashed", "s3cre", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert!(!u.offers_scram(), "an argon2-hashed user cannot do SCRAM, so it is not offered");
        let plain_only =
            ConfigUsers::from_config(&Config::from_toml_str("[[users]]\nname = \"a\"\npassword = \"pw\"\n").unwrap());
        assert!(plain_only.offers_scram());
    }

    #[tokio::test]
    async fn bcrypt_scrypt_and_pbkdf2_hashes_are_taken_too() {
        let text = r#"
[[users]]
name = "b"
password_hash = "$2a$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96"

[[users]]
name = "p"
password_hash = "$pbkdf2-sha256$i=1000,l=32$aGVyYWxkLXNhbHQtMDAwMQ$dfuR5NC013dFXuSpMoIq1VG+R7CGkXJClF5urg8W5iE"
"#;
        let u = ConfigUsers::from_config(&Config::from_toml_str(text).unwrap());
        assert_eq!(u.authenticate("b", "password", &ClientInfo::LOCAL).await.unwrap().uid, "b");
        assert_eq!(u.authenticate("b", "passwort", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert_eq!(u.authenticate("p", "correct horse", &ClientInfo::LOCAL).await.unwrap().uid, "p");
        let err = Config::from_toml_str("[[users]]\nname = \"x\"\npassword_hash = \"$1$salt$hash\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("users[0].password_hash") && err.contains("unknown password hash format ($1$)"), "{err}");
        // Over the cost ceilings: refused at start, naming the key.
        let err = Config::from_toml_str(
            "[[users]]\nname = \"x\"\npassword_hash = \"$pbkdf2-sha256$i=4294967295,l=32$aGVyYWxkLXNhbHQtMDAwMQ$dfuR5NC013dFXuSpMoIq1VG+R7CGkXJClF5urg8W5iE\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("users[0].password_hash") && err.contains("too costly") && err.contains("i=4294967295"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn permissions_are_anchored_patterns_per_vhost() {
        let u = users();
        let who = |n: &str| Identity::new(n, vec![]);
        let plain = who("plain");
        assert!(u.vhost(&plain, "/", &ClientInfo::LOCAL).await.unwrap());
        assert!(!u.vhost(&plain, "other", &ClientInfo::LOCAL).await.unwrap());
        let q = ResourceKind::Queue;
        let x = ResourceKind::Exchange;
        assert!(u.resource(&plain, "/", x, "feed", Permission::Read).await.unwrap());
        assert!(!u.resource(&plain, "/", x, "feedx", Permission::Read).await.unwrap(), "anchored");
        assert!(!u.resource(&plain, "/", q, "jobs", Permission::Configure).await.unwrap());
        assert!(u.resource(&plain, "/", q, "jobs", Permission::Write).await.unwrap());
        let limited = who("limited");
        assert!(!u.resource(&limited, "/", q, "q-1", Permission::Write).await.unwrap(), "empty pattern grants nothing");
        assert!(u.resource(&limited, "/", q, "q-1", Permission::Read).await.unwrap());
    }

    #[tokio::test]
    async fn topic_permissions_expand_username_and_vhost() {
        let text = r#"
[[vhosts]]
name = "/"

[[vhosts]]
name = "v2"

[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }

[auth.default_topic_permissions."/"."amq.topic"]
write = '{username}\..*'
read = '{username}\..*|public\..*'

[[users]]
name = "plain"
password = "pw"

[[users]]
name = "a.b"
password = "pw"

[[users]]
name = "own"
password = "pw"
topic_permissions = { "v2" = { "amq.topic" = { write = "{vhost}-{username}", read = "" } } }
"#;
        let config = Config::from_toml_str(text).unwrap();
        let u = ConfigUsers::from_config(&config);
        let who = |n: &str| Identity::new(n, vec![]);
        let (w, r) = (Permission::Write, Permission::Read);
        let t = |id: &Identity, vhost: &'static str, x: &'static str, key: &'static str, p: Permission| {
            let id = id.clone();
            let u = &u;
            async move { u.topic(&id, vhost, x, key, p).await.unwrap() }
        };
        let plain = who("plain");
        assert!(t(&plain, "/", "amq.topic", "plain.x", w).await);
        assert!(!t(&plain, "/", "amq.topic", "other.x", w).await, "{{username}} expands to the user");
        assert!(!t(&plain, "/", "amq.topic", "xplain.x", w).await, "matched whole, like the resource patterns");
        assert!(t(&plain, "/", "amq.topic", "public.news", r).await);
        assert!(!t(&plain, "/", "amq.topic", "public.news", w).await);
        assert!(
            t(&plain, "/", "feed", "anyone", w).await,
            "no topic permissions for this exchange: allowed (RabbitMQ)"
        );
        assert!(t(&plain, "v2", "amq.topic", "anything", w).await, "none for this vhost: allowed");
        let ab = who("a.b");
        assert!(t(&ab, "/", "amq.topic", "a.b.x", w).await);
        assert!(!t(&ab, "/", "amq.topic", "aXb.x", w).await, "the uid is escaped: its '.' is not a wildcard");
        let own = who("own");
        assert!(t(&own, "v2", "amq.topic", "v2-own", w).await, "{{vhost}} expands too");
        assert!(!t(&own, "v2", "amq.topic", "v2-own", r).await, "\"\" grants nothing");
        assert!(t(&own, "/", "amq.topic", "elsewhere", w).await, "own topic permissions replace the defaults");
        // JWT users (not [[users]]) get the defaults.
        let d = DefaultPermissions::from_config(&config);
        assert!(d.topic(&who("jwt"), "/", "amq.topic", "jwt.1", w).await.unwrap());
        assert!(!d.topic(&who("jwt"), "/", "amq.topic", "plain.1", w).await.unwrap());
        assert_eq!(expand("^{username}-{vhost}$", "x+y", "/"), "^x\\+y-/$");
    }

    #[test]
    fn bad_topic_permissions_are_named() {
        let err =
            Config::from_toml_str("[auth.default_topic_permissions.\"/\".\"amq.topic\"]\nwrite = \"(\"\nread = \"\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("auth.default_topic_permissions") && err.contains("write"), "{err}");
        let err = Config::from_toml_str("[[users]]\nname = \"a\"\npassword = \"p\"\ntopic_permissions = { nope = { x = { write = \"\", read = \"\" } } }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("users[0].topic_permissions"), "{err}");
    }

    #[test]
    fn equal_permissions_are_compiled_once() {
        let u = users();
        let of = |n: &str| u.users[n].permissions["/"].clone();
        assert!(Arc::ptr_eq(&of("plain"), &of("plain2")), "default permissions shared");
        assert!(Arc::ptr_eq(&of("plain"), &of("hashed")));
        assert!(!Arc::ptr_eq(&of("plain"), &of("limited")), "own permissions compiled apart");
    }
}
