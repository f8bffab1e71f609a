//! The engine: one running node. A cheap-to-clone handle over `Arc<Shared>`
//! owned by the binary, the Node addon or a test.
//!
//! Edges and the application reach the node through a few doors here:
//! every publish goes through [`Engine::route`], every session enters with
//! [`Engine::attach`] and leaves with [`Engine::detach`], and a session that
//! reads its user's feed (an XMPP resource) gets its queue from
//! [`Engine::open_inbox`]. A cluster Bus or a store hooks in at those doors.
//! Presence fan-out is `presence::fanout`'s; the engine lends it its parts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::throttle::{LoginThrottle, Throttled};
pub use crate::auth::AuthSources;
use crate::auth::{AuthError, ClientInfo, Identity};
use crate::config::Config;
use crate::directory::{Directory, DirectoryError, MemoryDirectory};
use crate::error::{CloseCode, CloseReason};
use crate::hub::Hub;
use crate::message::Message;
use crate::presence::fanout;
use crate::presence::service::{AggregateChange, PresenceService};
use crate::presence::{
    Availability, MemoryPresence, PresenceError, PresenceStore, SharedPresence, SharedResource, UserPresence,
};
use crate::router::{
    AckMode, ConsumerId, Destination, DestinationError, Queue, QueueOptions, RouteError, Router, Vhost,
};
use crate::session::{Capabilities, SessionHandle};
use crate::store::history::{
    now_ms, recover, DiskHistory, HistoryLimits, HistoryStore, MemoryHistory, Since, StreamKey,
};
use crate::store::offline::{MemoryOffline, OfflineError, OfflineLimits, OfflineMessage, OfflineStore};
use crate::store::offline_disk::DiskOffline;
use crate::store::{Disk, DiskOptions, DiskQueues, Durable, MemoryStore, QueueStore};

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
    #[error("data directory: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cluster: {0}")]
    Cluster(String),
}

impl From<crate::transport::tcp::ListenError> for EngineError {
    fn from(e: crate::transport::tcp::ListenError) -> EngineError {
        use crate::transport::tcp::ListenError;
        match e {
            ListenError::Bind { what, addr, source } => EngineError::Listen { what, addr, source },
            ListenError::Tls(reason) => EngineError::Tls(reason),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Destination(DestinationError),
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// What [`Engine::history`] reads.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Where to start (`x-stream-offset`'s values); `None` = all retained.
    pub since: Option<Since>,
    /// The epoch the caller last saw; another one means not recovered.
    pub epoch: Option<String>,
    /// At most this many messages (capped by `history.size`).
    pub limit: Option<usize>,
}

/// A key's history as [`Engine::history`] returns it.
#[derive(Debug, Clone)]
pub struct HistoryRead {
    pub epoch: String,
    /// The last offset assigned in this epoch (0 = none).
    pub top: u64,
    /// Oldest first; each has [`Message::stream`] set.
    pub messages: Vec<Arc<Message>>,
    /// With `since`: whether nothing was missed from there (as `x-recovered`).
    pub recovered: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{0} has no history: use /exchange/feed/<uid> or /exchange/project/<project id>")]
    NotHistory(String),
    #[error("history is off (history.size or history.ttl_ms is 0)")]
    Off,
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Who publishes: decides whether the memory alarm applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's session (STOMP SEND, XMPP message); permissions were checked by its edge.
    Session,
    /// The application in-process (Node addon, admin API, tests): no permission check.
    Application,
    /// The engine's own small presence events: they pass under the memory
    /// alarm, since clients' view of who is online depends on them.
    Engine,
    /// Another node's publish, received from the cluster Bus: routed to this
    /// node's bindings only (never published back onto the Bus).
    Bus,
}

/// One publish through the engine's door, [`Engine::route`]. The message is
/// built once; every queue it reaches shares it.
#[derive(Debug)]
pub struct Publish<'a> {
    pub vhost: &'a Vhost,
    pub message: Message,
    pub origin: Origin,
}

/// What a publish reached.
#[derive(Debug)]
pub struct Routed {
    /// Queues that took the message.
    pub queues: usize,
    /// The queue store's tickets when a persistent message reached durable
    /// queues on disk: a RECEIPT promising "on disk" waits for them. Empty
    /// otherwise (transient, or the store in memory).
    pub durable: Vec<Durable>,
}

/// A message to a user as offline storage would keep it (an XMPP
/// `<message/>` as routed), given to [`Engine::route_to_user`] by an edge
/// whose protocol says the message may be kept (XEP-0160: `chat` and
/// `normal`, not `headline`).
#[derive(Debug)]
pub struct Parcel {
    /// The sender's address as the server stamped it.
    pub from: String,
    pub stanza: Bytes,
    /// The recipient's resource when the message names one (an XMPP full
    /// JID): a session bound to it takes the message live, available or
    /// not (RFC 6121 §8.5.3.1, as ejabberd routes to a full JID).
    pub resource: Option<String>,
}

/// What [`Engine::route_to_user`] did.
#[derive(Debug)]
pub enum ToUser {
    /// The user has an available XMPP resource (or nothing could be kept):
    /// routed as any publish.
    Live(Routed),
    /// Nobody of the user's XMPP resources is available: kept until their
    /// next initial presence (durable once the ticket resolves), and routed
    /// too, marked `parked`, for the user's other sessions (STOMP).
    Parked(Durable),
}

#[derive(Debug, thiserror::Error)]
pub enum ToUserError {
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Offline storage refused: over the user's cap (`resource-constraint`)
    /// or the store failed.
    #[error(transparent)]
    Offline(#[from] OfflineError),
}

/// Striped locks that order "is anyone available? then keep it" against
/// "available now: what was kept?", so a message is never kept just after
/// the user's resource looked for what was kept.
const OFFLINE_GATES: usize = 64;

/// The private queue of a session that reads its user's feed and projects
/// (an XMPP resource), made by [`Engine::open_inbox`].
#[derive(Debug)]
pub struct Inbox {
    pub queue: Arc<Queue>,
    pub consumer: ConsumerId,
    /// Projects whose exchange binding the queue has, kept for rebinding
    /// when membership changes ([`Engine::follow_projects`]).
    pub projects: Vec<String>,
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
    /// Other nodes' presence notices waiting here (cluster).
    pub presence_backlog: crate::presence::Backlog,
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
    /// Set once by `Engine::start` (crate::listen).
    pub(crate) listeners: parking_lot::Mutex<Vec<Listener>>,
    /// The data directory, when `node.data_dir` is set (store/disk.rs).
    pub disk: Option<Arc<Disk>>,
    /// XEP-0160 offline storage (store/offline.rs): on disk when
    /// `node.data_dir` is set (store/offline_disk.rs), else in memory.
    pub offline: Arc<dyn OfflineStore>,
    /// What `offline` reads through: replaced by the cluster's Redis store.
    offline_slot: Arc<crate::store::offline::OfflineSlot>,
    /// Per-engine state of an edge, whose type the engine does not know
    /// (the engine imports no edge): XEP-0198's resumable sessions. Made on
    /// first use by [`Shared::edge_state`].
    edge_state: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
    offline_gates: Box<[parking_lot::Mutex<()>]>,
    /// The cluster Bus, set once by `cluster::join` when `[cluster]` is
    /// configured; unset on a single node.
    bus: std::sync::OnceLock<Arc<dyn crate::bus::Bus>>,
    /// Set while publishes reach this node only (the Bus refused one), so
    /// an outage is logged once, not per publish.
    bus_local_only: std::sync::atomic::AtomicBool,
    /// The cluster's Redis connection (the Bus's) and its command timeout,
    /// for the node registry, cluster presence and work queues.
    #[cfg(feature = "redis")]
    redis: std::sync::OnceLock<(crate::bus::redis::RedisConn, Duration)>,
    /// Presence shared with the other nodes (the cluster's Redis), set
    /// once by `cluster::join`; unset on a single node.
    shared_presence: std::sync::OnceLock<Arc<dyn SharedPresence>>,
    /// Shared queues as one queue cluster-wide (bus/streams.rs), set by `cluster::join`.
    #[cfg(feature = "redis")]
    work_queues: std::sync::OnceLock<Arc<crate::bus::streams::WorkQueues>>,
    gate_hasher: std::collections::hash_map::RandomState,
}

/// A bound listener, as reported at start (`herald: listening <name> <addr>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: &'static str,
    pub addr: SocketAddr,
}

impl Shared {
    /// The edge state of type `T` (one type per engine: only the XMPP edge
    /// keeps one).
    pub(crate) fn edge_state<T: Default + Send + Sync + 'static>(&self) -> &T {
        self.edge_state
            .get_or_init(|| Box::new(T::default()))
            .downcast_ref::<T>()
            .expect("one edge state type per engine")
    }
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
    /// Builds an engine from a validated config: durable queues in the data
    /// directory when `node.data_dir` is set, in memory otherwise; other
    /// backends in memory until `start` connects the configured ones.
    pub fn new(config: Config) -> Result<Engine, EngineError> {
        config.validate()?;
        let disk = Self::open_disk(&config)?;
        let store: Arc<dyn QueueStore> = match &disk {
            Some(d) => Arc::new(DiskQueues::open(d.clone())?),
            None => Arc::new(MemoryStore::default()),
        };
        Self::build(config, store, disk)
    }

    /// [`Engine::new`] with a given queue store (tests restarting an engine
    /// in one process over a shared `MemoryStore`); the data directory, if
    /// set, still holds the other stores.
    pub fn with_store(config: Config, store: Arc<dyn QueueStore>) -> Result<Engine, EngineError> {
        config.validate()?;
        let disk = Self::open_disk(&config)?;
        Self::build(config, store, disk)
    }

    fn open_disk(config: &Config) -> Result<Option<Arc<Disk>>, EngineError> {
        Ok(match &config.node.data_dir {
            Some(dir) => Some(Disk::open(dir, DiskOptions { fsync: config.node.fsync })?),
            None => None,
        })
    }

    fn build(config: Config, store: Arc<dyn QueueStore>, disk: Option<Arc<Disk>>) -> Result<Engine, EngineError> {
        let o = &config.xmpp.offline;
        let limits = OfflineLimits {
            max_messages_per_user: o.max_messages_per_user,
            max_bytes_per_user: o.max_bytes_per_user,
            max_total_bytes: o.max_total_bytes,
        };
        let offline: Arc<dyn OfflineStore> = match &disk {
            Some(disk) => Arc::new(DiskOffline::open(disk.clone(), limits)?),
            None => Arc::new(MemoryOffline::new(limits)),
        };
        let offline_slot = Arc::new(crate::store::offline::OfflineSlot::new(offline));
        let offline: Arc<dyn OfflineStore> = offline_slot.clone();
        let auth = crate::auth::Chain::from_config(&config)?.into();
        let history: Arc<dyn HistoryStore> = match &disk {
            Some(d) => Arc::new(DiskHistory::open(d.clone(), HistoryLimits::from_config(&config.history), now_ms())?),
            None => Arc::new(MemoryHistory::new(HistoryLimits::from_config(&config.history))),
        };
        let router = Router::with_history(&config, store, history)?;
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        let gate = Arc::new(crate::transport::conn::Gate::new(&config, connections.clone()));
        Ok(Engine {
            shared: Arc::new(Shared {
                hub: Hub::default(),
                router,
                auth: RwLock::new(auth),
                logins: LoginThrottle::new(&config.login),
                presence: PresenceService::new(&config.node.name),
                presence_backlog: crate::presence::Backlog::default(),
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
                disk,
                offline,
                offline_slot,
                edge_state: std::sync::OnceLock::new(),
                offline_gates: (0..OFFLINE_GATES).map(|_| parking_lot::Mutex::new(())).collect(),
                bus: std::sync::OnceLock::new(),
                bus_local_only: Default::default(),
                shared_presence: std::sync::OnceLock::new(),
                #[cfg(feature = "redis")]
                redis: std::sync::OnceLock::new(),
                #[cfg(feature = "redis")]
                work_queues: std::sync::OnceLock::new(),
                gate_hasher: Default::default(),
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
            tracing::info!(login, addr = ?client.addr, protocol = client.protocol.as_str(), "login refused: {t}");
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

    /// A session authenticated: it is in the hub from now on (kicks,
    /// shutdown and fan-out reach it). A session whose client does not
    /// announce its own presence is online from here until [`Engine::detach`].
    pub async fn attach(&self, s: &Arc<SessionHandle>) {
        self.hub.register(s.clone());
        self.emit(|| EngineEvent::Session {
            event: "open",
            session: s.id,
            uid: s.uid.to_string(),
            protocol: s.protocol.as_str(),
            transport: s.transport.as_str(),
            reason: None,
        });
        if !s.capabilities.contains(Capabilities::OWN_PRESENCE) {
            self.set_session_presence(s, &s.presence_resource(), Availability::Online, "", 0).await;
        }
        self.claim_resource(s).await;
    }

    /// In a cluster, a full JID bound here replaces the session that held
    /// it on another node (it gets `conflict`), as on one node
    /// ([`Engine::replace_resource`]).
    async fn claim_resource(&self, s: &SessionHandle) {
        let (Some(shared), Some(resource)) = (self.shared_up(), s.resource.get()) else {
            return;
        };
        match shared.claim(&s.uid, resource, s.id).await {
            Ok(Some((node, session))) if node != self.node() => {
                let c = crate::bus::control::Control::Conflict {
                    uid: s.uid.to_string(),
                    resource: resource.clone(),
                    session,
                };
                if let Err(e) = self.tell(Some(&node), &c) {
                    tracing::warn!(uid = %s.uid, node, "full JID conflict not sent: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(uid = %s.uid, "full JID not claimed in the cluster: {e}"),
        }
    }

    /// Another node bound `uid/resource`: its session `session` here, if it
    /// still holds that JID, is replaced.
    pub fn replaced_elsewhere(&self, uid: &str, resource: &str, session: crate::session::SessionId) -> bool {
        let Some(s) = self.hub.user_sessions(uid).into_iter().find(|s| s.id == session) else {
            return false;
        };
        if s.resource.get().map(String::as_str) != Some(resource) {
            return false;
        }
        s.close(CloseReason::new(CloseCode::Replaced, "replaced by a new session with the same resource"));
        true
    }

    /// A session ended: out of the hub, and its presence is gone (announced
    /// whether the client said goodbye or vanished).
    pub async fn detach(&self, s: &SessionHandle) {
        if self.hub.unregister(s.id).is_some() {
            self.emit(|| EngineEvent::Session {
                event: "close",
                session: s.id,
                uid: s.uid.to_string(),
                protocol: s.protocol.as_str(),
                transport: s.transport.as_str(),
                reason: s.close_reason().map(|r| r.to_string()),
            });
        }
        self.remove_session_presence(s, &s.presence_resource()).await;
        if let (Some(shared), Some(resource)) = (self.shared_up(), s.resource.get()) {
            if let Err(e) = shared.release(&s.uid, resource, s.id).await {
                tracing::debug!(uid = %s.uid, "full JID not released in the cluster: {e}");
            }
        }
    }

    /// The door every publish goes through: STOMP SEND, XMPP message, the
    /// application's calls ([`Engine::publish`], [`Engine::publish_to`],
    /// [`Engine::send_to_user`], the admin API) and the engine's presence
    /// events. Refused while the memory alarm is on
    /// (`limits.memory_high_watermark`), except the engine's own events.
    ///
    /// In a cluster, a publish that routed here is also published on the
    /// Bus for the other nodes' bindings (docs/cluster.md, "The Bus"),
    /// except what came from the Bus and the default exchange's (a
    /// `/queue/` is not a Bus matter).
    pub fn route(&self, publish: Publish<'_>) -> Result<Routed, RouteError> {
        let Publish { vhost, message, origin } = publish;
        // Presence events from other nodes pass the alarm as this node's own do.
        let engines =
            origin == Origin::Engine || origin == Origin::Bus && message.exchange == self.config.exchanges.presence;
        if !engines {
            self.router.alarm.check()?;
        }
        let envelope = match self.bus() {
            Some(_) if origin != Origin::Bus && !message.exchange.is_empty() => Some(crate::bus::Envelope {
                origin: String::new(),
                seq: 0,
                vhost: vhost.name.to_string(),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                headers: message.headers.clone(),
                body: message.body.clone(),
                persistent: message.persistent,
                sender: message.sender.clone(),
                also_exact: false,
            }),
            _ => None,
        };
        // Built only when someone listens to messages: the event copies the body.
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(EngineEvent::Message {
                vhost: vhost.name.to_string(),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                destination: message.destination().to_owned(),
                headers: message.headers.clone(),
                body: String::from_utf8_lossy(&message.body).into_owned(),
                sender: message.sender.clone(),
            });
        }
        #[cfg(feature = "redis")]
        if let Some(wq) = self.work_queues.get().filter(|_| message.exchange.is_empty()) {
            if origin == Origin::Bus {
                // The default exchange never crosses the Bus: its shared
                // queues are streams in Redis. A forged frame goes nowhere.
                return Ok(Routed { queues: 0, durable: Vec::new() });
            }
            if let Some(q) = vhost.queue(&message.routing_key).filter(|q| q.is_clustered()) {
                vhost.published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(Routed { queues: 1, durable: vec![wq.publish(&q, message)?] });
            }
        }
        let routed = vhost.publish_durable(message);
        if let Some(env) = envelope {
            // A full reject-publish queue here refused its copy after the
            // others took theirs: the other nodes' bindings take theirs too.
            if matches!(routed, Ok(_) | Err(RouteError::QueueFull { .. })) {
                self.cross(env);
            }
        }
        let (queues, durable) = routed?;
        Ok(Routed { queues, durable })
    }

    /// Publishes on the Bus what was routed here. Never refuses the
    /// publisher: with Redis down (or too slow: the Bus's buffer full) the
    /// message reached this node's bindings only, counted in the Bus's
    /// `refused` and logged once per outage (docs/cluster.md, "Redis down").
    fn cross(&self, env: crate::bus::Envelope) {
        let Some(bus) = self.bus() else { return };
        match bus.publish(env) {
            Ok(()) => {
                if self.bus_local_only.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!("cluster bus: publishes reach the other nodes again");
                }
            }
            Err(crate::bus::BusError::TooLarge(what)) => {
                tracing::warn!("cluster bus: a message reached this node only: its {what} is too large for the Bus");
            }
            Err(e) => {
                if !self.bus_local_only.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        "cluster bus: publishes reach this node's subscribers only until Redis is back: {e}"
                    );
                }
            }
        }
    }

    /// Resolves once the Bus subscriptions that bindings made so far need
    /// are confirmed by Redis (a SUBSCRIBE's RECEIPT waits for it, so a
    /// publish on another node right after the RECEIPT is not missed), or
    /// after the cluster's command timeout. At once on a single node.
    pub async fn interests_settled(&self) {
        #[cfg(feature = "redis")]
        if let Some((_, timeout)) = self.cluster_redis() {
            let _ = tokio::time::timeout(*timeout, self.router.interest_changes.settled()).await;
        }
    }

    /// The door for a message to one user on the `feed` exchange that may be
    /// kept offline (`parcel`: an XMPP `chat` or `normal` message). When
    /// none of the user's XMPP resources is available (sent presence, with
    /// a priority of 0 or more: RFC 6121 §8.5.2.1.1), it is kept for their
    /// next initial presence and still routed, marked `parked`, so STOMP
    /// sessions on the user's feed see it live as before (a STOMP-only user
    /// has no XMPP resource: the message waits for their XMPP client too).
    /// Over the user's cap nothing is kept nor routed. Without a parcel, with
    /// `[xmpp.offline] enabled = false` or on another exchange: [`Engine::route`].
    /// In a cluster, "available" is on any node (the shared presence in
    /// Redis): the message is routed live and the Bus carries it there.
    pub async fn route_to_user(&self, publish: Publish<'_>, parcel: Option<Parcel>) -> Result<ToUser, ToUserError> {
        let Publish { vhost, mut message, origin } = publish;
        let parcel =
            parcel.filter(|_| self.config.xmpp.offline.enabled && message.exchange == self.config.exchanges.feed);
        let Some(parcel) = parcel else {
            return Ok(ToUser::Live(self.route(Publish { vhost, message, origin })?));
        };
        if origin != Origin::Engine {
            // Refused before anything is kept: the sender may retry.
            self.router.alarm.check()?;
        }
        let elsewhere = self.takes_it_elsewhere(&message.routing_key, parcel.resource.as_deref()).await;
        let durable = self.offline_gated(&message.routing_key, || {
            if elsewhere || self.takes_it_live(&message.routing_key, parcel.resource.as_deref()) {
                Ok(None)
            } else {
                self.offline.push(&message.routing_key, now_ms(), &parcel.from, parcel.stanza).map(Some)
            }
        })?;
        let Some(durable) = durable else {
            return Ok(ToUser::Live(self.route(Publish { vhost, message, origin })?));
        };
        message.parked = true;
        if let Err(e) = self.route(Publish { vhost, message, origin }) {
            // Kept already: the XMPP resources will have it; only live STOMP copies are missed.
            tracing::debug!(error = %e, "parked message not routed");
        }
        Ok(ToUser::Parked(durable))
    }

    /// Keeps a stanza for `uid` without asking who is available (XEP-0198:
    /// unacked messages of a stream that timed out without resuming).
    pub fn park(&self, uid: &str, from: &str, stanza: Bytes) -> Result<Durable, OfflineError> {
        self.offline_gated(uid, || self.offline.push(uid, now_ms(), from, stanza))
    }

    /// What is kept for `uid`, oldest first, for a resource of theirs that
    /// has just become available (call after its presence is set). Nothing
    /// is removed until [`Engine::offline_delivered`]: a delivery cut short
    /// loses nothing (at least once; two resources coming online at the
    /// same moment may both get the messages).
    pub fn offline_messages(&self, uid: &str) -> Result<Vec<OfflineMessage>, OfflineError> {
        if !self.config.xmpp.offline.enabled && self.offline.count(uid)? == 0 {
            return Ok(Vec::new());
        }
        self.offline_gated(uid, || self.offline.list(uid))
    }

    /// Messages through `seq` were handed to a session of `uid`.
    pub fn offline_delivered(&self, uid: &str, seq: u64) -> Result<(), OfflineError> {
        self.offline.remove_through(uid, seq)
    }

    /// Runs `f` holding `uid`'s offline gate: what is decided (kept or
    /// live) and what is listed at login are serialized per user. With a
    /// store that waits on the network ([`OfflineStore::blocks`]) the wait
    /// for the gate and `f` run in `block_in_place`: a task queued behind a
    /// slow Redis round trip does not hold a runtime worker.
    fn offline_gated<T>(&self, uid: &str, f: impl FnOnce() -> T) -> T {
        let run = || {
            let _gate = self.offline_gate(uid).lock();
            f()
        };
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi && self.offline.blocks() {
            tokio::task::block_in_place(run)
        } else {
            run()
        }
    }

    fn offline_gate(&self, uid: &str) -> &parking_lot::Mutex<()> {
        use std::hash::BuildHasher;
        &self.offline_gates[(self.gate_hasher.hash_one(uid) as usize) % self.offline_gates.len()]
    }

    /// Whether a session of `uid` that announces its own presence (an XMPP
    /// resource) takes a message live: the one bound to `resource` when
    /// the message names it, else one available with a priority of 0 or
    /// more (RFC 6121 §8.5.2.1.1).
    fn takes_it_live(&self, uid: &str, resource: Option<&str>) -> bool {
        let own: Vec<Arc<SessionHandle>> = self
            .hub
            .user_sessions(uid)
            .into_iter()
            .filter(|s| s.capabilities.contains(Capabilities::OWN_PRESENCE))
            .collect();
        if own.is_empty() {
            return false;
        }
        if resource.is_some_and(|r| own.iter().any(|s| s.resource.get().map(String::as_str) == Some(r))) {
            return true;
        }
        self.presence.resources(uid).iter().any(|r| r.priority >= 0 && own.iter().any(|s| s.id == r.session))
    }

    /// Whether a resource of `uid` on another node of the cluster takes a
    /// message live (the same rule as [`Engine::takes_it_live`], on the
    /// shared presence). Asked only when no session here does. With Redis
    /// unreachable: no (the message is kept, not lost).
    async fn takes_it_elsewhere(&self, uid: &str, resource: Option<&str>) -> bool {
        let Some(shared) = self.shared_up() else {
            return false;
        };
        if self.takes_it_live(uid, resource) {
            return false;
        }
        match shared.resources(uid).await {
            Ok(rs) => rs.iter().any(|r| {
                r.node != self.node() && resource.map_or(r.priority >= 0, |want| r.resource == want || r.priority >= 0)
            }),
            Err(e) => {
                tracing::warn!(uid, "cluster presence unreadable; message kept offline: {e}");
                false
            }
        }
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
        let vhost = self.router.vhost(&self.config.stomp.default_vhost)?;
        let dest = Destination::parse(destination).map_err(PublishError::Destination)?;
        match &dest {
            Destination::Queue(q) => {
                let opts = QueueOptions { durable: true, exclusive: None, auto_delete: false };
                vhost.declare_queue(q, opts, None)?;
            }
            Destination::AmqQueue(q) | Destination::ReplyQueue(q) if vhost.queue(q).is_none() => {
                return Err(RouteError::NoQueue(q.clone(), vhost.name.to_string()).into());
            }
            _ => {}
        }
        let Some((exchange, key)) = dest.exchange_and_key() else {
            return Err(PublishError::Destination(DestinationError::Unknown(destination.to_owned())));
        };
        let message = Message::new(exchange, key, headers, body);
        Ok(self.route(Publish { vhost, message, origin: Origin::Application })?.queues)
    }

    /// Reads one key's history (`/exchange/feed/<uid>` or
    /// `/exchange/project/<pid>` on the default vhost), as the application:
    /// no permission check, nothing subscribed. With `since`, decides
    /// recovery as a SUBSCRIBE with `x-stream-offset` would (docs/history.md);
    /// without, returns everything retained. At most `limit` messages (and
    /// never more than `history.size`), oldest first.
    pub fn history(&self, destination: &str, query: HistoryQuery) -> Result<HistoryRead, HistoryError> {
        let vhost = self.router.vhost(&self.config.stomp.default_vhost).map_err(PublishError::from)?;
        let dest = Destination::parse(destination).map_err(PublishError::Destination)?;
        let history = &vhost.history;
        let (exchange, key) = match &dest {
            Destination::Exchange { exchange, key } if history.covers(exchange) && !key.is_empty() => {
                (exchange.as_str(), key.as_str())
            }
            _ if !history.limits().enabled() => return Err(HistoryError::Off),
            _ => return Err(HistoryError::NotHistory(destination.to_owned())),
        };
        let size = history.limits().size;
        let limit = query.limit.unwrap_or(size).min(size);
        let stream = StreamKey::new(&vhost.name, exchange, key);
        let page =
            history.store.read(&stream, 1, size, now_ms()).map_err(RouteError::from).map_err(PublishError::from)?;
        let (epoch, top, mut messages, recovered) = match query.since {
            Some(since) => {
                let r = recover(page, since, query.epoch.as_deref());
                (r.epoch, r.top, r.replay, Some(r.recovered))
            }
            None => (page.epoch, page.top, page.messages, None),
        };
        messages.truncate(limit);
        Ok(HistoryRead { epoch: epoch.to_string(), top, messages, recovered })
    }

    /// Sets the presence of a user's STOMP (and other) sessions whose
    /// clients do not announce their own, as the application decides it
    /// (XMPP resources set their own). Returns how many sessions it applied
    /// to; a user without such sessions is unchanged (presence follows
    /// connections).
    pub async fn set_user_presence(&self, uid: &str, availability: Availability, status: &str) -> usize {
        let sessions: Vec<Arc<SessionHandle>> = self
            .hub
            .user_sessions(uid)
            .into_iter()
            .filter(|s| !s.capabilities.contains(Capabilities::OWN_PRESENCE))
            .collect();
        for s in &sessions {
            self.set_session_presence(s, &s.presence_resource(), availability, status, 0).await;
        }
        sessions.len()
    }

    /// Replaces the offline store (`cluster::join`: the Redis one, so any
    /// node sees what another kept). Before listeners accept.
    pub fn set_offline_store(&self, store: Arc<dyn OfflineStore>) {
        self.offline_slot.set(store);
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
    /// `stomp-<id>`), then tells everyone who should know (`presence::fanout`).
    pub async fn set_session_presence(
        &self,
        session: &SessionHandle,
        resource: &str,
        availability: Availability,
        status: &str,
        priority: i8,
    ) {
        fanout::set(self, session, resource, availability, status, priority).await
    }

    /// Forgets a session's presence (it ended or sent unavailable); see
    /// `presence::fanout::remove`.
    pub async fn remove_session_presence(&self, session: &SessionHandle, resource: &str) {
        fanout::remove(self, session, resource).await
    }

    /// Every available resource of `uid`: on every node in a cluster
    /// (shared presence; sessions of other nodes have session id 0), else
    /// this node's. With Redis unreachable, this node's.
    pub async fn user_resources(&self, uid: &str) -> Vec<crate::session::ResourceState> {
        if let Some(shared) = self.shared_up() {
            match shared.resources(uid).await {
                Ok(rs) => {
                    return rs
                        .into_iter()
                        .map(|r| crate::session::ResourceState {
                            session: if r.node == self.node() { r.session } else { 0 },
                            resource: r.resource,
                            availability: r.availability,
                            status: r.status,
                            priority: r.priority,
                        })
                        .collect();
                }
                Err(e) => tracing::warn!(uid, "cluster presence unreadable; this node's resources only: {e}"),
            }
        }
        self.presence.resources(uid)
    }

    /// A resource of `uid` on another node changed (a `Control::Presence`):
    /// this node's sessions that should know hear of it (`presence::fanout`).
    pub async fn presence_elsewhere(
        &self,
        uid: &str,
        resource: &str,
        state: Availability,
        status: &str,
        priority: i8,
        aggregate: Option<(Availability, String)>,
    ) {
        let state = crate::session::ResourceState {
            session: 0,
            resource: resource.to_owned(),
            availability: state,
            status: status.to_owned(),
            priority,
        };
        let notice = crate::session::PresenceNotice { uid: uid.to_owned(), state };
        let change =
            aggregate.map(|(availability, status)| AggregateChange { uid: uid.to_owned(), availability, status });
        fanout::elsewhere(self, notice, change).await
    }

    /// A dead node's (or this node's previous run's) resources of `uid`
    /// are gone from the shared presence: announced here and everywhere.
    pub async fn presence_reaped(
        &self,
        uid: &str,
        removed: Vec<SharedResource>,
        change: crate::presence::SharedChange,
    ) {
        fanout::reaped(self, uid, removed, change).await
    }

    /// Redis came back: this node's resources of `uid` were asserted again
    /// and the aggregate moved (`presence::fanout::reasserted`).
    pub async fn presence_reasserted(
        &self,
        uid: &str,
        resources: Vec<crate::session::ResourceState>,
        change: crate::presence::SharedChange,
    ) {
        fanout::reasserted(self, uid, resources, change).await
    }

    /// The shared presence while the cluster's Redis is reachable: with it
    /// out of reach, sessions are not held up by command timeouts (this
    /// node's view is used and asserted again later).
    fn shared_up(&self) -> Option<&Arc<dyn SharedPresence>> {
        self.shared_presence.get().filter(|_| self.bus().is_none_or(|b| b.is_connected()))
    }

    /// The shared presence, in a cluster.
    pub fn shared_presence(&self) -> Option<&Arc<dyn SharedPresence>> {
        self.shared_presence.get()
    }

    /// Set once by `cluster::join`.
    #[cfg(feature = "redis")]
    pub(crate) fn set_shared_presence(&self, shared: Arc<dyn SharedPresence>) {
        let _ = self.shared_presence.set(shared);
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
        fanout::members_changed(self, project, &before, &members, |uid| self.unbind_from_project(project, uid)).await;
        Ok(())
    }

    /// Closes the other sessions of `uid` bound to `resource`: a resource
    /// bound again replaces the old session (it gets `conflict`), as
    /// ejabberd does by default. Returns how many.
    pub fn replace_resource(&self, uid: &str, resource: &str) -> usize {
        let mut n = 0;
        for old in self.hub.user_sessions(uid) {
            if old.resource.get().map(String::as_str) == Some(resource) {
                old.close(CloseReason::new(CloseCode::Replaced, "replaced by a new session with the same resource"));
                n += 1;
            }
        }
        n
    }

    /// The private queue of a session that reads its user's feed and
    /// projects (an XMPP resource): declared exclusive to the session, bound
    /// to `feed/<uid>` and to each of the user's projects, and consumed by
    /// the session. Call before [`Engine::attach`], once the edge has asked
    /// `auth::policy` whether the uid may read `feed/<uid>` (a uid that is a
    /// pattern may not).
    pub async fn open_inbox(&self, session: &Arc<SessionHandle>) -> Result<Inbox, RouteError> {
        let vhost = self.router.vhost(&session.vhost)?;
        let qname = format!("{}-{}", session.protocol, session.id);
        let opts = QueueOptions { durable: false, exclusive: Some(session.id), auto_delete: true };
        let queue = vhost.declare_queue(&qname, opts, Some(session.id))?;
        if let Err(e) = vhost.bind(&self.config.exchanges.feed, &queue, &session.uid, None) {
            vhost.delete_queue(&qname);
            return Err(e);
        }
        let projects = match self.directory().projects_of(&session.uid).await {
            Ok(p) => p.into_iter().map(|p| p.id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "directory unavailable at bind; no project messages until it is back");
                Vec::new()
            }
        };
        let project_x = &self.config.exchanges.project;
        for p in &projects {
            let _ = vhost.bind(project_x, &queue, p, None);
        }
        let consumer = queue.consume(session.clone(), Arc::from(session.protocol.as_str()), AckMode::Auto, 0);
        self.interests_settled().await;
        Ok(Inbox { queue, consumer, projects })
    }

    /// Project membership changed: the inbox follows the user's projects
    /// as the directory has them now. A directory error leaves it as it was.
    pub async fn follow_projects(&self, session: &SessionHandle, inbox: &mut Inbox) -> Result<(), DirectoryError> {
        let projects: Vec<String> =
            self.directory().projects_of(&session.uid).await?.into_iter().map(|p| p.id).collect();
        let project_x = &self.config.exchanges.project;
        if let Ok(vhost) = self.router.vhost(&session.vhost) {
            for old in inbox.projects.iter().filter(|p| !projects.contains(p)) {
                vhost.unbind_where(&inbox.queue, project_x, |k| k == old);
            }
            for new in projects.iter().filter(|p| !inbox.projects.contains(p)) {
                let _ = vhost.bind(project_x, &inbox.queue, new, None);
            }
            inbox.projects = projects;
        }
        Ok(())
    }

    /// The session is done with its inbox: the consumer goes, and the queue
    /// with it when nobody else consumes it.
    pub fn close_inbox(&self, session: &SessionHandle, inbox: Inbox) {
        if inbox.queue.cancel(inbox.consumer) || inbox.queue.consumer_count() == 0 {
            if let Ok(v) = self.router.vhost(&session.vhost) {
                v.delete_queue(&inbox.queue.name);
            }
        }
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

    /// Swaps in the configured Redis / MongoDB backends (memory otherwise;
    /// `Config::validate` refused a backend whose Cargo feature is off).
    pub(crate) async fn connect_backends(&self) -> Result<(), EngineError> {
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

    /// This node's name (`node.name`), its identity in a cluster.
    pub fn node(&self) -> &str {
        &self.config.node.name
    }

    /// The cluster Bus, when this node is part of a cluster.
    pub fn bus(&self) -> Option<&Arc<dyn crate::bus::Bus>> {
        self.bus.get()
    }

    /// Set once when the node joins its cluster (`cluster::join`).
    #[cfg(feature = "redis")]
    pub(crate) fn set_bus(&self, bus: Arc<dyn crate::bus::Bus>) -> Result<(), EngineError> {
        self.bus.set(bus).map_err(|_| EngineError::Cluster("already joined".into()))
    }

    /// The cluster's Redis connection and command timeout, when in a cluster.
    #[cfg(feature = "redis")]
    pub fn cluster_redis(&self) -> Option<&(crate::bus::redis::RedisConn, Duration)> {
        self.redis.get()
    }

    /// The cluster's work queues, when in a cluster.
    #[cfg(feature = "redis")]
    pub fn work_queues(&self) -> Option<&Arc<crate::bus::streams::WorkQueues>> {
        self.work_queues.get()
    }

    /// Makes every vhost's shared queues declared from now on one queue
    /// cluster-wide (`cluster::join`, before listeners accept).
    #[cfg(feature = "redis")]
    pub(crate) fn set_work_queues(&self, wq: Arc<crate::bus::streams::WorkQueues>) {
        for v in self.router.vhosts() {
            let w = wq.clone();
            v.set_cluster_queues(crate::router::ClusterQueues {
                store: wq.clone(),
                declared: Box::new(move |q| w.declared(q)),
            });
        }
        let _ = self.work_queues.set(wq);
    }

    #[cfg(feature = "redis")]
    pub(crate) fn set_cluster_redis(&self, conn: crate::bus::redis::RedisConn, timeout: Duration) {
        let _ = self.redis.set((conn, timeout));
    }

    /// Sends a control message to node `to`, or to every other node
    /// (`None`). On a single node there is nobody to tell: `Ok`.
    pub fn tell(&self, to: Option<&str>, control: &crate::bus::control::Control) -> Result<(), crate::bus::BusError> {
        match self.bus() {
            Some(bus) => bus.publish(crate::bus::control::envelope(to, control)),
            None => Ok(()),
        }
    }

    /// Routes a message another node published (received from the Bus)
    /// into this node's bindings. An unknown vhost (a node with another
    /// config, or a forged frame) is dropped.
    pub fn route_envelope(&self, env: crate::bus::Envelope) -> Result<Routed, RouteError> {
        let vhost = self.router.vhost(&env.vhost)?;
        if env.exchange.is_empty() {
            // No node publishes the default exchange on the Bus (queues are
            // per node): a forged frame must not reach a queue by name.
            return Err(RouteError::NoExchange(String::new(), env.vhost));
        }
        let mut message = Message::new(&env.exchange, &env.routing_key, env.headers, env.body);
        message.persistent = env.persistent;
        message.sender = env.sender;
        self.route(Publish { vhost, message, origin: Origin::Bus })
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
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.close() {
                tracing::warn!(error = %e, "closing the data directory failed");
            }
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
        let message = Message::new(exchange, routing_key, headers, body);
        Ok(self.route(Publish { vhost: self.router.vhost(vhost)?, message, origin: Origin::Application })?.queues)
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
    pub(crate) async fn memory_monitor(self) {
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

    /// Closes every session of a user, on every node of a cluster; returns
    /// how many were closed on this node (the others close theirs when the
    /// control message reaches them; while the Bus is down only this
    /// node's, logged).
    pub fn kick(&self, uid: &str) -> usize {
        self.kick_because(uid, "kicked")
    }

    /// [`Engine::kick`] with the text clients see (STOMP ERROR `message`,
    /// XMPP stream error text).
    pub fn kick_because(&self, uid: &str, reason: &str) -> usize {
        let control = crate::bus::control::Control::Kick { uid: uid.into(), reason: reason.into() };
        if let Err(e) = self.tell(None, &control) {
            tracing::warn!(uid, "kick reaches this node only: {e}");
        }
        self.kick_local(uid, reason)
    }

    /// Closes the user's sessions on this node only (a kick from another node).
    pub fn kick_local(&self, uid: &str, reason: &str) -> usize {
        self.hub.kick_user(uid, CloseReason::new(CloseCode::Kicked, reason.to_owned()))
    }

    pub fn stats(&self) -> Stats {
        let mut by_transport = std::collections::BTreeMap::new();
        for s in self.hub.sessions() {
            *by_transport.entry(format!("{}/{}", s.protocol.as_str(), s.transport)).or_insert(0) += 1;
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

/// The engine lends presence fan-out its parts (`presence::fanout`).
impl fanout::Host for Engine {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn presence(&self) -> &PresenceService {
        &self.presence
    }

    fn store(&self) -> Arc<dyn PresenceStore> {
        self.presence_store()
    }

    fn directory(&self) -> Arc<dyn Directory> {
        Engine::directory(self)
    }

    fn aggregate_changed(&self, change: &AggregateChange) {
        self.emit(|| EngineEvent::Presence {
            uid: change.uid.clone(),
            state: change.availability.as_str(),
            status: change.status.clone(),
        });
    }

    fn shared(&self) -> Option<Arc<dyn SharedPresence>> {
        self.shared_presence.get().cloned()
    }

    fn cluster_up(&self) -> bool {
        self.bus().is_none_or(|b| b.is_connected())
    }

    fn tell_presence(&self, notice: &crate::session::PresenceNotice, change: Option<&AggregateChange>) {
        if self.bus().is_none() {
            return;
        }
        // Cut as the shared presence stores it: other nodes refuse a longer
        // status, and the change would never reach them.
        let max = self.config.cluster.as_ref().map_or(1024, |c| c.max_status_bytes);
        let cut = |s: &str| crate::presence::cut(s, max).to_owned();
        let c = crate::bus::control::Control::Presence {
            uid: notice.uid.clone(),
            resource: notice.state.resource.clone(),
            state: notice.state.availability.as_str().to_owned(),
            status: cut(&notice.state.status),
            priority: notice.state.priority,
            aggregate: change.map(|c| crate::bus::control::AggregateState {
                state: c.availability.as_str().to_owned(),
                status: cut(&c.status),
            }),
        };
        if let Err(e) = self.tell(None, &c) {
            tracing::warn!(uid = notice.uid, "presence not told to the other nodes: {e}");
        }
    }

    fn publish_event(&self, project: &str, uid: &str, body: String) {
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let key = format!("{project}.{uid}");
        let routed = self.router.vhost(&self.config.stomp.default_vhost).and_then(|vhost| {
            let message = Message::new(self.config.exchanges.presence.as_str(), key, headers, Bytes::from(body));
            self.route(Publish { vhost, message, origin: Origin::Engine })
        });
        if let Err(e) = routed {
            tracing::warn!(error = %e, "presence event not published");
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
        let client = ClientInfo {
            addr: Some("192.0.2.1:5000".parse().unwrap()),
            protocol: crate::session::Protocol::Xmpp,
            transport: crate::transport::Transport::Tcp,
        };
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

#[cfg(test)]
mod door_tests {
    use super::*;
    use crate::session::Protocol;
    use crate::transport::Peer;

    fn engine() -> Engine {
        let config = Config::from_toml_str(
            "[limits]\nmemory_high_watermark = 1000\nmemory_check_interval_ms = 600000\n\
             [[projects]]\nid = \"p1\"\nmembers = [\"alice\", \"bob\"]\n",
        )
        .unwrap();
        Engine::new(config).unwrap()
    }

    fn handle(engine: &Engine, uid: &str, protocol: Protocol) -> Arc<SessionHandle> {
        SessionHandle::new(
            uid,
            &engine.config.stomp.default_vhost,
            protocol,
            &Peer { addr: None, transport: crate::transport::Transport::Tcp },
            64,
        )
    }

    #[test]
    fn destinations_resolve_as_stomp_sends_do() {
        let e = engine();
        assert_eq!(e.publish_to("/queue/jobs", vec![], Bytes::from_static(b"1")).unwrap(), 1, "declared on first use");
        assert_eq!(e.publish_to("/amq/queue/jobs", vec![], Bytes::from_static(b"2")).unwrap(), 1);
        assert!(matches!(
            e.publish_to("/amq/queue/missing", vec![], Bytes::new()),
            Err(PublishError::Route(RouteError::NoQueue(..)))
        ));
        assert!(matches!(e.publish_to("/temp-queue/r", vec![], Bytes::new()), Err(PublishError::Destination(_))));
        // As RabbitMQ: a name without a prefix is a queue (declared like `/queue/`); an empty one is refused.
        assert_eq!(e.publish_to("jobs", vec![], Bytes::new()).unwrap(), 1);
        assert!(matches!(e.publish_to("", vec![], Bytes::new()), Err(PublishError::Destination(_))));
        assert_eq!(e.publish_to("/topic/a.b", vec![], Bytes::new()).unwrap(), 0, "nobody bound");
    }

    #[test]
    fn history_reads_what_the_door_numbered() {
        let e = engine();
        for b in ["a", "b", "c"] {
            e.send_to_user("alice", vec![("x-stream-offset".into(), "7".into())], Bytes::from(b)).unwrap();
        }
        let all = e.history("/exchange/feed/alice", HistoryQuery::default()).unwrap();
        let offsets =
            |r: &HistoryRead| r.messages.iter().map(|m| m.stream.as_ref().unwrap().offset).collect::<Vec<_>>();
        assert_eq!((offsets(&all), all.top, all.recovered), (vec![1, 2, 3], 3, None));
        assert!(
            all.messages.iter().all(|m| m.header("x-stream-offset").is_none()),
            "the publisher's header is dropped"
        );
        let q = HistoryQuery { since: Some(Since::Offset(2)), epoch: Some(all.epoch.clone()), limit: Some(1) };
        let r = e.history("/exchange/feed/alice", q).unwrap();
        assert_eq!((offsets(&r), r.recovered), (vec![2], Some(true)));
        let q = HistoryQuery { since: Some(Since::Offset(2)), epoch: Some("other".into()), limit: None };
        assert_eq!(e.history("/exchange/feed/alice", q).unwrap().recovered, Some(false));
        let empty = e.history("/exchange/project/p9", HistoryQuery::default()).unwrap();
        assert_eq!((empty.top, empty.messages.len()), (0, 0));
        assert!(matches!(e.history("/topic/x", HistoryQuery::default()), Err(HistoryError::NotHistory(_))));
        assert!(e.history("/exchange/feed/", HistoryQuery::default()).is_err());
    }

    #[test]
    fn the_door_refuses_under_the_memory_alarm_except_the_engines_own_events() {
        let e = engine();
        e.publish_to("/queue/fill", vec![], Bytes::from(vec![0u8; 2000])).unwrap();
        assert!(e.check_memory().alarm);
        let vhost = e.router.vhost("/").unwrap();
        let publish = |origin| Publish { vhost, message: Message::new("amq.topic", "k", vec![], Bytes::new()), origin };
        assert!(matches!(e.route(publish(Origin::Session)), Err(RouteError::MemoryAlarm { .. })));
        assert!(matches!(e.route(publish(Origin::Application)), Err(RouteError::MemoryAlarm { .. })));
        assert_eq!(e.route(publish(Origin::Engine)).unwrap().queues, 0);
    }

    #[tokio::test]
    async fn attach_and_detach_bring_a_session_in_and_out_with_its_presence() {
        let e = engine();
        let stomp = handle(&e, "alice", Protocol::Stomp);
        e.attach(&stomp).await;
        assert_eq!(e.hub.session_count(), 1);
        assert_eq!(e.presence.aggregate("alice").0, Availability::Online, "online while attached");
        assert_eq!(e.presence.resources("alice")[0].resource, format!("stomp-{}", stomp.id));
        let xmpp = handle(&e, "bob", Protocol::Xmpp);
        e.attach(&xmpp).await;
        assert_eq!(e.presence.aggregate("bob").0, Availability::Offline, "an XMPP resource announces itself");
        e.detach(&stomp).await;
        e.detach(&xmpp).await;
        assert_eq!(e.hub.session_count(), 0);
        assert_eq!(e.presence.aggregate("alice").0, Availability::Offline);
    }

    #[tokio::test]
    async fn an_inbox_reads_the_feed_and_projects_and_follows_membership() {
        let e = engine();
        let s = handle(&e, "alice", Protocol::Xmpp);
        let mut inbox = e.open_inbox(&s).await.unwrap();
        assert_eq!(inbox.queue.name.as_ref(), format!("xmpp-{}", s.id));
        assert_eq!(inbox.projects, ["p1"]);
        assert_eq!(e.send_to_user("alice", vec![], Bytes::new()).unwrap(), 1);
        assert_eq!(e.publish("/", "project", "p1", vec![], Bytes::new()).unwrap(), 1);
        e.directory().set_members("p1", &["bob".to_owned()]).await.unwrap();
        e.follow_projects(&s, &mut inbox).await.unwrap();
        assert!(inbox.projects.is_empty());
        assert_eq!(e.publish("/", "project", "p1", vec![], Bytes::new()).unwrap(), 0, "unbound from p1");
        let name = inbox.queue.name.clone();
        e.close_inbox(&s, inbox);
        assert!(e.router.vhost("/").unwrap().queue(&name).is_none(), "the queue goes with its only consumer");
    }
}
