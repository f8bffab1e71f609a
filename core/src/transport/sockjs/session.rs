//! A SockJS session: the state shared by the app's two link halves
//! ([`SockJsRx`] / [`SockJsTx`]) and the receiving connection attached to
//! it (at most one at a time), with its entry in the shared HTTP session
//! table (the sweeper closes it `3002` once no receiver has come for the
//! disconnect delay).
//!
//! May import: the transport traits ([`super::super::LinkRx`],
//! [`super::super::LinkTx`]), the framing, the shared HTTP session table,
//! tokio's sync primitives. No HTTP types.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::framing::{CloseReason, Frame, ANOTHER_CONNECTION, GO_AWAY, INTERRUPTED, OVERFLOW, TIMED_OUT};
use super::SockJsConfig;
use crate::transport::http_session::{Sweep, Swept};
use crate::transport::{LinkRx, LinkTx, Peer};

/// Client → app batches (one `xhr_send` body or one websocket message) that may
/// wait for the app before senders are held back.
const INBOUND_QUEUE: usize = 8;

/// Reading half of a SockJS session: one client message per `recv`.
pub struct SockJsRx {
    inbound: mpsc::Receiver<Vec<String>>,
    pending: VecDeque<String>,
    closed: CancellationToken,
}

impl LinkRx for SockJsRx {
    /// Appends the next client message (its UTF-8 bytes) to `buf`. Returns `0`
    /// once the session is closed (client gone, timed out, or closed by the
    /// app) and every message received before has been handed out.
    async fn recv(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            // Empty messages carry nothing (and `0` means closed): skip them.
            while let Some(msg) = self.pending.pop_front() {
                if !msg.is_empty() {
                    buf.extend_from_slice(msg.as_bytes());
                    return Ok(msg.len());
                }
            }
            let batch = tokio::select! {
                biased;
                batch = self.inbound.recv() => batch,
                () = self.closed.cancelled() => self.inbound.try_recv().ok(),
            };
            match batch {
                Some(batch) => self.pending.extend(batch),
                None => return Ok(0),
            }
        }
    }
}

/// Writing half of a SockJS session: each unit is one SockJS message; a flush
/// hands the batch to the client as one `a[...]` frame (or, if the client is
/// between polls, queues it for the next poll).
pub struct SockJsTx {
    session: Arc<Session>,
    batch: Vec<String>,
}

impl SockJsTx {
    fn push_batch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.session.enqueue(&mut self.batch)
    }
}

impl LinkTx for SockJsTx {
    async fn feed(&mut self, unit: Bytes) -> io::Result<()> {
        if self.session.closed.is_cancelled() {
            self.batch.clear();
            return Err(closed_error());
        }
        let text = match String::from_utf8(Vec::from(unit)) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        self.batch.push(text);
        if self.batch.len() >= self.session.max_pending {
            self.push_batch()?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.push_batch()
    }

    async fn close(&mut self) {
        let _ = self.push_batch();
        self.session.close(GO_AWAY);
    }
}

impl Drop for SockJsTx {
    fn drop(&mut self) {
        // An app that lets go of the writing half is done with the session.
        self.session.close(GO_AWAY);
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "sockjs session closed")
}

pub(super) struct Session {
    pub(super) state: Mutex<SessionState>,
    /// Wakes the attached receiver: messages queued or session closed.
    wake: Notify,
    /// Cancelled when the session closes; ends [`SockJsRx::recv`].
    closed: CancellationToken,
    inbound: mpsc::Sender<Vec<String>>,
    max_pending: usize,
    /// The client address that opened the session: requests from another
    /// address are answered as for an unknown session (no hijacking by id).
    owner: Option<IpAddr>,
}

pub(super) struct SessionState {
    outbox: VecDeque<String>,
    /// The `o` frame has been handed to a receiver.
    pub(super) opened: bool,
    close: Option<CloseReason>,
    /// Id of the receiving connection attached, if any.
    receiver: Option<u64>,
    next_receiver: u64,
    /// Since when no receiver is attached.
    idle_since: Instant,
}

impl Session {
    pub(super) fn new(config: &SockJsConfig, owner: Option<IpAddr>) -> (Arc<Session>, SockJsRx, SockJsTx) {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let closed = CancellationToken::new();
        let session = Arc::new(Session {
            state: Mutex::new(SessionState {
                outbox: VecDeque::new(),
                opened: false,
                close: None,
                receiver: None,
                next_receiver: 0,
                idle_since: Instant::now(),
            }),
            wake: Notify::new(),
            closed: closed.clone(),
            inbound: tx,
            max_pending: config.max_pending_messages.max(1),
            owner,
        });
        let rx = SockJsRx { inbound: rx, pending: VecDeque::new(), closed };
        let tx = SockJsTx { session: session.clone(), batch: Vec::new() };
        (session, rx, tx)
    }

    pub(super) fn owned_by(&self, peer: &Peer) -> bool {
        self.owner == peer.addr.map(|a| a.ip())
    }

    /// Closes the session (first reason wins). `GO_AWAY` keeps queued messages
    /// so a receiver gets them before the close frame; other reasons drop them.
    pub(super) fn close(&self, reason: CloseReason) {
        {
            let mut st = self.state.lock();
            if st.close.is_some() {
                return;
            }
            st.close = Some(reason);
            if reason != GO_AWAY {
                st.outbox = VecDeque::new();
            }
        }
        tracing::debug!(code = reason.code, reason = reason.reason, "sockjs session closed");
        self.wake.notify_one();
        self.closed.cancel();
    }

    /// Moves an app batch to the outbox.
    fn enqueue(&self, batch: &mut Vec<String>) -> io::Result<()> {
        let mut st = self.state.lock();
        if st.close.is_some() {
            batch.clear();
            return Err(closed_error());
        }
        if st.outbox.len() + batch.len() > self.max_pending {
            drop(st);
            batch.clear();
            self.close(OVERFLOW);
            return Err(io::Error::other("sockjs client too slow: too many pending messages"));
        }
        st.outbox.extend(batch.drain(..));
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Hands client messages to the app, waiting while its queue is full.
    pub(super) async fn deliver(&self, msgs: Vec<String>) {
        if msgs.is_empty() || self.closed.is_cancelled() {
            return;
        }
        tokio::select! {
            // An error means the app dropped its reading half: discard.
            _ = self.inbound.send(msgs) => {}
            () = self.closed.cancelled() => {}
        }
    }

    /// Attaches a receiving connection, or says which close frame to answer
    /// with when another one is attached.
    pub(super) fn attach(self: &Arc<Self>, heartbeat: Duration) -> Result<Receiver, CloseReason> {
        let mut st = self.state.lock();
        if st.receiver.is_some() {
            return Err(st.close.unwrap_or(ANOTHER_CONNECTION));
        }
        st.next_receiver += 1;
        let id = st.next_receiver;
        st.receiver = Some(id);
        Ok(Receiver { session: self.clone(), id, heartbeat, last_write: Instant::now(), released: false })
    }
}

/// A receiving connection attached to a session. Detaches on drop; a drop
/// before [`Receiver::release`] means the client went away mid-response, which
/// closes the session (`1002 Connection interrupted`), as SockJS servers do.
pub(super) struct Receiver {
    session: Arc<Session>,
    id: u64,
    heartbeat: Duration,
    last_write: Instant,
    released: bool,
}

impl Receiver {
    /// Waits for the next frame to send. Cancel-safe: state is only taken
    /// from the session right before returning.
    pub(super) async fn next_frame(&mut self) -> Frame {
        loop {
            {
                let mut st = self.session.state.lock();
                if !st.opened {
                    st.opened = true;
                    return Frame::Open;
                }
                if !st.outbox.is_empty() {
                    return Frame::Messages(std::mem::take(&mut st.outbox));
                }
                if let Some(c) = st.close {
                    return Frame::Close(c);
                }
            }
            let due = tokio::time::Instant::from_std(self.last_write + self.heartbeat);
            tokio::select! {
                () = self.session.wake.notified() => {}
                () = tokio::time::sleep_until(due) => return Frame::Heartbeat,
            }
        }
    }

    pub(super) fn wrote(&mut self) {
        self.last_write = Instant::now();
    }

    /// Detaches normally (response complete).
    pub(super) fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.detach();
        }
    }

    fn detach(&self) {
        let mut st = self.session.state.lock();
        if st.receiver == Some(self.id) {
            st.receiver = None;
            st.idle_since = Instant::now();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if !self.released {
            self.detach();
            self.session.close(INTERRUPTED);
        }
    }
}

impl Swept for Session {
    /// Closed (`3002`) once no receiver has been attached for `idle`, the
    /// disconnect delay.
    fn sweep(&self, _now: tokio::time::Instant, idle: Duration) -> Sweep {
        // SockJS keeps wall-clock (std) instants, as it always has: tokio's
        // `now` differs from them under a paused test clock.
        let now = Instant::now();
        let st = self.state.lock();
        if st.receiver.is_some() || now.saturating_duration_since(st.idle_since) < idle {
            Sweep::Keep
        } else {
            Sweep::Expire
        }
    }

    fn expire(&self) {
        self.close(TIMED_OUT);
    }
}
