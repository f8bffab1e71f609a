//! Queue storage: where persistent messages of durable queues live so they
//! outlast a restart.
//!
//! The queue itself keeps its ready messages in memory; the store is the
//! write-ahead copy it is rebuilt from at start. The in-memory store is the
//! default (it survives an engine restart inside one process, which is what
//! embedding and tests need); an on-disk store in the data directory and a
//! Redis Streams store plug in behind the same trait.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::message::Message;

pub mod disk;
pub mod history;
pub mod offline;
pub mod offline_disk;
#[cfg(feature = "redis")]
pub mod offline_redis;
pub mod queues_disk;

pub use disk::{Disk, DiskOptions};
pub use queues_disk::DiskQueues;

/// Wall-clock milliseconds since the Unix epoch: what stored records are
/// stamped with (offline `<delay>`, history TTLs, XEP-0198 queue ages).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An I/O or engine error of a backend, as the callers see it.
pub(crate) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("queue store unavailable: {0}")]
    Unavailable(String),
}

/// A promise that earlier writes are durable: ready at once for stores in
/// memory, resolved by the group commit for the disk (and by the backend's
/// own acknowledgement for Redis). A RECEIPT that promises "on disk" waits
/// for it; nothing else does.
#[derive(Debug)]
#[must_use = "a write is only promised durable once its ticket resolves"]
pub struct Durable(DurableInner);

#[derive(Debug)]
enum DurableInner {
    /// `None` once polled to completion.
    Ready(Option<Result<(), StoreError>>),
    Waiting(tokio::sync::oneshot::Receiver<Result<(), StoreError>>),
}

impl Durable {
    pub fn ready(result: Result<(), StoreError>) -> Durable {
        Durable(DurableInner::Ready(Some(result)))
    }

    pub(crate) fn waiting(rx: tokio::sync::oneshot::Receiver<Result<(), StoreError>>) -> Durable {
        Durable(DurableInner::Waiting(rx))
    }

    /// Whether waiting would return at once (no await point needed).
    pub fn is_ready(&self) -> bool {
        matches!(self.0, DurableInner::Ready(_))
    }

    /// Resolved and fine: nothing to wait for, nothing to report.
    pub fn is_ready_ok(&self) -> bool {
        matches!(self.0, DurableInner::Ready(Some(Ok(()))))
    }

    pub async fn wait(self) -> Result<(), StoreError> {
        self.await
    }
}

/// Polled in place by a session that keeps reading while its receipts wait
/// (`stomp::session`'s pending receipts), rather than awaited one by one.
impl std::future::Future for Durable {
    type Output = Result<(), StoreError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        match &mut self.0 {
            DurableInner::Ready(r) => {
                Poll::Ready(r.take().unwrap_or_else(|| Err(StoreError::Unavailable("ticket polled twice".into()))))
            }
            DurableInner::Waiting(rx) => match std::pin::Pin::new(rx).poll(cx) {
                Poll::Ready(r) => {
                    let r = r.unwrap_or_else(|_| Err(StoreError::Unavailable("data directory closed".into())));
                    self.0 = DurableInner::Ready(None);
                    Poll::Ready(r)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// A message as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    pub exchange: String,
    pub routing_key: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// May have been delivered before the restart: it goes out with
    /// `redelivered:true`. The store decides (a delivery mark, or a start
    /// after a crash, when it cannot know).
    pub redelivered: bool,
}

/// Length limits a durable queue was declared with (`x-max-length`,
/// `x-max-length-bytes`, `x-overflow`), as the router applied them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLimits {
    pub max_len: u64,
    pub max_bytes: u64,
    pub reject_publish: bool,
}

/// What a durable queue was declared with, to declare it again at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueMeta {
    pub auto_delete: bool,
    /// The user it counts against (`limits.max_queues_per_user`).
    pub owner: Option<String>,
    pub limits: Option<StoredLimits>,
}

/// One binding of a durable queue. Exchanges are not stored: clients cannot
/// declare any (they come from the config), so a binding names one by name
/// and is dropped at start, with a warning, when the config lost it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBinding {
    pub exchange: String,
    pub key: String,
    /// A headers-exchange binding's arguments: `x-match: all` and the pairs.
    pub headers: Option<(bool, Vec<(String, String)>)>,
}

/// A durable queue, its bindings and its messages, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredQueue {
    pub vhost: String,
    pub name: String,
    pub meta: QueueMeta,
    pub bindings: Vec<StoredBinding>,
    pub messages: Vec<StoredMessage>,
}

/// Where durable queues (their declaration, bindings and persistent
/// messages) live. Guarantees every implementation gives (checked by
/// [`conformance`]):
/// - `declare` is idempotent (a second declare replaces the meta); `delete`
///   forgets the queue, its bindings and its messages at once.
/// - `append` makes the message durable once its [`Durable`] ticket
///   resolves (`Ok`), not before: that is what a RECEIPT waits for. Writes
///   before a resolved ticket (declares, bindings, earlier appends, removes)
///   are durable too: a store keeps one ordered log per node.
/// - Removes (`remove` after an ACK or a drop, `delivered` marks) get no
///   ticket: they reach the disk with the next ticket or at close. A crash
///   before that brings an acked message back (at-least-once, as RabbitMQ:
///   an ACK is not confirmed to the client either).
/// - Messages of one queue come back from `load` in append order; `remove`
///   of an unknown id is not an error; `append` or `bind` to an undeclared
///   queue declares it (with the default meta).
/// - `load` reports a message `redelivered` when it was marked `delivered`,
///   or when the store cannot know (a disk store after an unclean stop flags
///   every message: "may have been delivered").
/// - Calls are made under the queue's lock: they must not block for long (the
///   disk store writes to its journal's buffer and syncs in groups, in the
///   background).
/// - On failure nothing is half-written: the caller reports the error to the
///   publisher (a STOMP ERROR) and the message is not enqueued.
pub trait QueueStore: Send + Sync + Debug + 'static {
    fn declare(&self, vhost: &str, queue: &str, meta: &QueueMeta) -> Result<(), StoreError>;
    fn bind(&self, vhost: &str, queue: &str, binding: &StoredBinding) -> Result<(), StoreError>;
    fn delete(&self, vhost: &str, queue: &str) -> Result<(), StoreError>;
    fn append(&self, vhost: &str, queue: &str, message: &Message) -> Result<Durable, StoreError>;
    /// Marks a message as handed to a consumer (no ticket).
    fn delivered(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError>;
    fn remove(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError>;
    /// A ticket for every write made so far (a durable SUBSCRIBE's receipt).
    fn durable(&self) -> Durable;
    fn load(&self) -> Result<Vec<StoredQueue>, StoreError>;
    /// Whether the store holds every message of its queues, persistent or
    /// not, and whether their queues are kept even when not durable: a
    /// cluster work queue (bus/streams.rs), whose messages live in Redis.
    fn takes_every_message(&self) -> bool {
        false
    }
}

#[derive(Debug, Default)]
struct MemoryQueue {
    meta: QueueMeta,
    bindings: Vec<StoredBinding>,
    messages: BTreeMap<u64, StoredMessage>,
}

/// The store without a data directory: a map in memory (it outlives an
/// engine inside one process, which is what embedding and tests need).
#[derive(Debug, Default)]
pub struct MemoryStore {
    queues: Mutex<HashMap<(String, String), MemoryQueue>>,
}

impl MemoryStore {
    fn with<T>(&self, vhost: &str, queue: &str, f: impl FnOnce(&mut MemoryQueue) -> T) -> T {
        f(self.queues.lock().entry((vhost.to_owned(), queue.to_owned())).or_default())
    }
}

impl QueueStore for MemoryStore {
    fn declare(&self, vhost: &str, queue: &str, meta: &QueueMeta) -> Result<(), StoreError> {
        self.with(vhost, queue, |q| q.meta = meta.clone());
        Ok(())
    }

    fn bind(&self, vhost: &str, queue: &str, binding: &StoredBinding) -> Result<(), StoreError> {
        self.with(vhost, queue, |q| {
            if !q.bindings.contains(binding) {
                q.bindings.push(binding.clone());
            }
        });
        Ok(())
    }

    fn delete(&self, vhost: &str, queue: &str) -> Result<(), StoreError> {
        self.queues.lock().remove(&(vhost.to_owned(), queue.to_owned()));
        Ok(())
    }

    fn append(&self, vhost: &str, queue: &str, m: &Message) -> Result<Durable, StoreError> {
        let stored = StoredMessage {
            id: m.id,
            exchange: m.exchange.clone(),
            routing_key: m.routing_key.clone(),
            headers: m.headers.clone(),
            body: m.body.clone(),
            redelivered: false,
        };
        self.with(vhost, queue, |q| q.messages.insert(m.id, stored));
        Ok(Durable::ready(Ok(())))
    }

    fn delivered(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError> {
        if let Some(q) = self.queues.lock().get_mut(&(vhost.to_owned(), queue.to_owned())) {
            if let Some(m) = q.messages.get_mut(&id) {
                m.redelivered = true;
            }
        }
        Ok(())
    }

    fn remove(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError> {
        if let Some(q) = self.queues.lock().get_mut(&(vhost.to_owned(), queue.to_owned())) {
            q.messages.remove(&id);
        }
        Ok(())
    }

    fn durable(&self) -> Durable {
        Durable::ready(Ok(()))
    }

    fn load(&self) -> Result<Vec<StoredQueue>, StoreError> {
        let mut out: Vec<StoredQueue> = self
            .queues
            .lock()
            .iter()
            .map(|((vhost, name), q)| StoredQueue {
                vhost: vhost.clone(),
                name: name.clone(),
                meta: q.meta.clone(),
                bindings: q.bindings.clone(),
                messages: q.messages.values().cloned().collect(),
            })
            .collect();
        out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        Ok(out)
    }
}

/// The conformance suite every [`QueueStore`] must pass; `make` returns a
/// fresh, empty store. Backends call it from their own tests; a store that
/// outlives a restart also tests `load` after one (queues_disk.rs).
pub async fn conformance<S: QueueStore>(make: impl Fn() -> S) {
    let m = |id: u64, body: &'static str| {
        let mut msg =
            Message::new("", "q", vec![("persistent".into(), "true".into())], Bytes::from_static(body.as_bytes()));
        msg.id = id;
        msg
    };
    // Empty, then declare is idempotent and keeps the latest meta.
    let s = make();
    assert!(s.load().unwrap().is_empty(), "a fresh store is empty");
    s.declare("/", "a", &QueueMeta::default()).unwrap();
    let meta = QueueMeta {
        auto_delete: true,
        owner: Some("alice".into()),
        limits: Some(StoredLimits { max_len: 5, max_bytes: 1 << 20, reject_publish: true }),
    };
    s.declare("/", "a", &meta).unwrap();
    let loaded = s.load().unwrap();
    assert_eq!(loaded.len(), 1);
    assert!(loaded[0].messages.is_empty() && loaded[0].bindings.is_empty());
    assert_eq!(loaded[0].meta, meta);

    // Bindings: idempotent, headers arguments kept.
    let topic = StoredBinding { exchange: "amq.topic".into(), key: "a.#".into(), headers: None };
    let headers = StoredBinding {
        exchange: "amq.headers".into(),
        key: String::new(),
        headers: Some((true, vec![("x".into(), "1".into()), ("y".into(), "2".into())])),
    };
    for b in [&topic, &headers, &topic] {
        s.bind("/", "a", b).unwrap();
    }
    let mut got = s.load().unwrap()[0].bindings.clone();
    got.sort_by(|a, b| a.exchange.cmp(&b.exchange));
    assert_eq!(got, [headers.clone(), topic.clone()]);

    // Append order is load order; tickets resolve; remove takes one; unknown remove is fine.
    for (id, body) in [(10, "x"), (11, "y"), (12, "z")] {
        s.append("/", "a", &m(id, body)).unwrap().wait().await.unwrap();
    }
    s.remove("/", "a", 11).unwrap();
    s.remove("/", "a", 999).unwrap();
    s.remove("/", "nope", 1).unwrap();
    s.delivered("/", "a", 12).unwrap();
    s.delivered("/", "a", 999).unwrap();
    s.durable().wait().await.unwrap();
    let q = &s.load().unwrap()[0];
    assert_eq!(q.messages.iter().map(|m| m.id).collect::<Vec<_>>(), [10, 12]);
    assert_eq!(q.messages[0].body, Bytes::from_static(b"x"));
    assert_eq!(q.messages[0].headers, [("persistent".to_string(), "true".to_string())]);
    assert_eq!(q.messages.iter().map(|m| m.redelivered).collect::<Vec<_>>(), [false, true], "delivery marks");

    // Append declares; queues are kept apart per vhost and by name (no
    // prefix confusion: "a" and "ab"); delete forgets messages and bindings.
    s.append("other", "a", &m(20, "w")).unwrap().wait().await.unwrap();
    s.append("/", "ab", &m(30, "v")).unwrap().wait().await.unwrap();
    assert_eq!(s.load().unwrap().len(), 3);
    s.delete("/", "a").unwrap();
    let rest = s.load().unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|q| q.messages.len() == 1 && q.bindings.is_empty()), "{rest:?}");
    s.declare("/", "a", &QueueMeta::default()).unwrap();
    let again = s.load().unwrap();
    let a = again.iter().find(|q| q.vhost == "/" && q.name == "a").unwrap();
    assert!(a.messages.is_empty() && a.bindings.is_empty(), "a deleted queue's data does not come back");

    // Names are bytes: separators, NUL and non-ASCII are kept apart.
    s.append("v\0x", "q", &m(40, "1")).unwrap().wait().await.unwrap();
    s.append("v", "\0xq", &m(41, "2")).unwrap().wait().await.unwrap();
    s.append("/", "ü/é", &m(42, "3")).unwrap().wait().await.unwrap();
    let all = s.load().unwrap();
    let find = |v: &str, n: &str| all.iter().find(|q| q.vhost == v && q.name == n).map(|q| q.messages[0].id);
    assert_eq!((find("v\0x", "q"), find("v", "\0xq"), find("/", "ü/é")), (Some(40), Some(41), Some(42)));
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_conforms() {
        super::conformance(super::MemoryStore::default).await;
    }
}
