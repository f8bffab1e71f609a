//! What the engine holds for a session: an id, who it is, what it speaks
//! ([`Protocol`]) and can receive ([`Capabilities`]), and a bounded outbox
//! that the session's own task drains.
//!
//! Imports `presence` for [`Availability`] only; presence's service and
//! fan-out import this module, never the other way round.
//!
//! The outbox is a `VecDeque` behind a mutex rather than a channel so an idle
//! session costs no pre-allocated slots (tokio's bounded channel allocates a
//! block of 32 on creation), and so the task can drain a whole batch under one
//! lock and write it with one flush.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::{CloseCode, CloseReason};
use crate::message::Message;
use crate::presence::Availability;

pub type SessionId = u64;

/// The protocol a client speaks. Its name (`stomp`, `xmpp`) is what the
/// admin API, metrics labels, engine events and logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Stomp,
    /// XMPP over TCP, WebSocket or BOSH.
    Xmpp,
    /// No client: the application's own calls (`ClientInfo::LOCAL`).
    Local,
}

impl Protocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Stomp => "stomp",
            Protocol::Xmpp => "xmpp",
            Protocol::Local => "local",
        }
    }

    /// What a session of this protocol can take besides deliveries.
    pub const fn capabilities(self) -> Capabilities {
        match self {
            Protocol::Xmpp => {
                Capabilities::PRESENCE_NOTICES.with(Capabilities::ROSTER_PUSHES).with(Capabilities::OWN_PRESENCE)
            }
            Protocol::Stomp | Protocol::Local => Capabilities::NONE,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a session can receive from the engine besides deliveries, and who
/// sets its presence. Presence and roster fan-out (`presence::fanout`) ask
/// these, never a protocol's name. One byte in the handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);
    /// Contacts' presence, one resource at a time ([`Outbound::Presence`]).
    pub const PRESENCE_NOTICES: Capabilities = Capabilities(1);
    /// Roster changes ([`Outbound::RosterChanged`]).
    pub const ROSTER_PUSHES: Capabilities = Capabilities(2);
    /// The client announces its own presence (an XMPP resource); without it
    /// the session is online while attached, and the application may set
    /// its presence (`Engine::set_user_presence`).
    pub const OWN_PRESENCE: Capabilities = Capabilities(4);

    pub const fn with(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One session's presence, as its contacts see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceState {
    pub session: SessionId,
    /// XMPP resource; other sessions are `<protocol>-<session id>`
    /// ([`SessionHandle::presence_resource`]).
    pub resource: String,
    /// `Offline` = connected but no presence sent yet, or unavailable.
    pub availability: Availability,
    pub status: String,
    pub priority: i8,
}

/// A change to hand to contacts: one resource of `uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceNotice {
    pub uid: String,
    pub state: ResourceState,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

pub fn next_session_id() -> SessionId {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// One message handed to a session by a queue.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The subscription (consumer tag) it was delivered on.
    pub subscription: Arc<str>,
    /// Per-consumer delivery tag, increasing; used to ack.
    pub tag: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
}

/// What the engine pushes to a session's task.
#[derive(Debug, Clone)]
pub enum Outbound {
    Deliver(Delivery),
    /// A contact's (or the user's other) resource changed presence
    /// (sessions with [`Capabilities::PRESENCE_NOTICES`]).
    Presence(Arc<PresenceNotice>),
    /// Project membership changed: the roster must be re-read and pushed
    /// (sessions with [`Capabilities::ROSTER_PUSHES`]).
    RosterChanged,
}

/// How a bounded write ended.
#[derive(Debug)]
pub enum Written<T> {
    Done(T),
    /// The session was asked to close and the write did not finish within
    /// the grace period: it was cut off (the stream may hold half a frame).
    CutOff(CloseReason),
    /// The client did not take the bytes within the write limit.
    TimedOut,
}

/// Runs a write to a client, but not forever: a client that stops reading
/// is a slow consumer after `limit`, and a session asked to close (kick,
/// slow consumer, shutdown) gets `grace` to finish what it was writing.
pub async fn write_within<T>(
    handle: &SessionHandle,
    limit: std::time::Duration,
    grace: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> Written<T> {
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => Written::Done(r),
        _ = handle.closed() => match tokio::time::timeout(grace, &mut work).await {
            Ok(r) => Written::Done(r),
            Err(_) => Written::CutOff(handle.close_reason().cloned().unwrap_or_else(|| CloseReason::new(CloseCode::Internal, "closed"))),
        },
        _ = tokio::time::sleep(limit) => Written::TimedOut,
    }
}

/// Shared handle to a live session; the hub and every queue consumer hold one.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: SessionId,
    pub uid: Arc<str>,
    pub vhost: Arc<str>,
    pub protocol: Protocol,
    /// What it can receive besides deliveries (from `protocol`).
    pub capabilities: Capabilities,
    /// `tcp`, `tls`, `ws`, `sockjs`, `bosh`.
    pub transport: crate::transport::Transport,
    pub peer: Option<std::net::SocketAddr>,
    pub connected_at: SystemTime,
    /// XMPP resource, once bound.
    pub resource: OnceLock<String>,
    outbox: Mutex<Outbox>,
    /// Frames, then message bytes, queued before the session is closed as a
    /// slow consumer. `u32`s so the byte budget costs no size here.
    max_frames: u32,
    max_bytes: u32,
    wake: Notify,
    /// Wakes [`SessionHandle::closed`] waiters. Set `reason` is the flag:
    /// a `CancellationToken` here was a 112 B tree node in every session.
    closed_wake: Notify,
    reason: OnceLock<CloseReason>,
}

/// Items waiting for the session's task, and the bytes they pin.
#[derive(Debug, Default)]
struct Outbox {
    items: VecDeque<Outbound>,
    bytes: usize,
}

/// The bounds of one session's outbox (`limits.outbound_queue`, `limits.outbound_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub frames: usize,
    pub bytes: usize,
}

impl OutboxLimits {
    pub fn from_config(l: &crate::config::LimitsConfig) -> OutboxLimits {
        OutboxLimits { frames: l.outbound_queue, bytes: l.outbound_bytes }
    }
}

/// Most bytes moved out of the outbox in one drain (at least one item): what
/// a session writes is pinned until written, so a batch must not be
/// `WRITE_BATCH` large messages on top of the byte budget.
const DRAIN_BYTES: usize = 256 * 1024;

impl Outbound {
    /// The memory this item pins while queued: a message's body and headers
    /// (shared `Arc`s count in every outbox holding them), a small constant
    /// for notices.
    pub fn held_bytes(&self) -> usize {
        match self {
            Outbound::Deliver(d) => d.message.held_bytes(),
            Outbound::Presence(n) => 64 + n.uid.len() + n.state.resource.len() + n.state.status.len(),
            Outbound::RosterChanged => 0,
        }
    }
}

/// The outbox was full: the session is now closing as a slow consumer, and
/// the item is handed back so the caller can requeue it.
#[derive(Debug)]
pub struct Rejected(pub Outbound);

impl SessionHandle {
    pub fn new(
        uid: &str,
        vhost: &str,
        protocol: Protocol,
        peer: &crate::transport::Peer,
        capacity: usize,
    ) -> Arc<SessionHandle> {
        Self::with_limits(uid, vhost, protocol, peer, OutboxLimits { frames: capacity, bytes: usize::MAX })
    }

    /// A handle whose outbox is bounded in frames and in bytes.
    pub fn with_limits(
        uid: &str,
        vhost: &str,
        protocol: Protocol,
        peer: &crate::transport::Peer,
        limits: OutboxLimits,
    ) -> Arc<SessionHandle> {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Arc::new(SessionHandle {
            id: next_session_id(),
            uid: uid.into(),
            vhost: vhost.into(),
            protocol,
            capabilities: protocol.capabilities(),
            transport: peer.transport,
            peer: peer.addr,
            connected_at: SystemTime::now(),
            resource: OnceLock::new(),
            outbox: Mutex::new(Outbox::default()),
            max_frames: clamp(limits.frames),
            max_bytes: clamp(limits.bytes),
            wake: Notify::new(),
            closed_wake: Notify::new(),
            reason: OnceLock::new(),
        })
    }

    /// Queues `item` without waiting. Fan-out never blocks on one session:
    /// when the outbox is full, in frames or in bytes, the session is closed
    /// as a slow consumer. An empty outbox takes any one item, so a message
    /// larger than the byte budget still reaches a consumer that keeps up.
    pub fn offer(&self, item: Outbound) -> Result<(), Rejected> {
        if self.is_closing() {
            return Err(Rejected(item));
        }
        let size = item.held_bytes();
        {
            // Short critical section: push only; the session task pops.
            let mut q = self.outbox.lock();
            let over = if q.items.len() >= self.max_frames as usize {
                Some(format!("more than {} frames queued for this session", self.max_frames))
            } else if !q.items.is_empty() && q.bytes.saturating_add(size) > self.max_bytes as usize {
                Some(format!("more than {} bytes queued for this session (limits.outbound_bytes)", self.max_bytes))
            } else {
                None
            };
            if let Some(what) = over {
                drop(q);
                self.close(
                    CloseReason::new(CloseCode::SlowConsumer, "slow consumer")
                        .with_detail(format!("{what}; it was closed so others are not held up")),
                );
                return Err(Rejected(item));
            }
            q.bytes += size;
            q.items.push_back(item);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Moves up to `max` queued items into `into` (fewer once they add up
    /// to a few hundred KiB); returns how many.
    pub fn drain(&self, into: &mut Vec<Outbound>, max: usize) -> usize {
        let mut q = self.outbox.lock();
        let mut n = 0;
        let mut bytes = 0;
        while n < max && (n == 0 || bytes < DRAIN_BYTES) {
            let Some(item) = q.items.pop_front() else { break };
            bytes += item.held_bytes();
            into.push(item);
            n += 1;
        }
        q.bytes = q.bytes.saturating_sub(bytes);
        // An emptied outbox gives its memory back: most sessions are idle
        // most of the time, and a kept ring is 4+ slots in each of them.
        if q.items.is_empty() {
            q.bytes = 0;
            if q.items.capacity() > 0 {
                q.items = VecDeque::new();
            }
        }
        n
    }

    pub fn queued(&self) -> usize {
        self.outbox.lock().items.len()
    }

    /// Message bytes waiting in the outbox (for the memory alarm and stats).
    pub fn queued_bytes(&self) -> usize {
        self.outbox.lock().bytes
    }

    /// Resolves when something was offered since the last drain, or the
    /// session was asked to close: one waiter for both in every idle
    /// session's loop (each waiter is ~80 B of its resident state), so a
    /// loop checks [`SessionHandle::is_closing`] first when woken.
    pub async fn notified(&self) {
        self.wake.notified().await
    }

    /// Wakes the session's task without offering anything: it has a
    /// request to look at (an XEP-0198 resumption taking it over).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the session's task to close; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.closed_wake.notify_waiters();
        self.wake.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        self.reason.get().is_some()
    }

    pub async fn closed(&self) {
        let waiting = self.closed_wake.notified();
        tokio::pin!(waiting);
        // Registered before the flag is read: a close in between still wakes it.
        waiting.as_mut().enable();
        if !self.is_closing() {
            waiting.await;
        }
    }

    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.reason.get()
    }

    /// The resource this session shows as in presence: its XMPP resource
    /// once bound, `<protocol>-<id>` (`stomp-7`) otherwise.
    pub fn presence_resource(&self) -> String {
        match self.resource.get() {
            Some(r) => r.clone(),
            None => format!("{}-{}", self.protocol, self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Peer;
    use bytes::Bytes;

    fn deliver(body: usize) -> Outbound {
        let m = Message::new("", "q", vec![("h".into(), "v".into())], Bytes::from(vec![0u8; body]));
        Outbound::Deliver(Delivery { subscription: "s".into(), tag: 1, message: Arc::new(m), redelivered: false })
    }

    fn handle(frames: usize, bytes: usize) -> Arc<SessionHandle> {
        SessionHandle::with_limits(
            "u",
            "/",
            Protocol::Stomp,
            &Peer { addr: None, transport: crate::transport::Transport::Tcp },
            OutboxLimits { frames, bytes },
        )
    }

    #[test]
    fn outbox_over_its_byte_budget_closes_the_session() {
        let h = handle(1000, 10_000);
        for _ in 0..3 {
            h.offer(deliver(3000)).unwrap();
        }
        assert_eq!(h.queued_bytes(), 3 * 3003);
        assert!(h.offer(deliver(3000)).is_err());
        let r = h.close_reason().expect("closed");
        assert_eq!(r.code, CloseCode::SlowConsumer);
        assert!(r.detail.contains("10000 bytes"), "{}", r.detail);
    }

    #[test]
    fn an_empty_outbox_takes_one_large_message_and_drains_in_bounded_batches() {
        let h = handle(1000, 10_000);
        h.offer(deliver(50_000)).expect("a message larger than the budget reaches a consumer that keeps up");
        let mut out = Vec::new();
        assert_eq!(h.drain(&mut out, 256), 1);
        assert_eq!(h.queued_bytes(), 0);
        let h = handle(1000, 10 << 20);
        for _ in 0..20 {
            h.offer(deliver(100_000)).unwrap();
        }
        out.clear();
        let n = h.drain(&mut out, 256);
        assert!((1..20).contains(&n), "a drain stops after a few hundred KiB, took {n}");
        assert_eq!(h.queued_bytes(), (20 - n) * 100_003);
        while h.drain(&mut out, 256) > 0 {}
        assert_eq!((h.queued(), h.queued_bytes()), (0, 0));
    }

    #[test]
    fn protocols_keep_their_names_and_say_what_their_sessions_take() {
        assert_eq!(
            [Protocol::Stomp, Protocol::Xmpp, Protocol::Local].map(Protocol::as_str),
            ["stomp", "xmpp", "local"]
        );
        assert_eq!(serde_json::to_string(&Protocol::Xmpp).unwrap(), "\"xmpp\"");
        let xmpp = Protocol::Xmpp.capabilities();
        assert!(xmpp.contains(Capabilities::PRESENCE_NOTICES) && xmpp.contains(Capabilities::ROSTER_PUSHES));
        assert!(xmpp.contains(Capabilities::OWN_PRESENCE));
        assert_eq!(Protocol::Stomp.capabilities(), Capabilities::NONE);
        let h = handle(8, 1000);
        assert_eq!(h.presence_resource(), format!("stomp-{}", h.id));
        h.resource.set("phone".into()).unwrap();
        assert_eq!(h.presence_resource(), "phone");
    }

    // The handle's size budget is in core/tests/session_budget.rs, with the
    // other per-session sizes.
}
