//! The cluster's answers for forwarded requests (transport/forward.rs,
//! docs/cluster.md "No sticky sessions"): where a node takes forwarded
//! requests, who holds a SockJS session, and the token that makes a
//! forwarding node's word on a client's address believable.
//!
//! Redis keys (`<prefix>` is `[cluster] prefix`):
//! - `<prefix>nodes` / `<prefix>alive:<node>`: the node registry
//!   ([`super::registry`]); each entry names the node's BOSH and SockJS
//!   listeners as other nodes reach them. Read into a cache refreshed every
//!   heartbeat, so a BOSH request costs Redis nothing: its sid names its node.
//! - `<prefix>sid:sockjs:<session>` → node name, `PX` [`SOCKJS_TTL`]: the
//!   node holding a SockJS session (the client picks the id, so only Redis
//!   can tell). Set when a node creates the session (`SET NX GET`), its
//!   expiry refreshed every [`crate::transport::sockjs`] keep round while the
//!   session lives, deleted (compare-and-delete) when it ends. A claim that
//!   names a dead node is taken over.
//! - `<prefix>forward:token`: a random token, set by the first node (`SET
//!   NX`) and adopted by every node; a forwarded request carries it.
//!
//! Everything read from Redis is hostile input: node names are only looked
//! up, addresses must parse as socket addresses, nothing is trusted beyond
//! where a request is sent.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::RwLock;

use super::registry::{self, NodeInfo};
use crate::bus::redis::RedisConn;
use crate::bus::BusError;
use crate::engine::{Engine, EngineError};
use crate::transport::forward::{Forwarder, Limits, Owner, Owners, Service};

/// Expiry of a SockJS claim; refreshed every 10 s while the session lives.
pub const SOCKJS_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
struct Entry {
    alive: bool,
    bosh: Option<SocketAddr>,
    sockjs: Option<SocketAddr>,
}

impl Entry {
    fn of(info: &NodeInfo, alive: bool) -> Entry {
        let parse = |a: &Option<String>| a.as_deref().and_then(|a| a.parse::<SocketAddr>().ok());
        Entry { alive, bosh: parse(&info.bosh), sockjs: parse(&info.sockjs) }
    }
}

struct RedisOwners {
    node: String,
    prefix: String,
    conn: RedisConn,
    timeout: Duration,
    nodes: RwLock<HashMap<String, Entry>>,
    /// Names Redis said no node has, until the next refresh: a client
    /// making up BOSH sids does not cost an `HGET` per request (at most
    /// [`MAX_UNKNOWN`] names are remembered).
    unknown: RwLock<std::collections::HashSet<String>>,
    /// Names missing from the cache are asked of Redis one at a time, so a
    /// burst of requests naming one made-up node costs one `HGET`.
    asking: tokio::sync::Mutex<()>,
    token: RwLock<Option<Arc<str>>>,
}

/// Most unknown node names remembered between two refreshes.
const MAX_UNKNOWN: usize = 4096;
/// SockJS claims refreshed in one pipeline.
const KEEP_BATCH: usize = 500;

impl RedisOwners {
    fn sockjs_key(&self, session: &str) -> String {
        format!("{}sid:sockjs:{session}", self.prefix)
    }

    fn token_key(&self) -> String {
        format!("{}forward:token", self.prefix)
    }

    /// A node's entry, from the cache or (unknown there: a node that just
    /// joined) from Redis.
    async fn entry(&self, name: &str) -> Result<Option<Entry>, BusError> {
        if let Some(e) = self.nodes.read().get(name) {
            return Ok(Some(e.clone()));
        }
        if self.unknown.read().contains(name) {
            return Ok(None);
        }
        let _asking = self.asking.lock().await;
        // Answered while this request waited its turn?
        if let Some(e) = self.nodes.read().get(name) {
            return Ok(Some(e.clone()));
        }
        if self.unknown.read().contains(name) {
            return Ok(None);
        }
        let mut hget = redis::cmd("HGET");
        hget.arg(format!("{}nodes", self.prefix)).arg(name);
        let json = self.conn.query::<Option<String>>(&hget, self.timeout).await?;
        let Some(info) = json.and_then(|j| serde_json::from_str::<NodeInfo>(&j).ok()) else {
            let mut unknown = self.unknown.write();
            if unknown.len() < MAX_UNKNOWN {
                unknown.insert(name.to_owned());
            }
            return Ok(None);
        };
        let mut exists = redis::cmd("EXISTS");
        exists.arg(format!("{}alive:{name}", self.prefix));
        let alive: bool = self.conn.query(&exists, self.timeout).await?;
        let e = Entry::of(&info, alive);
        self.nodes.write().insert(name.to_owned(), e.clone());
        Ok(Some(e))
    }

    async fn locate_node(&self, name: &str, service: Service) -> Owner {
        if name == self.node {
            return Owner::Here;
        }
        match self.entry(name).await {
            Ok(Some(Entry { alive: true, bosh, sockjs })) => {
                match if service == Service::Bosh { bosh } else { sockjs } {
                    Some(addr) => Owner::Node { name: name.to_owned(), addr },
                    None => Owner::Here,
                }
            }
            Ok(_) => Owner::Here,
            Err(_) => Owner::Unknown,
        }
    }

    async fn claim(&self, session: &str) -> Owner {
        let key = self.sockjs_key(session);
        let ttl = SOCKJS_TTL.as_millis() as u64;
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(&self.node).arg("NX").arg("GET").arg("PX").arg(ttl);
        let held = match self.conn.query::<Option<String>>(&set, self.timeout).await {
            Ok(None) => return Owner::Here,
            Ok(Some(n)) => n,
            Err(_) => return Owner::Unknown,
        };
        match self.locate_node(&held, Service::SockJs).await {
            Owner::Here => {
                // Ours already, or a dead (or unknown) node's: take it.
                let mut set = redis::cmd("SET");
                set.arg(&key).arg(&self.node).arg("PX").arg(ttl);
                match self.conn.query::<()>(&set, self.timeout).await {
                    Ok(()) => Owner::Here,
                    Err(_) => Owner::Unknown,
                }
            }
            other => other,
        }
    }

    async fn owner(&self, session: &str) -> Owner {
        let mut get = redis::cmd("GET");
        get.arg(self.sockjs_key(session));
        match self.conn.query::<Option<String>>(&get, self.timeout).await {
            Ok(None) => Owner::Here,
            Ok(Some(n)) => self.locate_node(&n, Service::SockJs).await,
            Err(_) => Owner::Unknown,
        }
    }

    async fn keep(&self, held: Vec<String>, gone: Vec<String>) {
        let ttl = SOCKJS_TTL.as_millis() as u64;
        // Standalone: pipelined in batches, one round trip each. A Redis
        // Cluster spreads the keys over slots: one command each. A failure
        // does not skip the rest (they may be on a master that answers)
        // until a few in a row say Redis is out of reach: then the claims
        // expire or are refreshed next round.
        let batch = if self.conn.sharded() { 1 } else { KEEP_BATCH };
        let mut failed = 0;
        for batch in held.chunks(batch) {
            let mut pipe = redis::pipe();
            for s in batch {
                pipe.cmd("PEXPIRE").arg(self.sockjs_key(s)).arg(ttl).ignore();
            }
            match self.conn.pipeline(&pipe, self.timeout).await {
                Ok(()) => failed = 0,
                Err(e) => {
                    tracing::debug!(claims = batch.len(), "SockJS claims not refreshed: {e}");
                    failed += 1;
                    if failed == 3 {
                        return;
                    }
                }
            }
        }
        for s in gone {
            // Only our own claim: another node may have taken the id since.
            let mut cmd = redis::cmd("EVAL");
            cmd.arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
                .arg(1)
                .arg(self.sockjs_key(&s))
                .arg(&self.node);
            if self.conn.query::<i64>(&cmd, self.timeout).await.is_err() {
                return;
            }
        }
    }

    /// Reloads the node cache and re-asserts the token (a Redis restarted
    /// without persistence forgot it).
    async fn refresh(&self, engine: &Engine) -> Result<(), BusError> {
        // Before the read, which may fail: a name refused once is asked
        // again after a beat, whatever Redis does meanwhile.
        self.unknown.write().clear();
        let views = registry::nodes(engine).await?;
        let map = views.iter().map(|v| (v.info.name.clone(), Entry::of(&v.info, v.alive))).collect();
        *self.nodes.write() = map;
        let mine = self.token.read().clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string().into());
        let mut set = redis::cmd("SET");
        set.arg(self.token_key()).arg(mine.as_ref()).arg("NX");
        self.conn.query::<Option<String>>(&set, self.timeout).await?;
        let mut get = redis::cmd("GET");
        get.arg(self.token_key());
        if let Some(t) = self.conn.query::<Option<String>>(&get, self.timeout).await? {
            if t.len() <= 256 && self.token.read().as_deref() != Some(t.as_str()) {
                *self.token.write() = Some(t.into());
            }
        }
        Ok(())
    }
}

impl Owners for Arc<RedisOwners> {
    fn node(&self) -> &str {
        &self.node
    }

    fn locate(&self, name: &str, service: Service) -> BoxFuture<'static, Owner> {
        let (this, name) = (self.clone(), name.to_owned());
        Box::pin(async move { this.locate_node(&name, service).await })
    }

    fn sockjs_owner(&self, key: &str) -> BoxFuture<'static, Owner> {
        let (this, key) = (self.clone(), key.to_owned());
        Box::pin(async move { this.owner(&key).await })
    }

    fn sockjs_claim(&self, key: &str) -> BoxFuture<'static, Owner> {
        let (this, key) = (self.clone(), key.to_owned());
        Box::pin(async move { this.claim(&key).await })
    }

    fn sockjs_keep(&self, held: Vec<String>, gone: Vec<String>) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move { this.keep(held, gone).await })
    }

    fn is_node(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nodes.read().values().any(|e| [e.bosh, e.sockjs].iter().flatten().any(|a| a.ip().to_canonical() == ip))
    }

    fn token(&self) -> Option<Arc<str>> {
        self.token.read().clone()
    }
}

/// Gives the node its forwarder (before the listeners bind) and keeps the
/// node cache and the token fresh every heartbeat.
pub(super) async fn start(engine: &Engine) -> Result<(), EngineError> {
    let cfg = engine.config.cluster.clone().expect("in a cluster");
    let (conn, timeout) = engine.cluster_redis().cloned().expect("joined");
    let owners = Arc::new(RedisOwners {
        node: engine.node().to_owned(),
        prefix: cfg.prefix.clone(),
        conn,
        timeout,
        nodes: RwLock::default(),
        unknown: RwLock::default(),
        asking: tokio::sync::Mutex::new(()),
        token: RwLock::default(),
    });
    owners.refresh(engine).await.map_err(|e| EngineError::Cluster(format!("forwarding: {e}")))?;
    let limits = Limits {
        max_concurrent: cfg.forward_max_concurrent,
        timeout: Duration::from_millis(cfg.forward_timeout_ms),
        max_answer_bytes: cfg.forward_max_answer_bytes,
    };
    engine.gate.set_forwarder(Forwarder::new(Arc::new(owners.clone()), limits));
    let every = Duration::from_millis(cfg.heartbeat_ms);
    let engine = engine.clone();
    let tasks = engine.tasks.clone();
    tasks.spawn(async move {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = engine.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match owners.refresh(&engine).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("cluster: cannot read the node registry, forwarding uses what it knew: {e}");
                }
                Err(_) => {}
            }
        }
    });
    Ok(())
}
