//! The node registry in Redis: which nodes exist, where other nodes reach
//! them (forwarded BOSH and SockJS requests) and whether they are alive.
//!
//! Keys (`<prefix>` is `[cluster] prefix`, `herald:` by default):
//! - `<prefix>nodes`: a hash, node name → JSON [`NodeInfo`] (address, start
//!   time, last beat). Entries stay after a node dies, until the survivor
//!   that cleans up after it removes them, so the console can show a dead
//!   node until then.
//! - `<prefix>alive:<node>`: the node's last beat (ms since the epoch),
//!   expiring after `ttl_ms`. A node is alive while this key exists: Redis'
//!   expiry decides, not a protocol of ours.
//!
//! Each beat is two single-key commands, so the scheme works unchanged on a
//! Redis Cluster (no multi-key command across slots).

use std::time::Duration;

use crate::bus::BusError;
use crate::engine::{Engine, EngineError};
use crate::store::now_ms;

/// What a node says about itself in `<prefix>nodes`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub name: String,
    /// `[cluster] address`: where other nodes reach this one's HTTP
    /// listener for forwarded requests; `None` when not configured.
    pub address: Option<String>,
    pub started_ms: u64,
    pub beat_ms: u64,
    /// Sessions on the node at its last beat.
    pub sessions: u64,
    /// Where other nodes send forwarded BOSH requests (`xmpp.http_listen`
    /// as reached at `address`' host); none before the listeners bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bosh: Option<String>,
    /// The same for SockJS (`http.listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockjs: Option<String>,
}

/// A node as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Whether its `alive:` key still exists.
    pub alive: bool,
}

fn prefix(engine: &Engine) -> &str {
    engine.config.cluster.as_ref().map_or("herald:", |c| c.prefix.as_str())
}

pub fn nodes_key(engine: &Engine) -> String {
    format!("{}nodes", prefix(engine))
}

pub fn alive_key(engine: &Engine, node: &str) -> String {
    format!("{}alive:{node}", prefix(engine))
}

fn redis(engine: &Engine) -> Result<&(crate::bus::redis::RedisConn, Duration), BusError> {
    engine.cluster_redis().ok_or_else(|| BusError::Unavailable("not in a cluster".into()))
}

/// Writes this node's beat: its entry in `<prefix>nodes` and its `alive:` key.
pub async fn beat(engine: &Engine, started_ms: u64) -> Result<(), BusError> {
    beat_found(engine, started_ms).await.map(drop)
}

/// [`beat`], saying whether the previous beat was still there: `false`
/// when Redis lost it (restarted without persistence) or it expired (this
/// node was silent for a TTL and may have been reaped), so what this node
/// holds must be asserted again.
async fn beat_found(engine: &Engine, started_ms: u64) -> Result<bool, BusError> {
    let (conn, timeout) = redis(engine)?;
    let cfg = engine.config.cluster.as_ref().expect("in a cluster");
    let now = now_ms();
    let info = NodeInfo {
        name: engine.node().to_owned(),
        address: cfg.address.clone(),
        started_ms,
        beat_ms: now,
        sessions: engine.hub.session_count() as u64,
        bosh: forward_target(engine, cfg, "xmpp-http"),
        sockjs: forward_target(engine, cfg, "http"),
    };
    let json = serde_json::to_string(&info).expect("node info serializes");
    let mut hset = redis::cmd("HSET");
    hset.arg(nodes_key(engine)).arg(engine.node()).arg(json);
    conn.query::<()>(&hset, *timeout).await?;
    let mut set = redis::cmd("SET");
    set.arg(alive_key(engine, engine.node())).arg(now).arg("PX").arg(cfg.ttl_ms).arg("GET");
    conn.query::<Option<String>>(&set, *timeout).await.map(|previous| previous.is_some())
}

/// The listener `name` as other nodes reach it: at the host of `[cluster]
/// address` when set (a listener bound to `0.0.0.0` names no host), else
/// at its bound address.
fn forward_target(engine: &Engine, cfg: &crate::config::ClusterConfig, name: &str) -> Option<String> {
    let bound = engine.listeners.lock().iter().find(|l| l.name == name)?.addr;
    let host = match cfg.address.as_deref().and_then(|a| a.parse::<std::net::SocketAddr>().ok()) {
        Some(a) => a.ip(),
        None if bound.ip().is_unspecified() => return None,
        None => bound.ip(),
    };
    Some(std::net::SocketAddr::new(host, bound.port()).to_string())
}

/// Every node in the registry, alive or not, sorted by name.
pub async fn nodes(engine: &Engine) -> Result<Vec<NodeView>, BusError> {
    let (conn, timeout) = redis(engine)?;
    let mut hgetall = redis::cmd("HGETALL");
    hgetall.arg(nodes_key(engine));
    let entries: Vec<(String, String)> = conn.query(&hgetall, *timeout).await?;
    let mut out = Vec::with_capacity(entries.len());
    for (name, json) in entries {
        // Anyone with access to Redis can write here: skip what does not parse.
        let Ok(info) = serde_json::from_str::<NodeInfo>(&json) else {
            tracing::warn!(node = name, "cluster: unreadable entry in the node registry");
            continue;
        };
        let mut exists = redis::cmd("EXISTS");
        exists.arg(alive_key(engine, &name));
        let alive: bool = conn.query(&exists, *timeout).await?;
        out.push(NodeView { info, alive });
    }
    out.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    Ok(out)
}

/// Beats once (a node that cannot write its first beat does not start),
/// then every `heartbeat_ms` in the node's tasks. A failed beat is logged
/// once per outage; the node keeps serving its local sessions.
pub(super) async fn start(engine: &Engine) -> Result<(), EngineError> {
    let started_ms = now_ms();
    beat(engine, started_ms).await.map_err(|e| EngineError::Cluster(format!("first heartbeat: {e}")))?;
    let every = Duration::from_millis(engine.config.cluster.as_ref().expect("in a cluster").heartbeat_ms);
    let engine = engine.clone();
    let tasks = engine.tasks.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let reaping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            tokio::select! {
                _ = engine.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let beaten = beat_found(&engine, started_ms).await;
            if beaten.is_ok() {
                super::reap::tick(&engine, &reaping);
            }
            let stale = beaten.is_ok() && engine.shared_presence().is_some_and(|s| s.take_stale());
            if matches!(beaten, Ok(false)) || (failing && beaten.is_ok()) || stale {
                tracing::info!(
                    "cluster: Redis lost this node's beat or was out of reach; asserting this node's presence again"
                );
                let again = engine.clone();
                engine.tasks.spawn(async move {
                    match super::reap::reassert(&again).await {
                        Ok(users) => tracing::info!(users, "cluster: presence asserted again"),
                        Err(e) => tracing::warn!("cluster: presence not asserted again: {e}"),
                    }
                });
            }
            match beaten {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("cluster: heartbeat written again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("cluster: heartbeat failed, other nodes may declare this node dead: {e}");
                }
                Err(_) => {}
            }
        }
    });
    Ok(())
}
