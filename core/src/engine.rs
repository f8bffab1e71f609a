//! The engine: one running node. A cheap-to-clone handle over `Arc<Shared>`
//! owned by the binary, the Node addon or a test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::throttle::{LoginThrottle, Throttled};
use crate::auth::{AuthError, Authenticator, Authorizer, ClientInfo, Identity};
use crate::config::Config;
use crate::directory::{Directory, DirectoryError, MemoryDirectory};
use crate::error::{CloseCode, CloseReason};
use crate::hub::Hub;
use crate::message::Message;
use crate::presence::service::{PresenceNotice, PresenceService, ResourceState};
use crate::presence::{Availability, MemoryPresence, PresenceError, PresenceStore, UserPresence};
use crate::router::{RouteError, Router};
use crate::session::{Outbound, SessionHandle};
use crate::store::{MemoryStore, QueueStore};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("engine already started")]
    AlreadyStarted,
    #[error(transparent)]
    Presence(#[from] PresenceError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Destination(crate::stomp::destination::DestinationError),
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// Why [`Engine::login`] did not let a client in. The texts are what clients
/// see (STOMP ERROR `message`, XMPP SASL `<text/>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Wrong user or password.
    #[error("access refused")]
    Refused,
    /// The auth source could not answer; fail closed.
    #[error("authentication backend unavailable: {0}")]
    Unavailable(String),
    /// The hashing pool is full (`[login] hash_queue`, `hash_timeout_ms`).
    #[error("server busy: too many logins in progress, retry later")]
    Busy,
    /// Backed off after failed logins (`[login]`); the password was not checked.
    #[error("{0}")]
    Throttled(Throttled),
}

/// The authentication and authorization sources in use; swappable at run time
/// (the Node addon installs JS callbacks after construction).
#[derive(Clone)]
pub struct AuthSources {
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
}

pub struct Shared {
    pub config: Config,
    /// `[[users]]` names, for constant-time "is this a user?" questions
    /// (`auth::policy`'s queue owners) instead of a scan of the config.
    pub user_names: std::collections::HashSet<String>,
    pub hub: Hub,
    pub router: Router,
    auth: RwLock<AuthSources>,
    /// Failed-login limits, one for every protocol (`Engine::login`).
    logins: LoginThrottle,
    pub presence: PresenceService,
    events: tokio::sync::broadcast::Sender<EngineEvent>,
    /// Session and presence events only: the admin stream listens here so an
    /// open console does not make every publish copy its body into an event.
    changes: tokio::sync::broadcast::Sender<EngineEvent>,
    presence_store: RwLock<Arc<dyn PresenceStore>>,
    directory: RwLock<Arc<dyn Directory>>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// Caps open client connections across every listener.
    pub connections: Arc<Semaphore>,
    /// Admission of every connection: the `connections` cap, per-address and
    /// unauthenticated caps, trusted proxies (transport/conn.rs).
    pub gate: Arc<crate::transport::conn::Gate>,
    pub started_at: Instant,
    listeners: parking_lot::Mutex<Vec<Listener>>,
}

/// A bound listener, as reported at start (`herald: listening <name> <addr>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: &'static str,
    pub addr: SocketAddr,
}

#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::ops::Deref for Engine {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What happened in the engine, for the Node addon's `engine.on(...)` and
/// the admin stream. Sent on a bounded broadcast channel: a listener that
/// falls behind loses the oldest events, the engine never waits.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum EngineEvent {
    #[serde(rename_all = "camelCase")]
    Session {
        event: &'static str,
        session: u64,
        uid: String,
        protocol: &'static str,
        transport: &'static str,
        reason: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Presence { uid: String, state: &'static str, status: String },
    #[serde(rename_all = "camelCase")]
    Message {
        vhost: String,
        exchange: String,
        routing_key: String,
        destination: String,
        headers: Vec<(String, String)>,
        body: String,
        sender: Option<String>,
    },
}

const EVENT_BACKLOG: usize = 4096;

/// What the memory alarm measured at its last check, with the process RSS
/// beside it (docs/security.md, "Memory").
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MemoryUse {
    /// Message bytes held: queues (ready and unacked) + outboxes + open
    /// transactions. This is what `limits.memory_high_watermark` bounds.
    pub held_bytes: u64,
    pub queue_bytes: u64,
    pub outbox_bytes: u64,
    pub transaction_bytes: u64,
    /// Resident set size of the process (Linux `/proc/self/status`), when readable.
    pub rss_bytes: Option<u64>,
    /// `limits.memory_high_watermark` in bytes; `None` = off.
    pub high_watermark: Option<u64>,
    /// Publishing is refused while this is true.
    pub alarm: bool,
}

/// `VmRSS` of this process, bytes.
pub fn process_rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// A snapshot for stats, the admin API and the Node addon.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub node: String,
    pub uptime_secs: u64,
    pub sessions: usize,
    pub users_online: usize,
    pub sessions_by_transport: std::collections::BTreeMap<String, usize>,
    pub queues: usize,
    pub messages_ready: usize,
    pub messages_unacked: usize,
}

impl Engine {
    /// Builds an engine from a validated config with in-memory backends.
    pub fn new(config: Config) -> Result<Engine, EngineError> {
        Self::with_store(config, Arc::new(MemoryStore::default()))
    }

    pub fn with_store(config: Config, store: Arc<dyn QueueStore>) -> Result<Engine, EngineError> {
        config.validate()?;
        let auth = crate::auth::Chain::from_config(&config)?.into();
        let router = Router::new(&config, store)?;
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        let gate = Arc::new(crate::transport::conn::Gate::new(&config, connections.clone()));
        Ok(Engine {
            shared: Arc::new(Shared {
                hub: Hub::default(),
                router,
                auth: RwLock::new(auth),
                logins: LoginThrottle::new(&config.login),
                presence: PresenceService::new(&config.node.name),
                events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
                changes: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
                presence_store: RwLock::new(Arc::new(MemoryPresence::default())),
                directory: RwLock::new(Arc::new(MemoryDirectory::from_config(&config))),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                connections,
                gate,
                started_at: Instant::now(),
                listeners: parking_lot::Mutex::new(Vec::new()),
                user_names: config.users.iter().map(|u| u.name.clone()).collect(),
                config,
            }),
        })
    }

    pub fn auth(&self) -> AuthSources {
        self.auth.read().clone()
    }

    pub fn set_auth(&self, sources: AuthSources) {
        *self.auth.write() = sources;
    }

    /// Checks a login with a password (STOMP CONNECT, SASL PLAIN), through
    /// the failed-login limits: every session logs in here, never at the
    /// authenticator directly. While `client` or `login` is backed off the
    /// password is not checked.
    pub async fn login(&self, login: &str, password: &str, client: &ClientInfo) -> Result<Identity, LoginError> {
        self.login_allowed(login, client)?;
        let result = self.auth().authenticator.authenticate(login, password, client).await;
        self.login_finished(login, client, result)
    }

    /// For logins the session verifies itself (SCRAM): whether `login` may
    /// try now. Pair with [`Engine::login_finished`].
    pub fn login_allowed(&self, login: &str, client: &ClientInfo) -> Result<(), LoginError> {
        self.logins.check(login, client).map_err(|t| {
            tracing::info!(login, addr = ?client.addr, protocol = client.protocol, "login refused: {t}");
            LoginError::Throttled(t)
        })
    }

    /// Records the outcome of a login: a refusal counts as a failure; a
    /// busy or unavailable source counts as nothing (no password was judged).
    pub fn login_finished(
        &self,
        login: &str,
        client: &ClientInfo,
        result: Result<Identity, AuthError>,
    ) -> Result<Identity, LoginError> {
        match result {
            Ok(id) => {
                self.logins.success(login, client);
                Ok(id)
            }
            Err(AuthError::Refused) => {
                self.logins.failure(login, client);
                Err(LoginError::Refused)
            }
            Err(AuthError::Busy) => Err(LoginError::Busy),
            Err(AuthError::Unavailable(e)) => Err(LoginError::Unavailable(e)),
        }
    }

    /// Engine events from now on (sessions, presence, messages).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.events.subscribe()
    }

    /// Session and presence events from now on (no messages).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.changes.subscribe()
    }

    /// Sends a session or presence event to every listener.
    fn emit(&self, event: impl FnOnce() -> EngineEvent) {
        let all = self.events.receiver_count() > 0;
        if !all && self.changes.receiver_count() == 0 {
            return;
        }
        let event = event();
        let _ = self.changes.send(event.clone());
        if all {
            let _ = self.events.send(event);
        }
    }

    /// A session authenticated: it is in the hub from now on.
    pub fn session_opened(&self, s: &Arc<SessionHandle>) {
        self.hub.register(s.clone());
        self.emit(|| EngineEvent::Session {
            event: "open",
            session: s.id,
            uid: s.uid.to_string(),
            protocol: s.protocol,
            transport: s.transport,
            reason: None,
        });
    }

    /// A session ended: out of the hub.
    pub fn session_closed(&self, s: &SessionHandle) {
        if self.hub.unregister(s.id).is_some() {
            self.emit(|| EngineEvent::Session {
                event: "close",
                session: s.id,
                uid: s.uid.to_string(),
                protocol: s.protocol,
                transport: s.transport,
                reason: s.close_reason().map(|r| r.to_string()),
            });
        }
    }

    /// Routes a message in a vhost: every publish (STOMP SEND, XMPP message,
    /// the API) goes through here, and is refused while the memory alarm is
    /// on (`limits.memory_high_watermark`).
    pub fn route(&self, vhost: &crate::router::Vhost, message: Message) -> Result<usize, RouteError> {
        self.router.alarm.check()?;
        self.route_always(vhost, message)
    }

    /// Routes even under the memory alarm: the engine's own small presence
    /// events, which clients' views of who is online depend on.
    fn route_always(&self, vhost: &crate::router::Vhost, message: Message) -> Result<usize, RouteError> {
        // Built only when someone listens to messages: the event copies the body.
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(EngineEvent::Message {
                vhost: vhost.name.to_string(),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                destination: message.destination(),
                headers: message.headers.clone(),
                body: String::from_utf8_lossy(&message.body).into_owned(),
                sender: message.sender.clone(),
            });
        }
        vhost.publish(message)
    }

    /// Publishes to a STOMP-style destination (`/exchange/feed/alice`,
    /// `/topic/a.b`, `/queue/jobs`, `/amq/queue/jobs`) on the default vhost,
    /// as the application (no permission check). A `/queue/` destination
    /// declares the queue (durable), as a STOMP SEND would.
    pub fn publish_to(
        &self,
        destination: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<usize, PublishError> {
        use crate::stomp::destination::Destination;
        let vhost = self.router.vhost(&self.config.stomp.default_vhost)?;
        let (exchange, key) = match Destination::parse(destination).map_err(PublishError::Destination)? {
            Destination::Exchange { exchange, key } => (exchange, key),
            Destination::Topic(key) => ("amq.topic".to_owned(), key),
            Destination::Queue(q) => {
                let opts = crate::router::QueueOptions { durable: true, exclusive: None, auto_delete: false };
                vhost.declare_queue(&q, opts, None)?;
                (String::new(), q)
            }
            Destination::AmqQueue(q) | Destination::ReplyQueue(q) => {
                if vhost.queue(&q).is_none() {
                    return Err(RouteError::NoQueue(q, vhost.name.to_string()).into());
                }
                (String::new(), q)
            }
            Destination::TempQueue(_) => {
                return Err(PublishError::Destination(crate::stomp::destination::DestinationError::Unknown(
                    destination.to_owned(),
                )))
            }
        };
        Ok(self.route(vhost, Message::new(exchange, key, headers, body))?)
    }

    /// Sets the presence of a user's STOMP (and other non-XMPP) sessions, as
    /// the application decides it (XMPP resources set their own). Returns
    /// how many sessions it applied to; a user without such sessions is
    /// unchanged (presence follows connections).
    pub async fn set_user_presence(&self, uid: &str, availability: Availability, status: &str) -> usize {
        let sessions: Vec<Arc<SessionHandle>> =
            self.hub.user_sessions(uid).into_iter().filter(|s| s.protocol != "xmpp").collect();
        for s in &sessions {
            self.set_session_presence(s, &format!("{}-{}", s.protocol, s.id), availability, status, 0).await;
        }
        sessions.len()
    }

    pub fn presence_store(&self) -> Arc<dyn PresenceStore> {
        self.presence_store.read().clone()
    }

    pub fn set_presence_store(&self, store: Arc<dyn PresenceStore>) {
        *self.presence_store.write() = store;
    }

    pub fn directory(&self) -> Arc<dyn Directory> {
        self.directory.read().clone()
    }

    pub fn set_directory(&self, directory: Arc<dyn Directory>) {
        *self.directory.write() = directory;
    }

    /// Sets one session's presence (XMPP resource, or a STOMP session as
    /// `stomp-<id>`), then tells everyone who should know: the store and the
    /// `presence` exchange when the user's aggregate changed, and the XMPP
    /// sessions of the user's contacts (and the user's own) per resource.
    pub async fn set_session_presence(
        &self,
        session: &SessionHandle,
        resource: &str,
        availability: Availability,
        status: &str,
        priority: i8,
    ) {
        let state = ResourceState {
            session: session.id,
            resource: resource.to_owned(),
            availability,
            status: status.to_owned(),
            priority,
        };
        let update = self.presence.update(&session.uid, session.id, Some(state.clone()));
        // Contacts already have exactly this state: a repeated presence is not
        // broadcast again (nor written to the store).
        if update.unchanged {
            return;
        }
        self.announce(&session.uid, state, update.aggregate_changed).await;
    }

    /// Forgets a session's presence (it ended or sent unavailable). Only a
    /// session that had announced itself is announced gone, once.
    pub async fn remove_session_presence(&self, session: &SessionHandle, resource: &str) {
        let update = self.presence.update(&session.uid, session.id, None);
        if !update.existed {
            return;
        }
        let gone = ResourceState {
            session: session.id,
            resource: resource.to_owned(),
            availability: Availability::Offline,
            status: String::new(),
            priority: 0,
        };
        self.announce(&session.uid, gone, update.aggregate_changed).await;
    }

    async fn announce(&self, uid: &str, state: ResourceState, aggregate_changed: bool) {
        let projects = match self.directory().projects_of(uid).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(uid, error = %e, "directory unavailable; presence goes to the user's own sessions only");
                Vec::new()
            }
        };
        if aggregate_changed {
            let store = self.presence_store();
            let change = self.presence.sync_store(store.as_ref(), uid).await;
            self.emit(|| EngineEvent::Presence {
                uid: uid.to_owned(),
                state: change.availability.as_str(),
                status: change.status.clone(),
            });
            for p in &projects {
                let r = if change.availability == Availability::Offline {
                    store.remove_online(&p.id, uid).await
                } else {
                    store.add_online(&p.id, uid).await
                };
                if let Err(e) = r {
                    tracing::warn!(uid, project = %p.id, error = %e, "presence store: online set not updated");
                }
                let body = crate::presence::service::event_json(&change, &p.id);
                let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
                let key = format!("{}.{}", p.id, uid);
                let routed = self.router.vhost(&self.config.stomp.default_vhost).and_then(|v| {
                    self.route_always(
                        v,
                        Message::new(self.config.exchanges.presence.as_str(), key, headers, Bytes::from(body)),
                    )
                });
                if let Err(e) = routed {
                    tracing::warn!(error = %e, "presence event not published");
                }
            }
        }
        let notice = Arc::new(PresenceNotice { uid: uid.to_owned(), state });
        let mut recipients: Vec<&str> = vec![uid];
        for p in &projects {
            recipients.extend(p.members.iter().map(String::as_str));
        }
        recipients.sort_unstable();
        recipients.dedup();
        for r in recipients {
            for s in self.hub.user_sessions(r) {
                if s.protocol == "xmpp" && s.id != notice.state.session {
                    // A full outbox closes that session as a slow consumer; presence is not requeued.
                    let _ = s.offer(Outbound::Presence(notice.clone()));
                }
            }
        }
    }

    /// Members of the user's projects (not the user), each with the names of
    /// the projects they share: the user's roster.
    pub async fn contacts(&self, uid: &str) -> Result<Vec<(String, Vec<String>)>, DirectoryError> {
        let mut out: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
        for p in self.directory().projects_of(uid).await? {
            for m in p.members.iter().filter(|m| m.as_str() != uid) {
                out.entry(m.clone()).or_default().push(p.name.clone());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Users online in a project, from the presence store.
    pub async fn online_users(&self, project: &str) -> Result<Vec<String>, PresenceError> {
        let mut v = self.presence_store().online(project).await?;
        v.sort();
        Ok(v)
    }

    /// A user's aggregated presence, from the presence store.
    pub async fn user_presence(&self, uid: &str) -> Result<Option<UserPresence>, PresenceError> {
        self.presence_store().get_user(uid).await
    }

    /// Replaces a project's members; everyone affected gets a roster push,
    /// and online sets follow.
    pub async fn set_project_members(&self, project: &str, members: Vec<String>) -> Result<(), DirectoryError> {
        let dir = self.directory();
        let before = dir.project(project).await?.map(|p| p.members).unwrap_or_default();
        dir.set_members(project, &members).await?;
        let store = self.presence_store();
        for uid in before.iter().filter(|u| !members.contains(u)) {
            let _ = store.remove_online(project, uid).await;
            self.unbind_from_project(project, uid);
        }
        for uid in members.iter().filter(|u| !before.contains(u)) {
            if self.presence.aggregate(uid).0 != Availability::Offline {
                let _ = store.add_online(project, uid).await;
            }
        }
        let mut affected: Vec<&String> = before.iter().chain(members.iter()).collect();
        affected.sort_unstable();
        affected.dedup();
        for uid in affected {
            for s in self.hub.user_sessions(uid) {
                if s.protocol == "xmpp" {
                    let _ = s.offer(Outbound::RosterChanged);
                }
            }
        }
        Ok(())
    }

    /// A member removed from `project` stops reading it (docs/security.md
    /// "Access"): the bindings of their queues to `project/<pid>` and
    /// `presence/<pid>.…` go, those of live sessions and durable
    /// subscriptions alike (a durable queue would otherwise keep collecting
    /// the project's messages for them to read later).
    fn unbind_from_project(&self, project: &str, uid: &str) {
        let names = &self.config.exchanges;
        let sessions: Vec<crate::session::SessionId> = self.hub.user_sessions(uid).iter().map(|s| s.id).collect();
        let durable_prefix = format!("stomp-subscription-{uid}-");
        for vhost in self.router.vhosts() {
            for q in vhost.queues() {
                let theirs = q.owner.as_deref() == Some(uid)
                    || q.options.exclusive.is_some_and(|s| sessions.contains(&s))
                    || q.name.starts_with(&durable_prefix);
                if theirs {
                    vhost.unbind_where(&q, &names.project, |k| k == project);
                    vhost.unbind_where(&q, &names.presence, |k| k.split('.').next() == Some(project));
                }
            }
        }
    }

    /// Binds every configured listener and starts accepting. Returns the
    /// bound addresses (port 0 in the config picks a free port).
    pub async fn start(&self) -> Result<Vec<Listener>, EngineError> {
        if !self.listeners.lock().is_empty() {
            return Err(EngineError::AlreadyStarted);
        }
        self.connect_backends().await?;
        let mut bound = Vec::new();
        if let Some(addr) = self.config.stomp.listen {
            let l = crate::transport::tcp::bind(addr, "stomp-tcp").await?;
            bound.push(Listener {
                name: "stomp-tcp",
                addr: l.local_addr().map_err(|source| EngineError::Listen { what: "stomp-tcp", addr, source })?,
            });
            self.tasks.spawn(crate::transport::tcp::accept_loop(self.clone(), l, None));
        }
        if let Some(tls) = &self.config.stomp.tls {
            let acceptor = crate::transport::tcp::tls_acceptor(tls)?;
            let l = crate::transport::tcp::bind(tls.listen, "stomp-tls").await?;
            let addr = tls.listen;
            bound.push(Listener {
                name: "stomp-tls",
                addr: l.local_addr().map_err(|source| EngineError::Listen { what: "stomp-tls", addr, source })?,
            });
            self.tasks.spawn(crate::transport::tcp::accept_loop(self.clone(), l, Some(acceptor)));
        }
        if let Some(addr) = self.config.http.listen {
            let l = crate::transport::tcp::bind(addr, "http").await?;
            bound.push(Listener {
                name: "http",
                addr: l.local_addr().map_err(|source| EngineError::Listen { what: "http", addr, source })?,
            });
            self.tasks.spawn(crate::transport::http::serve(self.clone(), l));
        }
        crate::xmpp::listen(self, &mut bound).await?;
        crate::admin::listen(self, &mut bound).await?;
        self.tasks.spawn(self.clone().memory_monitor());
        *self.listeners.lock() = bound.clone();
        Ok(bound)
    }

    /// Swaps in the configured Redis / MongoDB backends (memory otherwise;
    /// `Config::validate` refused a backend whose Cargo feature is off).
    async fn connect_backends(&self) -> Result<(), EngineError> {
        #[cfg(feature = "redis")]
        if let crate::config::PresenceConfig::Redis { url, prefix } = &self.config.presence {
            let store = crate::presence::redis::RedisPresence::connect(url, prefix).await?;
            self.set_presence_store(Arc::new(store));
        }
        #[cfg(feature = "mongodb")]
        if let crate::config::DirectoryConfig::Mongodb {
            uri,
            database,
            collection,
            id_field,
            name_field,
            members_field,
        } = &self.config.directory
        {
            let mapping = crate::directory::mongo::MongoMapping {
                collection: collection.clone(),
                id_field: id_field.clone(),
                name_field: name_field.clone(),
                members_field: members_field.clone(),
            };
            let dir = crate::directory::mongo::MongoDirectory::connect(uri, database, mapping).await?;
            self.set_directory(Arc::new(dir));
        }
        Ok(())
    }

    pub fn listeners(&self) -> Vec<Listener> {
        self.listeners.lock().clone()
    }

    /// Stops accepting, closes every session (clients get a shutdown error)
    /// and waits up to `grace` for their tasks to finish.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        self.hub.close_all(CloseReason::new(CloseCode::Shutdown, "server shutting down"));
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(left = self.tasks.len(), "tasks still running after the shutdown grace period");
        }
    }

    /// Publishes in-process, as a client's SEND would (no permission check:
    /// the caller is the application itself). Returns how many queues took it.
    pub fn publish(
        &self,
        vhost: &str,
        exchange: &str,
        routing_key: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<usize, RouteError> {
        self.route(self.router.vhost(vhost)?, Message::new(exchange, routing_key, headers, body))
    }

    /// Pushes to every session of one user, on the default vhost's `feed` exchange.
    pub fn send_to_user(&self, uid: &str, headers: Vec<(String, String)>, body: Bytes) -> Result<usize, RouteError> {
        self.publish(&self.config.stomp.default_vhost, &self.config.exchanges.feed, uid, headers, body)
    }

    /// Measures the message bytes the node holds and sets or clears the
    /// memory alarm. The engine runs it every `limits.memory_check_interval_ms`.
    pub fn check_memory(&self) -> MemoryUse {
        let queue_bytes: u64 = self.router.vhosts().map(|v| v.held_bytes()).sum();
        let outbox_bytes = self.hub.sum_sessions(|s| s.queued_bytes() as u64);
        let transaction_bytes = self.router.alarm.transaction_bytes() as u64;
        let held_bytes = queue_bytes + outbox_bytes + transaction_bytes;
        let alarm = &self.router.alarm;
        if alarm.update(held_bytes) {
            if alarm.is_on() {
                tracing::warn!(
                    held_bytes,
                    watermark = alarm.watermark(),
                    "memory alarm: above the high watermark, publishing refused"
                );
            } else {
                tracing::info!(held_bytes, watermark = alarm.watermark(), "memory alarm cleared, publishing resumes");
            }
        }
        MemoryUse {
            held_bytes,
            queue_bytes,
            outbox_bytes,
            transaction_bytes,
            rss_bytes: process_rss_bytes(),
            high_watermark: alarm.watermark(),
            alarm: alarm.is_on(),
        }
    }

    /// Re-checks memory periodically while the engine runs (only when a
    /// watermark is set: with "off" nothing is measured).
    async fn memory_monitor(self) {
        if self.router.alarm.watermark().is_none() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.limits.memory_check_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => { self.check_memory(); }
            }
        }
    }

    /// Closes every session of a user; returns how many.
    pub fn kick(&self, uid: &str) -> usize {
        self.hub.kick_user(uid, CloseReason::new(CloseCode::Kicked, "kicked"))
    }

    pub fn stats(&self) -> Stats {
        let mut by_transport = std::collections::BTreeMap::new();
        for s in self.hub.sessions() {
            *by_transport.entry(format!("{}/{}", s.protocol, s.transport)).or_insert(0) += 1;
        }
        let (mut queues, mut ready, mut unacked) = (0, 0, 0);
        for v in self.router.vhosts() {
            for q in v.queues() {
                queues += 1;
                ready += q.depth();
                unacked += q.unacked_count();
            }
        }
        Stats {
            node: self.config.node.name.clone(),
            uptime_secs: self.started_at.elapsed().as_secs(),
            sessions: self.hub.session_count(),
            users_online: self.hub.user_count(),
            sessions_by_transport: by_transport,
            queues,
            messages_ready: ready,
            messages_unacked: unacked,
        }
    }
}

#[cfg(test)]
mod login_tests {
    use super::*;

    /// Every protocol logs in through `Engine::login` (PLAIN) or
    /// `login_allowed`/`login_finished` (SCRAM): one count for both.
    #[tokio::test]
    async fn the_login_gate_counts_failures_across_mechanisms() {
        let config = Config::from_toml_str(
            "[login]\nmax_failures_per_user = 3\n[[users]]\nname = \"alice\"\npassword = \"pw\"\n",
        )
        .unwrap();
        let engine = Engine::new(config).unwrap();
        let client = ClientInfo { addr: Some("192.0.2.1:5000".parse().unwrap()), protocol: "xmpp", transport: "tcp" };
        assert_eq!(engine.login("alice", "no", &client).await, Err(LoginError::Refused));
        // A failed SCRAM proof counts like a wrong PLAIN password.
        engine.login_allowed("alice", &client).unwrap();
        assert_eq!(engine.login_finished("alice", &client, Err(AuthError::Refused)), Err(LoginError::Refused));
        assert_eq!(engine.login("alice", "no", &client).await, Err(LoginError::Refused));
        let Err(LoginError::Throttled(t)) = engine.login("alice", "pw", &client).await else { panic!("backed off") };
        assert_eq!(t.to_string(), "too many failed logins; retry in 1 s");
        assert!(matches!(engine.login_allowed("alice", &client), Err(LoginError::Throttled(_))), "SCRAM is gated too");
        // Busy and unavailable sources judge no password: not counted.
        let other = ClientInfo { addr: Some("192.0.2.2:5000".parse().unwrap()), ..client };
        for _ in 0..5 {
            assert_eq!(engine.login_finished("bob", &other, Err(AuthError::Busy)), Err(LoginError::Busy));
        }
        assert!(engine.login_allowed("bob", &other).is_ok());
    }
}
