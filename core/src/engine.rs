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

use crate::auth::{Authenticator, Authorizer, ConfigUsers};
use crate::config::Config;
use crate::error::{CloseCode, CloseReason};
use crate::hub::Hub;
use crate::message::Message;
use crate::router::{RouteError, Router};
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
    pub hub: Hub,
    pub router: Router,
    auth: RwLock<AuthSources>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// Caps open client connections across every listener.
    pub connections: Arc<Semaphore>,
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
        let users = Arc::new(ConfigUsers::from_config(&config));
        let router = Router::new(&config, store)?;
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        Ok(Engine {
            shared: Arc::new(Shared {
                hub: Hub::default(),
                router,
                auth: RwLock::new(AuthSources { authenticator: users.clone(), authorizer: users }),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                connections,
                started_at: Instant::now(),
                listeners: parking_lot::Mutex::new(Vec::new()),
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

    /// Binds every configured listener and starts accepting. Returns the
    /// bound addresses (port 0 in the config picks a free port).
    pub async fn start(&self) -> Result<Vec<Listener>, EngineError> {
        if !self.listeners.lock().is_empty() {
            return Err(EngineError::AlreadyStarted);
        }
        let mut bound = Vec::new();
        if let Some(addr) = self.config.stomp.listen {
            let l = crate::transport::tcp::bind(addr, "stomp-tcp").await?;
            bound.push(Listener { name: "stomp-tcp", addr: l.local_addr().map_err(|source| EngineError::Listen { what: "stomp-tcp", addr, source })? });
            self.tasks.spawn(crate::transport::tcp::accept_loop(self.clone(), l, None));
        }
        if let Some(tls) = &self.config.stomp.tls {
            let acceptor = crate::transport::tcp::tls_acceptor(tls)?;
            let l = crate::transport::tcp::bind(tls.listen, "stomp-tls").await?;
            let addr = tls.listen;
            bound.push(Listener { name: "stomp-tls", addr: l.local_addr().map_err(|source| EngineError::Listen { what: "stomp-tls", addr, source })? });
            self.tasks.spawn(crate::transport::tcp::accept_loop(self.clone(), l, Some(acceptor)));
        }
        if let Some(addr) = self.config.http.listen {
            let l = crate::transport::tcp::bind(addr, "http").await?;
            bound.push(Listener { name: "http", addr: l.local_addr().map_err(|source| EngineError::Listen { what: "http", addr, source })? });
            self.tasks.spawn(crate::transport::http::serve(self.clone(), l));
        }
        *self.listeners.lock() = bound.clone();
        Ok(bound)
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
    pub fn publish(&self, vhost: &str, exchange: &str, routing_key: &str, headers: Vec<(String, String)>, body: Bytes) -> Result<usize, RouteError> {
        self.router.vhost(vhost)?.publish(Message::new(exchange, routing_key, headers, body))
    }

    /// Pushes to every session of one user, on the default vhost's `feed` exchange.
    pub fn send_to_user(&self, uid: &str, headers: Vec<(String, String)>, body: Bytes) -> Result<usize, RouteError> {
        self.publish(&self.config.stomp.default_vhost, &self.config.exchanges.feed, uid, headers, body)
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
