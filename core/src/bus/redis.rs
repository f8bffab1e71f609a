//! The [`Bus`] over Redis pub/sub: standalone Redis (`SUBSCRIBE`/`PUBLISH`)
//! or a Redis Cluster 7+ (sharded pub/sub, `SSUBSCRIBE`/`SPUBLISH`).
//!
//! Both go through the `redis` crate 1.x in RESP3 mode, where subscriptions
//! share the command connection and messages arrive as push frames on a
//! callback: a [`ConnectionManager`] for standalone Redis (reconnects by
//! itself and, with automatic resubscription, re-issues every SUBSCRIBE),
//! the crate's `ClusterConnection` for a cluster (one connection per
//! master, sharded subscriptions routed by hash slot and re-issued when a
//! node's connection is rebuilt or a slot moves).
//!
//! On a disconnection push the bus marks itself disconnected (publishes are
//! refused with [`BusError::Unavailable`]), then a watcher pings until Redis
//! answers, reloads the wildcard set and marks itself connected again.
//! Envelopes accepted but not yet written when Redis fails are lost: the
//! bus is at most once, as Redis pub/sub is.
//!
//! Bounds: [`RedisBusConfig::publish_buffer`] envelopes waiting to be
//! written (beyond it, [`BusError::Full`]); [`RedisBusConfig::receive_buffer`]
//! envelopes waiting for the router (beyond it, dropped and counted in
//! [`BusStats::dropped`]). Open: the cluster connection of the crate feeds
//! push frames through an unbounded internal channel before our callback.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify};

use super::{codec, BoxFuture, Bus, BusError, BusStats, Envelope, Interest};

/// Where Redis is.
#[derive(Clone, Debug)]
pub enum Target {
    /// `redis://host:port[/db]` of a standalone Redis.
    Standalone(String),
    /// Seed nodes of a Redis Cluster (`redis://host:port` each).
    Cluster(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct RedisBusConfig {
    pub target: Target,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// Prefix of every channel and key (`herald:` like presence).
    pub prefix: String,
    /// Envelopes accepted but not yet written to Redis.
    pub publish_buffer: usize,
    /// Received envelopes waiting for the receiver.
    pub receive_buffer: usize,
    /// Bound on connecting and on every command.
    pub timeout: Duration,
}

impl RedisBusConfig {
    /// From `[cluster]` (validated: exactly one of `redis` and `seeds`) and `node.name`.
    pub fn from_config(c: &crate::config::ClusterConfig, node: &str) -> RedisBusConfig {
        let target = match &c.redis {
            Some(url) => Target::Standalone(url.clone()),
            None => Target::Cluster(c.seeds.clone()),
        };
        RedisBusConfig {
            prefix: c.prefix.clone(),
            publish_buffer: c.publish_buffer,
            receive_buffer: c.receive_buffer,
            ..RedisBusConfig::new(target, node)
        }
    }

    pub fn new(target: Target, node: &str) -> RedisBusConfig {
        RedisBusConfig {
            target,
            node: node.into(),
            prefix: "herald:".into(),
            publish_buffer: 10_000,
            receive_buffer: 10_000,
            timeout: Duration::from_secs(2),
        }
    }
}

/// One connection to Redis, standalone or cluster, shared by the bus and
/// the cluster's other Redis work (node registry, presence, work queues):
/// commands on it are pipelined with the bus's publishes.
#[derive(Clone)]
pub enum RedisConn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// A Redis Cluster (sharded pub/sub; keys of one command must share a slot).
    pub fn sharded(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// Runs one command, bounded by `timeout`.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, timeout: Duration) -> Result<T, BusError> {
        let fut = async {
            match self.clone() {
                RedisConn::Standalone(mut c) => cmd.query_async(&mut c).await,
                RedisConn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        };
        bounded(fut, timeout).await
    }

    /// Runs a pipeline (on a Redis Cluster its commands are routed by key),
    /// bounded by `timeout`; replies are not read (`ignore` them).
    pub async fn pipeline(&self, pipe: &redis::Pipeline, timeout: Duration) -> Result<(), BusError> {
        let fut = async {
            match self.clone() {
                RedisConn::Standalone(mut c) => pipe.query_async::<()>(&mut c).await,
                RedisConn::Cluster(mut c) => pipe.query_async::<()>(&mut c).await,
            }
        };
        bounded(fut, timeout).await
    }

    async fn subscribe(&self, channel: &str, on: bool, timeout: Duration) -> Result<(), BusError> {
        let fut = async {
            match (self.clone(), on) {
                (RedisConn::Standalone(mut c), true) => c.subscribe(channel).await,
                (RedisConn::Standalone(mut c), false) => c.unsubscribe(channel).await,
                (RedisConn::Cluster(mut c), true) => c.ssubscribe(channel).await,
                (RedisConn::Cluster(mut c), false) => c.sunsubscribe(channel).await,
            }
        };
        bounded(fut, timeout).await
    }

    fn publish_cmd(&self, channel: &str, frame: &Bytes) -> redis::Cmd {
        let mut cmd = redis::cmd(if self.sharded() { "SPUBLISH" } else { "PUBLISH" });
        cmd.arg(channel).arg(frame.as_ref());
        cmd
    }
}

/// A Redis call bounded by `timeout`, its errors as [`BusError::Unavailable`].
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
    timeout: Duration,
) -> Result<T, BusError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map_err(|e| BusError::Unavailable(format!("redis: {e}"))),
        Err(_) => Err(BusError::Unavailable(format!("redis: no answer within {timeout:?}"))),
    }
}

struct Shared {
    node: String,
    prefix: String,
    timeout: Duration,
    held: Held,
    /// (vhost, exchange) → nodes with wildcard interest there.
    wild: Mutex<HashMap<(String, String), HashSet<String>>>,
    connected: AtomicBool,
    disconnected: Notify,
    closed: AtomicBool,
    seq: AtomicU64,
    published: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    bad_frames: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn ctl_channel(&self) -> String {
        format!("{}bus:ctl", self.prefix)
    }
    fn wild_key(&self) -> String {
        format!("{}bus:wild", self.prefix)
    }

    fn bad(&self, why: &dyn std::fmt::Display) {
        let n = self.bad_frames.fetch_add(1, Ordering::Relaxed) + 1;
        // Anyone with access to Redis can publish on our channels: log the
        // first bad frames and then every power of two, not every one.
        if n.is_power_of_two() {
            tracing::warn!(bad_frames = n, "cluster bus: dropped a bad frame: {why}");
        }
    }

    /// A notice on the control channel or a member of the wildcard set:
    /// `vhost NUL exchange NUL node`.
    fn apply_wild(&self, member: &[u8], add: bool) {
        let Ok(s) = std::str::from_utf8(member) else { return self.bad(&"control notice not UTF-8") };
        let mut parts = s.splitn(3, '\0');
        let (Some(v), Some(e), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            return self.bad(&"control notice malformed");
        };
        let mut wild = self.wild.lock().unwrap();
        let k = (v.to_owned(), e.to_owned());
        if add {
            wild.entry(k).or_default().insert(n.to_owned());
        } else if let Some(set) = wild.get_mut(&k) {
            set.remove(n);
            if set.is_empty() {
                wild.remove(&k);
            }
        }
    }

    /// Whether another node has wildcard interest in (vhost, exchange).
    fn others_wild(&self, vhost: &str, exchange: &str) -> bool {
        let wild = self.wild.lock().unwrap();
        wild.get(&(vhost.to_owned(), exchange.to_owned())).is_some_and(|s| s.iter().any(|n| *n != self.node))
    }

    /// The push callback: runs on the connection's reader, so it only
    /// decodes, filters and hands over without waiting.
    fn on_push(&self, info: PushInfo, out: &mpsc::Sender<Envelope>) {
        match info.kind {
            PushKind::Disconnection => {
                tracing::debug!(data = ?info.data, "cluster bus: disconnection push");
                if self.connected.swap(false, Ordering::SeqCst) {
                    tracing::warn!("cluster bus: disconnected from Redis");
                }
                self.disconnected.notify_one();
            }
            PushKind::Message | PushKind::SMessage => {
                let (Some(Value::BulkString(ch)), Some(Value::BulkString(payload))) =
                    (info.data.first(), info.data.get(1))
                else {
                    return self.bad(&"push without channel and payload");
                };
                if ch.as_slice() == self.ctl_channel().as_bytes() {
                    match payload.split_first() {
                        Some((b'+', m)) => self.apply_wild(m, true),
                        Some((b'-', m)) => self.apply_wild(m, false),
                        _ => self.bad(&"control notice malformed"),
                    }
                    return;
                }
                let env = match codec::decode(Bytes::copy_from_slice(payload)) {
                    Ok(e) => e,
                    Err(e) => return self.bad(&e),
                };
                if env.origin == self.node {
                    return;
                }
                let exact = Interest::exact(&env.vhost, &env.exchange, &env.routing_key);
                let wildcard = Interest::wildcard(&env.vhost, &env.exchange);
                let deliver = if ch.as_slice() == exact.channel(&self.prefix).as_bytes() {
                    self.held.contains(&exact)
                } else if ch.as_slice() == wildcard.channel(&self.prefix).as_bytes() {
                    // The same message came on the key channel too.
                    self.held.contains(&wildcard) && !(env.also_exact && self.held.contains(&exact))
                } else {
                    return self.bad(&"envelope does not belong on its channel");
                };
                if !deliver {
                    return;
                }
                self.received.fetch_add(1, Ordering::Relaxed);
                if out.try_send(env).is_err() {
                    let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(dropped = n, "cluster bus: receiver full, envelope dropped");
                    }
                }
            }
            _ => {}
        }
    }
}

/// Which interests a node holds, shared by the subscribe calls and the
/// receiving side (to drop the wildcard copy of what it also hears exactly).
#[derive(Debug, Default)]
struct Held(Mutex<HashSet<Interest>>);

impl Held {
    fn insert(&self, i: &Interest) -> bool {
        self.0.lock().unwrap().insert(i.clone())
    }
    fn remove(&self, i: &Interest) -> bool {
        self.0.lock().unwrap().remove(i)
    }
    fn all(&self) -> Vec<Interest> {
        self.0.lock().unwrap().iter().cloned().collect()
    }
    fn wildcards(&self) -> Vec<Interest> {
        self.0.lock().unwrap().iter().filter(|i| i.key.is_none()).cloned().collect()
    }
    fn contains(&self, i: &Interest) -> bool {
        self.0.lock().unwrap().contains(i)
    }
}

/// The Redis bus; cheap to share behind an `Arc`.
pub struct RedisBus {
    shared: Arc<Shared>,
    conn: RedisConn,
    out: mpsc::Sender<Vec<(String, Bytes)>>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").field("node", &self.shared.node).field("sharded", &self.conn.sharded()).finish()
    }
}

fn unavailable(e: redis::RedisError) -> BusError {
    BusError::Unavailable(format!("redis: {e}"))
}

impl RedisBus {
    /// Connects, subscribes the control channel and loads the wildcard set.
    /// Returns the bus and the receiver of envelopes for this node.
    pub async fn connect(cfg: RedisBusConfig) -> Result<(RedisBus, mpsc::Receiver<Envelope>), BusError> {
        let shared = Arc::new(Shared {
            node: cfg.node.clone(),
            prefix: cfg.prefix.clone(),
            timeout: cfg.timeout,
            held: Held::default(),
            wild: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            disconnected: Notify::new(),
            closed: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            published: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            received: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(cfg.receive_buffer.max(1));
        let push = {
            let shared = shared.clone();
            move |info: PushInfo| -> Result<(), std::convert::Infallible> {
                shared.on_push(info, &tx);
                Ok(())
            }
        };
        let t = cfg.timeout;
        let connecting = async {
            match &cfg.target {
                Target::Standalone(url) => {
                    let info = url.as_str().into_connection_info().map_err(unavailable)?;
                    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
                    let client = redis::Client::open(info.set_redis_settings(settings)).map_err(unavailable)?;
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(t))
                        .set_response_timeout(Some(t))
                        .set_number_of_retries(2)
                        .set_max_delay(Duration::from_millis(500))
                        .set_push_sender(push)
                        .set_automatic_resubscription();
                    let c = ConnectionManager::new_with_config(client, config).await.map_err(unavailable)?;
                    Ok(RedisConn::Standalone(c))
                }
                Target::Cluster(seeds) => {
                    let client = ClusterClientBuilder::new(seeds.clone())
                        .use_protocol(ProtocolVersion::RESP3)
                        .push_sender(push)
                        .connection_timeout(t)
                        .response_timeout(t)
                        .build()
                        .map_err(unavailable)?;
                    Ok(RedisConn::Cluster(client.get_async_connection().await.map_err(unavailable)?))
                }
            }
        };
        let conn = tokio::time::timeout(t, connecting)
            .await
            .map_err(|_| BusError::Unavailable(format!("redis: could not connect within {t:?}")))??;
        conn.subscribe(&shared.ctl_channel(), true, shared.timeout).await?;
        load_wild(&shared, &conn).await?;
        shared.connected.store(true, Ordering::SeqCst);

        let (out, out_rx) = mpsc::channel(cfg.publish_buffer.max(1));
        tokio::spawn(writer(shared.clone(), conn.clone(), out_rx));
        tokio::spawn(watcher(shared.clone(), conn.clone()));
        Ok((RedisBus { shared, conn, out }, rx))
    }
}

async fn load_wild(shared: &Shared, conn: &RedisConn) -> Result<(), BusError> {
    let members: Vec<Vec<u8>> = conn.query(redis::cmd("SMEMBERS").arg(shared.wild_key()), shared.timeout).await?;
    shared.wild.lock().unwrap().clear();
    for m in members {
        shared.apply_wild(&m, true);
    }
    Ok(())
}

/// Re-issues every subscription. The crate's own tracking is not enough
/// on a cluster: after a master restarts it rebuilds the connections to
/// every master and only some subscriptions come back (seen with Redis
/// 7.0 and redis 1.8: only the first SSUBSCRIBE). Subscribing a channel
/// again on the same connection is a no-op in Redis.
async fn resubscribe(shared: &Shared, conn: &RedisConn) -> Result<(), BusError> {
    conn.subscribe(&shared.ctl_channel(), true, shared.timeout).await?;
    for i in shared.held.all() {
        conn.subscribe(&i.channel(&shared.prefix), true, shared.timeout).await?;
    }
    Ok(())
}

/// Re-adds this node's wildcard interests (a restarted Redis without
/// persistence forgot them) and tells the other nodes.
async fn reassert_wild(shared: &Shared, conn: &RedisConn) -> Result<(), BusError> {
    for i in shared.held.wildcards() {
        announce_wild(shared, conn, &i, true).await?;
    }
    Ok(())
}

/// Adds or removes `interest` (a wildcard) in the wildcard set and sends
/// the notice on the control channel.
async fn announce_wild(shared: &Shared, conn: &RedisConn, interest: &Interest, add: bool) -> Result<(), BusError> {
    let member = format!("{}\0{}\0{}", interest.vhost, interest.exchange, shared.node);
    let op = if add { "SADD" } else { "SREM" };
    conn.query::<Value>(redis::cmd(op).arg(shared.wild_key()).arg(&member), shared.timeout).await?;
    let mut notice = vec![if add { b'+' } else { b'-' }];
    notice.extend_from_slice(member.as_bytes());
    let ctl = conn.publish_cmd(&shared.ctl_channel(), &Bytes::from(notice));
    conn.query::<Value>(&ctl, shared.timeout).await?;
    Ok(())
}

/// Writes queued envelopes, a batch at a time; the next batch waits for
/// this one. On standalone Redis a batch is one pipeline (one request, in
/// publish order). On a cluster it is one pipeline per channel (so one
/// slot, one master, and that channel's frames in publish order), the
/// channels side by side.
async fn writer(shared: Arc<Shared>, conn: RedisConn, mut rx: mpsc::Receiver<Vec<(String, Bytes)>>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut pipes: Vec<(String, redis::Pipeline)> = Vec::new();
        for (ch, frame) in batch.drain(..).flatten() {
            let i = match pipes.iter().position(|(c, _)| !conn.sharded() || *c == ch) {
                Some(i) => i,
                None => {
                    pipes.push((ch.clone(), redis::pipe()));
                    pipes.len() - 1
                }
            };
            pipes[i].1.add_command(conn.publish_cmd(&ch, &frame)).ignore();
        }
        let sends = pipes.iter().map(|(_, pipe)| conn.pipeline(pipe, shared.timeout));
        for r in futures_util::future::join_all(sends).await {
            if let Err(e) = r {
                tracing::warn!("cluster bus: publishes lost: {e}");
            }
        }
    }
}

/// After a disconnection: ping until Redis answers, reload what may have
/// changed meanwhile, and say connected again. Resubscription itself is
/// done by the connection (ConnectionManager's automatic resubscription,
/// the cluster connection's subscription tracker).
async fn watcher(shared: Arc<Shared>, conn: RedisConn) {
    let s = shared;
    loop {
        // Wake up now and then to notice the bus was dropped.
        let _ = tokio::time::timeout(Duration::from_secs(1), s.disconnected.notified()).await;
        if s.closed.load(Ordering::SeqCst) {
            return;
        }
        if s.connected.load(Ordering::SeqCst) {
            continue;
        }
        loop {
            let ok = conn.query::<Value>(&redis::cmd("PING"), s.timeout).await.is_ok()
                && resubscribe(&s, &conn).await.is_ok()
                && reassert_wild(&s, &conn).await.is_ok()
                && load_wild(&s, &conn).await.is_ok();
            if ok {
                s.connected.store(true, Ordering::SeqCst);
                tracing::info!("cluster bus: reconnected to Redis");
                break;
            }
            if s.closed.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl RedisBus {
    /// The bus's Redis connection, for the cluster's other Redis work.
    pub fn redis(&self) -> RedisConn {
        self.conn.clone()
    }

    /// The bound on every command (`RedisBusConfig::timeout`).
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        // Ends the watcher, which holds the connection (and through its push
        // callback this bus's state); the writer ends with `out`.
        self.shared.closed.store(true, Ordering::SeqCst);
    }
}

impl Bus for RedisBus {
    fn node(&self) -> &str {
        &self.shared.node
    }

    fn publish(&self, mut env: Envelope) -> Result<(), BusError> {
        let s = &self.shared;
        if !s.connected.load(Ordering::SeqCst) {
            s.refused.fetch_add(1, Ordering::Relaxed);
            return Err(BusError::Unavailable("not connected to Redis".into()));
        }
        env.origin.clone_from(&s.node);
        env.seq = s.seq.fetch_add(1, Ordering::Relaxed);
        env.also_exact = false;
        let exact = Interest::exact(&env.vhost, &env.exchange, &env.routing_key).channel(&s.prefix);
        let mut frames = vec![(exact, codec::encode(&env)?)];
        if s.others_wild(&env.vhost, &env.exchange) {
            env.also_exact = true;
            let ch = Interest::wildcard(&env.vhost, &env.exchange).channel(&s.prefix);
            frames.push((ch, codec::encode(&env)?));
        }
        match self.out.try_send(frames) {
            Ok(()) => {
                s.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                s.refused.fetch_add(1, Ordering::Relaxed);
                Err(BusError::Full)
            }
        }
    }

    fn subscribe<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let s = &self.shared;
            if !s.held.insert(interest) {
                return Ok(());
            }
            let r = async {
                // Subscribed before announced: once publishers hear of the
                // interest, nothing they send on the channel is missed.
                self.conn.subscribe(&interest.channel(&s.prefix), true, s.timeout).await?;
                if interest.key.is_none() {
                    announce_wild(s, &self.conn, interest, true).await?;
                }
                Ok(())
            }
            .await;
            if r.is_err() {
                s.held.remove(interest);
            }
            r
        })
    }

    fn unsubscribe<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let s = &self.shared;
            if !s.held.remove(interest) {
                return Ok(());
            }
            if interest.key.is_none() {
                announce_wild(s, &self.conn, interest, false).await?;
            }
            self.conn.subscribe(&interest.channel(&s.prefix), false, s.timeout).await
        })
    }

    fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    fn stats(&self) -> BusStats {
        let s = &self.shared;
        BusStats {
            published: s.published.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            received: s.received.load(Ordering::Relaxed),
            bad_frames: s.bad_frames.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
        }
    }
}
