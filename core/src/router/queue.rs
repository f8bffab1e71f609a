//! Queues: ready messages, consumers served round-robin, unacked deliveries.
//!
//! All state of one queue sits behind one mutex, held for a dispatch step at
//! a time; a dispatch only pushes into session outboxes (which never block),
//! so the lock is never held across I/O or an await.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::RouteError;
use crate::message::Message;
use crate::session::{Delivery, Outbound, Rejected, SessionHandle, SessionId};
use crate::store::{Durable, QueueStore, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Delivered is done (STOMP `ack:auto`).
    Auto,
    /// An ACK covers the message and every earlier one on the subscription.
    Client,
    /// An ACK covers just that message.
    ClientIndividual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    pub durable: bool,
    /// Usable only by this session and deleted when it ends.
    pub exclusive: Option<SessionId>,
    /// Deleted when its last consumer goes (once it had one).
    pub auto_delete: bool,
}

/// What a full queue does with a new message (RabbitMQ's `x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest ready messages to make room (the default).
    DropHead,
    /// Refuse the new message; the publisher is told.
    RejectPublish,
}

/// A queue's length limits (RabbitMQ's `x-max-length`, `x-max-length-bytes`,
/// `x-overflow`). Bytes are message bodies and headers
/// ([`Message::held_bytes`]); they bound the ready messages, and separately
/// the unacked ones (a consumer with no prefetch gets no more deliveries
/// while its queue's unacked bytes are at the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_len: usize,
    pub max_bytes: usize,
    pub overflow: Overflow,
}

impl QueueLimits {
    pub fn from_config(l: &crate::config::LimitsConfig) -> QueueLimits {
        QueueLimits { max_len: l.max_queue_messages, max_bytes: l.max_queue_bytes, overflow: Overflow::DropHead }
    }
}

pub type ConsumerId = u64;
static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AckError {
    #[error("unknown delivery tag {0}")]
    UnknownTag(u64),
    #[error("no such consumer")]
    UnknownConsumer,
}

#[derive(Debug, Clone)]
struct Ready {
    message: Arc<Message>,
    redelivered: bool,
}

impl Ready {
    fn bytes(&self) -> usize {
        self.message.held_bytes()
    }
}

#[derive(Debug)]
struct Consumer {
    id: ConsumerId,
    session: Arc<SessionHandle>,
    subscription: Arc<str>,
    ack: AckMode,
    /// Most unacked deliveries in flight; 0 = unlimited.
    prefetch: usize,
    unacked: VecDeque<(u64, Ready)>,
    next_tag: u64,
}

impl Consumer {
    fn has_room(&self) -> bool {
        self.ack == AckMode::Auto || self.prefetch == 0 || self.unacked.len() < self.prefetch
    }
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Ready>,
    consumers: Vec<Consumer>,
    /// Next consumer to try: round-robin across dispatches. A `u32` beside
    /// `had_consumer`, and no lock-free copy of the byte counts: every queue
    /// of every idle session holds a `Queue`, and 8 bytes more take it to the
    /// next allocation size (mimalloc: 256 -> 320 B).
    cursor: u32,
    had_consumer: bool,
    /// Bytes of the messages in `ready`, and in every consumer's `unacked`.
    ready_bytes: usize,
    unacked_bytes: usize,
}

/// Counters for stats and the admin console.
#[derive(Debug, Default)]
pub struct QueueCounters {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub dropped: AtomicU64,
}

/// A point-in-time copy of counters (one queue, a vhost or the node).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Messages published into a vhost (each counted once, however many
    /// queues took it); 0 for a single queue.
    #[serde(skip)]
    pub published_messages: u64,
    /// Copies enqueued into queues.
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
    pub dropped: u64,
}

impl Totals {
    pub fn merge(&mut self, o: &Totals) {
        self.published_messages += o.published_messages;
        self.published += o.published;
        self.delivered += o.delivered;
        self.acked += o.acked;
        self.dropped += o.dropped;
    }
}

impl QueueCounters {
    pub fn snapshot(&self) -> Totals {
        Totals {
            published_messages: 0,
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Folds another queue's counters into these (a deleted queue's, kept
    /// so totals only grow).
    pub fn add(&self, o: &QueueCounters) {
        let t = o.snapshot();
        self.published.fetch_add(t.published, Ordering::Relaxed);
        self.delivered.fetch_add(t.delivered, Ordering::Relaxed);
        self.acked.fetch_add(t.acked, Ordering::Relaxed);
        self.dropped.fetch_add(t.dropped, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Queue {
    pub name: Arc<str>,
    pub vhost: Arc<str>,
    pub options: QueueOptions,
    pub counters: QueueCounters,
    pub limits: QueueLimits,
    /// The user whose session declared it, when it outlives that session
    /// (counted against `limits.max_queues_per_user`).
    pub owner: Option<Arc<str>>,
    store: Option<Arc<dyn QueueStore>>,
    state: Mutex<State>,
    deleted: AtomicBool,
}

impl Queue {
    pub fn new(
        vhost: &str,
        name: &str,
        options: QueueOptions,
        max_len: usize,
        store: Option<Arc<dyn QueueStore>>,
    ) -> Queue {
        let limits = QueueLimits { max_len, max_bytes: usize::MAX, overflow: Overflow::DropHead };
        Self::with_limits(vhost, name, options, limits, store, None)
    }

    pub fn with_limits(
        vhost: &str,
        name: &str,
        options: QueueOptions,
        limits: QueueLimits,
        store: Option<Arc<dyn QueueStore>>,
        owner: Option<Arc<str>>,
    ) -> Queue {
        Queue {
            name: name.into(),
            vhost: vhost.into(),
            options,
            counters: QueueCounters::default(),
            limits,
            owner,
            // Exclusive queues die with their session: never stored. A
            // cluster work queue's store (bus/streams.rs) holds every
            // message, durable queue or not.
            store: if options.exclusive.is_none()
                && (options.durable || store.as_ref().is_some_and(|s| s.takes_every_message()))
            {
                store
            } else {
                None
            },
            state: Mutex::new(State::default()),
            deleted: AtomicBool::new(false),
        }
    }

    /// Message bytes held (ready and unacked). Takes the lock: the memory
    /// check reads it every `limits.memory_check_interval_ms`, as it reads
    /// session outboxes.
    pub fn held_bytes(&self) -> usize {
        let st = self.state.lock();
        st.ready_bytes + st.unacked_bytes
    }

    /// Ready message bytes.
    pub fn ready_bytes(&self) -> usize {
        self.state.lock().ready_bytes
    }

    pub fn depth(&self) -> usize {
        self.state.lock().ready.len()
    }

    pub fn consumer_count(&self) -> usize {
        self.state.lock().consumers.len()
    }

    pub fn unacked_count(&self) -> usize {
        self.state.lock().consumers.iter().map(|c| c.unacked.len()).sum()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        let mut st = self.state.lock();
        st.ready.clear();
        for c in st.consumers.drain(..) {
            drop(c);
        }
        st.ready_bytes = 0;
        st.unacked_bytes = 0;
    }

    /// Whether `session` may use this queue (exclusive queues belong to one).
    pub fn accessible_by(&self, session: SessionId) -> bool {
        self.options.exclusive.is_none_or(|owner| owner == session)
    }

    /// Whether this queue's messages are written to the queue store
    /// (durable and not exclusive).
    pub fn is_stored(&self) -> bool {
        self.store.is_some() && !self.is_clustered()
    }

    /// Writes a persistent message to the store; the ticket says when it is
    /// durable. Transient messages and queues never touch it.
    fn persist(&self, message: &Message) -> Result<Option<Durable>, StoreError> {
        match &self.store {
            Some(store) if message.persistent && !store.takes_every_message() => {
                store.append(&self.vhost, &self.name, message).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Marks a stored message as handed out, so a restart after a clean stop
    /// flags it `redelivered` (no ticket: at worst a crash loses the mark,
    /// and an unclean start flags everything anyway).
    fn mark_delivered(&self, message: &Message) {
        if let Some(store) = &self.store {
            if message.persistent || store.takes_every_message() {
                if let Err(e) = store.delivered(&self.vhost, &self.name, message.id) {
                    tracing::warn!(queue = %self.name, error = %e, "queue store delivery mark failed");
                }
            }
        }
    }

    fn forget(&self, message: &Message) {
        if let Some(store) = &self.store {
            if message.persistent || store.takes_every_message() {
                if let Err(e) = store.remove(&self.vhost, &self.name, message.id) {
                    tracing::warn!(queue = %self.name, error = %e, "queue store remove failed");
                }
            }
        }
    }

    /// Enqueues and dispatches. A full queue (`limits`) drops its oldest
    /// ready messages (`drop-head`), as RabbitMQ does with `x-max-length`
    /// and `x-max-length-bytes`, or refuses the new one (`reject-publish`).
    /// A persistent message in a stored queue comes with the store's ticket.
    pub fn publish(&self, message: Arc<Message>) -> Result<Option<Durable>, RouteError> {
        if self.is_deleted() {
            return Ok(None);
        }
        let size = message.held_bytes();
        if self.limits.overflow == Overflow::RejectPublish {
            let st = self.state.lock();
            let full = if st.ready.len() >= self.limits.max_len {
                Some(format!("{} messages, its x-max-length", self.limits.max_len))
            } else if st.ready_bytes.saturating_add(size) > self.limits.max_bytes {
                Some(format!("{} bytes, its x-max-length-bytes", self.limits.max_bytes))
            } else {
                None
            };
            if let Some(limit) = full {
                drop(st);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(RouteError::QueueFull { name: self.name.to_string(), limit });
            }
        }
        let ticket = self.persist(&message)?;
        let mut st = self.state.lock();
        if self.is_deleted() {
            // Deleted between the first check and the write: either the
            // delete's sweep of the store saw the write, or this sees the
            // flag (set before the sweep) and takes it back, so no row
            // outlives its queue to be loaded as an ownerless queue.
            drop(st);
            self.forget(&message);
            return Ok(None);
        }
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        st.ready_bytes += size;
        st.ready.push_back(Ready { message, redelivered: false });
        self.dispatch(&mut st);
        // What no consumer took stays within the limits: the oldest goes.
        while st.ready.len() > self.limits.max_len || st.ready_bytes > self.limits.max_bytes {
            let Some(old) = st.ready.pop_front() else { break };
            st.ready_bytes -= old.bytes();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            self.forget(&old.message);
        }
        Ok(ticket)
    }

    /// Whether this is one queue cluster-wide (a work queue in Redis,
    /// bus/streams.rs): its messages arrive through [`Queue::feed`].
    pub fn is_clustered(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.takes_every_message())
    }

    /// Takes a message fetched from the cluster's copy of this queue (not
    /// re-persisted: the store already holds it) and dispatches it; false
    /// when the queue was deleted meanwhile (the caller hands it back).
    pub fn feed(&self, message: Arc<Message>, redelivered: bool) -> bool {
        let mut st = self.state.lock();
        if self.is_deleted() {
            return false;
        }
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        st.ready_bytes += message.held_bytes();
        st.ready.push_back(Ready { message, redelivered });
        self.dispatch(&mut st);
        true
    }

    /// How many more messages this node's consumers can take now: the room
    /// under each consumer's prefetch (`unlimited` for one without a
    /// prefetch or acking automatically), less what is ready already. A
    /// node fetches no more than this from the cluster's copy, so it does
    /// not hoard a queue that consumers on other nodes compete for.
    pub fn credit(&self, unlimited: usize) -> usize {
        let st = self.state.lock();
        let room: usize = st
            .consumers
            .iter()
            .map(|c| {
                let cap = if c.ack == AckMode::Auto || c.prefetch == 0 { unlimited } else { c.prefetch };
                let held = if c.ack == AckMode::Auto { 0 } else { c.unacked.len() };
                cap.saturating_sub(held)
            })
            .sum();
        room.saturating_sub(st.ready.len())
    }

    /// Takes the ready messages `which` picks out (not forgotten by the
    /// store): a node whose last consumer left hands them back to the cluster.
    pub fn take_ready_where(&self, which: impl Fn(&Message) -> bool) -> Vec<(Arc<Message>, bool)> {
        let mut st = self.state.lock();
        let (taken, kept): (VecDeque<Ready>, VecDeque<Ready>) = st.ready.drain(..).partition(|r| which(&r.message));
        st.ready = kept;
        st.ready_bytes = st.ready.iter().map(Ready::bytes).sum();
        taken.into_iter().map(|r| (r.message, r.redelivered)).collect()
    }

    /// Restores a message read back from the store at start (not re-persisted).
    pub(crate) fn restore(&self, message: Arc<Message>, redelivered: bool) {
        let mut st = self.state.lock();
        st.ready_bytes += message.held_bytes();
        st.ready.push_back(Ready { message, redelivered });
    }

    pub fn consume(
        &self,
        session: Arc<SessionHandle>,
        subscription: Arc<str>,
        ack: AckMode,
        prefetch: usize,
    ) -> ConsumerId {
        let id = NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock();
        // Most queues (one per subscription) only ever have one consumer:
        // room for exactly one, not the default four.
        st.consumers.reserve_exact(1);
        st.consumers.push(Consumer { id, session, subscription, ack, prefetch, unacked: VecDeque::new(), next_tag: 1 });
        st.had_consumer = true;
        self.dispatch(&mut st);
        id
    }

    /// Removes a consumer and requeues what it had not acked, in order, at the
    /// head of the queue. Returns true when the queue is now due for
    /// auto-deletion.
    pub fn cancel(&self, consumer: ConsumerId) -> bool {
        let mut st = self.state.lock();
        if let Some(i) = st.consumers.iter().position(|c| c.id == consumer) {
            let c = st.consumers.remove(i);
            Self::requeue_front(&mut st, c.unacked.into_iter().map(|(_, r)| r));
            self.dispatch(&mut st);
        }
        self.options.auto_delete && st.had_consumer && st.consumers.is_empty()
    }

    /// Puts unacked deliveries back at the head (their bytes move from
    /// unacked to ready).
    fn requeue_front(st: &mut State, items: impl DoubleEndedIterator<Item = Ready>) {
        for mut r in items.rev() {
            let b = r.bytes();
            st.unacked_bytes = st.unacked_bytes.saturating_sub(b);
            st.ready_bytes += b;
            r.redelivered = true;
            st.ready.push_front(r);
        }
    }

    /// Settles deliveries: `multiple` covers every earlier tag too (STOMP
    /// `client` mode). Acked or dropped messages are gone; requeued ones go
    /// back to the head, marked redelivered.
    pub fn settle(&self, consumer: ConsumerId, tag: u64, multiple: bool, outcome: Settle) -> Result<usize, AckError> {
        let mut st = self.state.lock();
        let c = st.consumers.iter_mut().find(|c| c.id == consumer).ok_or(AckError::UnknownConsumer)?;
        let Some(pos) = c.unacked.iter().position(|(t, _)| *t == tag) else {
            return Err(AckError::UnknownTag(tag));
        };
        let taken: Vec<Ready> = if multiple {
            c.unacked.drain(..=pos).map(|(_, r)| r).collect()
        } else {
            c.unacked.remove(pos).map(|(_, r)| r).into_iter().collect()
        };
        let n = taken.len();
        let bytes: usize = taken.iter().map(Ready::bytes).sum();
        st.unacked_bytes = st.unacked_bytes.saturating_sub(bytes);
        match outcome {
            Settle::Ack | Settle::Drop => {
                if outcome == Settle::Ack {
                    self.counters.acked.fetch_add(n as u64, Ordering::Relaxed);
                }
                for r in &taken {
                    self.forget(&r.message);
                }
            }
            Settle::Requeue => {
                // requeue_front moves bytes from unacked to ready: put them back first.
                st.unacked_bytes += bytes;
                Self::requeue_front(&mut st, taken.into_iter())
            }
        }
        self.dispatch(&mut st);
        Ok(n)
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> usize {
        let mut st = self.state.lock();
        let n = st.ready.len();
        for r in st.ready.drain(..) {
            self.forget(&r.message);
        }
        st.ready_bytes = 0;
        n
    }

    /// Hands ready messages to consumers with room, round-robin. Unacked
    /// messages are bounded in bytes per queue: past `max_bytes` of them,
    /// acking consumers get nothing more until they ack.
    fn dispatch(&self, st: &mut State) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let n = st.consumers.len();
            let start = st.cursor as usize % n;
            let unacked_full = st.unacked_bytes >= self.limits.max_bytes;
            let Some(i) = (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| st.consumers[i].has_room() && (st.consumers[i].ack == AckMode::Auto || !unacked_full))
            else {
                return;
            };
            let Some(ready) = st.ready.pop_front() else { return };
            let size = ready.bytes();
            st.ready_bytes -= size;
            let c = &mut st.consumers[i];
            let tag = c.next_tag;
            let delivery = Delivery {
                subscription: c.subscription.clone(),
                tag,
                message: ready.message.clone(),
                redelivered: ready.redelivered,
            };
            match c.session.offer(Outbound::Deliver(delivery)) {
                Ok(()) => {
                    c.next_tag += 1;
                    if c.ack != AckMode::Auto {
                        self.mark_delivered(&ready.message);
                        c.unacked.push_back((tag, ready));
                        st.unacked_bytes += size;
                    } else {
                        // Delivered is done: it leaves the store as an ACK would.
                        self.forget(&ready.message);
                    }
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    // `i < n`, a count of consumers.
                    st.cursor = (i + 1) as u32;
                }
                Err(Rejected(_)) => {
                    // The session is closing (slow consumer or gone): take it
                    // out now so the message goes to someone else.
                    let c = st.consumers.remove(i);
                    if self.options.exclusive == Some(c.session.id) {
                        // Its own queue dies with it: drop what it holds now
                        // rather than fill up to the queue's limits until the
                        // session's cleanup deletes it (a flood would pin both
                        // the outbox budget and the queue's).
                        self.deleted.store(true, Ordering::Release);
                        let n = 1 + st.ready.len() as u64 + c.unacked.len() as u64;
                        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                        st.ready.clear();
                        st.ready_bytes = 0;
                        st.unacked_bytes = 0;
                        return;
                    }
                    st.ready_bytes += size;
                    st.ready.push_front(ready);
                    Self::requeue_front(st, c.unacked.into_iter().map(|(_, r)| r));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Requeue,
    Drop,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Peer;
    use bytes::Bytes;

    #[test]
    fn a_queue_fits_a_256_byte_allocation() {
        // Every idle STOMP session subscribes to one: with its two reference
        // counts it must stay in mimalloc's 256 B class (the next is 320 B).
        assert!(std::mem::size_of::<Queue>() <= 240, "{}", std::mem::size_of::<Queue>());
    }

    fn session(cap: usize) -> Arc<SessionHandle> {
        SessionHandle::new(
            "u",
            "/",
            crate::session::Protocol::Stomp,
            &Peer { addr: None, transport: crate::transport::Transport::Tcp },
            cap,
        )
    }

    fn msg(body: &'static str) -> Arc<Message> {
        Arc::new(Message::new("", "q", vec![], Bytes::from_static(body.as_bytes())))
    }

    fn bodies(s: &SessionHandle) -> Vec<(String, u64, bool)> {
        let mut out = Vec::new();
        s.drain(&mut out, usize::MAX);
        out.into_iter()
            .filter_map(|o| match o {
                Outbound::Deliver(d) => {
                    Some((String::from_utf8_lossy(&d.message.body).into_owned(), d.tag, d.redelivered))
                }
                _ => None,
            })
            .collect()
    }

    fn queue() -> Queue {
        Queue::new("/", "q", QueueOptions { durable: false, exclusive: None, auto_delete: true }, 3, None)
    }

    #[test]
    fn round_robin_between_consumers() {
        let q = queue();
        let (a, b) = (session(10), session(10));
        q.consume(a.clone(), "s".into(), AckMode::Auto, 0);
        q.consume(b.clone(), "s".into(), AckMode::Auto, 0);
        for m in ["1", "2", "3", "4"] {
            q.publish(msg(m)).unwrap();
        }
        let got_a: Vec<_> = bodies(&a).into_iter().map(|x| x.0).collect();
        let got_b: Vec<_> = bodies(&b).into_iter().map(|x| x.0).collect();
        assert_eq!(got_a, ["1", "3"]);
        assert_eq!(got_b, ["2", "4"]);
    }

    #[test]
    fn prefetch_holds_until_ack_and_nack_requeues() {
        let q = queue();
        let a = session(10);
        let c = q.consume(a.clone(), "s".into(), AckMode::ClientIndividual, 1);
        q.publish(msg("1")).unwrap();
        q.publish(msg("2")).unwrap();
        assert_eq!(bodies(&a), [("1".into(), 1, false)]);
        assert_eq!(q.depth(), 1);
        q.settle(c, 1, false, Settle::Requeue).unwrap();
        assert_eq!(bodies(&a), [("1".into(), 2, true)], "requeued message comes back first, marked");
        assert_eq!(q.settle(c, 1, false, Settle::Ack), Err(AckError::UnknownTag(1)));
        q.settle(c, 2, false, Settle::Ack).unwrap();
        assert_eq!(bodies(&a), [("2".into(), 3, false)]);
        assert_eq!(q.counters.acked.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn client_mode_ack_is_cumulative_and_cancel_requeues() {
        let q = queue();
        let a = session(10);
        let c = q.consume(a.clone(), "s".into(), AckMode::Client, 0);
        for m in ["1", "2", "3"] {
            q.publish(msg(m)).unwrap();
        }
        assert_eq!(bodies(&a).len(), 3);
        assert_eq!(q.settle(c, 2, true, Settle::Ack), Ok(2));
        assert!(q.cancel(c), "auto-delete queue is due once its last consumer goes");
        assert_eq!(q.depth(), 1, "unacked message 3 requeued");
        let b = session(10);
        q.consume(b.clone(), "s".into(), AckMode::Auto, 0);
        assert_eq!(bodies(&b), [("3".into(), 1, true)]);
    }

    #[test]
    fn slow_consumer_is_closed_and_message_goes_elsewhere() {
        let q = queue();
        let slow = session(1);
        let ok = session(10);
        q.consume(slow.clone(), "s".into(), AckMode::Auto, 0);
        q.consume(ok.clone(), "s".into(), AckMode::Auto, 0);
        for m in ["1", "2", "3"] {
            q.publish(msg(m)).unwrap();
        }
        assert!(slow.is_closing());
        assert_eq!(slow.close_reason().unwrap().code, crate::error::CloseCode::SlowConsumer);
        let got: Vec<_> = bodies(&ok).into_iter().map(|x| x.0).collect();
        assert_eq!(got, ["2", "3"]);
        assert_eq!(bodies(&slow).len(), 1);
        assert_eq!(q.consumer_count(), 1);
    }

    fn sized(body: usize) -> Arc<Message> {
        Arc::new(Message::new("", "q", vec![], Bytes::from(vec![b'x'; body])))
    }

    fn limited(max_len: usize, max_bytes: usize, overflow: Overflow) -> Queue {
        let opts = QueueOptions { durable: false, exclusive: None, auto_delete: false };
        Queue::with_limits("/", "q", opts, QueueLimits { max_len, max_bytes, overflow }, None, None)
    }

    #[test]
    fn max_length_bytes_drops_head() {
        // Routing key "q" counts: each message pins 1001 bytes.
        let q = limited(100, 3500, Overflow::DropHead);
        for _ in 0..10 {
            q.publish(sized(1000)).unwrap();
        }
        assert_eq!(q.depth(), 3);
        assert_eq!(q.ready_bytes(), 3003);
        assert_eq!(q.held_bytes(), 3003);
        assert_eq!(q.counters.dropped.load(Ordering::Relaxed), 7);
        // A message larger than the whole limit does not stay either.
        q.publish(sized(5000)).unwrap();
        assert_eq!((q.depth(), q.ready_bytes()), (0, 0));
        q.purge();
        assert_eq!(q.held_bytes(), 0);
    }

    #[test]
    fn reject_publish_refuses_when_full_and_takes_again_after() {
        let q = limited(2, 1 << 20, Overflow::RejectPublish);
        q.publish(msg("1")).unwrap();
        q.publish(msg("2")).unwrap();
        let e = q.publish(msg("3")).unwrap_err();
        assert!(matches!(e, RouteError::QueueFull { .. }), "{e}");
        assert!(e.to_string().contains("x-max-length"), "{e}");
        assert_eq!(q.depth(), 2);
        let a = session(10);
        q.consume(a.clone(), "s".into(), AckMode::Auto, 0);
        assert_eq!(bodies(&a).len(), 2);
        q.publish(msg("4")).unwrap();
        let by_bytes = limited(100, 1500, Overflow::RejectPublish);
        by_bytes.publish(sized(1000)).unwrap();
        let e = by_bytes.publish(sized(1000)).unwrap_err();
        assert!(e.to_string().contains("x-max-length-bytes"), "{e}");
    }

    #[test]
    fn unacked_bytes_are_bounded_without_prefetch() {
        let q = limited(100, 2500, Overflow::DropHead);
        let a = session(100);
        let c = q.consume(a.clone(), "s".into(), AckMode::Client, 0);
        for _ in 0..6 {
            q.publish(sized(1000)).unwrap();
        }
        // Three delivered (the third crosses the limit), the rest wait, the oldest waiting dropped.
        assert_eq!(bodies(&a).len(), 3);
        assert_eq!(q.unacked_count(), 3);
        assert!(q.ready_bytes() <= 2500);
        assert_eq!(q.held_bytes(), 3003 + q.ready_bytes());
        q.settle(c, 3, true, Settle::Ack).unwrap();
        assert_eq!(bodies(&a).len(), 2, "acking makes room");
    }

    #[test]
    fn max_length_drops_head() {
        let q = queue();
        for m in ["1", "2", "3", "4"] {
            q.publish(msg(m)).unwrap();
        }
        assert_eq!(q.depth(), 3);
        let a = session(10);
        q.consume(a.clone(), "s".into(), AckMode::Auto, 0);
        let got: Vec<_> = bodies(&a).into_iter().map(|x| x.0).collect();
        assert_eq!(got, ["2", "3", "4"]);
        assert_eq!(q.counters.dropped.load(Ordering::Relaxed), 1);
    }
}
