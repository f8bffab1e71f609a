//! The sources of `[auth]` composed in order.
//!
//! Authentication: a password that is a JWT this source has a key for is
//! decided by [`JwtAuth`] alone; otherwise the HTTP backend (when configured)
//! is asked, then, for a login that names a `[[users]]` entry, `[[users]]`
//! alone, and for any other login the MongoDB users (when configured). The
//! first source that accepts wins. MongoDB is never asked about a config
//! user's name: a document an application user can create (sign-up) must
//! not open a second door into an operator's account.
//!
//! When none accepts: `Refused` if any source judged the password and
//! refused it (counted by the failed-login limits, whatever another source
//! said), else `Busy` or `Unavailable` when a source could not answer, else
//! `Refused`. So config users log in while the HTTP backend or MongoDB is
//! down, a wrong password is still counted then, and everyone else is
//! refused: failing closed.
//!
//! Authorization: the HTTP backend when configured (for everyone); otherwise
//! `[[users]]` for logins `[[users]]` accepted (see [`Identity::source`]) and
//! `auth.default_permissions` for anyone else (users logged in with a JWT or
//! from MongoDB, even one named like a config user).

use std::sync::Arc;

use super::sasl::{Mechanism, ScramCredentials};
#[cfg(feature = "jwt")]
use super::JwtAuth;
use super::{
    AuthError, Authenticator, Authorizer, BoxFuture, ClientInfo, ConfigUsers, DefaultPermissions, HttpBackend,
    Identity, Permission, ResourceKind, Source,
};
use crate::config::{Config, ConfigError};

#[derive(Debug)]
pub struct Chain {
    #[cfg(feature = "jwt")]
    jwt: Option<JwtAuth>,
    http: Option<HttpBackend>,
    #[cfg(feature = "mongodb")]
    mongo: Option<super::MongoUsers>,
    users: ConfigUsers,
    defaults: DefaultPermissions,
}

impl Chain {
    /// From a validated config.
    pub fn from_config(config: &Config) -> Result<Chain, ConfigError> {
        let invalid = |(key, reason): (&str, String)| ConfigError::Invalid { key: key.into(), reason };
        // One hashing pool for every source: `[login] hash_threads` bounds them together.
        let pool = Arc::new(super::pool::HashPool::from_config(&config.login));
        Ok(Chain {
            #[cfg(feature = "jwt")]
            jwt: config.auth.jwt.as_ref().map(JwtAuth::from_config).transpose().map_err(invalid)?,
            http: config.auth.http.as_ref().map(HttpBackend::from_config).transpose().map_err(invalid)?,
            #[cfg(feature = "mongodb")]
            mongo: config.auth.mongodb.as_ref().map(|m| super::MongoUsers::new(m, pool.clone())),
            users: ConfigUsers::with_pool(config, pool),
            defaults: DefaultPermissions::from_config(config),
        })
    }

    fn authorizer(&self, who: &Identity) -> &dyn Authorizer {
        match &self.http {
            Some(http) => http,
            // The source, not the name: a JWT or a MongoDB document named
            // like a config user gets the defaults, not that user's rights.
            None if who.source == Source::ConfigUsers && self.users.contains(&who.uid) => &self.users,
            None => &self.defaults,
        }
    }
}

/// What the sources that did not accept said, combined.
#[derive(Default)]
struct Failure {
    /// A source judged the password and refused it.
    refused: bool,
    /// A source could not judge it (the last such answer).
    unanswered: Option<AuthError>,
}

impl Failure {
    fn add(&mut self, e: AuthError) {
        match e {
            AuthError::Refused => self.refused = true,
            e => self.unanswered = Some(e),
        }
    }

    /// A refusal outranks "could not answer": otherwise, while one source
    /// is down, wrong passwords another source judged would not be counted
    /// by the failed-login limits (unthrottled guessing during an outage).
    fn into_error(self) -> AuthError {
        match self.unanswered {
            Some(e) if !self.refused => e,
            _ => AuthError::Refused,
        }
    }
}

impl Authenticator for Chain {
    fn authenticate<'a>(
        &'a self,
        login: &'a str,
        password: &'a str,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            #[cfg(feature = "jwt")]
            if let Some(jwt) = self.jwt.as_ref().filter(|j| j.recognizes(password)) {
                return jwt.verify(login, password);
            }
            let mut outcome = Failure::default();
            if let Some(http) = &self.http {
                match http.authenticate(login, password, client).await {
                    Ok(id) => return Ok(id),
                    Err(e) => outcome.add(e),
                }
            }
            if self.users.contains(login) {
                // A config user's name is decided by `[[users]]` alone.
                match self.users.authenticate(login, password, client).await {
                    Ok(id) => return Ok(id),
                    Err(e) => outcome.add(e),
                }
                return Err(outcome.into_error());
            }
            #[cfg(feature = "mongodb")]
            if let Some(mongo) = &self.mongo {
                match mongo.authenticate(login, password, client).await {
                    Ok(id) => return Ok(id),
                    Err(e) => outcome.add(e),
                }
            }
            Err(outcome.into_error())
        })
    }

    fn offers_scram(&self) -> bool {
        // Without the `jwt` feature, validation refused any `[auth.jwt]`.
        #[cfg(feature = "jwt")]
        if self.jwt.is_some() {
            return false;
        }
        // MongoDB users' hashes (bcrypt and the like) cannot give SCRAM keys.
        #[cfg(feature = "mongodb")]
        if self.mongo.is_some() {
            return false;
        }
        self.http.is_none() && self.users.offers_scram()
    }

    fn scram_credentials<'a>(
        &'a self,
        login: &'a str,
        mechanism: Mechanism,
    ) -> BoxFuture<'a, Result<Option<(ScramCredentials, Identity)>, AuthError>> {
        // Only config users with a plain password have SCRAM credentials;
        // everyone else must use PLAIN (the password travels to the source).
        self.users.scram_credentials(login, mechanism)
    }
}

impl Authorizer for Chain {
    fn vhost<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        self.authorizer(who).vhost(who, vhost, client)
    }

    fn resource<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        kind: ResourceKind,
        name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        self.authorizer(who).resource(who, vhost, kind, name, permission)
    }

    fn topic<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        exchange: &'a str,
        routing_key: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        self.authorizer(who).topic(who, vhost, exchange, routing_key, permission)
    }

    /// The HTTP backend, when configured, authorizes everyone.
    fn decides_topics(&self) -> bool {
        self.http.as_ref().is_some_and(|h| h.decides_topics())
    }

    fn decides_resources(&self) -> bool {
        self.http.as_ref().is_some_and(|h| h.decides_resources())
    }
}

/// The chain as the engine's sources.
impl From<Chain> for super::AuthSources {
    fn from(chain: Chain) -> Self {
        let chain = Arc::new(chain);
        super::AuthSources { authenticator: chain.clone(), authorizer: chain }
    }
}

// JWTs and a real HTTP service.
#[cfg(all(test, feature = "jwt", feature = "http-auth"))]
mod tests {
    use super::*;
    use crate::auth::testutil::AuthService;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const USERS: &str = r#"
[auth.default_permissions."/"]
configure = ""
write = "feed"
read = "feed"

[[users]]
name = "alice"
password = "local-pw"
tags = ["from-config"]

[[users]]
name = "ops"
password = "ops-pw"
permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }
"#;

    fn chain(extra: &str) -> Chain {
        Chain::from_config(&Config::from_toml_str(&format!("{USERS}\n{extra}")).unwrap()).unwrap()
    }

    fn http_section(svc: &AuthService, prefix: &str) -> String {
        format!(
            "[auth.http]\nuser_path = {:?}\nvhost_path = {:?}\nresource_path = {:?}\ntopic_path = {:?}\ntimeout_ms = 300\n",
            svc.url(&format!("{prefix}/user")),
            svc.url(&format!("{prefix}/vhost")),
            svc.url(&format!("{prefix}/resource")),
            svc.url(&format!("{prefix}/topic")),
        )
    }

    const JWT: &str = "[auth.jwt]\nhs256_secret = \"k\"\ntags_claim = \"tags\"\n";

    fn token(sub: &str, exp_from_now: i64) -> String {
        let exp = jsonwebtoken::get_current_timestamp() as i64 + exp_from_now;
        let claims = json!({ "sub": sub, "exp": exp, "tags": ["jwt"] });
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"k")).unwrap()
    }

    fn who(uid: &str) -> Identity {
        Identity::new(uid, vec![])
    }

    #[tokio::test]
    async fn jwt_then_http_then_config_users() {
        let svc = AuthService::start().await;
        let c = chain(&format!("{JWT}\n{}", http_section(&svc, "/auth")));
        // A JWT decides alone: the service is not asked, either way.
        let id = c.authenticate("dave", &token("dave", 60), &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(id, Identity { uid: "dave".into(), tags: vec!["jwt".into()], source: Source::Jwt });
        assert_eq!(
            c.authenticate("dave", &token("dave", -300), &ClientInfo::LOCAL).await,
            Err(AuthError::Refused),
            "expired"
        );
        assert_eq!(
            c.authenticate("alice", &token("dave", 60), &ClientInfo::LOCAL).await,
            Err(AuthError::Refused),
            "uid mismatch"
        );
        assert_eq!(svc.requests("/auth/user").len(), 0);
        // Not a JWT: the service answers, tags and all.
        assert_eq!(
            c.authenticate("alice", "pw", &ClientInfo::LOCAL).await.unwrap().tags,
            ["administrator", "management"]
        );
        // The service denies; the login is a config user with that password.
        assert_eq!(c.authenticate("alice", "local-pw", &ClientInfo::LOCAL).await.unwrap().tags, ["from-config"]);
        assert_eq!(c.authenticate("ops", "ops-pw", &ClientInfo::LOCAL).await.unwrap().uid, "ops");
        assert_eq!(svc.requests("/auth/user").len(), 3);
        // Denied everywhere.
        assert_eq!(c.authenticate("alice", "nope", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert_eq!(c.authenticate("nobody", "nope", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
    }

    #[tokio::test]
    async fn backend_down_keeps_config_users_and_fails_closed_for_others() {
        let svc = AuthService::start().await;
        let c = chain(&http_section(&svc, "/fail"));
        assert_eq!(c.authenticate("ops", "ops-pw", &ClientInfo::LOCAL).await.unwrap().uid, "ops");
        assert!(matches!(c.authenticate("bob", "pw", &ClientInfo::LOCAL).await, Err(AuthError::Unavailable(_))));
        // [[users]] judged the password and refused it: counted, outage or not.
        assert_eq!(c.authenticate("ops", "wrong", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert!(c.vhost(&who("ops"), "/", &ClientInfo::LOCAL).await.is_err(), "the HTTP backend authorizes everyone");
    }

    #[tokio::test]
    async fn http_authorizes_everyone_when_configured() {
        let svc = AuthService::start().await;
        let c = chain(&format!("{JWT}\n{}", http_section(&svc, "/auth")));
        let ops = c.authenticate("ops", "ops-pw", &ClientInfo::LOCAL).await.unwrap();
        assert!(!c.resource(&ops, "/", ResourceKind::Exchange, "private", Permission::Write).await.unwrap());
        assert!(c.resource(&ops, "/", ResourceKind::Exchange, "feed", Permission::Write).await.unwrap());
        assert!(c.topic(&ops, "/", "amq.topic", "ops.x", Permission::Write).await.unwrap());
        assert!(!c.topic(&ops, "/", "amq.topic", "alice.x", Permission::Write).await.unwrap());
        let dave = c.authenticate("dave", &token("dave", 60), &ClientInfo::LOCAL).await.unwrap();
        assert!(c.vhost(&dave, "/", &ClientInfo::LOCAL).await.unwrap());
        assert_eq!(svc.requests("/auth/vhost")[0].params["username"], "dave");
    }

    #[tokio::test]
    async fn without_http_config_users_have_theirs_and_jwt_users_the_defaults() {
        let c = chain(JWT);
        let dave = c.authenticate("dave", &token("dave", 60), &ClientInfo::LOCAL).await.unwrap();
        assert!(c.vhost(&dave, "/", &ClientInfo::LOCAL).await.unwrap());
        assert!(c.resource(&dave, "/", ResourceKind::Exchange, "feed", Permission::Write).await.unwrap());
        assert!(!c.resource(&dave, "/", ResourceKind::Queue, "jobs", Permission::Configure).await.unwrap());
        assert!(
            c.topic(&dave, "/", "feed", "anything", Permission::Read).await.unwrap(),
            "topics allowed, as in RabbitMQ"
        );
        let ops = c.authenticate("ops", "ops-pw", &ClientInfo::LOCAL).await.unwrap();
        assert!(c.resource(&ops, "/", ResourceKind::Queue, "jobs", Permission::Configure).await.unwrap());
        // Non-JWT passwords of unknown users: refused without any HTTP backend.
        assert_eq!(c.authenticate("dave", "pw", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        // A config user may log in with a JWT too (tags from the token).
        assert_eq!(c.authenticate("alice", &token("alice", 60), &ClientInfo::LOCAL).await.unwrap().tags, ["jwt"]);
        // ... but a JWT named like a config user gets the defaults, not that user's rights.
        let ops_jwt = c.authenticate("ops", &token("ops", 60), &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(ops_jwt.source, Source::Jwt);
        assert!(!c.resource(&ops_jwt, "/", ResourceKind::Queue, "jobs", Permission::Configure).await.unwrap());
        assert!(c.resource(&ops_jwt, "/", ResourceKind::Exchange, "feed", Permission::Write).await.unwrap());
        // SCRAM credentials: config users with a plain password only.
        assert!(c.scram_credentials("alice", Mechanism::ScramSha256).await.unwrap().is_some());
        assert!(c.scram_credentials("dave", Mechanism::ScramSha256).await.unwrap().is_none());
    }
}

// MongoDB down (nobody listening): config users still log in and their
// wrong passwords are refused (counted), everyone else fails closed, and
// SCRAM is not offered.
#[cfg(all(test, feature = "mongodb"))]
mod mongo_tests {
    use super::*;

    const OPS: &str = "[[users]]\nname = \"ops\"\npassword = \"ops-pw\"\npermissions = { \"/\" = { configure = \".*\", write = \".*\", read = \".*\" } }\n\n[auth.default_permissions.\"/\"]\nconfigure = \"\"\nwrite = \"feed\"\nread = \"feed\"\n";

    fn mongodb_down() -> Chain {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let text = format!(
            "{OPS}\n[auth.mongodb]\nuri = \"mongodb://127.0.0.1:{port}/?directConnection=true\"\ndatabase = \"app\"\ntimeout_ms = 300\n"
        );
        Chain::from_config(&Config::from_toml_str(&text).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn mongodb_down_keeps_config_users_and_fails_closed_for_others() {
        let c = mongodb_down();
        assert!(!c.offers_scram(), "MongoDB users' hashes cannot do SCRAM");
        assert_eq!(c.authenticate("ops", "ops-pw", &ClientInfo::LOCAL).await.unwrap().uid, "ops");
        assert!(matches!(c.authenticate("bob", "pw", &ClientInfo::LOCAL).await, Err(AuthError::Unavailable(_))));
        let plain =
            Chain::from_config(&Config::from_toml_str("[[users]]\nname = \"ops\"\npassword = \"x\"\n").unwrap());
        assert!(plain.unwrap().offers_scram());
    }

    /// F2: during an outage a wrong config password is a refusal (so the
    /// failed-login limits count it), and MongoDB is not even asked (F1):
    /// the answer comes without waiting for its timeout.
    #[tokio::test]
    async fn a_wrong_config_password_during_an_outage_is_refused_without_asking_mongodb() {
        let c = mongodb_down();
        let t = std::time::Instant::now();
        assert_eq!(c.authenticate("ops", "wrong", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert!(t.elapsed() < std::time::Duration::from_millis(250), "MongoDB was asked: {:?}", t.elapsed());
    }

    /// F1: config permissions follow the source that accepted the login,
    /// not the name.
    #[tokio::test]
    async fn a_mongodb_user_named_like_a_config_user_gets_the_defaults() {
        let c = mongodb_down();
        let from_config = c.authenticate("ops", "ops-pw", &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(from_config.source, Source::ConfigUsers);
        assert!(c.resource(&from_config, "/", ResourceKind::Queue, "jobs", Permission::Configure).await.unwrap());
        let from_mongo = Identity { uid: "ops".into(), tags: vec![], source: Source::MongoDb };
        assert!(!c.resource(&from_mongo, "/", ResourceKind::Queue, "jobs", Permission::Configure).await.unwrap());
        assert!(c.resource(&from_mongo, "/", ResourceKind::Exchange, "feed", Permission::Write).await.unwrap());
    }
}
