//! Users and permissions from the config file.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use regex::Regex;

use super::pool::HashPool;
use super::sasl::{Mechanism, ScramCredentials};
use super::{AuthError, Authenticator, Authorizer, BoxFuture, ClientInfo, Identity, Permission, ResourceKind};
use crate::config::{Config, PermissionConfig};

#[derive(Debug)]
enum Secret {
    /// Development only.
    Plain(String),
    /// PHC string, verified with argon2 on the hashing pool.
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

#[derive(Debug)]
struct User {
    secret: Secret,
    tags: Vec<String>,
    /// vhost → patterns, shared with every user that has the same ones.
    permissions: HashMap<String, Arc<Patterns>>,
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
    /// SCRAM credentials derived from plain passwords, once per user and
    /// mechanism (PBKDF2 is deliberately slow). The salt is random per process.
    scram: parking_lot::Mutex<HashMap<(String, Mechanism), ScramCredentials>>,
    salt: [u8; 16],
    /// Argon2 verification and PBKDF2 derivation run here, bounded.
    pool: HashPool,
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
        let mut users = HashMap::new();
        let mut cache = PatternCache::default();
        let mut plain = Vec::new();
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
            users.insert(u.name.clone(), User { secret, tags: u.tags.clone(), permissions });
        }
        if !plain.is_empty() {
            // One line, not one per user: a generated config may hold thousands.
            let first: Vec<&str> = plain.iter().take(5).copied().collect();
            tracing::warn!(count = plain.len(), first = ?first, "plain-text passwords in config: use password_hash outside development");
        }
        ConfigUsers {
            users,
            scram: Default::default(),
            salt: rand::random(),
            pool: HashPool::from_config(&config.login),
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

/// `auth.default_permissions` as an authorizer, for users authenticated by
/// another source (a JWT) that are not `[[users]]`. Topics: allowed, as for
/// config users.
#[derive(Debug)]
pub struct DefaultPermissions {
    /// vhost → patterns.
    permissions: HashMap<String, Patterns>,
}

impl DefaultPermissions {
    pub fn from_config(config: &Config) -> DefaultPermissions {
        let permissions = config.auth.default_permissions.iter().map(|(v, p)| (v.clone(), Patterns::compile(p))).collect();
        DefaultPermissions { permissions }
    }
}

impl Authorizer for DefaultPermissions {
    fn vhost<'a>(&'a self, _who: &'a Identity, vhost: &'a str, _client: &'a ClientInfo) -> BoxFuture<'a, Result<bool, AuthError>> {
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
        _who: &'a Identity,
        _vhost: &'a str,
        _exchange: &'a str,
        _routing_key: &'a str,
        _permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move { Ok(true) })
    }
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator for ConfigUsers {
    fn authenticate<'a>(&'a self, login: &'a str, password: &'a str, _client: &'a ClientInfo) -> BoxFuture<'a, Result<Identity, AuthError>> {
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
                        let ok = self
                            .pool
                            .run(move || PasswordHash::new(&h).is_ok_and(|parsed| argon2::Argon2::default().verify_password(pw.as_bytes(), &parsed).is_ok()))
                            .await?;
                        if ok {
                            self.verified.lock().insert(login.to_owned(), tag);
                        }
                        ok
                    }
                }
            };
            if ok {
                Ok(Identity { uid: login.to_owned(), tags: user.tags.clone() })
            } else {
                Err(AuthError::Refused)
            }
        })
    }

    fn offers_scram(&self) -> bool {
        // Argon2-hashed users can only use PLAIN.
        self.users.values().all(|u| matches!(u.secret, Secret::Plain(_)))
    }

    fn scram_credentials<'a>(
        &'a self,
        login: &'a str,
        mechanism: Mechanism,
    ) -> BoxFuture<'a, Result<Option<(ScramCredentials, Identity)>, AuthError>> {
        Box::pin(async move {
            // Only plain-password users: an argon2 hash cannot give SCRAM keys.
            let Some(user) = self.users.get(login) else { return Ok(None) };
            let Secret::Plain(password) = &user.secret else { return Ok(None) };
            let identity = Identity { uid: login.to_owned(), tags: user.tags.clone() };
            let key = (login.to_owned(), mechanism);
            if let Some(c) = self.scram.lock().get(&key) {
                return Ok(Some((c.clone(), identity)));
            }
            let (password, salt) = (password.clone(), self.salt);
            let Some(creds) = self.pool.run(move || ScramCredentials::derive(mechanism, &password, &salt, SCRAM_ITERATIONS)).await? else {
                return Ok(None); // PLAIN has no SCRAM credentials
            };
            self.scram.lock().insert(key, creds.clone());
            Ok(Some((creds, identity)))
        })
    }
}

impl Authorizer for ConfigUsers {
    fn vhost<'a>(&'a self, who: &'a Identity, vhost: &'a str, _client: &'a ClientInfo) -> BoxFuture<'a, Result<bool, AuthError>> {
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
        _who: &'a Identity,
        _vhost: &'a str,
        _exchange: &'a str,
        _routing_key: &'a str,
        _permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        // RabbitMQ grants topic access when no topic permissions are set;
        // config users have none (per-key rules come with the HTTP backend).
        Box::pin(async move { Ok(true) })
    }
}

/// Hashes a password for `password_hash` (`herald hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
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
        let plain_only = ConfigUsers::from_config(&Config::from_toml_str("[[users]]\nname = \"a\"\npassword = \"pw\"\n").unwrap());
        assert!(plain_only.offers_scram());
    }

    #[tokio::test]
    async fn permissions_are_anchored_patterns_per_vhost() {
        let u = users();
        let who = |n: &str| Identity { uid: n.into(), tags: vec![] };
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

    #[test]
    fn equal_permissions_are_compiled_once() {
        let u = users();
        let of = |n: &str| u.users[n].permissions["/"].clone();
        assert!(Arc::ptr_eq(&of("plain"), &of("plain2")), "default permissions shared");
        assert!(Arc::ptr_eq(&of("plain"), &of("hashed")));
        assert!(!Arc::ptr_eq(&of("plain"), &of("limited")), "own permissions compiled apart");
    }
}
