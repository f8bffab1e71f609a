//! Offline storage (XEP-0160, as ejabberd's mod_offline): chat and normal
//! messages for a user with no available resource wait here until the user's
//! next initial presence; an XMPP stream that times out without resuming
//! (XEP-0198) leaves its unacked messages here too.
//!
//! Keyed by the bare user id; each user's messages keep their arrival order.
//! The caps are the store's, so every backend refuses the same way.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Durable, StoreError};

/// One stored stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Assigned by the store, increasing per user; what [`OfflineStore::remove_through`] takes.
    pub seq: u64,
    /// When it was stored, milliseconds since the Unix epoch (XEP-0203 `<delay stamp>`).
    pub stamp_ms: u64,
    /// The sender's JID as the server stamped it (`<delay from>` is the server).
    pub from: String,
    /// The `<message/>` as it was routed (server-stamped `from` and `to`).
    pub stanza: Bytes,
}

impl OfflineMessage {
    /// What a message costs against the per-user byte cap.
    pub fn held_bytes(&self) -> usize {
        self.stanza.len() + self.from.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineLimits {
    pub max_messages_per_user: usize,
    pub max_bytes_per_user: usize,
    /// Bytes kept for all users together: with `access.chat_policy = "all"`
    /// any user may write to any uid, so the per-user caps alone bound nothing.
    pub max_total_bytes: usize,
}

impl Default for OfflineLimits {
    fn default() -> Self {
        // ejabberd's mod_offline default access_max_user_messages is 100.
        OfflineLimits { max_messages_per_user: 100, max_bytes_per_user: 1 << 20, max_total_bytes: 256 << 20 }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum OfflineError {
    /// The user's storage is at its cap; the sender gets `resource-constraint`.
    #[error("offline storage for this user is full ({0})")]
    Full(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Guarantees every implementation gives (checked by [`conformance`]):
/// - `push` keeps arrival order per user and assigns increasing `seq`;
///   over either cap it refuses with [`OfflineError::Full`] and stores nothing.
/// - `list` returns a user's messages oldest first without removing them;
///   `remove_through(uid, seq)` removes those with `seq` ≤ the given one
///   (delivered), so a delivery cut short loses nothing.
/// - A push is durable once its ticket resolves (at once in memory).
pub trait OfflineStore: Send + Sync + Debug + 'static {
    fn push(&self, uid: &str, stamp_ms: u64, from: &str, stanza: Bytes) -> Result<Durable, OfflineError>;
    fn list(&self, uid: &str) -> Result<Vec<OfflineMessage>, OfflineError>;
    fn remove_through(&self, uid: &str, seq: u64) -> Result<(), OfflineError>;
    fn count(&self, uid: &str) -> Result<usize, OfflineError>;
    /// Whether calls wait on the network (a store in Redis). The engine
    /// then takes its per-user gate and makes the call inside
    /// `block_in_place`, so neither a slow store nor a task queued on the
    /// gate behind it holds a runtime worker.
    fn blocks(&self) -> bool {
        false
    }
}

#[derive(Debug, Default)]
struct UserBox {
    messages: VecDeque<OfflineMessage>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Boxes {
    users: HashMap<String, UserBox>,
    /// Bytes held across all users (`max_total_bytes`).
    total: usize,
    /// The last seq given, over all users: a seq is never given twice, so a
    /// `remove_through` of a delivery that listed an emptied box (two
    /// resources coming online at once) cannot reach a message kept after it.
    last_seq: u64,
}

/// Offline storage in memory (no data directory).
#[derive(Debug, Default)]
pub struct MemoryOffline {
    limits: OfflineLimits,
    boxes: Mutex<Boxes>,
}

impl MemoryOffline {
    pub fn new(limits: OfflineLimits) -> MemoryOffline {
        MemoryOffline { limits, boxes: Mutex::default() }
    }
}

/// The cap check every backend shares: `Some(reason)` when one more
/// message of `size` bytes does not fit beside the user's `count` messages
/// and `bytes`, and the `total` bytes held for everyone.
pub fn over_cap(limits: &OfflineLimits, count: usize, bytes: usize, total: usize, size: usize) -> Option<String> {
    if count >= limits.max_messages_per_user {
        Some(format!("{} messages", limits.max_messages_per_user))
    } else if bytes.saturating_add(size) > limits.max_bytes_per_user {
        Some(format!("{} bytes", limits.max_bytes_per_user))
    } else if total.saturating_add(size) > limits.max_total_bytes {
        Some(format!("{} bytes for all users", limits.max_total_bytes))
    } else {
        None
    }
}

impl OfflineStore for MemoryOffline {
    fn push(&self, uid: &str, stamp_ms: u64, from: &str, stanza: Bytes) -> Result<Durable, OfflineError> {
        let mut boxes = self.boxes.lock();
        let Boxes { users, total, last_seq } = &mut *boxes;
        let (count, bytes) = users.get(uid).map_or((0, 0), |b| (b.messages.len(), b.bytes));
        let m = OfflineMessage { seq: *last_seq + 1, stamp_ms, from: from.to_owned(), stanza };
        if let Some(limit) = over_cap(&self.limits, count, bytes, *total, m.held_bytes()) {
            return Err(OfflineError::Full(limit));
        }
        let b = users.entry(uid.to_owned()).or_default();
        *last_seq = m.seq;
        b.bytes += m.held_bytes();
        *total += m.held_bytes();
        b.messages.push_back(m);
        Ok(Durable::ready(Ok(())))
    }

    fn list(&self, uid: &str) -> Result<Vec<OfflineMessage>, OfflineError> {
        Ok(self.boxes.lock().users.get(uid).map(|b| b.messages.iter().cloned().collect()).unwrap_or_default())
    }

    fn remove_through(&self, uid: &str, seq: u64) -> Result<(), OfflineError> {
        let mut boxes = self.boxes.lock();
        let Boxes { users, total, .. } = &mut *boxes;
        if let Some(b) = users.get_mut(uid) {
            while b.messages.front().is_some_and(|m| m.seq <= seq) {
                let m = b.messages.pop_front().expect("front checked");
                b.bytes -= m.held_bytes();
                *total -= m.held_bytes();
            }
            if b.messages.is_empty() {
                users.remove(uid);
            }
        }
        Ok(())
    }

    fn count(&self, uid: &str) -> Result<usize, OfflineError> {
        Ok(self.boxes.lock().users.get(uid).map_or(0, |b| b.messages.len()))
    }
}

/// The engine's offline store, replaced once when the node joins a cluster
/// (the Redis one, store/offline_redis.rs), before listeners accept.
#[derive(Debug)]
pub struct OfflineSlot(parking_lot::RwLock<std::sync::Arc<dyn OfflineStore>>);

impl OfflineSlot {
    pub fn new(store: std::sync::Arc<dyn OfflineStore>) -> OfflineSlot {
        OfflineSlot(parking_lot::RwLock::new(store))
    }

    pub fn set(&self, store: std::sync::Arc<dyn OfflineStore>) {
        *self.0.write() = store;
    }

    fn get(&self) -> std::sync::Arc<dyn OfflineStore> {
        self.0.read().clone()
    }
}

impl OfflineStore for OfflineSlot {
    fn push(&self, uid: &str, stamp_ms: u64, from: &str, stanza: Bytes) -> Result<Durable, OfflineError> {
        self.get().push(uid, stamp_ms, from, stanza)
    }

    fn list(&self, uid: &str) -> Result<Vec<OfflineMessage>, OfflineError> {
        self.get().list(uid)
    }

    fn remove_through(&self, uid: &str, seq: u64) -> Result<(), OfflineError> {
        self.get().remove_through(uid, seq)
    }

    fn count(&self, uid: &str) -> Result<usize, OfflineError> {
        self.get().count(uid)
    }

    fn blocks(&self) -> bool {
        self.get().blocks()
    }
}

/// The conformance suite every [`OfflineStore`] passes; `make` returns a
/// fresh, empty store with the given limits.
pub async fn conformance<S: OfflineStore>(make: impl Fn(OfflineLimits) -> S) {
    let s = make(OfflineLimits { max_messages_per_user: 3, max_bytes_per_user: 1000, max_total_bytes: 1 << 20 });
    assert_eq!(s.count("bob").unwrap(), 0);
    assert!(s.list("bob").unwrap().is_empty());
    for (i, body) in ["<message>1</message>", "<message>2</message>"].iter().enumerate() {
        s.push("bob", 1000 + i as u64, "alice@h/r", Bytes::from_static(body.as_bytes())).unwrap().wait().await.unwrap();
    }
    s.push("carol", 5, "alice@h/r", Bytes::from_static(b"<message>c</message>")).unwrap().wait().await.unwrap();
    let got = s.list("bob").unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[0].seq < got[1].seq, "seq increases");
    assert_eq!(got[0].stanza, Bytes::from_static(b"<message>1</message>"));
    assert_eq!((got[0].stamp_ms, got[0].from.as_str()), (1000, "alice@h/r"));
    assert_eq!(s.list("bob").unwrap(), got, "list does not remove");

    // Caps: the count cap refuses the 4th; the byte cap refuses a big one.
    s.push("bob", 1, "a", Bytes::from_static(b"3")).unwrap().wait().await.unwrap();
    assert!(matches!(s.push("bob", 1, "a", Bytes::from_static(b"4")), Err(OfflineError::Full(_))));
    assert_eq!(s.count("bob").unwrap(), 3, "a refused push stores nothing");
    assert!(matches!(s.push("carol", 1, "a", Bytes::from(vec![b'x'; 1001])), Err(OfflineError::Full(_))));

    // Removal through a seq; the rest stay in order; other users untouched.
    s.remove_through("bob", got[0].seq).unwrap();
    let rest = s.list("bob").unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0], got[1]);
    s.remove_through("bob", u64::MAX).unwrap();
    assert_eq!(s.count("bob").unwrap(), 0);
    assert_eq!(s.count("carol").unwrap(), 1);
    s.remove_through("nobody", 7).unwrap();

    // Two resources list the same box; the first's removal empties it and a
    // message is kept; the second's removal (of what it listed) must not
    // reach that message: a seq is never given again.
    s.push("dan", 1, "a", Bytes::from_static(b"<message>d1</message>")).unwrap().wait().await.unwrap();
    let (first, second) = (s.list("dan").unwrap(), s.list("dan").unwrap());
    s.remove_through("dan", first.last().unwrap().seq).unwrap();
    s.push("dan", 2, "a", Bytes::from_static(b"<message>d2</message>")).unwrap().wait().await.unwrap();
    s.remove_through("dan", second.last().unwrap().seq).unwrap();
    let kept = s.list("dan").unwrap();
    assert_eq!(kept.len(), 1, "the message kept after the first delivery is still there");
    assert_eq!(kept[0].stanza, Bytes::from_static(b"<message>d2</message>"));
    s.remove_through("dan", u64::MAX).unwrap();

    // The total over all users: many users each under their cap still stop
    // at it, and what is delivered makes room again.
    let s = make(OfflineLimits { max_messages_per_user: 10, max_bytes_per_user: 1000, max_total_bytes: 250 });
    let m = Bytes::from(vec![b'm'; 99]); // 100 bytes with the 1-byte sender
    s.push("u1", 1, "a", m.clone()).unwrap().wait().await.unwrap();
    s.push("u2", 1, "a", m.clone()).unwrap().wait().await.unwrap();
    assert!(matches!(s.push("u3", 1, "a", m.clone()), Err(OfflineError::Full(_))), "over the total");
    assert_eq!(s.count("u3").unwrap(), 0);
    s.remove_through("u1", u64::MAX).unwrap();
    s.push("u3", 1, "a", m).unwrap().wait().await.unwrap();
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_offline_conforms() {
        super::conformance(super::MemoryOffline::new).await;
    }
}
