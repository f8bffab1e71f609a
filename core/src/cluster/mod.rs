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
use std::time::Duration;

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
    bus.subscribe(&control::to_node(&node)).await.map_err(bus_error)?;
    bus.subscribe(&control::to_every_node()).await.map_err(bus_error)?;
    let bus: Arc<dyn Bus> = Arc::new(bus);
    engine.set_bus(bus.clone())?;
    registry::start(engine).await?;
    engine.tasks.spawn(receive(engine.clone(), rx));
    // Bindings made before the join (durable queues restored at start,
    // anything the application bound) are heard from the start.
    engine.router.track_interests();
    engine.tasks.spawn(reconcile(engine.clone(), bus));
    engine.interests_settled().await;
    tracing::info!(node, "joined the cluster");
    Ok(())
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

/// Keeps this node's Bus subscriptions in step with its bindings: takes
/// the interests the router marked (first binding, last binding gone) and
/// subscribes or unsubscribes each as its count is now. While Redis is down
/// nothing is tried; the marked interests wait and are handled on reconnect
/// (what was subscribed before the outage the Bus re-subscribes itself).
async fn reconcile(engine: Engine, bus: Arc<dyn Bus>) {
    use futures_util::StreamExt;
    let changes = engine.router.interest_changes.clone();
    let pause = Duration::from_millis(200);
    loop {
        if !changes.pending() {
            tokio::select! {
                _ = engine.shutdown.cancelled() => return,
                _ = changes.changed() => {}
            }
        }
        let (batch, generation) = changes.take();
        if !batch.is_empty() && !bus.is_connected() {
            // Waiters (a SUBSCRIBE's RECEIPT) do not wait for the outage.
            changes.retry(batch);
            changes.finished(generation);
            tokio::select! {
                _ = engine.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => continue,
            }
        }
        let failed = parking_lot::Mutex::new(Vec::new());
        futures_util::stream::iter(batch)
            .for_each_concurrent(SUBSCRIBING, |i| {
                let (engine, bus, failed) = (&engine, &bus, &failed);
                async move {
                    let wanted = engine.router.vhost(&i.vhost).is_ok_and(|v| v.holds_interest(&i));
                    let r = if wanted { bus.subscribe(&i).await } else { bus.unsubscribe(&i).await };
                    if let Err(e) = r {
                        tracing::debug!(interest = ?i, "cluster bus: (un)subscribe failed, retried: {e}");
                        failed.lock().push(i);
                    }
                }
            })
            .await;
        let failed = failed.into_inner();
        changes.finished(generation);
        if !failed.is_empty() {
            tracing::warn!(interests = failed.len(), "cluster bus: subscriptions not confirmed by Redis, retrying");
            changes.retry(failed);
            tokio::select! {
                _ = engine.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Subscriptions in flight at once (a burst of logins each adding a user's
/// feed key).
const SUBSCRIBING: usize = 64;

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
