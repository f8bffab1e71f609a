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

pub use disk::{Disk, DiskOptions};

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
    Ready(Result<(), StoreError>),
    Waiting(tokio::sync::oneshot::Receiver<Result<(), StoreError>>),
}

impl Durable {
    pub fn ready(result: Result<(), StoreError>) -> Durable {
        Durable(DurableInner::Ready(result))
    }

    pub(crate) fn waiting(rx: tokio::sync::oneshot::Receiver<Result<(), StoreError>>) -> Durable {
        Durable(DurableInner::Waiting(rx))
    }

    /// Whether waiting would return at once (no await point needed).
    pub fn is_ready(&self) -> bool {
        matches!(self.0, DurableInner::Ready(_))
    }

    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            DurableInner::Ready(r) => r,
            DurableInner::Waiting(rx) => {
                rx.await.unwrap_or_else(|_| Err(StoreError::Unavailable("data directory closed".into())))
            }
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
}

/// A durable queue and its messages, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredQueue {
    pub vhost: String,
    pub name: String,
    pub messages: Vec<StoredMessage>,
}

/// Guarantees every implementation gives (checked by [`conformance`]):
/// - `declare` is idempotent; `delete` forgets the queue and its messages.
/// - `append` is durable once it returns `Ok`; messages of one queue come back
///   from `load` in append order; `remove` of an unknown id is not an error.
/// - `append` to an undeclared queue declares it.
/// - Calls are made under the queue's lock: they must not block for long (an
///   on-disk store batches writes in the background and syncs in groups).
/// - On failure nothing is half-written: the caller reports the error to the
///   publisher (a STOMP ERROR) and the message is not enqueued.
pub trait QueueStore: Send + Sync + Debug + 'static {
    fn declare(&self, vhost: &str, queue: &str) -> Result<(), StoreError>;
    fn delete(&self, vhost: &str, queue: &str) -> Result<(), StoreError>;
    fn append(&self, vhost: &str, queue: &str, message: &Message) -> Result<(), StoreError>;
    fn remove(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError>;
    fn load(&self) -> Result<Vec<StoredQueue>, StoreError>;
}

/// The default store: a map in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    queues: Mutex<HashMap<(String, String), BTreeMap<u64, StoredMessage>>>,
}

impl QueueStore for MemoryStore {
    fn declare(&self, vhost: &str, queue: &str) -> Result<(), StoreError> {
        self.queues.lock().entry((vhost.to_owned(), queue.to_owned())).or_default();
        Ok(())
    }

    fn delete(&self, vhost: &str, queue: &str) -> Result<(), StoreError> {
        self.queues.lock().remove(&(vhost.to_owned(), queue.to_owned()));
        Ok(())
    }

    fn append(&self, vhost: &str, queue: &str, m: &Message) -> Result<(), StoreError> {
        let stored = StoredMessage {
            id: m.id,
            exchange: m.exchange.clone(),
            routing_key: m.routing_key.clone(),
            headers: m.headers.clone(),
            body: m.body.clone(),
        };
        self.queues.lock().entry((vhost.to_owned(), queue.to_owned())).or_default().insert(m.id, stored);
        Ok(())
    }

    fn remove(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError> {
        if let Some(q) = self.queues.lock().get_mut(&(vhost.to_owned(), queue.to_owned())) {
            q.remove(&id);
        }
        Ok(())
    }

    fn load(&self) -> Result<Vec<StoredQueue>, StoreError> {
        let mut out: Vec<StoredQueue> = self
            .queues
            .lock()
            .iter()
            .map(|((vhost, name), msgs)| StoredQueue {
                vhost: vhost.clone(),
                name: name.clone(),
                messages: msgs.values().cloned().collect(),
            })
            .collect();
        out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        Ok(out)
    }
}

/// The conformance suite every [`QueueStore`] must pass; `make` returns a
/// fresh, empty store. Backends call it from their own tests.
pub fn conformance<S: QueueStore>(make: impl Fn() -> S) {
    let m = |id: u64, body: &'static str| {
        let mut msg =
            Message::new("", "q", vec![("persistent".into(), "true".into())], Bytes::from_static(body.as_bytes()));
        msg.id = id;
        msg
    };
    // Empty, then declare is idempotent.
    let s = make();
    assert!(s.load().unwrap().is_empty(), "a fresh store is empty");
    s.declare("/", "a").unwrap();
    s.declare("/", "a").unwrap();
    let loaded = s.load().unwrap();
    assert_eq!(loaded.len(), 1);
    assert!(loaded[0].messages.is_empty());

    // Append order is load order; remove takes one; unknown remove is fine.
    for (id, body) in [(10, "x"), (11, "y"), (12, "z")] {
        s.append("/", "a", &m(id, body)).unwrap();
    }
    s.remove("/", "a", 11).unwrap();
    s.remove("/", "a", 999).unwrap();
    s.remove("/", "nope", 1).unwrap();
    let q = &s.load().unwrap()[0];
    assert_eq!(q.messages.iter().map(|m| m.id).collect::<Vec<_>>(), [10, 12]);
    assert_eq!(q.messages[0].body, Bytes::from_static(b"x"));
    assert_eq!(q.messages[0].headers, [("persistent".to_string(), "true".to_string())]);

    // Append declares; queues are kept apart per vhost; delete forgets.
    s.append("other", "a", &m(20, "w")).unwrap();
    assert_eq!(s.load().unwrap().len(), 2);
    s.delete("/", "a").unwrap();
    let rest = s.load().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].vhost.as_str(), rest[0].messages.len()), ("other", 1));
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_conforms() {
        super::conformance(super::MemoryStore::default);
    }
}
