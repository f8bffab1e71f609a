//! A node in a cluster (`[cluster]`, docs/cluster.md): nodes that share
//! only Redis. [`join`] connects the [`Bus`](crate::bus::Bus), gives the
//! engine its Redis connection, routes what other nodes publish into this
//! node's bindings, answers control messages and keeps this node's entry
//! in the node registry ([`registry`]) fresh.
//!
//! Sits above the engine, beside `listen` (which calls [`join`] at start):
//! the engine publishes onto the Bus and sends control messages
//! ([`Engine::tell`]); this module is where they arrive.

pub mod forward;
pub mod reap;
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
    let bus: Arc<dyn Bus> = Arc::new(bus);
    engine.set_bus(bus.clone())?;
    let shared = Arc::new(crate::presence::cluster::RedisSharedPresence::new(
        engine.cluster_redis().expect("set above").0.clone(),
        engine.cluster_redis().expect("set above").1,
        &cfg.prefix,
        &node,
        crate::presence::cluster::SharedLimits {
            max_resources: cfg.max_resources,
            max_status_bytes: cfg.max_status_bytes,
        },
    ));
    // In a cluster presence lives in the cluster's Redis, whatever `[presence]` says.
    engine.set_presence_store(shared.clone());
    engine.set_shared_presence(shared);
    // A node restarting under the same name: what its previous run left
    // (resources, wildcard members) goes before it takes sessions.
    let lock = reap::hold_own(engine).await.map_err(|e| EngineError::Cluster(format!("own leftovers: {e}")))?;
    reap::leftovers(engine, &node, false).await.map_err(|e| EngineError::Cluster(format!("own leftovers: {e}")))?;
    registry::start(engine).await?;
    reap::release(engine, &node, &lock).await;
    forward::start(engine).await?;
    engine.tasks.spawn(receive(engine.clone(), rx));
    // Bindings made before the join (durable queues restored at start,
    // anything the application bound) are heard from the start.
    engine.router.track_interests();
    engine.tasks.spawn(reconcile(engine.clone(), bus));
    engine.interests_settled().await;
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
/// (per publisher and key, publish order: see bus/). Presence notices go
/// to their own task ([`presence_worker`]): delivering one looks up the
/// user's projects in the directory, which may be slow, and messages must
/// not wait behind it.
async fn receive(engine: Engine, mut rx: mpsc::Receiver<Envelope>) {
    let backlog = engine.config.cluster.as_ref().map_or(10_000, |c| c.receive_buffer).max(1);
    let (notices, pending) = mpsc::channel(backlog);
    engine.tasks.spawn(presence_worker(engine.clone(), pending));
    while let Some(env) = next(&engine, &mut rx).await {
        if control::is_control(&env) {
            match control::parse(&env) {
                Ok(c) => on_control(&engine, &env.origin, c, &notices),
                Err(e) => rejected(&env.origin, &e),
            }
        } else if let Err(e) = engine.route_envelope(env) {
            rejected("bus", &e);
        }
    }
}

/// The next item of `rx`, or `None` once it is closed or the engine stops.
async fn next<T>(engine: &Engine, rx: &mut mpsc::Receiver<T>) -> Option<T> {
    tokio::select! {
        _ = engine.shutdown.cancelled() => None,
        item = rx.recv() => item,
    }
}

/// A presence change on another node, checked, for [`presence_worker`].
struct Notice {
    uid: String,
    resource: String,
    availability: crate::presence::Availability,
    status: String,
    priority: i8,
    aggregate: Option<(crate::presence::Availability, String)>,
}

/// Delivers other nodes' presence notices to this node's sessions, in the
/// order they arrived.
async fn presence_worker(engine: Engine, mut pending: mpsc::Receiver<Notice>) {
    while let Some(n) = next(&engine, &mut pending).await {
        engine.presence_elsewhere(&n.uid, &n.resource, n.availability, &n.status, n.priority, n.aggregate).await;
        engine.presence_backlog.delivered();
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

/// What another node asks of this one. Presence is checked here and
/// queued for [`presence_worker`] (dropped, and counted as rejected, when
/// `receive_buffer` notices already wait).
fn on_control(engine: &Engine, from: &str, c: Control, notices: &mpsc::Sender<Notice>) {
    match c {
        Control::Kick { uid, reason } => {
            let n = engine.kick_local(&uid, &reason);
            tracing::debug!(from, uid, sessions = n, "kicked on request of another node");
        }
        Control::Presence { uid, resource, state, status, priority, aggregate } => {
            let max_status = engine.config.cluster.as_ref().map_or(1024, |c| c.max_status_bytes);
            let parse = |state: &str, status: &str| {
                Some((crate::presence::Availability::parse(state)?, status.len() <= max_status))
            };
            let Some((availability, true)) = parse(&state, &status) else {
                return rejected(from, &"presence with an unknown state or an oversized status");
            };
            let aggregate = match aggregate {
                None => None,
                Some(a) => match parse(&a.state, &a.status) {
                    Some((av, true)) => Some((av, a.status)),
                    _ => return rejected(from, &"presence with an unknown aggregate"),
                },
            };
            if uid.is_empty() || uid.len() > 1024 || resource.len() > 1023 {
                return rejected(from, &"presence with an oversized uid or resource");
            }
            let notice = Notice { uid, resource, availability, status, priority, aggregate };
            match notices.try_send(notice) {
                Ok(()) => engine.presence_backlog.queued(),
                Err(_) => {
                    rejected(from, &"presence notice dropped: the presence backlog (cluster.receive_buffer) is full")
                }
            }
        }
        Control::Conflict { uid, resource, session } => {
            let replaced = engine.replaced_elsewhere(&uid, &resource, session);
            tracing::debug!(from, uid, resource, replaced, "full JID bound on another node");
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
