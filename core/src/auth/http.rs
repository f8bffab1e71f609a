//! The rabbitmq-auth-backend-http protocol: ask a web service who may log in
//! and what they may do, so an auth service written for RabbitMQ works
//! unchanged.
//!
//! Each question is a GET with a query string (or a POST with a form body)
//! to one URL; a 2xx answer whose body is `allow` (for `user_path`, possibly
//! followed by space-separated tags) grants, any other body denies. Anything
//! else (timeout, refused connection, non-2xx) fails closed. Answers, denials
//! included, are cached for `cache_ttl_ms`, keyed by the whole question
//! (passwords only as a salted hash).
//!
//! How a question reaches the service is an [`AuthTransport`]: over HTTP
//! ([`ReqwestTransport`], what [`HttpBackend::from_config`] uses), or
//! in-process (the Node addon injects it into an Express app). The protocol
//! (parameters, answers, cache, timeout, failing closed) is the same for all.
//! Only the HTTP transport needs the `http-auth` feature (reqwest); the
//! protocol is always compiled, for the Node addon's transport.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use url::Url;

use super::cache::{TtlCache, WarnLimiter};
use super::{AuthError, Authenticator, Authorizer, BoxFuture, ClientInfo, Identity, Permission, ResourceKind, Source};
use crate::config::{HttpAuthConfig, HttpAuthMethod};

/// Largest answer body read; an auth answer is a word and a few tags.
#[cfg(feature = "http-auth")]
const MAX_BODY: usize = 64 * 1024;
/// Whether an HTTP status carries an answer (anything else fails closed).
fn is_answer(status: u16) -> bool {
    (200..300).contains(&status)
}

/// How an auth question reaches the service: over HTTP ([`ReqwestTransport`]),
/// or in-process (the Node addon injects it into an Express app).
///
/// A transport only carries the request: [`HttpBackend`] builds the
/// parameters, reads the answer, caches, bounds the wait and fails closed.
pub trait AuthTransport: Send + Sync + 'static {
    /// Asks `path` (one of the backend's `*_path`s, as configured) with
    /// `params`, in the query string (`Get`) or as an
    /// `application/x-www-form-urlencoded` body (`Post`). `Ok((status, body))`:
    /// the service answered (only a 2xx status carries an answer; any other
    /// fails closed). `Err(why)`: it could not be asked (unreachable, failed).
    /// `why` reaches clients and logs: it must not contain the parameters.
    fn request<'a>(
        &'a self,
        method: HttpAuthMethod,
        path: &'a str,
        params: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(u16, String), String>>;
}

/// The HTTP transport: each path is a URL, asked with a shared reqwest client
/// (connections kept alive, no proxies, at most [`MAX_BODY`] bytes read).
#[cfg(feature = "http-auth")]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

#[cfg(feature = "http-auth")]
impl ReqwestTransport {
    /// `timeout` bounds the connection and each whole request.
    pub fn new(timeout: Duration) -> Result<ReqwestTransport, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .no_proxy()
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(ReqwestTransport { client })
    }

    async fn send(&self, method: HttpAuthMethod, url: &str, params: &[(&str, &str)]) -> Result<(u16, String), String> {
        let url = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let request = match method {
            HttpAuthMethod::Get => {
                let mut u = url;
                u.query_pairs_mut().extend_pairs(params);
                self.client.get(u)
            }
            HttpAuthMethod::Post => {
                let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
                self.client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
        };
        // No URL in the error (it reaches clients, and a GET's carries the
        // password); the rate-limited warning names the configured URL.
        let unavailable = |e: reqwest::Error| e.without_url().to_string();
        let mut response = request.send().await.map_err(unavailable)?;
        let status = response.status().as_u16();
        if !is_answer(status) {
            // The body is not read: only the status matters.
            return Ok((status, String::new()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("auth service sent more than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

#[cfg(feature = "http-auth")]
impl AuthTransport for ReqwestTransport {
    fn request<'a>(
        &'a self,
        method: HttpAuthMethod,
        path: &'a str,
        params: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(u16, String), String>> {
        Box::pin(self.send(method, path, params))
    }
}

/// A question to the service: also the cache key. `tags` are the user's,
/// space-separated, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Question {
    User {
        username: String,
        password: [u8; 32],
        ip: String,
    },
    Vhost {
        username: String,
        vhost: String,
        tags: String,
        ip: String,
    },
    Resource {
        username: String,
        vhost: String,
        kind: ResourceKind,
        name: String,
        permission: Permission,
        tags: String,
    },
    Topic {
        username: String,
        vhost: String,
        exchange: String,
        routing_key: String,
        permission: Permission,
        tags: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// With the tags after `allow` (user questions only).
    Allow(Vec<String>),
    Deny,
}

impl Answer {
    fn parse(body: &str) -> Answer {
        let mut words = body.split_whitespace();
        match words.next() {
            Some("allow") => Answer::Allow(words.map(str::to_owned).collect()),
            _ => Answer::Deny,
        }
    }
}

/// The HTTP auth backend: authenticator and authorizer, over any [`AuthTransport`].
pub struct HttpBackend {
    transport: Arc<dyn AuthTransport>,
    user: String,
    vhost: Option<String>,
    resource: Option<String>,
    topic: Option<String>,
    method: HttpAuthMethod,
    /// Bounds each question, whatever the transport.
    timeout: Duration,
    cache: Option<TtlCache<Question, Answer>>,
    /// Per process: cache keys hold `sha256(salt || password)`, never the password.
    salt: [u8; 16],
    warn: WarnLimiter,
}

impl std::fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBackend")
            .field("user", &self.user)
            .field("vhost", &self.vhost)
            .field("resource", &self.resource)
            .field("topic", &self.topic)
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpBackend {
    /// From a validated `[auth.http]`, over HTTP; errors name the bad key.
    pub fn from_config(c: &HttpAuthConfig) -> Result<HttpBackend, (&'static str, String)> {
        let check =
            |key: &'static str, s: &str| Url::parse(s).map(drop).map_err(|e| (key, format!("{s:?} is not a URL: {e}")));
        check("auth.http.user_path", &c.user_path)?;
        for (key, path) in [
            ("auth.http.vhost_path", &c.vhost_path),
            ("auth.http.resource_path", &c.resource_path),
            ("auth.http.topic_path", &c.topic_path),
        ] {
            path.as_deref().map(|s| check(key, s)).transpose()?;
        }
        let transport = http_transport(Duration::from_millis(c.timeout_ms)).map_err(|e| ("auth.http", e))?;
        Ok(HttpBackend::with_transport(transport, c))
    }

    /// Over `transport`: the `*_path`s are what it is asked (URLs for
    /// [`ReqwestTransport`]), `timeout_ms` bounds each question,
    /// `cache_ttl_ms = 0` disables the cache.
    pub fn with_transport(transport: Arc<dyn AuthTransport>, c: &HttpAuthConfig) -> HttpBackend {
        HttpBackend {
            transport,
            user: c.user_path.clone(),
            vhost: c.vhost_path.clone(),
            resource: c.resource_path.clone(),
            topic: c.topic_path.clone(),
            method: c.method,
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
            cache: (c.cache_ttl_ms > 0)
                .then(|| TtlCache::new(Duration::from_millis(c.cache_ttl_ms), c.cache_max_entries)),
            salt: rand::random(),
            warn: WarnLimiter::default(),
        }
    }

    fn password_hash(&self, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The cached answer, or the service's.
    async fn ask(&self, path: &str, question: Question, params: &[(&str, &str)]) -> Result<Answer, AuthError> {
        if let Some(answer) = self.cache.as_ref().and_then(|c| c.get(&question)) {
            return Ok(answer);
        }
        let answer = match tokio::time::timeout(self.timeout, self.transport.request(self.method, path, params)).await {
            Ok(Ok((status, body))) if is_answer(status) => Answer::parse(&body),
            Ok(Ok((status, _))) => return Err(self.unavailable(path, format!("auth service answered HTTP {status}"))),
            Ok(Err(why)) => return Err(self.unavailable(path, why)),
            Err(_) => {
                return Err(self
                    .unavailable(path, format!("auth service did not answer within {} ms", self.timeout.as_millis())))
            }
        };
        if let Some(c) = &self.cache {
            c.insert(question, answer.clone());
        }
        Ok(answer)
    }

    fn unavailable(&self, path: &str, why: String) -> AuthError {
        if let Some(suppressed) = self.warn.due() {
            tracing::warn!(url = path, error = why.as_str(), suppressed, "auth backend unavailable; failing closed");
        }
        AuthError::Unavailable(why)
    }

    async fn allowed(
        &self,
        path: &Option<String>,
        question: Question,
        params: &[(&str, &str)],
    ) -> Result<bool, AuthError> {
        match path {
            // An unset path grants, as in RabbitMQ's plugin.
            None => Ok(true),
            Some(path) => Ok(self.ask(path, question, params).await? != Answer::Deny),
        }
    }

    #[cfg(all(test, feature = "http-auth"))]
    fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, TtlCache::len)
    }
}

impl Authenticator for HttpBackend {
    /// Sends the plugin's `username` and `password`, and `ip` (the client's
    /// address, empty when unknown) so a service can throttle or allow by it.
    fn authenticate<'a>(
        &'a self,
        login: &'a str,
        password: &'a str,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let ip = client.ip_string();
            let question =
                Question::User { username: login.to_owned(), password: self.password_hash(password), ip: ip.clone() };
            match self.ask(&self.user, question, &[("username", login), ("password", password), ("ip", &ip)]).await? {
                Answer::Allow(tags) => Ok(Identity { uid: login.to_owned(), tags, source: Source::Http }),
                Answer::Deny => Err(AuthError::Refused),
            }
        })
    }
}

/// The permission questions carry the user's tags (what the login check
/// answered after `allow`), space-separated, as RabbitMQ sends them.
impl Authorizer for HttpBackend {
    fn vhost<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let tags = who.tags.join(" ");
            // `ip`: the client's address (the real one behind a trusted proxy).
            let ip = client.ip_string();
            let params =
                [("username", who.uid.as_str()), ("vhost", vhost), ("ip", ip.as_str()), ("tags", tags.as_str())];
            let question = Question::Vhost {
                username: who.uid.clone(),
                vhost: vhost.to_owned(),
                tags: tags.clone(),
                ip: ip.clone(),
            };
            self.allowed(&self.vhost, question, &params).await
        })
    }

    fn resource<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        kind: ResourceKind,
        name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let tags = who.tags.join(" ");
            let params = [
                ("username", who.uid.as_str()),
                ("vhost", vhost),
                ("resource", kind.as_str()),
                ("name", name),
                ("permission", permission.as_str()),
                ("tags", tags.as_str()),
            ];
            let question = Question::Resource {
                username: who.uid.clone(),
                vhost: vhost.to_owned(),
                kind,
                name: name.to_owned(),
                permission,
                tags: tags.clone(),
            };
            self.allowed(&self.resource, question, &params).await
        })
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
            let tags = who.tags.join(" ");
            let params = [
                ("username", who.uid.as_str()),
                ("vhost", vhost),
                ("resource", "topic"),
                ("name", exchange),
                ("permission", permission.as_str()),
                ("tags", tags.as_str()),
                ("routing_key", routing_key),
            ];
            let question = Question::Topic {
                username: who.uid.clone(),
                vhost: vhost.to_owned(),
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                permission,
                tags: tags.clone(),
            };
            self.allowed(&self.topic, question, &params).await
        })
    }

    fn decides_topics(&self) -> bool {
        self.topic.is_some()
    }

    fn decides_resources(&self) -> bool {
        self.resource.is_some()
    }
}

#[cfg(feature = "http-auth")]
fn http_transport(timeout: Duration) -> Result<Arc<dyn AuthTransport>, String> {
    Ok(Arc::new(ReqwestTransport::new(timeout)?))
}

#[cfg(not(feature = "http-auth"))]
fn http_transport(_timeout: Duration) -> Result<Arc<dyn AuthTransport>, String> {
    Err(crate::config::compiled_out("http-auth"))
}

// Against a real HTTP service, so over reqwest.
#[cfg(all(test, feature = "http-auth"))]
mod tests {
    use super::*;
    use crate::auth::testutil::AuthService;
    use parking_lot::Mutex;
    use std::time::Instant;

    fn config(svc: &AuthService, prefix: &str, extra: impl FnOnce(&mut HttpAuthConfig)) -> HttpBackend {
        let mut c = HttpAuthConfig {
            user_path: svc.url(&format!("{prefix}/user")),
            vhost_path: Some(svc.url(&format!("{prefix}/vhost"))),
            resource_path: Some(svc.url(&format!("{prefix}/resource"))),
            topic_path: Some(svc.url(&format!("{prefix}/topic"))),
            ..HttpAuthConfig::default()
        };
        extra(&mut c);
        HttpBackend::from_config(&c).unwrap()
    }

    fn who(uid: &str) -> Identity {
        Identity::new(uid, vec![])
    }

    #[tokio::test]
    async fn get_logins_tags_and_denials_are_cached() {
        let svc = AuthService::start().await;
        let b = config(&svc, "/auth", |_| {});
        let id = b.authenticate("alice", "pw", &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(
            id,
            Identity {
                uid: "alice".into(),
                tags: vec!["administrator".into(), "management".into()],
                source: Source::Http
            }
        );
        assert_eq!(b.authenticate("bob", "pw", &ClientInfo::LOCAL).await.unwrap().tags, Vec::<String>::new());
        assert_eq!(b.authenticate("alice", "wrong", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert_eq!(
            b.authenticate("weird", "pw", &ClientInfo::LOCAL).await,
            Err(AuthError::Refused),
            "a body other than allow/deny denies"
        );
        let req = svc.requests("/auth/user");
        assert_eq!(req.len(), 4);
        assert!(req.iter().all(|r| r.method == "GET"));
        assert_eq!(req[0].params.get("username").map(String::as_str), Some("alice"));
        assert_eq!(req[0].params.get("password").map(String::as_str), Some("pw"));
        // Asked again: all four from the cache, the denials too.
        b.authenticate("alice", "pw", &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(b.authenticate("alice", "wrong", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert_eq!(b.authenticate("weird", "pw", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert_eq!(svc.requests("/auth/user").len(), 4);
        // A different password is a different question.
        assert_eq!(b.authenticate("alice", "wrong2", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert_eq!(svc.requests("/auth/user").len(), 5);
    }

    #[tokio::test]
    async fn post_sends_a_form_body() {
        let svc = AuthService::start().await;
        let b = config(&svc, "/auth", |c| c.method = HttpAuthMethod::Post);
        assert_eq!(b.authenticate("alice", "p&w=d ü", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        let r = &svc.requests("/auth/user")[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
        assert_eq!(r.params.get("password").map(String::as_str), Some("p&w=d ü"), "form-encoded");
        assert!(r.query.is_none(), "nothing in the URL");
        assert!(b.authenticate("alice", "pw", &ClientInfo::LOCAL).await.is_ok());
        assert!(b.resource(&who("alice"), "/", ResourceKind::Exchange, "feed", Permission::Write).await.unwrap());
        assert_eq!(svc.requests("/auth/resource")[0].method, "POST");
    }

    /// Issue 19: the `ip` parameter was always empty. The client's address
    /// reaches both the login and the vhost question, and is part of the
    /// cache key (a service may answer by address).
    #[tokio::test]
    async fn the_client_address_is_sent_as_ip() {
        let svc = AuthService::start().await;
        let b = config(&svc, "/auth", |c| c.cache_ttl_ms = 60_000);
        let from = |ip: &str| ClientInfo {
            addr: Some(std::net::SocketAddr::new(ip.parse().unwrap(), 40000)),
            protocol: crate::session::Protocol::Stomp,
            transport: crate::transport::Transport::Ws,
        };
        let alice = b.authenticate("alice", "pw", &from("203.0.113.7")).await.unwrap();
        assert_eq!(svc.requests("/auth/user")[0].params["ip"], "203.0.113.7");
        assert!(b.vhost(&alice, "/", &from("2001:db8::1")).await.unwrap());
        assert_eq!(svc.requests("/auth/vhost")[0].params["ip"], "2001:db8::1");
        b.authenticate("alice", "pw", &from("198.51.100.1")).await.unwrap();
        assert_eq!(svc.requests("/auth/user").len(), 2, "another address is another question");
    }

    #[tokio::test]
    async fn authorizer_questions_carry_the_protocol_parameters() {
        let svc = AuthService::start().await;
        let b = config(&svc, "/auth", |_| {});
        let alice = who("alice");
        assert!(b.vhost(&alice, "/", &ClientInfo::LOCAL).await.unwrap());
        assert!(!b.vhost(&alice, "other", &ClientInfo::LOCAL).await.unwrap());
        let v = &svc.requests("/auth/vhost")[0].params;
        assert_eq!((v["username"].as_str(), v["vhost"].as_str()), ("alice", "/"));
        assert_eq!((v["ip"].as_str(), v["tags"].as_str()), ("", ""));

        assert!(b.resource(&alice, "/", ResourceKind::Queue, "jobs", Permission::Configure).await.unwrap());
        assert!(!b.resource(&alice, "/", ResourceKind::Exchange, "private", Permission::Write).await.unwrap());
        let r = &svc.requests("/auth/resource")[1].params;
        let got: Vec<&str> =
            ["username", "vhost", "resource", "name", "permission", "tags"].iter().map(|k| r[*k].as_str()).collect();
        assert_eq!(got, ["alice", "/", "exchange", "private", "write", ""]);

        assert!(b.topic(&alice, "/", "amq.topic", "alice.news", Permission::Write).await.unwrap());
        assert!(!b.topic(&alice, "/", "amq.topic", "bob.news", Permission::Read).await.unwrap());
        let t = &svc.requests("/auth/topic")[1].params;
        let got: Vec<&str> = ["username", "vhost", "resource", "name", "permission", "tags", "routing_key"]
            .iter()
            .map(|k| t[*k].as_str())
            .collect();
        assert_eq!(got, ["alice", "/", "topic", "amq.topic", "read", "", "bob.news"]);

        // Cached, per full question.
        assert!(!b.topic(&alice, "/", "amq.topic", "bob.news", Permission::Read).await.unwrap());
        assert!(b.topic(&alice, "/", "amq.topic", "bob.news", Permission::Write).await.is_ok());
        assert_eq!(svc.requests("/auth/topic").len(), 3);
    }

    #[tokio::test]
    async fn unset_paths_allow() {
        let svc = AuthService::start().await;
        let b = config(&svc, "/auth", |c| {
            c.vhost_path = None;
            c.resource_path = None;
            c.topic_path = None;
        });
        let alice = who("alice");
        assert!(b.vhost(&alice, "anything", &ClientInfo::LOCAL).await.unwrap());
        assert!(b.resource(&alice, "/", ResourceKind::Exchange, "private", Permission::Write).await.unwrap());
        assert!(b.topic(&alice, "/", "x", "bob.news", Permission::Write).await.unwrap());
        assert_eq!(svc.total(), 0);
    }

    #[tokio::test]
    async fn cache_expires_and_can_be_disabled() {
        let svc = AuthService::start().await;
        let b = config(&svc, "/auth", |c| c.cache_ttl_ms = 150);
        b.authenticate("alice", "pw", &ClientInfo::LOCAL).await.unwrap();
        b.authenticate("alice", "pw", &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(svc.requests("/auth/user").len(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.authenticate("alice", "pw", &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(svc.requests("/auth/user").len(), 2, "expired");

        let b = config(&svc, "/auth", |c| c.cache_ttl_ms = 0);
        for _ in 0..3 {
            b.authenticate("bob", "pw", &ClientInfo::LOCAL).await.unwrap();
        }
        assert_eq!(svc.requests("/auth/user").len(), 5, "no cache");
    }

    #[tokio::test]
    async fn cache_is_bounded_oldest_first() {
        let svc = AuthService::start().await;
        let b = config(&svc, "/auth", |c| c.cache_max_entries = 3);
        let alice = who("alice");
        for q in ["a", "b", "c", "d"] {
            b.resource(&alice, "/", ResourceKind::Queue, q, Permission::Read).await.unwrap();
        }
        assert_eq!(b.cached(), 3);
        b.resource(&alice, "/", ResourceKind::Queue, "d", Permission::Read).await.unwrap();
        assert_eq!(svc.requests("/auth/resource").len(), 4, "newest still cached");
        b.resource(&alice, "/", ResourceKind::Queue, "a", Permission::Read).await.unwrap();
        assert_eq!(svc.requests("/auth/resource").len(), 5, "oldest was evicted");
        assert_eq!(b.cached(), 3);
    }

    #[tokio::test]
    async fn slow_failing_or_absent_backends_fail_closed() {
        let svc = AuthService::start().await;
        // Slow: the timeout answers.
        let b = config(&svc, "/slow", |c| c.timeout_ms = 200);
        let t = Instant::now();
        assert!(matches!(b.authenticate("alice", "pw", &ClientInfo::LOCAL).await, Err(AuthError::Unavailable(_))));
        assert!(b.vhost(&who("alice"), "/", &ClientInfo::LOCAL).await.is_err());
        assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
        // Non-2xx: unavailable, and not cached.
        let b = config(&svc, "/fail", |_| {});
        let Err(AuthError::Unavailable(why)) = b.authenticate("alice", "pw", &ClientInfo::LOCAL).await else {
            panic!("500 must be unavailable")
        };
        assert!(why.contains("500") && !why.contains("pw"), "{why}");
        assert!(b.resource(&who("alice"), "/", ResourceKind::Queue, "q", Permission::Read).await.is_err());
        assert!(b.authenticate("alice", "pw", &ClientInfo::LOCAL).await.is_err());
        assert_eq!(svc.requests("/fail/user").len(), 2, "failures are not cached");
        // Nobody listening.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = HttpAuthConfig { user_path: format!("http://127.0.0.1:{port}/auth/user"), ..HttpAuthConfig::default() };
        let b = HttpBackend::from_config(&c).unwrap();
        let t = Instant::now();
        let Err(AuthError::Unavailable(why)) = b.authenticate("alice", "secret-pw", &ClientInfo::LOCAL).await else {
            panic!("down must be unavailable")
        };
        assert!(!why.contains("secret-pw"), "{why}");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    type Reply = Result<(u16, String), String>;
    /// What the fake answers a path and its parameters; `None`: never.
    type Replier = fn(&str, &[(&str, &str)]) -> Option<Reply>;
    type Asked = (HttpAuthMethod, String, Vec<(String, String)>);

    /// An in-memory transport: records each request and answers from `reply`.
    struct Fake {
        log: Mutex<Vec<Asked>>,
        reply: Replier,
    }

    impl AuthTransport for Fake {
        fn request<'a>(
            &'a self,
            method: HttpAuthMethod,
            path: &'a str,
            params: &'a [(&'a str, &'a str)],
        ) -> BoxFuture<'a, Result<(u16, String), String>> {
            let owned = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            self.log.lock().push((method, path.to_owned(), owned));
            let reply = (self.reply)(path, params);
            Box::pin(async move {
                match reply {
                    Some(r) => r,
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn fake(reply: Replier, c: HttpAuthConfig) -> (Arc<Fake>, HttpBackend) {
        let t = Arc::new(Fake { log: Mutex::default(), reply });
        (t.clone(), HttpBackend::with_transport(t, &c))
    }

    #[tokio::test]
    async fn any_transport_gets_the_protocol_cache_timeout_and_failing_closed() {
        let c = HttpAuthConfig {
            user_path: "/u".into(),
            vhost_path: Some("/v".into()),
            topic_path: Some("/t".into()),
            method: HttpAuthMethod::Post,
            timeout_ms: 100,
            cache_ttl_ms: 0,
            ..HttpAuthConfig::default()
        };
        let (t, b) = fake(
            |path, p| {
                let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
                Some(match (path, get("username")) {
                    ("/u", Some("admin")) => Ok((201, "allow administrator management".into())),
                    ("/u", Some("down")) => Err("refused".into()),
                    ("/u", Some("teapot")) => Ok((418, "allow".into())),
                    ("/u", Some("slow")) => return None,
                    ("/u", _) => Ok((200, "deny".into())),
                    ("/v", _) if get("tags") == Some("administrator management") => Ok((200, "allow".into())),
                    _ => Ok((200, "deny".into())),
                })
            },
            c,
        );
        let admin = b.authenticate("admin", "pw", &ClientInfo::LOCAL).await.unwrap();
        assert_eq!(admin.tags, ["administrator", "management"]);
        assert_eq!(b.authenticate("eve", "pw", &ClientInfo::LOCAL).await, Err(AuthError::Refused));
        assert!(b.vhost(&admin, "/", &ClientInfo::LOCAL).await.unwrap(), "tags reach the service");
        assert!(!b.vhost(&who("admin"), "/", &ClientInfo::LOCAL).await.unwrap());
        assert!(
            b.resource(&admin, "/", ResourceKind::Queue, "q", Permission::Read).await.unwrap(),
            "unset path allows"
        );
        assert!(!b.topic(&admin, "/", "amq.topic", "k", Permission::Write).await.unwrap());
        // Cache off: every question reaches the transport, as asked.
        assert!(b.vhost(&admin, "/", &ClientInfo::LOCAL).await.unwrap());
        let log = t.log.lock().clone();
        let paths: Vec<&str> = log.iter().map(|(_, p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/u", "/u", "/v", "/v", "/t", "/v"]);
        assert!(log.iter().all(|(m, _, _)| *m == HttpAuthMethod::Post));
        let keys: Vec<&str> = log[4].2.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["username", "vhost", "resource", "name", "permission", "tags", "routing_key"]);

        // Failing closed: a transport error, a non-2xx status, no answer in time.
        let Err(AuthError::Unavailable(why)) = b.authenticate("down", "pw", &ClientInfo::LOCAL).await else { panic!() };
        assert_eq!(why, "refused");
        let Err(AuthError::Unavailable(why)) = b.authenticate("teapot", "pw", &ClientInfo::LOCAL).await else {
            panic!()
        };
        assert!(why.contains("418"), "{why}");
        let t0 = Instant::now();
        let Err(AuthError::Unavailable(why)) = b.authenticate("slow", "pw", &ClientInfo::LOCAL).await else { panic!() };
        assert!(why.contains("100 ms") && t0.elapsed() < Duration::from_secs(1), "{why} {:?}", t0.elapsed());

        // With the cache on, a transport is asked once per question.
        let (t, b) = fake(
            |_, _| Some(Ok((200, "allow".into()))),
            HttpAuthConfig { user_path: "/u".into(), ..HttpAuthConfig::default() },
        );
        for _ in 0..3 {
            b.authenticate("alice", "pw", &ClientInfo::LOCAL).await.unwrap();
        }
        assert_eq!(t.log.lock().len(), 1);
    }

    #[test]
    fn answers_parse_like_the_plugin() {
        assert_eq!(Answer::parse("allow"), Answer::Allow(vec![]));
        assert_eq!(
            Answer::parse(" allow administrator  management\n"),
            Answer::Allow(vec!["administrator".into(), "management".into()])
        );
        assert_eq!(Answer::parse("deny"), Answer::Deny);
        assert_eq!(Answer::parse(""), Answer::Deny);
        assert_eq!(Answer::parse("allowed"), Answer::Deny);
        assert_eq!(Answer::parse("ALLOW"), Answer::Deny);
    }
}
