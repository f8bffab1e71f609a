//! One BOSH session as the rest of the server sees it: the rid-window
//! [`Machine`] behind a lock, shared by the two link halves the XMPP
//! session holds ([`BoshRx`] / [`BoshTx`], the transport-independent
//! [`XmppRx`] / [`XmppTx`]) and the HTTP requests that carry it. Each call
//! takes the lock, feeds the machine one input, releases the lock, then
//! applies the [`Effects`]: answers go to the waiting requests' channels,
//! the reader is woken, an ended session leaves the session table.
//!
//! May import: the machine and the `<body>` codec, the XMPP link traits,
//! the shared HTTP session table ([`crate::transport::http_session`]),
//! tokio's sync primitives. No HTTP types, no sockets.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::body::Request;
use super::machine::{Effects, Machine, Params, Refused, Waiter};
use crate::shaper::Shaper;
use crate::transport::http_session::{SessionTable, Sweep, Swept};
use crate::xmpp::link::{StreamError, XmppIn, XmppRx, XmppTx};

/// Where a request's response goes: its HTTP handler.
pub(super) type Responder = oneshot::Sender<Bytes>;

impl Waiter for Responder {
    fn is_gone(&self) -> bool {
        self.is_closed()
    }
}

pub(super) type Table = SessionTable<Session>;

pub(super) struct Session {
    pub p: Params,
    state: Mutex<Machine<Responder>>,
    /// Wakes [`BoshRx::recv`]: inbox filled or session ended.
    rx_wake: Notify,
    table: Weak<Table>,
}

impl Session {
    /// A session whose creation request has `rid`, with its two halves.
    pub fn new(p: Params, rid: u64, table: Weak<Table>, shaper: Option<Box<Shaper>>) -> (Arc<Session>, BoshRx, BoshTx) {
        let session = Arc::new(Session {
            state: Mutex::new(Machine::new(&p, rid, Instant::now(), shaper)),
            p,
            rx_wake: Notify::new(),
            table,
        });
        let rx = BoshRx { session: session.clone() };
        let tx = BoshTx { session: session.clone(), batch: Vec::new() };
        (session, rx, tx)
    }

    /// Feeds the machine one input under the lock, then applies its effects.
    fn step<T>(&self, input: impl FnOnce(&mut Machine<Responder>, &Params, &mut Effects<Responder>) -> T) -> T {
        let mut fx = Effects::default();
        let out = input(&mut self.state.lock(), &self.p, &mut fx);
        self.apply(fx);
        out
    }

    /// Sends the responses, wakes the reader, and forgets an ended session.
    fn apply(&self, fx: Effects<Responder>) {
        for (tx, body) in fx.replies {
            // An error means the client is gone; the response is cached anyway.
            let _ = tx.send(body);
        }
        if fx.wake {
            self.rx_wake.notify_one();
        }
        if let Some(reason) = fx.ended {
            tracing::debug!(sid = %self.p.sid, reason, "BOSH session ended");
        }
        let done = self.state.lock().finished();
        if done {
            if let Some(table) = self.table.upgrade() {
                table.remove_if(&self.p.sid, self);
            }
        }
    }

    /// See [`Machine::admit`].
    pub fn admit(&self, n: usize) -> Option<Instant> {
        self.state.lock().admit(n)
    }

    pub fn submit(&self, rid: u64, req: Request, tx: Responder) {
        self.step(|m, p, fx| m.submit(p, rid, req, tx, Instant::now(), fx));
    }

    /// Releases the request `rid` if its `wait` is over; returns when to look again.
    pub fn check_deadline(&self, rid: u64) -> Instant {
        self.step(|m, p, fx| m.check_deadline(p, rid, Instant::now(), fx))
    }

    /// The handler of request `rid` went away before its response (client
    /// disconnected).
    pub fn abandoned(&self, rid: u64) {
        self.step(|m, p, fx| m.abandoned(p, rid, Instant::now(), fx));
    }
}

impl Swept for Session {
    fn sweep(&self, now: Instant, _idle: Duration) -> Sweep {
        self.state.lock().sweep(&self.p, now)
    }

    /// Inactivity: ends the session without telling anybody.
    fn expire(&self) {
        self.step(|m, _, fx| m.expire(fx));
    }
}

// ---------------------------------------------------------------------------
// Link halves
// ---------------------------------------------------------------------------

/// Reading half of a BOSH session.
pub struct BoshRx {
    session: Arc<Session>,
}

impl XmppRx for BoshRx {
    /// The next event, in `rid` order. `Ok(None)` once the session has ended
    /// (terminated, timed out, closed by the app or by a binding error) and
    /// everything received before has been handed out. Never `Err`: a
    /// malformed request is refused with HTTP 400 and leaves the stream alone.
    async fn recv(&mut self) -> Result<Option<XmppIn>, StreamError> {
        loop {
            if let Some(got) = self.session.step(|m, p, fx| m.next_in(p, Instant::now(), fx)) {
                return Ok(got);
            }
            self.session.rx_wake.notified().await;
        }
    }

    /// Nothing to reset: the restart arrives as a request with
    /// `xmpp:restart='true'`, which [`BoshRx::recv`] returns as
    /// [`XmppIn::Open`] (as it would without this call).
    fn restart(&mut self) {}
}

impl Drop for BoshRx {
    fn drop(&mut self) {
        // Nobody reads any more: drop what is queued and stop holding requests back.
        self.session.step(|m, p, fx| m.reader_gone(p, Instant::now(), fx));
    }
}

/// Writing half of a BOSH session: stanzas sent are batched until
/// [`XmppTx::flush`], which hands them to the oldest waiting request (or
/// queues them for the next one).
pub struct BoshTx {
    session: Arc<Session>,
    batch: Vec<Bytes>,
}

impl BoshTx {
    fn push_batch(&mut self, flushing: bool) -> io::Result<()> {
        let batch = &mut self.batch;
        let result = self.session.step(|m, p, fx| m.queue(p, batch, flushing, Instant::now(), fx));
        result.map_err(|refused| match refused {
            Refused::Ended => closed_error(),
            Refused::TooMany => io::Error::other("BOSH client too slow: too many pending stanzas"),
        })
    }

    fn end(&mut self, error: Option<StreamError>) {
        let batch = &mut self.batch;
        self.session.step(|m, _, fx| m.close(batch, error, fx));
    }
}

impl XmppTx for BoshTx {
    /// Records the stream id (`authid`) and domain (`from`) for the response
    /// to the creation or restart request, which now waits for the next flush.
    async fn open(&mut self, id: &str, from: &str) -> io::Result<()> {
        if self.session.state.lock().open(id, from) {
            Ok(())
        } else {
            Err(closed_error())
        }
    }

    async fn send(&mut self, element: Bytes) -> io::Result<()> {
        if self.session.state.lock().ended() {
            self.batch.clear();
            return Err(closed_error());
        }
        self.batch.push(element);
        if self.batch.len() >= self.session.p.max_pending {
            self.push_batch(false)?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.push_batch(true)
    }

    /// Ends the session: the oldest waiting request (or the next to come)
    /// gets the stanzas still queued and `<body type='terminate'/>`, with
    /// `condition='remote-stream-error'` and the `<stream:error/>` when there
    /// is an error.
    async fn close(&mut self, error: Option<StreamError>) {
        self.end(error);
    }
}

impl Drop for BoshTx {
    fn drop(&mut self) {
        // An app that lets go of the writing half is done with the session.
        self.end(None);
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "BOSH session ended")
}
