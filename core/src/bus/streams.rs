//! Work queues across nodes: a shared queue (`/queue/<q>`, `/amq/queue/<q>`:
//! neither exclusive nor auto-delete) is one queue cluster-wide, kept in a
//! Redis Stream with one consumer group (docs/cluster.md, "Work queues
//! across nodes").
//!
//! - A publish on the default exchange to such a queue, on any node, is an
//!   `XADD` to `<prefix>q:<len(vhost)>:<vhost>:<queue>` (bounded by the
//!   queue's `max_len` and, in Redis's own count of the stream's memory,
//!   its `max_bytes`; `reject-publish` checked in the same Lua script).
//! - A node with consumers of the queue reads with `XREADGROUP` (consumer =
//!   the node's name) only as many entries as its consumers have room for
//!   ([`Queue::credit`]) and feeds them to its local [`Queue`], whose
//!   round-robin, prefetch and acks are the single-node ones.
//! - The queue's store is [`WorkQueues`] itself: an ack (or an automatic
//!   ack on delivery, or a drop) is an `XACK` plus `XDEL`; a local requeue
//!   stays local; when the node's last consumer goes, the entries it holds
//!   go back to the stream (`XADD` a copy flagged redelivered, `XACK` +
//!   `XDEL` the original) for the other nodes.
//! - Entries pending for a node whose `<prefix>alive:<node>` key has expired
//!   (a dead node), and this node's own from an earlier run, are taken over
//!   with `XCLAIM` and delivered flagged `redelivered`.
//!
//! Entries read from Redis are hostile input: a frame that does not decode,
//! or names another vhost or queue, is acked away and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use redis::streams::{StreamClaimReply, StreamId, StreamInfoConsumersReply, StreamPendingCountReply, StreamReadReply};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::redis::RedisConn;
use super::{codec, BusError, Envelope};
use crate::message::Message;
use crate::router::{Overflow, Queue, RouteError};
use crate::store::{Durable, QueueMeta, QueueStore, StoreError, StoredBinding, StoredQueue};

/// The consumer group every node reads with.
const GROUP: &str = "herald";
/// Room counted for a consumer without a prefetch (or acking
/// automatically): what one node fetches for it ahead of its acks.
pub const UNLIMITED_CREDIT: usize = 100;
/// Most entries read or claimed in one command.
const MAX_BATCH: usize = 500;
/// Most consumers of a group looked at in one claim round.
const MAX_CONSUMERS: usize = 64;
/// Longest wait between two reads of an idle queue (reads back off from
/// 5 ms to this while the stream is empty).
const IDLE_MAX: Duration = Duration::from_millis(100);
/// How often a queue is read while it had entries within `BUSY_FOR`.
const BUSY_POLL: Duration = Duration::from_millis(5);
const BUSY_FOR: Duration = Duration::from_secs(1);
/// How long the writer keeps writing acks after shutdown begins.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(500);

/// `XADD` within the queue's limits. ARGV: max length, `1` for
/// reject-publish, the frame, max bytes. The bytes are what Redis says the
/// stream holds (`MEMORY USAGE`: entries, deleted ones not yet reclaimed,
/// the group's pending list), so the bound is on Redis's memory.
/// Reject-publish answers 0 (length) or -1 (bytes); drop-head trims the
/// oldest entries, as many as the stream's bytes per entry say make room.
const ADD: &str = "local n = redis.call('XLEN', KEYS[1])
local size = string.len(ARGV[3])
local max_bytes = tonumber(ARGV[4])
local mem = 0
if n > 0 then mem = redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', 5) or 0 end
if ARGV[2] == '1' then
  if n >= tonumber(ARGV[1]) then return 0 end
  if mem + size > max_bytes then return -1 end
end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'm', ARGV[3])
if ARGV[2] ~= '1' and mem + size > max_bytes then
  n = redis.call('XLEN', KEYS[1])
  local per = math.max(1, (mem + size) / n)
  local drop = math.ceil((mem + size - max_bytes) / per)
  redis.call('XTRIM', KEYS[1], 'MAXLEN', math.max(0, n - drop))
end
return 1";
const ACK: &str = "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])";
const GIVE_BACK: &str = "local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 1 and redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  local f = e[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'm' then redis.call('XADD', KEYS[1], '*', 'm', f[i + 1], 'r', '1') end
  end
end
return redis.call('XDEL', KEYS[1], ARGV[2])";

/// Where a fetched message sits in Redis.
#[derive(Debug, Clone)]
struct Entry {
    key: Arc<str>,
    id: String,
}

#[derive(Debug)]
enum Write {
    Add {
        key: Arc<str>,
        frame: Bytes,
        max_len: usize,
        max_bytes: usize,
        reject: bool,
        name: Arc<str>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
}

#[derive(Debug)]
enum Settled {
    Ack(Entry),
    GiveBack(Entry),
}

/// Counters (admin, tests).
#[derive(Debug, Default)]
pub struct WorkQueueStats {
    pub published: AtomicU64,
    pub fetched: AtomicU64,
    pub acked: AtomicU64,
    pub given_back: AtomicU64,
    pub claimed: AtomicU64,
    pub bad_entries: AtomicU64,
    pub errors: AtomicU64,
}

/// The cluster's work queues on this node: the writer of `XADD`s and acks,
/// the store of every cluster-wide queue, and one fetcher per such queue.
pub struct WorkQueues {
    conn: RedisConn,
    timeout: Duration,
    node: String,
    prefix: String,
    /// `[cluster] ttl_ms`: how long a node's `alive:` key outlives its last beat.
    ttl: Duration,
    writes: mpsc::Sender<Write>,
    writes_rx: Mutex<Option<mpsc::Receiver<Write>>>,
    /// Fetched and not yet settled, by message id. Bounded by the local
    /// consumers' credit.
    inflight: Mutex<HashMap<u64, Entry>>,
    /// Acks and give-backs waiting for the writer (as many as `inflight` at most).
    settled: Mutex<Vec<Settled>>,
    wake_writer: Notify,
    /// Queues declared since the manager last looked.
    declared: Mutex<Vec<Arc<Queue>>>,
    wake_manager: Notify,
    /// When this run began: an entry pending under this node's name since
    /// before then is a leftover of an earlier run (a restart under the same name).
    started: Instant,
    pub stats: WorkQueueStats,
}

impl std::fmt::Debug for WorkQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueues").field("node", &self.node).finish_non_exhaustive()
    }
}

/// The stream of one queue.
pub fn stream_key(prefix: &str, vhost: &str, queue: &str) -> String {
    format!("{prefix}q:{}:{vhost}:{queue}", vhost.len())
}

fn store_error(e: BusError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl WorkQueues {
    /// `buffer`: publishes waiting to be written (`[cluster] publish_buffer`).
    pub fn new(
        conn: RedisConn,
        timeout: Duration,
        node: &str,
        prefix: &str,
        ttl: Duration,
        buffer: usize,
    ) -> Arc<WorkQueues> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        Arc::new(WorkQueues {
            conn,
            timeout,
            node: node.to_owned(),
            prefix: prefix.to_owned(),
            ttl,
            writes: tx,
            writes_rx: Mutex::new(Some(rx)),
            inflight: Mutex::new(HashMap::new()),
            settled: Mutex::new(Vec::new()),
            wake_writer: Notify::new(),
            declared: Mutex::new(Vec::new()),
            wake_manager: Notify::new(),
            started: Instant::now(),
            stats: WorkQueueStats::default(),
        })
    }

    /// What a vhost calls when it declares a cluster-wide queue.
    pub fn declared(&self, q: &Arc<Queue>) {
        self.declared.lock().push(q.clone());
        self.wake_manager.notify_one();
    }

    /// Messages fetched and not yet settled on this node.
    pub fn inflight(&self) -> usize {
        self.inflight.lock().len()
    }

    /// Publishes to a cluster-wide queue: queued for the writer (in publish
    /// order); the ticket resolves once Redis has it. A full writer buffer
    /// refuses at once; a full `reject-publish` queue fails the ticket.
    pub fn publish(&self, q: &Queue, message: Message) -> Result<Durable, RouteError> {
        let frame = encode(&self.node, &q.vhost, &message)
            .map_err(|e| RouteError::Store(StoreError::Unavailable(e.to_string())))?;
        let (done, rx) = oneshot::channel();
        let w = Write::Add {
            key: stream_key(&self.prefix, &q.vhost, &q.name).into(),
            frame,
            max_len: q.limits.max_len,
            max_bytes: q.limits.max_bytes,
            reject: q.limits.overflow == Overflow::RejectPublish,
            name: q.name.clone(),
            done,
        };
        self.writes.try_send(w).map_err(|_| RouteError::QueueFull {
            name: q.name.to_string(),
            limit: "the cluster's publish buffer, [cluster] publish_buffer".into(),
        })?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(Durable::waiting(rx))
    }

    /// Runs the writer and the manager until `shutdown`.
    pub fn start(self: &Arc<Self>, tasks: &tokio_util::task::TaskTracker, shutdown: CancellationToken) {
        if let Some(rx) = self.writes_rx.lock().take() {
            tasks.spawn(self.clone().writer(rx, shutdown.clone()));
        }
        tasks.spawn(self.clone().manager(tasks.clone(), shutdown));
    }

    async fn writer(self: Arc<Self>, mut rx: mpsc::Receiver<Write>, shutdown: CancellationToken) {
        loop {
            let settled = std::mem::take(&mut *self.settled.lock());
            for s in settled {
                self.settle(s).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Sessions are closing: the acks they still make reach
                    // Redis, so what they acked is not redelivered elsewhere.
                    let until = Instant::now() + SHUTDOWN_FLUSH;
                    while Instant::now() < until {
                        let settled = std::mem::take(&mut *self.settled.lock());
                        for s in settled {
                            self.settle(s).await;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    return;
                }
                _ = self.wake_writer.notified() => {}
                w = rx.recv() => match w {
                    Some(Write::Add { key, frame, max_len, max_bytes, reject, name, done }) => {
                        let mut cmd = redis::cmd("EVAL");
                        cmd.arg(ADD).arg(1).arg(&*key).arg(max_len).arg(if reject { "1" } else { "0" }).arg(frame.as_ref());
                        // (Lua numbers are doubles: "no limit" is sent as 2^53.)
                        cmd.arg(max_bytes.min(1 << 53));
                        let r = match self.conn.query::<i64>(&cmd, self.timeout).await {
                            Ok(1) => Ok(()),
                            Ok(-1) => Err(StoreError::Unavailable(format!(
                                "queue '{name}' is full (at {max_bytes} bytes in Redis, its x-max-length-bytes; x-overflow is reject-publish): message refused"
                            ))),
                            Ok(_) => Err(StoreError::Unavailable(format!(
                                "queue '{name}' is full (at {max_len} messages, its x-max-length; x-overflow is reject-publish): message refused"
                            ))),
                            Err(e) => {
                                self.error(&e);
                                Err(store_error(e))
                            }
                        };
                        let _ = done.send(r);
                    }
                    None => return,
                },
            }
        }
    }

    async fn settle(&self, s: Settled) {
        let mut cmd = redis::cmd("EVAL");
        match &s {
            Settled::Ack(e) => cmd.arg(ACK).arg(1).arg(&*e.key).arg(GROUP).arg(&e.id),
            Settled::GiveBack(e) => cmd.arg(GIVE_BACK).arg(1).arg(&*e.key).arg(GROUP).arg(&e.id),
        };
        match self.conn.query::<i64>(&cmd, self.timeout).await {
            Ok(_) => match s {
                Settled::Ack(_) => self.stats.acked.fetch_add(1, Ordering::Relaxed),
                Settled::GiveBack(_) => self.stats.given_back.fetch_add(1, Ordering::Relaxed),
            },
            // Left pending under this node: taken over by another node only
            // if this one dies (or by this one after a restart).
            Err(e) => {
                self.error(&e);
                0
            }
        };
    }

    fn error(&self, e: &dyn std::fmt::Display) {
        let n = self.stats.errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(errors = n, "cluster work queues: redis: {e}");
        }
    }

    fn bad_entry(&self, key: &str, why: &dyn std::fmt::Display) {
        let n = self.stats.bad_entries.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(key, bad = n, "cluster work queues: dropped an entry: {why}");
        }
    }

    /// Starts one fetcher per declared cluster-wide queue.
    async fn manager(self: Arc<Self>, tasks: tokio_util::task::TaskTracker, shutdown: CancellationToken) {
        loop {
            let new = std::mem::take(&mut *self.declared.lock());
            for q in new {
                let key: Arc<str> = stream_key(&self.prefix, &q.vhost, &q.name).into();
                tasks.spawn(self.clone().fetch(q, key, shutdown.clone()));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake_manager.notified() => {}
            }
        }
    }

    /// Feeds one queue from its stream while it has consumers here.
    async fn fetch(self: Arc<Self>, q: Arc<Queue>, key: Arc<str>, shutdown: CancellationToken) {
        let claim_every = (self.ttl / 2).max(Duration::from_millis(250));
        let mut last_claim: Option<Instant> = None;
        let mut group = false;
        let mut idle = BUSY_POLL;
        let mut last_got = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let pause = if q.is_deleted() {
                self.give_back_all(&key);
                return;
            } else if q.consumer_count() == 0 {
                self.give_back(&q);
                Duration::from_millis(100)
            } else if !group {
                match self.create_group(&key).await {
                    Ok(()) => {
                        group = true;
                        Duration::ZERO
                    }
                    Err(e) => {
                        self.error(&e);
                        Duration::from_millis(500)
                    }
                }
            } else {
                let credit = q.credit(UNLIMITED_CREDIT).min(MAX_BATCH);
                if credit == 0 {
                    Duration::from_millis(5)
                } else {
                    let mut got = 0;
                    let mut failed = false;
                    if last_claim.is_none_or(|t| t.elapsed() >= claim_every) {
                        last_claim = Some(Instant::now());
                        match self.claim(&q, &key, credit).await {
                            Ok(n) => got += n,
                            Err(e) => {
                                self.error(&e);
                                failed = true;
                            }
                        }
                    }
                    let credit = credit.saturating_sub(got);
                    if credit > 0 && !failed {
                        match self.read(&q, &key, credit).await {
                            Ok(n) => got += n,
                            Err(e) => {
                                // NOGROUP: the stream was deleted under us; create it again.
                                group = false;
                                self.error(&e);
                                failed = true;
                            }
                        }
                    }
                    if failed {
                        Duration::from_millis(500)
                    } else if got > 0 {
                        idle = BUSY_POLL;
                        last_got = Instant::now();
                        Duration::ZERO
                    } else if last_got.elapsed() < BUSY_FOR {
                        // Recently busy: other nodes compete for each new
                        // entry, and who reads first gets it, so keep up.
                        BUSY_POLL
                    } else {
                        idle = (idle * 2).min(IDLE_MAX);
                        idle
                    }
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }

    async fn create_group(&self, key: &str) -> Result<(), BusError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(key).arg(GROUP).arg("0").arg("MKSTREAM");
        match self.conn.query::<redis::Value>(&cmd, self.timeout).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn read(&self, q: &Queue, key: &Arc<str>, count: usize) -> Result<usize, BusError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.node).arg("COUNT").arg(count).arg("STREAMS").arg(&**key).arg(">");
        let reply: Option<StreamReadReply> = self.conn.query(&cmd, self.timeout).await?;
        let mut n = 0;
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            for e in k.ids.into_iter().take(count) {
                n += self.take(q, key, e, false);
            }
        }
        self.stats.fetched.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Takes over entries pending for dead nodes (their `alive:` key is
    /// gone) and this node's own from before this run (a restart).
    /// Consumers come from `XINFO CONSUMERS` (a dead node's entries are found
    /// however many the live ones hold); a dead consumer with nothing
    /// pending is removed from the group.
    async fn claim(&self, q: &Queue, key: &Arc<str>, credit: usize) -> Result<usize, BusError> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("CONSUMERS").arg(&**key).arg(GROUP);
        let info: StreamInfoConsumersReply = self.conn.query(&cmd, self.timeout).await?;
        let mut ids = Vec::new();
        // Bounded: anyone with access to Redis can add consumers to the group.
        for c in info.consumers.into_iter().take(MAX_CONSUMERS) {
            if ids.len() >= credit {
                break;
            }
            let own = c.name == self.node;
            if (own && c.pending == 0) || c.name.len() > 255 {
                continue;
            }
            if !own {
                let mut exists = redis::cmd("EXISTS");
                exists.arg(format!("{}alive:{}", self.prefix, c.name));
                if self.conn.query::<bool>(&exists, self.timeout).await? {
                    continue;
                }
                if c.pending == 0 {
                    let mut del = redis::cmd("XGROUP");
                    del.arg("DELCONSUMER").arg(&**key).arg(GROUP).arg(&c.name);
                    self.conn.query::<i64>(&del, self.timeout).await?;
                    continue;
                }
            }
            let mut cmd = redis::cmd("XPENDING");
            cmd.arg(&**key).arg(GROUP).arg("-").arg("+").arg(credit - ids.len()).arg(&c.name);
            let pending: StreamPendingCountReply = self.conn.query(&cmd, self.timeout).await?;
            for p in pending.ids {
                // Own entries only when delivered before this run began
                // (idle longer than the run, with a margin for clocks):
                // what this run fetched may have an ack waiting in the writer.
                let run = self.started.elapsed().as_millis() + 20;
                if own && (p.last_delivered_ms as u128) <= run {
                    continue;
                }
                ids.push(p.id);
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        // The min-idle guard makes a second survivor's claim of the same
        // entries (just claimed, so idle again) a no-op: one node gets each.
        let guard = self.ttl.min(Duration::from_secs(1)).as_millis() as u64;
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&**key).arg(GROUP).arg(&self.node).arg(guard);
        for id in &ids {
            cmd.arg(id);
        }
        let reply: StreamClaimReply = self.conn.query(&cmd, self.timeout).await?;
        let mut n = 0;
        for e in reply.ids {
            n += self.take(q, key, e, true);
        }
        self.stats.claimed.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 {
            tracing::info!(queue = %q.name, messages = n, "cluster work queue: took over unacked messages");
        }
        Ok(n)
    }

    /// Decodes one entry and hands it to the local queue; 1 if it was taken.
    fn take(&self, q: &Queue, key: &Arc<str>, e: StreamId, claimed: bool) -> usize {
        let entry = Entry { key: key.clone(), id: e.id.clone() };
        let frame: Option<Vec<u8>> = e.get("m");
        let redelivered = claimed || e.get::<String>("r").is_some_and(|r| r == "1");
        let message = match frame.map(|f| codec::decode(Bytes::from(f))) {
            Some(Ok(env)) if env.vhost == *q.vhost && env.routing_key == *q.name && env.exchange.is_empty() => {
                let mut m = Message::new("", env.routing_key, env.headers, env.body);
                m.persistent = env.persistent;
                m.sender = env.sender;
                m
            }
            Some(Ok(_)) => {
                self.bad_entry(key, &"an entry for another queue");
                self.settled.lock().push(Settled::Ack(entry));
                self.wake_writer.notify_one();
                return 0;
            }
            Some(Err(err)) => {
                self.bad_entry(key, &err);
                self.settled.lock().push(Settled::Ack(entry));
                self.wake_writer.notify_one();
                return 0;
            }
            None => {
                self.bad_entry(key, &"no message field");
                self.settled.lock().push(Settled::Ack(entry));
                self.wake_writer.notify_one();
                return 0;
            }
        };
        // In flight before the queue sees it: an automatic ack settles at once.
        let id = message.id;
        self.inflight.lock().insert(id, entry);
        if q.feed(Arc::new(message), redelivered) {
            return 1;
        }
        // Deleted here meanwhile: back to the stream for the other nodes.
        if let Some(entry) = self.inflight.lock().remove(&id) {
            self.settled.lock().push(Settled::GiveBack(entry));
            self.wake_writer.notify_one();
        }
        0
    }

    /// The node's last consumer of `q` went: what it fetched and has not
    /// delivered goes back to the stream for the other nodes.
    fn give_back(&self, q: &Queue) {
        let back = q.take_ready_where(|m| self.inflight.lock().contains_key(&m.id));
        if back.is_empty() {
            return;
        }
        let mut inflight = self.inflight.lock();
        let settled: Vec<Settled> =
            back.iter().filter_map(|(m, _)| inflight.remove(&m.id)).map(Settled::GiveBack).collect();
        drop(inflight);
        self.settled.lock().extend(settled);
        self.wake_writer.notify_one();
    }

    /// The queue was deleted on this node: whatever of its stream this node
    /// holds (ready or unacked here) goes back for the other nodes.
    fn give_back_all(&self, key: &Arc<str>) {
        let mut inflight = self.inflight.lock();
        let ids: Vec<u64> = inflight.iter().filter(|(_, e)| e.key == *key).map(|(id, _)| *id).collect();
        let settled: Vec<Settled> = ids.iter().filter_map(|id| inflight.remove(id)).map(Settled::GiveBack).collect();
        drop(inflight);
        if !settled.is_empty() {
            self.settled.lock().extend(settled);
            self.wake_writer.notify_one();
        }
    }
}

fn encode(node: &str, vhost: &str, m: &Message) -> Result<Bytes, BusError> {
    codec::encode(&Envelope {
        origin: node.to_owned(),
        seq: 0,
        vhost: vhost.to_owned(),
        exchange: String::new(),
        routing_key: m.routing_key.clone(),
        headers: m.headers.clone(),
        body: m.body.clone(),
        persistent: m.persistent,
        sender: m.sender.clone(),
        also_exact: false,
    })
}

/// The store of every cluster-wide queue: what a queue forgets (acked,
/// delivered automatically, dropped) is acked in its stream. Queues and
/// bindings are not kept anywhere: the stream is the queue's data, and
/// every node declares the queue on first use as on one node.
impl QueueStore for WorkQueues {
    fn declare(&self, _: &str, _: &str, _: &QueueMeta) -> Result<(), StoreError> {
        Ok(())
    }

    fn bind(&self, _: &str, _: &str, _: &StoredBinding) -> Result<(), StoreError> {
        Ok(())
    }

    fn delete(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn append(&self, _: &str, _: &str, _: &Message) -> Result<Durable, StoreError> {
        Ok(Durable::ready(Ok(())))
    }

    fn delivered(&self, _: &str, _: &str, _: u64) -> Result<(), StoreError> {
        Ok(())
    }

    fn remove(&self, _: &str, _: &str, id: u64) -> Result<(), StoreError> {
        // Not in flight: it reached the queue through another exchange's
        // binding, on this node only.
        if let Some(entry) = self.inflight.lock().remove(&id) {
            self.settled.lock().push(Settled::Ack(entry));
            self.wake_writer.notify_one();
        }
        Ok(())
    }

    fn durable(&self) -> Durable {
        Durable::ready(Ok(()))
    }

    fn load(&self) -> Result<Vec<StoredQueue>, StoreError> {
        Ok(Vec::new())
    }

    fn takes_every_message(&self) -> bool {
        true
    }
}
