//! What the engine holds for a session: an id, who it is, and a bounded
//! outbox that the session's own task drains.
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

pub type SessionId = u64;

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
    /// A contact's (or the user's other) resource changed presence (XMPP).
    Presence(Arc<crate::presence::service::PresenceNotice>),
    /// Project membership changed: the roster must be re-read and pushed (XMPP).
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
    /// `stomp` (later `xmpp`, `bosh`).
    pub protocol: &'static str,
    /// `tcp`, `tls`, `ws`, `sockjs`.
    pub transport: &'static str,
    pub peer: Option<std::net::SocketAddr>,
    pub connected_at: SystemTime,
    /// XMPP resource, once bound.
    pub resource: OnceLock<String>,
    outbox: Mutex<VecDeque<Outbound>>,
    capacity: usize,
    wake: Notify,
    /// Wakes [`SessionHandle::closed`] waiters. Set `reason` is the flag:
    /// a `CancellationToken` here was a 112 B tree node in every session.
    closed_wake: Notify,
    reason: OnceLock<CloseReason>,
}

/// The outbox was full: the session is now closing as a slow consumer, and
/// the item is handed back so the caller can requeue it.
#[derive(Debug)]
pub struct Rejected(pub Outbound);

impl SessionHandle {
    pub fn new(
        uid: &str,
        vhost: &str,
        protocol: &'static str,
        peer: &crate::transport::Peer,
        capacity: usize,
    ) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            id: next_session_id(),
            uid: uid.into(),
            vhost: vhost.into(),
            protocol,
            transport: peer.transport,
            peer: peer.addr,
            connected_at: SystemTime::now(),
            resource: OnceLock::new(),
            outbox: Mutex::new(VecDeque::new()),
            capacity,
            wake: Notify::new(),
            closed_wake: Notify::new(),
            reason: OnceLock::new(),
        })
    }

    /// Queues `item` without waiting. Fan-out never blocks on one session:
    /// when the outbox is full the session is closed as a slow consumer.
    pub fn offer(&self, item: Outbound) -> Result<(), Rejected> {
        if self.is_closing() {
            return Err(Rejected(item));
        }
        {
            // Short critical section: push only; the session task pops.
            let mut q = self.outbox.lock();
            if q.len() >= self.capacity {
                drop(q);
                self.close(CloseReason::new(CloseCode::SlowConsumer, "slow consumer").with_detail(format!(
                    "more than {} frames queued for this session; it was closed so others are not held up",
                    self.capacity
                )));
                return Err(Rejected(item));
            }
            q.push_back(item);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Moves up to `max` queued items into `into`; returns how many.
    pub fn drain(&self, into: &mut Vec<Outbound>, max: usize) -> usize {
        let mut q = self.outbox.lock();
        let n = q.len().min(max);
        into.extend(q.drain(..n));
        // An emptied outbox gives its memory back: most sessions are idle
        // most of the time, and a kept ring is 4+ slots in each of them.
        if q.is_empty() && q.capacity() > 0 {
            *q = VecDeque::new();
        }
        n
    }

    pub fn queued(&self) -> usize {
        self.outbox.lock().len()
    }

    /// Resolves when something was offered since the last drain, or the
    /// session was asked to close: one waiter for both in every idle
    /// session's loop (each waiter is ~80 B of its resident state), so a
    /// loop checks [`SessionHandle::is_closing`] first when woken.
    pub async fn notified(&self) {
        self.wake.notified().await
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
}
