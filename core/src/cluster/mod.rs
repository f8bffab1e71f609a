//! A node in a cluster (`[cluster]`, docs/cluster.md): nodes that share
//! only Redis. [`join`] connects the [`Bus`](crate::bus::Bus), gives the
//! engine its Redis connection, routes what other nodes publish into this
//! node's bindings, answers control messages and keeps this node's entry
//! in the node registry ([`registry`]) fresh.
//!
//! Sits above the engine, beside `listen` (which calls [`join`] at start):
//! the engine publishes onto the Bus and sends control messages
//! ([`Engine::tell`]); this module is where they arrive.

pub mod registry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::bus::control::{self, Control};
use crate::bus::redis::{RedisBus, RedisBusConfig};
use crate::bus::{Bus, Envelope};
use crate::engine::{Engine, EngineError};

/// Joins the cluster when `[cluster]` is configured; a no-op otherwise.
/// Fails (and the node does not start) when Redis cannot be reached: a node
/// that believes it is alone while its peers route around it would split
/// the cluster silently.
pub async fn join(engine: &Engine) -> Result<(), EngineError> {
    let Some(cfg) = engine.config.cluster.clone() else {
        return Ok(());
    };
    let node = engine.node().to_owned();
    let bus_error = |e: crate::bus::BusError| EngineError::Cluster(e.to_string());
    let (bus, rx) = RedisBus::connect(RedisBusConfig::from_config(&cfg, &node)).await.map_err(bus_error)?;
    engine.set_cluster_redis(bus.redis(), bus.timeout());
    let wq = crate::bus::streams::WorkQueues::new(
        bus.redis(),
        bus.timeout(),
        &node,
        &cfg.prefix,
        std::time::Duration::from_millis(cfg.ttl_ms),
        cfg.publish_buffer,
    );
    wq.start(&engine.tasks, engine.shutdown.clone());
    engine.set_work_queues(wq);
    engine.set_offline_store(offline_store(engine, &cfg).await?);
    bus.subscribe(&control::to_node(&node)).await.map_err(bus_error)?;
    bus.subscribe(&control::to_every_node()).await.map_err(bus_error)?;
    engine.set_bus(Arc::new(bus))?;
    registry::start(engine).await?;
    engine.tasks.spawn(receive(engine.clone(), rx));
    tracing::info!(node, "joined the cluster");
    Ok(())
}

/// XEP-0160 offline storage in Redis: a message kept on one node is there
/// for whichever node the user logs in to next. (Messages kept on this
/// node's disk before it joined stay there, unread.)
async fn offline_store(
    engine: &Engine,
    cfg: &crate::config::ClusterConfig,
) -> Result<Arc<dyn crate::store::offline::OfflineStore>, EngineError> {
    use crate::store::offline_redis::{RedisOffline, RedisTarget};
    let o = &engine.config.xmpp.offline;
    let limits = crate::store::offline::OfflineLimits {
        max_messages_per_user: o.max_messages_per_user,
        max_bytes_per_user: o.max_bytes_per_user,
        max_total_bytes: o.max_total_bytes,
    };
    let target = match &cfg.redis {
        Some(url) => RedisTarget::Standalone(url.clone()),
        None => RedisTarget::Cluster(cfg.seeds.clone()),
    };
    let (prefix, timeout) =
        (cfg.prefix.clone(), engine.cluster_redis().map_or(std::time::Duration::from_secs(2), |r| r.1));
    let store = tokio::task::spawn_blocking(move || RedisOffline::connect(target, &prefix, limits, timeout))
        .await
        .map_err(|e| EngineError::Cluster(e.to_string()))?
        .map_err(|e| EngineError::Cluster(e.to_string()))?;
    Ok(Arc::new(store))
}

/// Routes what other nodes publish, one envelope at a time in arrival order
/// (per publisher and key, publish order: see bus/).
async fn receive(engine: Engine, mut rx: mpsc::Receiver<Envelope>) {
    loop {
        let env = tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            env = rx.recv() => match env {
                Some(env) => env,
                None => return,
            },
        };
        if control::is_control(&env) {
            match control::parse(&env) {
                Ok(c) => on_control(&engine, &env.origin, c).await,
                Err(e) => rejected(&env.origin, &e),
            }
        } else if let Err(e) = engine.route_envelope(env) {
            rejected("bus", &e);
        }
    }
}

/// What another node asks of this one.
async fn on_control(engine: &Engine, from: &str, c: Control) {
    match c {
        Control::Kick { uid, reason } => {
            let n = engine.kick_local(&uid, &reason);
            tracing::debug!(from, uid, sessions = n, "kicked on request of another node");
        }
    }
}

static REJECTED: AtomicU64 = AtomicU64::new(0);

/// Anyone with access to Redis can publish on the cluster's channels: a
/// message that does not parse or names an unknown vhost is dropped and
/// logged at powers of two, never trusted.
fn rejected(from: &str, why: &dyn std::fmt::Display) {
    let n = REJECTED.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(from, rejected = n, "cluster: dropped a message from the bus: {why}");
    }
}
