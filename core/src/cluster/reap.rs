//! Node death: a survivor removes a dead node's leftovers; a node
//! restarting under the same name removes its own first.
//!
//! A node is dead when its `<prefix>alive:<node>` key expired (registry.rs)
//! while its entry in `<prefix>nodes` is still there. On every heartbeat
//! tick each node looks for such nodes; for each, `SET <prefix>reap:<node>
//! <me> NX PX <lock>` decides which survivor cleans up (Redis decides, no
//! protocol of ours). The winner checks once more that the node is still
//! dead, then removes its resources from the shared presence (aggregates
//! and online sets recomputed by the same script as a logout, contacts on
//! every node told once), its members of the Bus's wildcard set (with a
//! `-` notice so publishers stop publishing for it) and its registry entry.
//!
//! A node starting under a name takes the same lock for itself (waiting
//! while a survivor still reaps it), removes its previous run's leftovers,
//! writes its first beat and only then lets go of the lock: a survivor
//! that saw it dead a moment earlier finds it alive once it holds the lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::bus::BusError;
use crate::engine::Engine;

/// Most registry entries looked at per tick (the hash is writable by anyone with Redis access).
const MAX_NODES: usize = 1_000;
/// Users removed between two refreshes of the lock.
const REFRESH_EVERY: usize = 500;

fn prefix(engine: &Engine) -> &str {
    engine.config.cluster.as_ref().map_or("herald:", |c| c.prefix.as_str())
}

fn lock_key(engine: &Engine, node: &str) -> String {
    format!("{}reap:{node}", prefix(engine))
}

/// The lock lasts a few TTLs (refreshed while reaping), so a survivor that
/// died mid-reap hands over to another within that time.
fn lock_ms(engine: &Engine) -> u64 {
    engine.config.cluster.as_ref().map_or(5_000, |c| c.ttl_ms) * 4
}

fn conn(engine: &Engine) -> Result<&(crate::bus::redis::RedisConn, Duration), BusError> {
    engine.cluster_redis().ok_or_else(|| BusError::Unavailable("not in a cluster".into()))
}

async fn try_lock(engine: &Engine, node: &str, token: &str) -> Result<bool, BusError> {
    let (conn, timeout) = conn(engine)?;
    let mut set = redis::cmd("SET");
    set.arg(lock_key(engine, node)).arg(token).arg("NX").arg("PX").arg(lock_ms(engine));
    let r: Option<String> = conn.query(&set, *timeout).await?;
    Ok(r.is_some())
}

/// Lets go of the lock on `node` if `token` still holds it.
pub async fn release(engine: &Engine, node: &str, token: &str) {
    let Ok((conn, timeout)) = conn(engine) else { return };
    let mut eval = redis::cmd("EVAL");
    eval.arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
        .arg(1)
        .arg(lock_key(engine, node))
        .arg(token);
    if let Err(e) = conn.query::<i64>(&eval, *timeout).await {
        tracing::debug!(node, "cluster: reap lock not released (it expires): {e}");
    }
}

async fn alive(engine: &Engine, node: &str) -> Result<bool, BusError> {
    let (conn, timeout) = conn(engine)?;
    conn.query(redis::cmd("EXISTS").arg(super::registry::alive_key(engine, node)), *timeout).await
}

/// At start: takes the lock on this node's own name, waiting (bounded by
/// the lock's lifetime) while a survivor still reaps its previous run.
/// Returns the token to [`release`] once the first beat is written.
pub async fn hold_own(engine: &Engine) -> Result<String, BusError> {
    let token = format!("{}#start", engine.node());
    let deadline = tokio::time::Instant::now() + Duration::from_millis(lock_ms(engine) + 1_000);
    loop {
        if try_lock(engine, engine.node(), &token).await? {
            return Ok(token);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BusError::Unavailable("another node holds this node's reap lock".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes `node`'s resources from the shared presence (contacts told),
/// its wildcard members and, for a dead node (`forget`), its registry
/// entry. Returns how many users it touched.
pub async fn leftovers(engine: &Engine, node: &str, forget: bool) -> Result<usize, BusError> {
    let Some(shared) = engine.shared_presence().cloned() else {
        return Ok(0);
    };
    let unavailable = |e: crate::presence::PresenceError| BusError::Unavailable(e.to_string());
    if forget {
        // What the dead node said before dying is delivered here first, so
        // its users' last word is this reap's "unavailable".
        let limit = engine.cluster_redis().map_or(Duration::from_secs(2), |r| r.1);
        engine.presence_backlog.caught_up(limit).await;
    }
    let users = shared.users_on(node).await.map_err(unavailable)?;
    let token = engine.node().to_owned();
    for (i, uid) in users.iter().enumerate() {
        if forget && i > 0 && i % REFRESH_EVERY == 0 {
            let (conn, timeout) = conn(engine)?;
            let mut set = redis::cmd("SET");
            set.arg(lock_key(engine, node)).arg(&token).arg("XX").arg("PX").arg(lock_ms(engine));
            conn.query::<Option<String>>(&set, *timeout).await?;
        }
        let projects: Vec<String> = match engine.directory().projects_of(uid).await {
            Ok(p) => p.into_iter().map(|p| p.id).collect(),
            Err(e) => {
                tracing::warn!(uid, "cluster reap: directory unavailable, online sets not updated: {e}");
                Vec::new()
            }
        };
        let (removed, change) = shared.remove_node(uid, node, &projects).await.map_err(unavailable)?;
        for r in &removed {
            // Its full JIDs are free again (only if they still name that session).
            shared.release_of(uid, &r.resource, node, r.session).await.map_err(unavailable)?;
        }
        if !removed.is_empty() {
            engine.presence_reaped(uid, removed, change).await;
        }
    }
    shared.forget_node(node).await.map_err(unavailable)?;
    forget_wildcards(engine, node).await?;
    if forget {
        let (conn, timeout) = conn(engine)?;
        conn.query::<()>(redis::cmd("HDEL").arg(super::registry::nodes_key(engine)).arg(node), *timeout).await?;
    }
    Ok(users.len())
}

/// Redis is back after an outage (it may have restarted empty, or missed
/// this node's changes meanwhile): this node's resources of every user it
/// holds, or held according to Redis, are asserted again, exactly. Returns
/// how many users.
pub async fn reassert(engine: &Engine) -> Result<usize, BusError> {
    let Some(shared) = engine.shared_presence().cloned() else {
        return Ok(0);
    };
    let unavailable = |e: crate::presence::PresenceError| BusError::Unavailable(e.to_string());
    let mut users = engine.presence.users();
    users.extend(shared.users_on(engine.node()).await.map_err(unavailable)?);
    users.sort_unstable();
    users.dedup();
    for uid in &users {
        let projects: Vec<String> = match engine.directory().projects_of(uid).await {
            Ok(p) => p.into_iter().map(|p| p.id).collect(),
            Err(_) => Vec::new(),
        };
        let local = engine.presence.resources(uid);
        let mine: Vec<crate::presence::SharedResource> = local
            .iter()
            .map(|r| crate::presence::SharedResource {
                node: engine.node().to_owned(),
                session: r.session,
                resource: r.resource.clone(),
                availability: r.availability,
                status: r.status.clone(),
                priority: r.priority,
            })
            .collect();
        let change = shared.replace_mine(uid, &mine, &projects).await.map_err(unavailable)?;
        if change.changed() {
            engine.presence_reasserted(uid, local, change).await;
        }
    }
    Ok(users.len())
}

/// Removes `node`'s members (`vhost NUL exchange NUL node`) from the Bus's
/// wildcard set, each with a `-` notice on the control channel so
/// publishers drop it from their copy (bus/redis.rs).
async fn forget_wildcards(engine: &Engine, node: &str) -> Result<(), BusError> {
    let (conn, timeout) = conn(engine)?;
    let key = format!("{}bus:wild", prefix(engine));
    let members: Vec<Vec<u8>> = conn.query(redis::cmd("SMEMBERS").arg(&key), *timeout).await?;
    let ctl = format!("{}bus:ctl", prefix(engine));
    for m in members {
        if m.split(|b| *b == 0).nth(2) != Some(node.as_bytes()) {
            continue;
        }
        conn.query::<()>(redis::cmd("SREM").arg(&key).arg(&m), *timeout).await?;
        let mut notice = vec![b'-'];
        notice.extend_from_slice(&m);
        let mut publish = redis::cmd(if conn.sharded() { "SPUBLISH" } else { "PUBLISH" });
        publish.arg(&ctl).arg(Bytes::from(notice).as_ref());
        conn.query::<()>(&publish, *timeout).await?;
    }
    Ok(())
}

/// One heartbeat tick's look for dead nodes; reaps in the background
/// (never delays the beat), one look at a time per node (`busy`).
pub fn tick(engine: &Engine, busy: &Arc<AtomicBool>) {
    if busy.swap(true, Ordering::SeqCst) {
        return;
    }
    let busy = busy.clone();
    let engine = engine.clone();
    let tasks = engine.tasks.clone();
    tasks.spawn(async move {
        if let Err(e) = look(&engine).await {
            tracing::debug!("cluster: looking for dead nodes failed: {e}");
        }
        busy.store(false, Ordering::SeqCst);
    });
}

async fn look(engine: &Engine) -> Result<(), BusError> {
    let (conn, timeout) = conn(engine)?;
    let names: Vec<String> = conn.query(redis::cmd("HKEYS").arg(super::registry::nodes_key(engine)), *timeout).await?;
    for node in names.into_iter().filter(|n| n != engine.node()).take(MAX_NODES) {
        if alive(engine, &node).await? || !try_lock(engine, &node, engine.node()).await? {
            continue;
        }
        // It may have restarted between the look and the lock (it beats
        // before letting go of its own lock).
        if alive(engine, &node).await? {
            release(engine, &node, engine.node()).await;
            continue;
        }
        let started = tokio::time::Instant::now();
        let result = leftovers(engine, &node, true).await;
        release(engine, &node, engine.node()).await;
        match result {
            Ok(users) => tracing::info!(
                node,
                users,
                ms = started.elapsed().as_millis() as u64,
                "cluster: reaped a dead node's sessions"
            ),
            Err(e) => tracing::warn!(node, "cluster: reaping a dead node failed (retried next tick): {e}"),
        }
    }
    Ok(())
}
