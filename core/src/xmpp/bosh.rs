//! BOSH connection manager (XEP-0124 with XEP-0206): XMPP for browsers over
//! plain HTTP requests, as strophe.js and other HTTP-binding clients speak it.
//!
//! [`router`] returns an axum [`Router`] that the caller nests at the service
//! path (`/http-bind`, `/bosh`). Every new BOSH session is handed to the
//! [`OnSession`] callback as a [`BoshRx`] / [`BoshTx`] pair that implements
//! the transport-independent [`XmppRx`] / [`XmppTx`] link.
//!
//! How a session works:
//!
//! - Each request is a `<body/>` with a `rid`. Requests are processed
//!   strictly in `rid` order (out-of-order arrivals wait for the missing
//!   ones) and answered in `rid` order. The children of a body become
//!   [`XmppIn::Stanza`]s; session creation and `xmpp:restart` become
//!   [`XmppIn::Open`]; `type='terminate'` becomes [`XmppIn::Close`] after its
//!   children.
//! - With nothing to send, up to `hold` requests are kept waiting until the
//!   session flushes stanzas or `wait` runs out (then an empty `<body/>`); a
//!   newer request releases the oldest one. Stanzas flushed while no request
//!   waits are queued for the next one.
//! - The response to a creation or restart request waits (at most
//!   [`OPEN_WAIT`]) for the session's first flush after [`XmppTx::open`], so
//!   it carries the `<stream:features/>` as XEP-0206 asks.
//! - The last `window` responses are kept: a request with a `rid` already
//!   answered (a retransmission after a broken connection) gets the same
//!   response again. Nothing is tied to an HTTP connection, so a page that
//!   kept `sid` and `rid` can carry on ("re-attach").
//! - A session ends when the client terminates it, when the app closes it
//!   ([`XmppTx::close`]), on a binding error (`rid` outside the window,
//!   too many requests, too frequent polling, outbound queue overflow) or
//!   after `inactivity` without any request waiting or arriving. Then it is
//!   forgotten: its `sid` gets `item-not-found`.
//!
//! Memory is bounded per session: request bodies are at most
//! [`BoshConfig::max_body_bytes`]; client stanzas wait for the app in an inbox
//! of about one body (further requests then wait, unprocessed: HTTP
//! backpressure, and `requests` bounds how many may wait); stanzas for the
//! client wait in an outbox of at most [`BoshConfig::max_pending_stanzas`]
//! (overflow ends the session); at most `window` responses are kept.
//!
//! Not implemented (all optional in XEP-0124): session pause (`pause` is
//! ignored and `maxpause` not announced), acknowledgements (`ack` is ignored
//! and never sent, no `report`), key sequencing (`key`/`newkey` ignored),
//! multiple streams (`stream` not announced, so extra `to` attributes on later
//! requests are ignored as the XEP asks), request compression (`accept`) and
//! character sets other than UTF-8, `route`. Errors use HTTP 200 with a
//! terminal `<body type='terminate' condition='…'/>`, except malformed
//! requests (400 with a text reason, session untouched) and oversized bodies
//! (413).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::link::{StreamError, XmppIn, XmppRx, XmppTx};
use super::xml::{parse_element, Element, Limits, Node};
use crate::config::ShaperConfig;
use crate::shaper::{self, Shaper};
use crate::transport::http1::{Direct, DirectHandler};
use crate::transport::Peer;

/// Namespace of the BOSH `<body/>` wrapper.
pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// Namespace of the XEP-0206 attributes (`xmpp:version`, `xmpp:restart`).
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";
const NS_STREAM: &str = "http://etherx.jabber.org/streams";
const NS_CLIENT: &str = "jabber:client";

/// The highest BOSH version spoken.
const VERSION: (u64, u64) = (1, 6);
/// How long the response to a creation or restart request waits for the
/// session's stream header and features (bounded by the session's `wait`).
pub const OPEN_WAIT: Duration = Duration::from_secs(10);
const XML: &str = "text/xml; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
/// Responses are data for scripts, never documents to render.
const CSP: &str = "default-src 'none'; frame-ancestors 'none'";
const ALLOW_METHODS: &str = "POST, GET, OPTIONS";
const PREFLIGHT_MAX_AGE: &str = "86400";

/// Tuning of the BOSH endpoint.
#[derive(Debug, Clone)]
pub struct BoshConfig {
    /// Cap on the client's `wait`: the longest a request is held (default 60 s).
    pub max_wait: Duration,
    /// The `inactivity` announced: a session with no request waiting or
    /// arriving for this long is dropped (default 60 s).
    pub max_inactivity: Duration,
    /// Cap on the client's `hold` (default 1).
    pub max_hold: u32,
    /// The `requests` announced, at least `hold + 1` (default 2). More
    /// unanswered requests at once is a `policy-violation`.
    pub max_requests: u32,
    /// The `polling` announced (default 2 s): an empty request that comes
    /// sooner than this after an empty request that got an empty response,
    /// with nothing held, is a `policy-violation`. Zero disables the check
    /// (and the attribute).
    pub polling: Duration,
    /// How far ahead of the last processed `rid` a request may be, and how
    /// many responses are kept for retransmissions (at least `requests`;
    /// default 2).
    pub window: u64,
    /// Largest request body (default 256 KiB); larger gets `413`.
    pub max_body_bytes: usize,
    /// Stanzas that may wait for the client's next request; more ends the
    /// session with `policy-violation` (default 4096).
    pub max_pending_stanzas: usize,
    /// Limits of the stanzas in a body (depth counts from the stanza; a
    /// stanza may be as large as the body).
    pub xml_limits: Limits,
    /// Origins allowed to use the endpoint from a browser; `None` allows any
    /// (the request's origin is echoed). Others get `403`. Requests without
    /// an `Origin` header (non-browser clients) are always allowed.
    pub allowed_origins: Option<Vec<String>>,
    /// Answer `Access-Control-Allow-Credentials: true` to allowed origins
    /// (`connections.cors_credentials`; off by default).
    pub cors_credentials: bool,
    /// Inbound rate limits; BOSH applies the byte rate to request bodies
    /// (stanzas are shaped by the XMPP session). Off by default.
    pub shaper: ShaperConfig,
}

impl Default for BoshConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(60),
            max_inactivity: Duration::from_secs(60),
            max_hold: 1,
            max_requests: 2,
            polling: Duration::from_secs(2),
            window: 2,
            max_body_bytes: 256 * 1024,
            max_pending_stanzas: 4096,
            xml_limits: Limits::default(),
            allowed_origins: None,
            cors_credentials: false,
            shaper: ShaperConfig::default(),
        }
    }
}

/// Called once per new BOSH session with its two halves. Runs on the
/// request's task: spawn, don't block. To refuse a session, close the
/// [`BoshTx`] (the creation request then gets the stream error).
pub type OnSession = Arc<dyn Fn(BoshRx, BoshTx, Peer) + Send + Sync>;

/// The BOSH endpoint at each of `paths`, with and without the trailing slash
/// many strophe.js configurations use; every path shares the sessions.
/// `POST`s are the front server's direct route (transport/http1.rs); the
/// router serves the `OPTIONS` preflight, a `GET` info page, and `POST`s on
/// connections hyper serves. The peer address is taken from
/// `ConnectInfo<SocketAddr>`.
pub fn mount(config: BoshConfig, on_session: OnSession, paths: &[&str]) -> (Router, Direct) {
    let (bosh, handler) = endpoint(config, on_session);
    // `nest_service`, unlike `nest`, also serves `/http-bind/`.
    let router = paths.iter().fold(Router::new(), |r, p| r.nest_service(p, bosh.clone()));
    let paths = paths.iter().flat_map(|p| [p.to_string(), format!("{p}/")]).collect();
    (router, Direct { method: axum::http::Method::POST, paths, handler })
}

/// The endpoint at the root of a router, and the direct `POST` handler.
fn endpoint(config: BoshConfig, on_session: OnSession) -> (Router, DirectHandler) {
    let mut body_limits = config.xml_limits;
    body_limits.max_depth = body_limits.max_depth.saturating_add(1);
    body_limits.max_stanza_bytes = body_limits.max_stanza_bytes.max(config.max_body_bytes);
    let shared = Arc::new(Shared {
        config,
        body_limits,
        on_session,
        sessions: Arc::new(Mutex::new(HashMap::new())),
        sweeper_started: AtomicBool::new(false),
    });
    let direct_shared = shared.clone();
    let direct: DirectHandler = Arc::new(move |headers, data, addr| {
        post_whole(direct_shared.clone(), Peer { addr: Some(addr), transport: "bosh" }, headers, data)
    });
    (Router::new().route("/", post(handle_post).get(info).options(preflight)).with_state(shared), direct)
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
            let mut fx = Effects::default();
            let got = {
                let mut st = self.session.state.lock();
                match st.inbox.pop_front() {
                    Some((item, cost)) => {
                        st.inbox_bytes -= cost;
                        if st.inbox.is_empty() {
                            // An idle session keeps no emptied ring (4 slots after one request).
                            st.inbox = VecDeque::new();
                        }
                        if cost > 0 {
                            // Room for requests held back by a full inbox.
                            st.pump(&self.session.p, Instant::now(), false, &mut fx);
                        }
                        Some(Some(item))
                    }
                    None if st.end.is_some() => Some(None),
                    None => None,
                }
            };
            self.session.apply(fx);
            if let Some(got) = got {
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
        let mut fx = Effects::default();
        {
            let mut st = self.session.state.lock();
            st.rx_gone = true;
            st.inbox.clear();
            st.inbox_bytes = 0;
            st.pump(&self.session.p, Instant::now(), false, &mut fx);
        }
        self.session.apply(fx);
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
        let mut fx = Effects::default();
        let result = {
            let mut st = self.session.state.lock();
            if st.end.is_some() {
                self.batch.clear();
                Err(closed_error())
            } else if st.outbox.len() + self.batch.len() > self.session.p.max_pending {
                self.batch.clear();
                st.outbox.clear();
                st.end_session(
                    Some("policy-violation"),
                    Vec::new(),
                    "too many stanzas waiting for the client",
                    None,
                    &mut fx,
                );
                Err(io::Error::other("BOSH client too slow: too many pending stanzas"))
            } else {
                st.outbox.append(&mut self.batch);
                st.pump(&self.session.p, Instant::now(), flushing, &mut fx);
                Ok(())
            }
        };
        self.session.apply(fx);
        result
    }

    fn end(&mut self, error: Option<StreamError>) {
        let mut fx = Effects::default();
        {
            let mut st = self.session.state.lock();
            if st.end.is_none() {
                let mut payload = std::mem::take(&mut st.outbox);
                payload.append(&mut self.batch);
                let condition = match &error {
                    Some(e) => {
                        payload.push(e.to_element().to_bytes());
                        Some("remote-stream-error")
                    }
                    None => None,
                };
                st.end_session(condition, payload, "closed by the server", None, &mut fx);
            }
            self.batch.clear();
        }
        self.session.apply(fx);
    }
}

impl XmppTx for BoshTx {
    /// Records the stream id (`authid`) and domain (`from`) for the response
    /// to the creation or restart request, which now waits for the next flush.
    async fn open(&mut self, id: &str, from: &str) -> io::Result<()> {
        let mut st = self.session.state.lock();
        if st.end.is_some() {
            return Err(closed_error());
        }
        st.stream.authid = Some(id.to_owned());
        st.stream.from = Some(from.to_owned());
        st.stream.opened = true;
        Ok(())
    }

    async fn send(&mut self, element: Bytes) -> io::Result<()> {
        if self.session.state.lock().end.is_some() {
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

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

type Table = Mutex<HashMap<String, Arc<Session>>>;
/// Where a request's response goes: its HTTP handler.
type Responder = oneshot::Sender<Bytes>;

/// What is fixed at session creation.
struct Params {
    sid: String,
    wait: Duration,
    hold: usize,
    requests: usize,
    window: u64,
    polling: Duration,
    inactivity: Duration,
    max_pending: usize,
    /// Client stanzas (in request-body bytes) that may wait for the app.
    inbox_budget: usize,
    ver: String,
    content_type: HeaderValue,
    /// The creation request's `to`, `xml:lang` and `xmpp:version`: defaults
    /// for restarts that leave them out.
    to: Option<String>,
    lang: Option<String>,
    version: Option<String>,
}

struct Session {
    p: Params,
    state: Mutex<SessionState>,
    /// Wakes [`BoshRx::recv`]: inbox filled or session ended.
    rx_wake: Notify,
    table: Weak<Table>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Restart,
    Terminate,
    Normal,
}

/// A parsed request body.
struct Request {
    kind: Kind,
    items: Vec<XmppIn>,
    /// Body size, charged to the inbox while its items wait for the app.
    cost: usize,
    /// A plain poll: no payload, no restart or terminate.
    empty: bool,
}

struct Pending {
    req: Request,
    tx: Responder,
    arrived: Instant,
}

/// A processed request waiting for its response.
struct Held {
    rid: u64,
    tx: Responder,
    arrived: Instant,
    deadline: Instant,
    /// Creation or restart: answered on the first flush after `open`.
    opening: bool,
    empty: bool,
}

/// A response kept for retransmissions (and the polling check).
struct Answered {
    rid: u64,
    body: Bytes,
    payload: bool,
    /// Released because `wait` ran out.
    expired: bool,
    /// Its client had gone (a page reload aborts the held request): the
    /// client never saw this answer, so it is no evidence of polling.
    abandoned: bool,
    arrived: Instant,
    empty: bool,
}

#[derive(Default)]
struct StreamInfo {
    authid: Option<String>,
    from: Option<String>,
    /// `open` was called since the last creation/restart request was processed.
    opened: bool,
    /// `authid`/`from` were not in the creation response: send them with the
    /// next response after `open`.
    announce: bool,
}

struct Ending {
    condition: Option<&'static str>,
    /// Stanzas (and the stream error) for the terminal response.
    payload: Vec<Bytes>,
    /// The terminal response has gone out (or nobody will ever get it).
    delivered: bool,
}

struct SessionState {
    /// The next `rid` to process.
    next_rid: u64,
    /// Received, not yet processed (waiting for an earlier `rid` or for room
    /// in the inbox).
    pending: BTreeMap<u64, Pending>,
    /// Processed, waiting for their responses, in `rid` order.
    held: VecDeque<Held>,
    answered: VecDeque<Answered>,
    /// Client events for [`BoshRx`], each with the bytes it is charged.
    inbox: VecDeque<(XmppIn, usize)>,
    inbox_bytes: usize,
    rx_gone: bool,
    /// Flushed stanzas waiting for a request.
    outbox: Vec<Bytes>,
    stream: StreamInfo,
    /// The creation request, until answered (its response has the session attributes).
    creation: Option<u64>,
    end: Option<Ending>,
    /// Since when no request has arrived or been answered.
    idle_since: Instant,
    /// Request-body bytes per second (`[shaper]`); `None` when off.
    shaper: Option<Box<Shaper>>,
}

/// What to do once the state lock is released.
#[derive(Default)]
struct Effects {
    replies: Vec<(Responder, Bytes)>,
    wake: bool,
    ended: Option<&'static str>,
}

impl Effects {
    fn reply(&mut self, tx: Responder, body: Bytes) {
        self.replies.push((tx, body));
    }
}

impl Session {
    fn new(p: Params, rid: u64, table: Weak<Table>, shaper: Option<Box<Shaper>>) -> (Arc<Session>, BoshRx, BoshTx) {
        let session = Arc::new(Session {
            state: Mutex::new(SessionState {
                next_rid: rid,
                pending: BTreeMap::new(),
                // Sized for what they keep: a first push would reserve four.
                held: VecDeque::with_capacity(p.requests),
                answered: VecDeque::with_capacity(p.window.clamp(1, 8) as usize),
                inbox: VecDeque::new(),
                inbox_bytes: 0,
                rx_gone: false,
                outbox: Vec::new(),
                stream: StreamInfo::default(),
                creation: Some(rid),
                end: None,
                idle_since: Instant::now(),
                shaper,
            }),
            p,
            rx_wake: Notify::new(),
            table,
        });
        let rx = BoshRx { session: session.clone() };
        let tx = BoshTx { session: session.clone(), batch: Vec::new() };
        (session, rx, tx)
    }

    /// Sends the responses, wakes the reader, and forgets an ended session.
    fn apply(&self, fx: Effects) {
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
        let done = self.state.lock().end.as_ref().is_some_and(|e| e.delivered);
        if done {
            self.unlist();
        }
    }

    fn unlist(&self) {
        if let Some(table) = self.table.upgrade() {
            let mut map = table.lock();
            if map.get(&self.p.sid).is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), self)) {
                map.remove(&self.p.sid);
            }
        }
    }

    /// Charges a request body of `n` bytes to the byte shaper, unless the
    /// session is still paused by earlier ones: then the request must wait
    /// until the returned instant before the session sees it (and ask again).
    fn admit(&self, n: usize) -> Option<Instant> {
        let mut st = self.state.lock();
        let s = st.shaper.as_deref_mut()?;
        if let Some(until) = s.paused() {
            return Some(until);
        }
        s.read(n);
        None
    }

    fn submit(&self, rid: u64, req: Request, tx: Responder) {
        let mut fx = Effects::default();
        self.state.lock().submit(&self.p, rid, req, tx, Instant::now(), &mut fx);
        self.apply(fx);
    }

    /// Releases the request `rid` if its `wait` is over; returns when to look again.
    fn check_deadline(&self, rid: u64) -> Instant {
        let now = Instant::now();
        let mut fx = Effects::default();
        let next = {
            let mut st = self.state.lock();
            if let Some(pos) = st.held.iter().position(|h| h.rid == rid) {
                if st.held[pos].deadline <= now {
                    // Responses go out in rid order: older held ones first.
                    for _ in 0..=pos {
                        st.answer_front(&self.p, now, true, &mut fx);
                    }
                    st.pump(&self.p, now, false, &mut fx);
                    now + Duration::from_secs(1)
                } else {
                    st.held[pos].deadline
                }
            } else {
                // Not processed yet (or already answered): look again later.
                now + self.p.wait.max(Duration::from_millis(100))
            }
        };
        self.apply(fx);
        next
    }

    /// The handler of request `rid` went away before its response (client
    /// disconnected): the session is idle from now on unless others wait.
    fn abandoned(&self, rid: u64) {
        let now = Instant::now();
        let mut fx = Effects::default();
        {
            let mut st = self.state.lock();
            if st.held.iter().any(|h| h.rid == rid) || st.pending.contains_key(&rid) {
                st.idle_since = now;
                st.pump(&self.p, now, false, &mut fx);
            }
        }
        self.apply(fx);
    }

    /// Inactivity: ends the session without telling anybody.
    fn expire(&self) {
        let mut fx = Effects::default();
        {
            let mut st = self.state.lock();
            if st.end.is_none() {
                st.end = Some(Ending { condition: None, payload: Vec::new(), delivered: true });
                fx.ended = Some("inactivity");
                fx.wake = true;
            }
            // Any handler still waiting answers item-not-found.
            st.held.clear();
            st.pending.clear();
            st.outbox.clear();
            st.answered.clear();
        }
        self.apply(fx);
    }
}

impl SessionState {
    fn submit(&mut self, p: &Params, rid: u64, req: Request, tx: Responder, now: Instant, fx: &mut Effects) {
        if self.end.is_some() {
            self.deliver_end(Some(tx), fx);
            return;
        }
        self.idle_since = now;
        if rid < self.next_rid {
            // A retransmission: same response again.
            if let Some(a) = self.answered.iter().find(|a| a.rid == rid) {
                fx.reply(tx, a.body.clone());
            } else if let Some(h) = self.held.iter_mut().find(|h| h.rid == rid) {
                // Still waiting: the new connection takes over; the old one
                // (normally already closed by the client) gets an empty body.
                let old = std::mem::replace(&mut h.tx, tx);
                fx.reply(old, empty_body());
            } else {
                self.fail("item-not-found", tx, "retransmitted rid no longer cached", fx);
            }
            return;
        }
        if let Some(pe) = self.pending.get_mut(&rid) {
            let old = std::mem::replace(&mut pe.tx, tx);
            fx.reply(old, empty_body());
            return;
        }
        if rid - self.next_rid >= p.window {
            self.fail("item-not-found", tx, "rid outside the window", fx);
            return;
        }
        // Overactivity (XEP-0124 §11): more unanswered requests than
        // `requests` (one more to terminate). Requests whose client is gone
        // don't count.
        let unanswered = self.held.iter().filter(|h| !h.tx.is_closed()).count() + self.pending.len() + 1;
        let allowed = p.requests + usize::from(req.kind == Kind::Terminate);
        if unanswered > allowed {
            self.fail("policy-violation", tx, "too many simultaneous requests", fx);
            return;
        }
        // Polling too fast (XEP-0124 §12): two empty requests within
        // `polling`, the first answered empty before its `wait` ran out, and
        // nothing held.
        if req.empty && !p.polling.is_zero() && self.held.is_empty() && self.pending.is_empty() {
            let prev = self.answered.iter().find(|a| a.rid.checked_add(1) == Some(rid));
            if prev.is_some_and(|a| {
                a.empty && !a.payload && !a.expired && !a.abandoned && now.duration_since(a.arrived) < p.polling
            }) {
                self.fail("policy-violation", tx, "polling too frequently", fx);
                return;
            }
        }
        self.pending.insert(rid, Pending { req, tx, arrived: now });
        self.pump(p, now, false, fx);
    }

    /// Processes the requests that are next in `rid` order, then answers what
    /// can be answered. `flushing`: the app flushed (answers a creation or
    /// restart request even without payload).
    fn pump(&mut self, p: &Params, now: Instant, flushing: bool, fx: &mut Effects) {
        if self.end.is_some() {
            return;
        }
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next_rid {
                break;
            }
            let req = &entry.get().req;
            let full = self.inbox_bytes > 0 && self.inbox_bytes + req.cost > p.inbox_budget;
            if !req.items.is_empty() && !self.rx_gone && full {
                break;
            }
            let Pending { req, tx, arrived } = entry.remove();
            let rid = self.next_rid;
            self.next_rid += 1;
            if !self.rx_gone && !req.items.is_empty() {
                self.inbox_bytes += req.cost;
                let mut cost = req.cost;
                for item in req.items {
                    self.inbox.push_back((item, std::mem::take(&mut cost)));
                }
                fx.wake = true;
            }
            let opening = match req.kind {
                Kind::Terminate => {
                    // Older requests first, then the terminate itself.
                    while !self.held.is_empty() {
                        self.answer_front(p, now, false, fx);
                    }
                    let body = terminal_body(None, &[]);
                    for (_, pe) in std::mem::take(&mut self.pending) {
                        fx.reply(pe.tx, body.clone());
                    }
                    fx.reply(tx, body);
                    self.end = Some(Ending { condition: None, payload: Vec::new(), delivered: true });
                    self.outbox.clear();
                    self.answered.clear();
                    fx.ended = Some("terminated by the client");
                    fx.wake = true;
                    return;
                }
                Kind::Create | Kind::Restart => {
                    self.stream.opened = false;
                    true
                }
                Kind::Normal => false,
            };
            let hold_for = if opening { p.wait.min(OPEN_WAIT) } else { p.wait };
            self.held.push_back(Held { rid, tx, arrived, deadline: now + hold_for, opening, empty: req.empty });
        }
        if self.pending.is_empty() {
            // An emptied BTreeMap keeps its root leaf (~0.8 KiB here): drop it,
            // most sessions have nothing pending most of the time.
            self.pending = BTreeMap::new();
        }
        while let Some(front) = self.held.front() {
            let ready = !front.opening || self.stream.opened;
            // A request waiting for the stream header is held even by a
            // polling client, for a while.
            let limit = if front.opening && !ready { p.hold.max(1) } else { p.hold };
            let release = front.tx.is_closed()
                || self.held.len() > limit
                || (ready && (!self.outbox.is_empty() || (flushing && front.opening)));
            if !release {
                break;
            }
            self.answer_front(p, now, false, fx);
        }
    }

    /// Answers the oldest held request with what is queued (if it may have it).
    fn answer_front(&mut self, p: &Params, now: Instant, expired: bool, fx: &mut Effects) {
        let Some(h) = self.held.pop_front() else { return };
        let ready = !h.opening || self.stream.opened;
        // Stanzas never go to a request whose client is gone.
        let payload = if ready && !h.tx.is_closed() { std::mem::take(&mut self.outbox) } else { Vec::new() };
        let mut attrs: Vec<(&str, String)> = Vec::new();
        let creation = self.creation == Some(h.rid);
        if creation {
            self.creation = None;
            attrs.push(("sid", p.sid.clone()));
            attrs.push(("wait", secs(p.wait)));
            attrs.push(("requests", p.requests.to_string()));
            attrs.push(("hold", p.hold.to_string()));
            attrs.push(("inactivity", secs(p.inactivity)));
            if !p.polling.is_zero() {
                attrs.push(("polling", secs(p.polling)));
            }
            attrs.push(("ver", p.ver.clone()));
            attrs.push(("xmpp:restartlogic", "true".to_owned()));
        }
        let announce = ready && self.stream.announce && self.stream.authid.is_some();
        if creation || announce {
            if ready {
                if let Some(from) = &self.stream.from {
                    attrs.push(("from", from.clone()));
                }
                if let Some(id) = &self.stream.authid {
                    attrs.push(("authid", id.clone()));
                }
            }
            self.stream.announce = !ready;
            attrs.push(("xmpp:version", "1.0".to_owned()));
            attrs.push(("xmlns:xmpp", NS_XBOSH.to_owned()));
        }
        if creation || announce || (h.opening && ready) {
            attrs.push(("xmlns:stream", NS_STREAM.to_owned()));
        }
        let body = body_xml(&attrs, &payload);
        // Room made before the push: the ring is sized for `window` (see
        // `Session::new`), and a push past it would grow it.
        while !self.answered.is_empty() && self.answered.len() as u64 >= p.window {
            self.answered.pop_front();
        }
        self.answered.push_back(Answered {
            rid: h.rid,
            body: body.clone(),
            payload: !payload.is_empty(),
            expired,
            abandoned: h.tx.is_closed(),
            arrived: h.arrived,
            empty: h.empty,
        });
        self.idle_since = now;
        fx.reply(h.tx, body);
    }

    /// A binding error: everyone waiting gets the terminal body, the session ends.
    fn fail(&mut self, condition: &'static str, tx: Responder, reason: &'static str, fx: &mut Effects) {
        self.outbox.clear();
        self.end_session(Some(condition), Vec::new(), reason, Some(tx), fx);
    }

    /// Ends the session; the terminal body goes to whoever waits (and
    /// `extra`), or else to the next request.
    fn end_session(
        &mut self,
        condition: Option<&'static str>,
        payload: Vec<Bytes>,
        reason: &'static str,
        extra: Option<Responder>,
        fx: &mut Effects,
    ) {
        if self.end.is_none() {
            self.end = Some(Ending { condition, payload, delivered: false });
            self.answered.clear();
            fx.ended = Some(reason);
            fx.wake = true;
        }
        self.deliver_end(extra, fx);
    }

    /// Hands the terminal body to the waiting requests (and `extra`): the
    /// oldest gets the payload, the others a bare one. Once it has gone out,
    /// later requests get `item-not-found`.
    fn deliver_end(&mut self, extra: Option<Responder>, fx: &mut Effects) {
        let Some(end) = &mut self.end else { return };
        let mut waiting: Vec<Responder> = self.held.drain(..).map(|h| h.tx).collect();
        waiting.extend(std::mem::take(&mut self.pending).into_values().map(|pe| pe.tx));
        waiting.extend(extra);
        if waiting.is_empty() {
            return;
        }
        let mut first = true;
        for tx in waiting {
            let body = if end.delivered {
                terminal_body(Some("item-not-found"), &[])
            } else if first {
                first = false;
                terminal_body(end.condition, &end.payload)
            } else {
                terminal_body(end.condition, &[])
            };
            fx.reply(tx, body);
        }
        end.delivered = true;
        end.payload = Vec::new();
    }
}

// ---------------------------------------------------------------------------
// Body building and parsing
// ---------------------------------------------------------------------------

fn secs(d: Duration) -> String {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).to_string()
}

fn push_escaped(out: &mut BytesMut, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '\'' => out.extend_from_slice(b"&apos;"),
            '"' => out.extend_from_slice(b"&quot;"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// `<body xmlns='…httpbind' attrs…>payload</body>`.
fn body_xml(attrs: &[(&str, String)], payload: &[Bytes]) -> Bytes {
    let size: usize = payload.iter().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(64 + 32 * attrs.len() + size);
    out.extend_from_slice(b"<body xmlns='");
    out.extend_from_slice(NS_HTTPBIND.as_bytes());
    out.extend_from_slice(b"'");
    for (name, value) in attrs {
        out.extend_from_slice(b" ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        push_escaped(&mut out, value);
        out.extend_from_slice(b"'");
    }
    if payload.is_empty() {
        out.extend_from_slice(b"/>");
    } else {
        out.extend_from_slice(b">");
        for p in payload {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(b"</body>");
    }
    out.freeze()
}

fn empty_body() -> Bytes {
    body_xml(&[], &[])
}

fn terminal_body(condition: Option<&str>, payload: &[Bytes]) -> Bytes {
    let mut attrs = vec![("type", "terminate".to_owned())];
    if let Some(c) = condition {
        attrs.push(("condition", c.to_owned()));
    }
    if !payload.is_empty() {
        attrs.push(("xmlns:stream", NS_STREAM.to_owned()));
    }
    body_xml(&attrs, payload)
}

/// An XEP-0206 attribute (`xmpp:NAME`, or another prefix bound to `urn:xmpp:xbosh`).
fn xbosh_attr<'a>(body: &'a Element, local: &str) -> Option<&'a str> {
    if let Some(v) = body.attr(&format!("xmpp:{local}")) {
        return Some(v);
    }
    let prefix = body.attrs.iter().find_map(|(k, v)| k.strip_prefix("xmlns:").filter(|_| v == NS_XBOSH))?;
    body.attr(&format!("{prefix}:{local}"))
}

fn is_true(v: Option<&str>) -> bool {
    matches!(v.map(str::trim), Some("true" | "1"))
}

/// Elements without a namespace of their own inherit the body's; they mean
/// `jabber:client` (XEP-0206 §3).
fn into_client_ns(e: &mut Element) {
    if e.ns == NS_HTTPBIND {
        e.ns = NS_CLIENT.to_owned();
    }
    for child in &mut e.children {
        if let Node::Element(c) = child {
            into_client_ns(c);
        }
    }
}

/// `major.minor` as two integers.
fn parse_ver(v: &str) -> Option<(u64, u64)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn negotiate_ver(asked: Option<&str>) -> String {
    let (major, minor) = asked.and_then(parse_ver).map_or(VERSION, |v| v.min(VERSION));
    format!("{major}.{minor}")
}

/// The `content` attribute of a creation request, when it names an XML type
/// (anything else could make a browser render stanzas as a page).
fn content_type(asked: Option<&str>) -> HeaderValue {
    let ok = asked.filter(|c| {
        let media = c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        media == "text/xml" || media == "application/xml"
    });
    ok.and_then(|c| HeaderValue::from_str(c.trim()).ok()).unwrap_or(HeaderValue::from_static(XML))
}

impl Request {
    /// `defaults`: the session, whose creation request's `to`, `xml:lang`
    /// and `xmpp:version` a restart inherits when it leaves them out.
    fn parse(body: Element, creating: bool, size: usize, defaults: Option<&Params>) -> Request {
        let kind = if creating {
            Kind::Create
        } else if body.attr("type").map(str::trim) == Some("terminate") {
            Kind::Terminate
        } else if is_true(xbosh_attr(&body, "restart")) {
            Kind::Restart
        } else {
            Kind::Normal
        };
        let mut items = Vec::new();
        if matches!(kind, Kind::Create | Kind::Restart) {
            let pick =
                |own: Option<&str>, default: Option<&String>| own.map(str::to_owned).or_else(|| default.cloned());
            items.push(XmppIn::Open {
                to: pick(body.attr("to"), defaults.and_then(|d| d.to.as_ref())),
                lang: pick(body.attr("xml:lang"), defaults.and_then(|d| d.lang.as_ref())),
                version: pick(xbosh_attr(&body, "version"), defaults.and_then(|d| d.version.as_ref())),
            });
        }
        for child in body.children {
            if let Node::Element(mut e) = child {
                into_client_ns(&mut e);
                items.push(XmppIn::Stanza(e));
            }
        }
        let empty = kind == Kind::Normal && items.is_empty();
        if kind == Kind::Terminate {
            items.push(XmppIn::Close);
        }
        Request { kind, items, cost: size.max(1), empty }
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

struct Shared {
    config: BoshConfig,
    /// `config.xml_limits` widened by the `<body/>` wrapper.
    body_limits: Limits,
    on_session: OnSession,
    sessions: Arc<Table>,
    sweeper_started: AtomicBool,
}

impl Shared {
    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions.lock().get(sid).cloned()
    }

    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let every = (self.config.max_inactivity / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(sweep(Arc::downgrade(self), every));
    }
}

/// Ends sessions that have had no request waiting or arriving for their
/// `inactivity` (a request stuck behind a missing `rid`, or whose client has
/// gone, doesn't count as waiting).
async fn sweep(shared: Weak<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let now = Instant::now();
        let mut dead = Vec::new();
        shared.sessions.lock().retain(|_, s| {
            let st = s.state.lock();
            if st.end.as_ref().is_some_and(|e| e.delivered) {
                return false;
            }
            let busy = st.held.iter().any(|h| !h.tx.is_closed())
                || st.pending.get(&st.next_rid).is_some_and(|pe| !pe.tx.is_closed());
            let keep = busy || now.duration_since(st.idle_since) < s.p.inactivity;
            if !keep {
                dead.push(s.clone());
            }
            keep
        });
        for s in dead {
            s.expire();
        }
    }
}

/// The peer of a request (address when the server provides `ConnectInfo`).
struct PeerInfo(Peer);

impl<S: Send + Sync> FromRequestParts<S> for PeerInfo {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let addr = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        Ok(PeerInfo(Peer { addr, transport: "bosh" }))
    }
}

type Sh = State<Arc<Shared>>;

/// The `Access-Control-Allow-Origin` to answer with; `None` for an origin
/// not allowed.
fn allow_origin(config: &BoshConfig, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN).filter(|o| !o.is_empty());
    if let (Some(allowed), Some(origin)) = (&config.allowed_origins, origin) {
        let o = origin.to_str().unwrap_or_default().trim_end_matches('/');
        if !allowed.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(o)) {
            return None;
        }
    }
    Some(origin.filter(|o| o.as_bytes() != b"null").cloned().unwrap_or(HeaderValue::from_static("*")))
}

/// BOSH answers are whole: the front server writes them without
/// collecting a body, and the router's path converts them.
type Answer = Response<Bytes>;

fn forbidden() -> Answer {
    text_response(StatusCode::FORBIDDEN, "origin not allowed\n", None)
}

fn set_cors(resp: &mut Answer, allow: Option<HeaderValue>) {
    let Some(allow) = allow else { return };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

fn text_response(status: StatusCode, text: impl Into<String>, allow: Option<HeaderValue>) -> Answer {
    let mut resp = Response::new(Bytes::from(text.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    set_cors(&mut resp, allow);
    resp
}

fn xml_response(status: StatusCode, content_type: HeaderValue, body: Bytes, allow: HeaderValue) -> Answer {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    set_cors(&mut resp, Some(allow));
    resp
}

async fn info() -> Response {
    text_response(
        StatusCode::OK,
        "Herald BOSH endpoint (XEP-0124, XEP-0206): POST <body xmlns='http://jabber.org/protocol/httpbind'/> requests here.\n",
        None,
    )
    .map(Body::from)
}

async fn preflight(State(shared): Sh, headers: HeaderMap) -> Response {
    let Some(allow) = allow_origin(&shared.config, &headers) else {
        return forbidden().map(Body::from);
    };
    let mut resp = Response::new(Bytes::new());
    let set = |resp: &mut Answer, name: HeaderName, value: HeaderValue| {
        resp.headers_mut().insert(name, value);
    };
    set(&mut resp, header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or(HeaderValue::from_static("Content-Type"));
    set(&mut resp, header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    set(&mut resp, header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE));
    let credentials = shared.config.cors_credentials && allow.as_bytes() != b"*";
    set_cors(&mut resp, Some(allow));
    if credentials {
        resp = with_credentials(resp);
    }
    resp.map(Body::from)
}

/// The handler of routed BOSH requests (the front server's direct path
/// skips the router and this body reader: [`post_whole`]).
fn handle_post(
    State(shared): Sh,
    PeerInfo(peer): PeerInfo,
    headers: HeaderMap,
    body: Body,
) -> BoxFuture<'static, Response> {
    let limit = shared.config.max_body_bytes;
    Box::pin(
        axum::body::to_bytes(body, limit)
            .then(move |data| match data {
                Ok(data) => post_whole(shared, peer, &headers, data),
                Err(_) => Box::pin(std::future::ready(match allow_origin(&shared.config, &headers) {
                    Some(allow) => too_large(allow),
                    None => forbidden(),
                })),
            })
            .map(|answer| answer.map(Body::from)),
    )
}

/// A BOSH request with its whole body. Plain `fn`s down to the wait: what
/// it returns is the state of a parked request (most of a BOSH session's
/// memory), and an `async fn` would keep its arguments (the `HeaderMap`,
/// the request body) and its locals until the answer. Only the wait for
/// the answer, the checked origin and the content type go on.
fn post_whole(shared: Arc<Shared>, peer: Peer, headers: &HeaderMap, data: Bytes) -> BoxFuture<'static, Answer> {
    let Some(allow) = allow_origin(&shared.config, headers) else {
        return Box::pin(std::future::ready(forbidden()));
    };
    if data.len() > shared.config.max_body_bytes {
        return Box::pin(std::future::ready(too_large(allow)));
    }
    if shared.config.cors_credentials && allow.as_bytes() != b"*" {
        // Only when configured: no extra state in a parked request otherwise.
        return Box::pin(on_body(&shared, peer, data, allow).map(with_credentials));
    }
    on_body(&shared, peer, data, allow)
}

fn with_credentials(mut a: Answer) -> Answer {
    a.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    a
}

/// XEP-0124 §14.1: a `rid` never exceeds 2^53 - 1 (the largest integer every
/// client language represents exactly); it also keeps `rid + window` far
/// from overflowing.
const MAX_RID: u64 = (1 << 53) - 1;

/// A missing, malformed or too large `rid`: HTTP 400 as ejabberd answers an
/// invalid `rid` attribute, with XEP-0124's terminal `bad-request` body so a
/// client that reads bodies learns the condition too. No session is touched.
fn bad_rid(allow: HeaderValue) -> Answer {
    xml_response(StatusCode::BAD_REQUEST, HeaderValue::from_static(XML), terminal_body(Some("bad-request"), &[]), allow)
}

fn too_large(allow: HeaderValue) -> Answer {
    let body = terminal_body(Some("policy-violation"), &[]);
    xml_response(StatusCode::PAYLOAD_TOO_LARGE, HeaderValue::from_static(XML), body, allow)
}

fn on_body(shared: &Arc<Shared>, peer: Peer, data: Bytes, allow: HeaderValue) -> BoxFuture<'static, Answer> {
    let answer = |resp: Answer| -> BoxFuture<'static, Answer> { Box::pin(std::future::ready(resp)) };
    let bad = |reason: String| {
        answer(text_response(StatusCode::BAD_REQUEST, format!("bad request: {reason}\n"), Some(allow.clone())))
    };
    let body = match parse_element(&data, &shared.body_limits) {
        Ok(b) => b,
        Err(e) => return bad(format!("malformed XML ({})", e.condition())),
    };
    if !body.is("body", NS_HTTPBIND) {
        return bad(format!("expected <body xmlns='{NS_HTTPBIND}'/>"));
    }
    let Some(rid) = body.attr("rid").and_then(|r| r.trim().parse::<u64>().ok()).filter(|r| *r <= MAX_RID) else {
        return answer(bad_rid(allow));
    };
    let mut start = None;
    let (session, req, opening) = match body.attr("sid") {
        None => {
            let (session, rx, tx) = create(shared, &body, rid, &peer);
            start = Some((rx, tx));
            (session, Request::parse(body, true, data.len(), None), true)
        }
        Some(sid) => {
            let Some(session) = shared.get(sid) else {
                return answer(xml_response(
                    StatusCode::OK,
                    HeaderValue::from_static(XML),
                    terminal_body(Some("item-not-found"), &[]),
                    allow,
                ));
            };
            let req = Request::parse(body, false, data.len(), Some(&session.p));
            let opening = req.kind == Kind::Restart;
            (session, req, opening)
        }
    };
    let len = data.len();
    drop(data);
    let content_type = session.p.content_type.clone();
    // A client over its byte rate: its request is held, unread by the
    // session, until the shaper has refilled (the creation request is only
    // charged: there is nothing before it to pause on).
    if let Some(until) = session.admit(len).filter(|_| start.is_none()) {
        return Box::pin(
            async move {
                let mut until = until;
                loop {
                    shaper::wait(until).await;
                    match session.admit(len) {
                        None => break,
                        Some(later) => until = later,
                    }
                }
                let (tx, rx) = oneshot::channel();
                session.submit(rid, req, tx);
                wait_reply(session, rid, rx, opening).await
            }
            .map(move |reply| xml_response(StatusCode::OK, content_type, reply, allow)),
        );
    }
    let (tx, rx) = oneshot::channel();
    session.submit(rid, req, tx);
    if let Some((rx, tx)) = start {
        // The app's side of a new session starts once its creation request
        // is in: the session's first event is that request's stream open.
        (shared.on_session)(rx, tx, peer);
    }
    Box::pin(
        wait_reply(session, rid, rx, opening)
            .map(move |reply| xml_response(StatusCode::OK, content_type, reply, allow)),
    )
}

/// A session for a request without `sid`, registered in the table.
fn create(shared: &Arc<Shared>, body: &Element, rid: u64, peer: &Peer) -> (Arc<Session>, BoshRx, BoshTx) {
    let c = &shared.config;
    let wait = match body.attr("wait").and_then(|w| w.trim().parse::<u64>().ok()) {
        Some(w) => Duration::from_secs(w).min(c.max_wait),
        None => c.max_wait,
    };
    let hold = body.attr("hold").and_then(|h| h.trim().parse::<u32>().ok()).unwrap_or(1).min(c.max_hold) as usize;
    let requests = (c.max_requests as usize).max(hold + 1);
    let p = Params {
        sid: uuid::Uuid::new_v4().simple().to_string(),
        wait,
        hold,
        requests,
        window: c.window.max(requests as u64),
        polling: c.polling,
        inactivity: c.max_inactivity,
        max_pending: c.max_pending_stanzas.max(1),
        inbox_budget: c.max_body_bytes.max(1),
        ver: negotiate_ver(body.attr("ver")),
        content_type: content_type(body.attr("content")),
        to: body.attr("to").map(str::to_owned),
        lang: body.attr("xml:lang").map(str::to_owned),
        version: xbosh_attr(body, "version").map(str::to_owned),
    };
    let sid = p.sid.clone();
    let (session, rx, tx) = Session::new(p, rid, Arc::downgrade(&shared.sessions), Shaper::new(&c.shaper, true, false));
    shared.sessions.lock().insert(sid.clone(), session.clone());
    shared.start_sweeper();
    tracing::debug!(sid = %sid, peer = ?peer.addr, "BOSH session created");
    (session, rx, tx)
}

/// Waits for the response to request `rid`, releasing it when its `wait`
/// is over. A plain `fn`: the future keeps one copy of what it waits with.
fn wait_reply(
    session: Arc<Session>,
    rid: u64,
    mut rx: oneshot::Receiver<Bytes>,
    opening: bool,
) -> impl std::future::Future<Output = Bytes> + Send {
    let first = if opening { session.p.wait.min(OPEN_WAIT) } else { session.p.wait };
    let mut check = Instant::now() + first;
    let mut guard = Abandon { session, rid, armed: true };
    async move {
        loop {
            tokio::select! {
                reply = &mut rx => {
                    guard.disarm();
                    // No response and no sender: the session is gone.
                    return reply.unwrap_or_else(|_| terminal_body(Some("item-not-found"), &[]));
                }
                () = tokio::time::sleep_until(check) => check = guard.session.check_deadline(guard.rid),
            }
        }
    }
}

/// Tells the session when a request's handler is dropped before its
/// response (the client closed the connection).
struct Abandon {
    session: Arc<Session>,
    rid: u64,
    armed: bool,
}

impl Abandon {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if self.armed {
            self.session.abandoned(self.rid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(10);
    const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";

    #[derive(Debug)]
    enum Ev {
        Start(Peer),
        In(XmppIn),
        Ended,
    }

    fn features(opens: u32) -> Element {
        let f = Element::new("features", NS_STREAM);
        if opens == 1 {
            f.with_child(
                Element::new("mechanisms", SASL).with_child(Element::new("mechanism", SASL).with_text("PLAIN")),
            )
        } else {
            f.with_child(Element::new("bind", BIND))
        }
    }

    /// A tiny XMPP server: answers a stream header with `open` and features
    /// (mechanisms first, bind after a restart), `<auth/>` with `<success/>`,
    /// a `type='kick'` stanza with a `conflict` stream error, a
    /// `type='later'` one with its echo after a second, and echoes everything
    /// else; closes on close. Reports what it has handled.
    fn fake_server() -> (OnSession, mpsc::UnboundedReceiver<Ev>) {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let on_session: OnSession = Arc::new(move |mut rx: BoshRx, mut tx: BoshTx, peer: Peer| {
            let ev = ev_tx.clone();
            let _ = ev.send(Ev::Start(peer));
            tokio::spawn(async move {
                let mut opens = 0;
                while let Ok(Some(input)) = rx.recv().await {
                    let seen = input.clone();
                    match input {
                        XmppIn::Open { .. } => {
                            opens += 1;
                            tx.open(&format!("stream-{opens}"), "example.com").await.unwrap();
                            tx.send(features(opens).to_bytes()).await.unwrap();
                            tx.flush().await.unwrap();
                        }
                        XmppIn::Stanza(s) if s.is("auth", SASL) => {
                            tx.send(Element::new("success", SASL).to_bytes()).await.unwrap();
                            tx.flush().await.unwrap();
                            rx.restart();
                        }
                        XmppIn::Stanza(s) if s.attr("type") == Some("kick") => {
                            tx.close(Some(StreamError::new("conflict", "Replaced by new connection"))).await;
                        }
                        XmppIn::Stanza(s) => {
                            if s.attr("type") == Some("later") {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            let _ = tx.send(s.to_bytes()).await;
                            let _ = tx.flush().await;
                        }
                        XmppIn::Close => tx.close(None).await,
                    }
                    // Reported once handled: the response is on its way.
                    let _ = ev.send(Ev::In(seen));
                }
                let _ = ev.send(Ev::Ended);
            });
        });
        (on_session, ev_rx)
    }

    async fn serve(config: BoshConfig, on_session: OnSession) -> SocketAddr {
        let (app, direct) = mount(config, on_session, &["/http-bind", "/bosh"]);
        let front = crate::transport::http1::Front { direct: Arc::from([direct]), ..Default::default() };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Served as in production: the front server of transport/http1.rs.
        tokio::spawn(async move {
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                let limits = crate::transport::http1::Http1Limits::default();
                tokio::spawn(crate::transport::http1::serve_connection(
                    stream,
                    peer,
                    app.clone(),
                    front.clone(),
                    limits,
                    Default::default(),
                ));
            }
        });
        addr
    }

    #[derive(Debug)]
    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The response `<body/>`, checked for what every BOSH response has.
        fn xml(&self) -> Element {
            assert_eq!(self.status, 200, "{}", self.text());
            assert_eq!(self.header("content-type"), Some(XML));
            let b = parse_element(&self.body, &Limits::default()).unwrap_or_else(|e| panic!("{e}: {}", self.text()));
            assert!(b.is("body", NS_HTTPBIND), "{}", self.text());
            b
        }
    }

    /// Sends one request on a fresh connection and reads the whole response.
    async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut stream = send_request(addr, method, path, headers, body).await;
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.expect("response timed out").unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect::<Vec<_>>();
        let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
        assert!(!chunked, "responses have a length");
        Resp { status, headers, body: raw[split + 4..].to_vec() }
    }

    async fn send_request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        stream
    }

    async fn post(addr: SocketAddr, path: &str, body: &str) -> Resp {
        request(addr, "POST", path, &[("Content-Type", XML)], body.as_bytes()).await
    }

    /// A session creation request as strophe.js sends it.
    fn creation(rid: u64, hold: u32) -> String {
        format!(
            "<body rid='{rid}' xmlns='{NS_HTTPBIND}' to='example.com' xml:lang='en' wait='60' hold='{hold}' \
             content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
        )
    }

    struct Client {
        addr: SocketAddr,
        sid: String,
        /// Last rid used.
        rid: u64,
    }

    impl Client {
        /// Creates a session; returns the client and the creation response.
        async fn connect(addr: SocketAddr, hold: u32) -> (Client, Element) {
            let rid = 1_000_000 + u64::from(rand::random::<u16>());
            let b = post(addr, "/http-bind", &creation(rid, hold)).await.xml();
            let sid = b.attr("sid").expect("sid").to_owned();
            (Client { addr, sid, rid }, b)
        }

        fn body(&self, rid: u64, attrs: &str, payload: &str) -> String {
            format!("<body rid='{rid}' sid='{}' xmlns='{NS_HTTPBIND}'{attrs}>{payload}</body>", self.sid)
        }

        fn next(&mut self) -> u64 {
            self.rid += 1;
            self.rid
        }

        async fn send_rid(&self, rid: u64, attrs: &str, payload: &str) -> Resp {
            post(self.addr, "/http-bind", &self.body(rid, attrs, payload)).await
        }

        /// The next request, in a task (for requests that are held).
        fn spawn(&mut self, attrs: &str, payload: &str) -> tokio::task::JoinHandle<Resp> {
            let rid = self.next();
            let (addr, body) = (self.addr, self.body(rid, attrs, payload));
            tokio::spawn(async move { post(addr, "/http-bind", &body).await })
        }

        async fn send(&mut self, attrs: &str, payload: &str) -> Resp {
            let rid = self.next();
            self.send_rid(rid, attrs, payload).await
        }
    }

    async fn next_ev(ev: &mut mpsc::UnboundedReceiver<Ev>) -> Ev {
        tokio::time::timeout(WAIT, ev.recv()).await.expect("no event").expect("channel closed")
    }

    /// The next client event the app saw (skipping session starts).
    async fn next_in(ev: &mut mpsc::UnboundedReceiver<Ev>) -> Option<XmppIn> {
        loop {
            match next_ev(ev).await {
                Ev::Start(_) => continue,
                Ev::In(x) => return Some(x),
                Ev::Ended => return None,
            }
        }
    }

    async fn next_stanza(ev: &mut mpsc::UnboundedReceiver<Ev>) -> Element {
        match next_in(ev).await {
            Some(XmppIn::Stanza(s)) => s,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    fn message(body: &str) -> String {
        format!("<message xmlns='jabber:client' to='a@example.com'><body>{body}</body></message>")
    }

    /// The message bodies in a response, in order.
    fn bodies(b: &Element) -> Vec<String> {
        b.elements()
            .filter(|e| e.is("message", NS_CLIENT))
            .map(|m| m.child("body", NS_CLIENT).map(Element::text).unwrap_or_default())
            .collect()
    }

    fn assert_terminate(b: &Element, condition: Option<&str>) {
        assert_eq!(b.attr("type"), Some("terminate"), "{b}");
        assert_eq!(b.attr("condition"), condition, "{b}");
    }

    #[tokio::test]
    async fn creation_response_has_session_attributes_and_features() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let r = post(addr, "/http-bind", &creation(4_000_000, 1)).await;
        let raw = r.text();
        let b = r.xml();
        assert_eq!(b.attr("sid").unwrap().len(), 32);
        for (name, value) in [
            ("wait", "60"),
            ("requests", "2"),
            ("hold", "1"),
            ("inactivity", "60"),
            ("polling", "2"),
            ("ver", "1.6"),
            ("from", "example.com"),
            ("authid", "stream-1"),
            ("xmpp:version", "1.0"),
            ("xmpp:restartlogic", "true"),
        ] {
            assert_eq!(b.attr(name), Some(value), "{name} in {raw}");
        }
        assert!(raw.contains("xmlns:xmpp='urn:xmpp:xbosh'"), "{raw}");
        assert!(raw.contains("xmlns:stream='http://etherx.jabber.org/streams'"), "{raw}");
        let features = b.child("features", NS_STREAM).expect("features");
        assert!(features.child("mechanisms", SASL).is_some());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));

        match next_ev(&mut ev).await {
            Ev::Start(peer) => {
                assert_eq!(peer.transport, "bosh");
                assert_eq!(peer.addr.unwrap().ip(), std::net::Ipv4Addr::LOCALHOST);
            }
            other => panic!("{other:?}"),
        }
        let open =
            XmppIn::Open { to: Some("example.com".into()), lang: Some("en".into()), version: Some("1.0".into()) };
        assert_eq!(next_in(&mut ev).await, Some(open));

        // The client's wait, hold and ver are capped; /bosh serves the same.
        let asked = format!("<body rid='7' xmlns='{NS_HTTPBIND}' to='example.com' wait='300' hold='4' ver='1.11'/>");
        let b = post(addr, "/bosh", &asked).await.xml();
        assert_eq!(
            (b.attr("wait"), b.attr("hold"), b.attr("requests"), b.attr("ver")),
            (Some("60"), Some("1"), Some("2"), Some("1.6"))
        );
        let asked = format!("<body rid='7' xmlns='{NS_HTTPBIND}' wait='5' hold='0' ver='1.5'/>");
        let b = post(addr, "/bosh", &asked).await.xml();
        assert_eq!(
            (b.attr("wait"), b.attr("hold"), b.attr("requests"), b.attr("ver")),
            (Some("5"), Some("0"), Some("2"), Some("1.5"))
        );
        // Without xmpp:version, the features still come (the session decides).
        assert!(b.child("features", NS_STREAM).is_some());
    }

    #[tokio::test]
    async fn stanza_round_trip_through_held_request() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let held = c.spawn("", "");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!held.is_finished(), "an empty request is held");
        // A new request releases the held one; its own payload's echo comes back on it.
        let r = c.send("", &message("hi")).await.xml();
        let released = held.await.unwrap().xml();
        assert_eq!(released.elements().count(), 0, "{released}");
        assert_eq!(bodies(&r), ["hi"]);
        assert!(next_in(&mut ev).await.is_some_and(|x| matches!(x, XmppIn::Open { .. })));
        let s = next_stanza(&mut ev).await;
        assert!(s.is("message", NS_CLIENT));

        // Stanzas without a namespace of their own are jabber:client.
        let r = c.send("", "<message to='b@example.com'><body>plain</body></message>").await.xml();
        assert_eq!(bodies(&r), ["plain"]);
        let s = next_stanza(&mut ev).await;
        assert!(s.is("message", NS_CLIENT) && s.child("body", NS_CLIENT).is_some(), "{s}");
    }

    #[tokio::test]
    async fn out_of_order_requests_are_processed_and_answered_in_rid_order() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (c, _) = Client::connect(addr, 1).await;
        assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
        let (first, second) = (c.rid + 1, c.rid + 2);
        let (addr2, body2) = (c.addr, c.body(second, "", &message("B")));
        let later = tokio::spawn(async move { post(addr2, "/http-bind", &body2).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!later.is_finished(), "waits for the earlier rid");
        assert!(ev.try_recv().is_err(), "nothing delivered out of order");
        let r1 = c.send_rid(first, "", &message("A")).await.xml();
        assert_eq!(r1.elements().count(), 0, "released by the later request: {r1}");
        let r2 = later.await.unwrap().xml();
        assert_eq!(bodies(&r2), ["A"]);
        assert_eq!(next_stanza(&mut ev).await.child("body", NS_CLIENT).unwrap().text(), "A");
        assert_eq!(next_stanza(&mut ev).await.child("body", NS_CLIENT).unwrap().text(), "B");
        // B's echo waited for the next request.
        let r3 = c.send_rid(second + 1, "", "").await.xml();
        assert_eq!(bodies(&r3), ["B"]);
    }

    #[tokio::test]
    async fn retransmitted_rid_gets_identical_response() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let rid = c.next();
        let first = c.send_rid(rid, "", &message("once")).await;
        assert_eq!(bodies(&first.xml()), ["once"]);
        let again = c.send_rid(rid, "", &message("once")).await;
        assert_eq!(again.body, first.body);
        next_in(&mut ev).await;
        next_stanza(&mut ev).await;
        // Processed once.
        let r = c.send("", &message("twice")).await.xml();
        assert_eq!(bodies(&r), ["twice"]);
        assert_eq!(next_stanza(&mut ev).await.child("body", NS_CLIENT).unwrap().text(), "twice");
        // Only the last `window` (2) responses are kept.
        c.send("", &message("3")).await.xml();
        let r = c.send_rid(rid, "", "").await.xml();
        assert_terminate(&r, Some("item-not-found"));
        assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
    }

    #[tokio::test]
    async fn rid_outside_window_ends_session() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (c, _) = Client::connect(addr, 1).await;
        assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
        let r = c.send_rid(c.rid + 3, "", &message("far")).await.xml();
        assert_terminate(&r, Some("item-not-found"));
        assert!(next_in(&mut ev).await.is_none(), "the app sees the end");
        assert_terminate(&c.send_rid(c.rid + 1, "", "").await.xml(), Some("item-not-found"));
    }

    #[tokio::test]
    async fn unknown_sid_is_item_not_found() {
        let (on_session, _ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let r = post(addr, "/http-bind", &format!("<body rid='5' sid='nope' xmlns='{NS_HTTPBIND}'/>")).await;
        assert_eq!(r.text(), format!("<body xmlns='{NS_HTTPBIND}' type='terminate' condition='item-not-found'/>"));
        assert_terminate(&r.xml(), Some("item-not-found"));
    }

    #[tokio::test]
    async fn restart_gets_new_features() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let r = c.send("", &format!("<auth xmlns='{SASL}' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")).await.xml();
        assert!(r.child("success", SASL).is_some(), "{r}");
        let restart = " to='example.com' xml:lang='en' xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh'";
        let r = c.send(restart, "").await.xml();
        let features = r.child("features", NS_STREAM).expect("new features");
        assert!(features.child("bind", BIND).is_some(), "{r}");
        assert_eq!(r.attr("sid"), None, "session attributes only on creation");
        assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
        assert!(next_stanza(&mut ev).await.is("auth", SASL));
        // The restart inherits what it leaves out (xmpp:version).
        let open =
            XmppIn::Open { to: Some("example.com".into()), lang: Some("en".into()), version: Some("1.0".into()) };
        assert_eq!(next_in(&mut ev).await, Some(open));
    }

    #[tokio::test]
    async fn client_terminate() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let held = c.spawn("", "");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = c.send(" type='terminate'", "<presence xmlns='jabber:client' type='unavailable'/>").await;
        assert_eq!(r.text(), format!("<body xmlns='{NS_HTTPBIND}' type='terminate'/>"));
        let released = held.await.unwrap().xml();
        assert_eq!(released.attr("type"), None, "{released}");
        assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
        assert!(next_stanza(&mut ev).await.is("presence", NS_CLIENT));
        assert_eq!(next_in(&mut ev).await, Some(XmppIn::Close));
        assert_eq!(next_in(&mut ev).await, None);
        assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
    }

    #[tokio::test]
    async fn server_close_with_stream_error() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let r = c.send("", "<message xmlns='jabber:client' type='kick'/>").await;
        let b = r.xml();
        assert_terminate(&b, Some("remote-stream-error"));
        assert!(r.text().contains("xmlns:stream='http://etherx.jabber.org/streams'"), "{}", r.text());
        let error = b.child("error", NS_STREAM).expect("stream error");
        assert!(error.child("conflict", STREAMS_ERR).is_some(), "{b}");
        assert_eq!(error.child("text", STREAMS_ERR).unwrap().text(), "Replaced by new connection");
        next_in(&mut ev).await;
        next_stanza(&mut ev).await;
        assert_eq!(next_in(&mut ev).await, None);
        assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
    }

    #[tokio::test]
    async fn server_close_reaches_the_next_request() {
        // Sends features, then closes at once: nothing is held at that point.
        let on_session: OnSession = Arc::new(|mut rx: BoshRx, mut tx: BoshTx, _peer: Peer| {
            tokio::spawn(async move {
                assert!(matches!(rx.recv().await, Ok(Some(XmppIn::Open { .. }))));
                tx.open("s1", "example.com").await.unwrap();
                tx.send(features(1).to_bytes()).await.unwrap();
                tx.flush().await.unwrap();
                tx.send(Bytes::from_static(b"<message xmlns='jabber:client'><body>bye</body></message>"))
                    .await
                    .unwrap();
                tx.close(Some(StreamError::new("system-shutdown", ""))).await;
                assert!(tx.send(Bytes::from_static(b"<x/>")).await.is_err());
                assert_eq!(rx.recv().await, Ok(None));
            });
        });
        let addr = serve(BoshConfig::default(), on_session).await;
        let (mut c, b) = Client::connect(addr, 1).await;
        assert!(b.child("features", NS_STREAM).is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b = c.send("", "").await.xml();
        assert_terminate(&b, Some("remote-stream-error"));
        assert_eq!(bodies(&b), ["bye"], "queued stanzas come first");
        assert!(b.child("error", NS_STREAM).unwrap().child("system-shutdown", STREAMS_ERR).is_some());
        assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
    }

    #[tokio::test]
    async fn refused_session_gets_the_error_on_creation() {
        let on_session: OnSession = Arc::new(|rx: BoshRx, mut tx: BoshTx, _peer: Peer| {
            tokio::spawn(async move {
                tx.close(Some(StreamError::new("resource-constraint", "connection limit reached"))).await;
                drop(rx);
            });
        });
        let addr = serve(BoshConfig::default(), on_session).await;
        let b = post(addr, "/http-bind", &creation(9, 1)).await.xml();
        assert_terminate(&b, Some("remote-stream-error"));
        assert!(b.child("error", NS_STREAM).unwrap().child("resource-constraint", STREAMS_ERR).is_some());
    }

    #[tokio::test]
    async fn outbound_overflow_ends_session() {
        let (res_tx, mut res_rx) = mpsc::unbounded_channel();
        let on_session: OnSession = Arc::new(move |mut rx: BoshRx, mut tx: BoshTx, _peer: Peer| {
            let res_tx = res_tx.clone();
            tokio::spawn(async move {
                assert!(matches!(rx.recv().await, Ok(Some(XmppIn::Open { .. }))));
                tx.open("s1", "example.com").await.unwrap();
                tx.flush().await.unwrap();
                // Nothing is held now: stanzas queue up.
                let mut results = Vec::new();
                for i in 0..5 {
                    let sent = tx
                        .send(Bytes::from(format!("<message xmlns='jabber:client'><body>{i}</body></message>")))
                        .await;
                    results.push(sent.and(tx.flush().await).is_ok());
                }
                res_tx.send(results).unwrap();
                assert_eq!(rx.recv().await, Ok(None));
            });
        });
        let config = BoshConfig { max_pending_stanzas: 3, ..Default::default() };
        let addr = serve(config, on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let results = tokio::time::timeout(WAIT, res_rx.recv()).await.unwrap().unwrap();
        assert_eq!(results, [true, true, true, false, false]);
        assert_terminate(&c.send("", "").await.xml(), Some("policy-violation"));
        assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
    }

    #[tokio::test]
    async fn inactivity_ends_session() {
        let config = BoshConfig {
            max_inactivity: Duration::from_millis(300),
            max_wait: Duration::from_millis(600),
            ..Default::default()
        };
        let (on_session, mut ev) = fake_server();
        let addr = serve(config, on_session).await;
        let (mut c, b) = Client::connect(addr, 1).await;
        assert_eq!(b.attr("inactivity"), Some("1"));
        assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
        // A held request keeps the session alive past `inactivity`.
        let r = c.send("", "").await.xml();
        assert_eq!(r.attr("type"), None, "{r}");
        let idle = Instant::now();
        assert_eq!(next_in(&mut ev).await, None);
        assert!(idle.elapsed() >= Duration::from_millis(250), "{:?}", idle.elapsed());
        assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
    }

    #[tokio::test]
    async fn wait_expiry_returns_empty_body() {
        let config = BoshConfig { max_wait: Duration::from_millis(300), ..Default::default() };
        let (on_session, _ev) = fake_server();
        let addr = serve(config, on_session).await;
        let (mut c, b) = Client::connect(addr, 1).await;
        assert_eq!(b.attr("wait"), Some("1"));
        let start = Instant::now();
        let r = c.send("", "").await;
        assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
        assert_eq!(r.text(), format!("<body xmlns='{NS_HTTPBIND}'/>"));
        r.xml();
        // The session goes on.
        assert_eq!(bodies(&c.send("", &message("still")).await.xml()), ["still"]);
    }

    #[tokio::test]
    async fn cors() {
        let (on_session, _ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let h = [
            ("Origin", "http://a.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type, x-b"),
        ];
        let r = request(addr, "OPTIONS", "/http-bind", &h, b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), Some("http://a.example"));
        assert_eq!(r.header("access-control-allow-methods"), Some("POST, GET, OPTIONS"));
        assert_eq!(r.header("access-control-allow-headers"), Some("content-type, x-b"));
        assert_eq!(r.header("access-control-max-age"), Some("86400"));
        let r = request(addr, "OPTIONS", "/bosh", &[], b"").await;
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert_eq!(r.header("access-control-allow-headers"), Some("Content-Type"));
        let r = request(addr, "POST", "/http-bind", &[("Origin", "http://a.example")], creation(1, 1).as_bytes()).await;
        assert_eq!(r.header("access-control-allow-origin"), Some("http://a.example"));
        r.xml();

        let config = BoshConfig { allowed_origins: Some(vec!["https://ok.example".into()]), ..Default::default() };
        let (on_session, _ev) = fake_server();
        let addr = serve(config, on_session).await;
        let r = request(addr, "OPTIONS", "/http-bind", &[("Origin", "https://evil.example")], b"").await;
        assert_eq!(r.status, 403);
        let r =
            request(addr, "POST", "/http-bind", &[("Origin", "https://evil.example")], creation(1, 1).as_bytes()).await;
        assert_eq!(r.status, 403);
        let r = request(addr, "OPTIONS", "/http-bind", &[("Origin", "https://ok.example")], b"").await;
        assert_eq!((r.status, r.header("access-control-allow-origin")), (200, Some("https://ok.example")));
        let r =
            request(addr, "POST", "/http-bind", &[("Origin", "https://ok.example")], creation(1, 1).as_bytes()).await;
        assert_eq!(r.header("access-control-allow-origin"), Some("https://ok.example"));
        r.xml();
        // Non-browser clients send no Origin.
        post(addr, "/http-bind", &creation(1, 1)).await.xml();
    }

    #[tokio::test]
    async fn oversized_body_is_refused() {
        let config = BoshConfig { max_body_bytes: 1024, ..Default::default() };
        let (on_session, _ev) = fake_server();
        let addr = serve(config, on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let r = c.send("", &message(&"x".repeat(2000))).await;
        assert_eq!(r.status, 413);
        let b = parse_element(&r.body, &Limits::default()).unwrap();
        assert_terminate(&b, Some("policy-violation"));
    }

    #[tokio::test]
    async fn malformed_requests_are_400_and_leave_the_session_alone() {
        let (on_session, _ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let rid = c.rid + 1;
        for bad in [
            format!("<body rid='{rid}' sid='{}' xmlns='{NS_HTTPBIND}'><message>", c.sid),
            format!("<body rid='{rid}' sid='{}' xmlns='jabber:client'/>", c.sid),
            "not xml at all".to_owned(),
            String::new(),
        ] {
            let r = post(addr, "/http-bind", &bad).await;
            assert_eq!(r.status, 400, "{bad}");
            assert_eq!(r.header("content-type"), Some(TEXT));
            assert!(r.text().starts_with("bad request: "), "{}", r.text());
        }
        assert_eq!(bodies(&c.send("", &message("fine")).await.xml()), ["fine"]);
    }

    #[tokio::test]
    async fn request_bodies_over_the_byte_rate_are_held_not_refused() {
        let (on_session, _ev) = fake_server();
        let shaper = ShaperConfig { bytes_per_sec: 4000.0, bytes_burst: 4000, ..ShaperConfig::default() };
        let addr = serve(BoshConfig { shaper, ..BoshConfig::default() }, on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        // Goes through at once (the bucket was not in debt), and leaves the
        // session owing about 4 KiB: a second's worth at 4,000 B/s.
        let big = "x".repeat(8000);
        assert_eq!(bodies(&c.send("", &message(&big)).await.xml()), [big]);
        let t0 = Instant::now();
        assert_eq!(bodies(&c.send("", &message("after")).await.xml()), ["after"], "held, then handled");
        let held = t0.elapsed();
        assert!(held >= Duration::from_millis(800), "the next request waited only {held:?}");
    }

    #[tokio::test]
    async fn rids_beyond_2_pow_53_are_refused() {
        let (on_session, _ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (c, _) = Client::connect(addr, 1).await;
        let too_big = MAX_RID + 1;
        for bad in [
            c.body(too_big, "", ""),
            c.body(u64::MAX, "", ""),
            format!("<body sid='{}' xmlns='{NS_HTTPBIND}'/>", c.sid),
            c.body(0, "", "").replace("rid='0'", "rid='-1'"),
            creation(too_big, 1),
            creation(1 << 62, 1),
        ] {
            let r = post(addr, "/http-bind", &bad).await;
            assert_eq!(r.status, 400, "{bad}");
            assert_eq!(r.header("content-type"), Some(XML));
            let b = parse_element(&r.body, &Limits::default()).unwrap();
            assert_terminate(&b, Some("bad-request"));
        }
        // The largest legal rid opens a session.
        let b = post(addr, "/http-bind", &creation(MAX_RID, 1)).await;
        assert_eq!(b.status, 200);
        assert!(b.xml().attr("sid").is_some());
    }

    #[tokio::test]
    async fn too_many_simultaneous_requests() {
        // Reads the stream header, then nothing: client stanzas pile up.
        let on_session: OnSession = Arc::new(|mut rx: BoshRx, mut tx: BoshTx, _peer: Peer| {
            tokio::spawn(async move {
                assert!(matches!(rx.recv().await, Ok(Some(XmppIn::Open { .. }))));
                tx.open("s1", "example.com").await.unwrap();
                tx.flush().await.unwrap();
                tokio::time::sleep(WAIT).await;
            });
        });
        let config = BoshConfig { max_body_bytes: 600, ..Default::default() };
        let addr = serve(config, on_session).await;
        let (mut c, b) = Client::connect(addr, 1).await;
        assert_eq!(b.attr("authid"), Some("s1"));
        let payload = message(&"p".repeat(300));
        let r1 = c.spawn("", &payload); // processed and held
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r2 = c.spawn("", &payload); // waits: the inbox is full
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!r1.is_finished() && !r2.is_finished());
        let r3 = c.send("", "").await.xml();
        assert_terminate(&r3, Some("policy-violation"));
        assert_terminate(&r1.await.unwrap().xml(), Some("policy-violation"));
        assert_terminate(&r2.await.unwrap().xml(), Some("policy-violation"));
    }

    #[tokio::test]
    async fn polling_too_fast() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (mut c, b) = Client::connect(addr, 0).await;
        assert_eq!((b.attr("hold"), b.attr("polling")), (Some("0"), Some("2")));
        assert!(b.child("features", NS_STREAM).is_some(), "the creation response still waits for features");
        // Nothing is held: every request is answered at once.
        let r = c.send("", &message("a")).await.xml();
        assert_eq!(r.elements().count(), 0, "{r}");
        assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
        next_stanza(&mut ev).await; // echoed: queued for the next request
                                    // A poll may follow a poll that brought something, ...
        assert_eq!(bodies(&c.send("", "").await.xml()), ["a"]);
        let r = c.send("", "").await.xml();
        assert_eq!((r.attr("type"), r.elements().count()), (None, 0));
        // ... but not one that brought nothing, within `polling`.
        let r = c.send("", "").await.xml();
        assert_terminate(&r, Some("policy-violation"));
    }

    #[tokio::test]
    async fn aborted_request_does_not_swallow_stanzas() {
        let (on_session, mut ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let rid = c.next();
        // The echo comes a second later; the client gives up on the request before.
        let stream = send_request(
            addr,
            "POST",
            "/http-bind",
            &[],
            c.body(rid, "", "<message xmlns='jabber:client' type='later'/>").as_bytes(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stream);
        assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
        assert_eq!(next_stanza(&mut ev).await.attr("type"), Some("later"));
        let r = c.send("", "").await.xml();
        assert_eq!(r.elements().filter(|e| e.is("message", NS_CLIENT)).count(), 1, "{r}");
        // A retransmission of the abandoned request gets what it got: nothing.
        assert_eq!(c.send_rid(rid, "", "").await.xml().elements().count(), 0);
    }

    #[tokio::test]
    async fn a_page_reload_is_not_taken_for_polling_too_fast() {
        // A reload aborts the held (empty) request; a stanza for the client
        // arrives meanwhile; the reloaded page's next empty request comes at
        // once. The abandoned answer was never seen by the client, so it is
        // no "poll" (XEP-0124 §12), and the stanza must reach the page.
        let (on_session, mut ev) = fake_server();
        let cfg = BoshConfig { max_wait: Duration::from_secs(5), ..BoshConfig::default() };
        let addr = serve(cfg, on_session).await;
        let (mut c, _) = Client::connect(addr, 1).await;
        let a = c.next();
        let with_stanza = c.body(a, "", "<message xmlns='jabber:client' type='later'/>");
        let first = send_request(addr, "POST", "/http-bind", &[], with_stanza.as_bytes()).await;
        assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
        let b = c.next();
        let held = send_request(addr, "POST", "/http-bind", &[], c.body(b, "", "").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held); // the page reloads
        drop(first);
        // The echo of 'later' comes a second after it was sent.
        assert_eq!(next_stanza(&mut ev).await.attr("type"), Some("later"));
        let r = c.send("", "").await.xml();
        assert_ne!(r.attr("type"), Some("terminate"), "{r}");
        assert_eq!(r.elements().filter(|e| e.is("message", NS_CLIENT)).count(), 1, "the stanza is not lost: {r}");
    }

    #[tokio::test]
    async fn info_page_and_other_methods() {
        let (on_session, _ev) = fake_server();
        let addr = serve(BoshConfig::default(), on_session).await;
        let r = request(addr, "GET", "/http-bind", &[], b"").await;
        assert_eq!((r.status, r.header("content-type")), (200, Some(TEXT)));
        assert!(r.text().contains("BOSH"));
        assert_eq!(request(addr, "PUT", "/bosh", &[], b"").await.status, 405);
        // Mounted with `nest_service`, a trailing slash works too.
        post(addr, "/http-bind/", &creation(3, 1)).await.xml();
        post(addr, "/bosh/", &creation(3, 1)).await.xml();
        assert_eq!(post(addr, "/http-bind/x", &creation(3, 1)).await.status, 404);
    }

    #[test]
    fn version_and_content_type_negotiation() {
        assert_eq!(negotiate_ver(Some("1.6")), "1.6");
        assert_eq!(negotiate_ver(Some("1.10")), "1.6");
        assert_eq!(negotiate_ver(Some("1.5")), "1.5");
        assert_eq!(negotiate_ver(Some("2.0")), "1.6");
        assert_eq!(negotiate_ver(None), "1.6");
        assert_eq!(negotiate_ver(Some("x")), "1.6");
        assert_eq!(content_type(Some("text/xml; charset=utf-8")), "text/xml; charset=utf-8");
        assert_eq!(content_type(Some("application/xml")), "application/xml");
        assert_eq!(content_type(Some("text/html")), XML);
        assert_eq!(content_type(None), XML);
        assert_eq!(
            body_xml(&[("a", "<'&\">".to_owned())], &[]),
            format!("<body xmlns='{NS_HTTPBIND}' a='&lt;&apos;&amp;&quot;&gt;'/>")
        );
    }
}
