//! The sources of `[auth]` composed in order.
//!
//! Authentication: a password that is a JWT this source has a key for is
//! decided by [`JwtAuth`] alone; otherwise the HTTP backend (when configured)
//! is asked, then the MongoDB users (when configured), then `[[users]]` when
//! the login is one of them. The first source that accepts wins; when none
//! does, the answer is `Refused`, or `Unavailable` when the HTTP backend or
//! MongoDB could not answer (so config users still log in while those are
//! down, and everyone else is refused: failing closed).
//!
//! Authorization: the HTTP backend when configured (for everyone); otherwise
//! `[[users]]` for config users and `auth.default_permissions` for anyone
//! else (users logged in with a JWT or from MongoDB).

use std::sync::Arc;

use super::sasl::{Mechanism, ScramCredentials};
#[cfg(feature = "jwt")]
use super::JwtAuth;
use super::{
    AuthError, Authenticator, Authorizer, BoxFuture, ClientInfo, ConfigUsers, DefaultPermissions, HttpBackend,
    Identity, Permission, ResourceKind,
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
            None if self.users.contains(&who.uid) => &self.users,
            None => &self.defaults,
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
            let mut failure = AuthError::Refused;
            if let Some(http) = &self.http {
                match http.authenticate(login, password, client).await {
                    Ok(id) => return Ok(id),
                    Err(e) => failure = e,
                }
            }
            #[cfg(feature = "mongodb")]
            if let Some(mongo) = &self.mongo {
                match mongo.authenticate(login, password, client).await {
                    Ok(id) => return Ok(id),
                    // An earlier source's Unavailable or Busy outranks a refusal.
                    Err(AuthError::Refused) => {}
                    Err(e) => failure = e,
                }
            }
            if self.users.contains(login) {
                match self.users.authenticate(login, password, client).await {
                    Ok(id) => return Ok(id),
                    // The password was not checked: say so, not "refused".
                    Err(AuthError::Busy) => failure = AuthError::Busy,
                    Err(_) => {}
                }
            }
            Err(failure)
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
        Identity { uid: uid.into(), tags: vec![] }
    }

    #[tokio::test]
    async fn jwt_then_http_then_config_users() {
        let svc = AuthService::start().await;
        let c = chain(&format!("{JWT}\n{}", http_section(&svc, "/auth")));
        // A JWT decides alone: the service is not asked, either way.
        let id = c.authenticate("dave", &token("dave", 60), &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(id, Identity { uid: "dave".into(), tags: vec!["jwt".into()] });
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
        assert!(matches!(c.authenticate("ops", "wrong", &ClientInfo::LOCAL).await, Err(AuthError::Unavailable(_))));
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
        // SCRAM credentials: config users with a plain password only.
        assert!(c.scram_credentials("alice", Mechanism::ScramSha256).await.unwrap().is_some());
        assert!(c.scram_credentials("dave", Mechanism::ScramSha256).await.unwrap().is_none());
    }
}

// MongoDB down (nobody listening): config users still log in, everyone else
// fails closed, and SCRAM is not offered.
#[cfg(all(test, feature = "mongodb"))]
mod mongo_tests {
    use super::*;

    #[tokio::test]
    async fn mongodb_down_keeps_config_users_and_fails_closed_for_others() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let text = format!(
            "[[users]]\nname = \"ops\"\npassword = \"ops-pw\"\n\n[auth.mongodb]\nuri = \"mongodb://127.0.0.1:{port}/?directConnection=true\"\ndatabase = \"app\"\ntimeout_ms = 300\n"
        );
        let c = Chain::from_config(&Config::from_toml_str(&text).unwrap()).unwrap();
        assert!(!c.offers_scram(), "MongoDB users' hashes cannot do SCRAM");
        assert_eq!(c.authenticate("ops", "ops-pw", &ClientInfo::LOCAL).await.unwrap().uid, "ops");
        assert!(matches!(c.authenticate("bob", "pw", &ClientInfo::LOCAL).await, Err(AuthError::Unavailable(_))));
        assert!(matches!(c.authenticate("ops", "wrong", &ClientInfo::LOCAL).await, Err(AuthError::Unavailable(_))));
        let plain =
            Chain::from_config(&Config::from_toml_str("[[users]]\nname = \"ops\"\npassword = \"x\"\n").unwrap());
        assert!(plain.unwrap().offers_scram());
    }
}
