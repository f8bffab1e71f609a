//! SockJS server transport (protocol 0.3.3), so browser code written for
//! RabbitMQ Web-STOMP (`new SockJS(url)` + `Stomp.over(ws)`) works unchanged.
//!
//! [`router`] returns an axum [`Router`] that the caller nests at the service
//! prefix (e.g. `/stomp`). It knows nothing about the protocol carried: every
//! new SockJS session, whatever its transport, is handed to the [`OnSession`]
//! callback as a [`SockJsRx`] / [`SockJsTx`] pair.
//!
//! Transports: framed websocket (`/{server}/{session}/websocket`), raw
//! websocket (`/websocket`), xhr polling, xhr streaming, eventsource, htmlfile
//! and jsonp polling, with `xhr_send` / `jsonp_send` for client messages.
//!
//! Memory is bounded per session: client → app messages go through a small
//! bounded channel (senders wait: HTTP/TCP backpressure), app → client messages
//! wait in an outbox of at most [`SockJsConfig::max_pending_messages`] messages
//! (overflow closes the session), and a request body or websocket message is at
//! most [`SockJsConfig::max_inbound_bytes`].

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame as WsCloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::conn::Cors;
use super::{LinkRx, LinkTx, Peer};

/// Where the iframe page (`/iframe.html`) loads sockjs-client from. Only the
/// iframe-based transports of old browsers use it.
pub const SOCKJS_CLIENT_URL: &str = "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js";

/// Client → app batches (one `xhr_send` body or one websocket message) that may
/// wait for the app before senders are held back.
const INBOUND_QUEUE: usize = 8;
/// Length of the `xhr_streaming` prelude (`h` bytes, then `\n`).
const XHR_STREAMING_PRELUDE: usize = 2048;
/// One year: caching of OPTIONS answers and the iframe page.
const ONE_YEAR_SECS: u64 = 31_536_000;
const NO_CACHE: &str = "no-store, no-cache, must-revalidate, max-age=0";
const CACHE_YEAR: &str = "public, max-age=31536000";
const JS: &str = "application/javascript; charset=UTF-8";
const TEXT: &str = "text/plain; charset=UTF-8";
const HTML: &str = "text/html; charset=UTF-8";

/// Tuning of the SockJS endpoint.
#[derive(Debug, Clone)]
pub struct SockJsConfig {
    /// Interval of `h` frames on an open receiving connection (default 25 s).
    pub heartbeat: Duration,
    /// A session is closed when it has had no receiving request for this long
    /// (default 5 s).
    pub disconnect_delay: Duration,
    /// Streaming responses (`xhr_streaming`, `eventsource`, `htmlfile`) end
    /// after this many bytes of frames (default 128 KiB).
    pub response_limit: usize,
    /// Messages that may wait for a client between polls; more closes the
    /// session (default 4096).
    pub max_pending_messages: usize,
    /// Largest `xhr_send` / `jsonp_send` body and websocket message (default
    /// 1 MiB); larger gets `413` / closes the websocket.
    pub max_inbound_bytes: usize,
    /// Whether the websocket transports are offered (default true).
    pub websocket: bool,
    /// An `xhr_send` / `jsonp_send` body must arrive within this (default
    /// 30 s, `connections.body_timeout_ms`); 408 after.
    pub body_timeout: Duration,
    /// Origins allowed (others get 403) and whether credentials are
    /// allowed (`connections.cors_*`; default: any origin, no credentials).
    pub cors: Cors,
}

impl Default for SockJsConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(25),
            disconnect_delay: Duration::from_secs(5),
            response_limit: 128 * 1024,
            max_pending_messages: 4096,
            max_inbound_bytes: 1024 * 1024,
            websocket: true,
            body_timeout: Duration::from_secs(30),
            cors: Cors::default(),
        }
    }
}

/// Called once per new SockJS session (any transport) with the session's two
/// halves. Runs on the request's task: spawn, don't block.
pub type OnSession = Arc<dyn Fn(SockJsRx, SockJsTx, Peer) + Send + Sync>;

/// The SockJS endpoints, relative to the point where the caller nests them.
///
/// The peer address is taken from `ConnectInfo<SocketAddr>` when the server is
/// run with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(config: SockJsConfig, on_session: OnSession) -> Router {
    let iframe = iframe_page(SOCKJS_CLIENT_URL);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    iframe.hash(&mut hasher);
    let iframe_etag = format!("\"{:016x}\"", hasher.finish());
    let shared = Arc::new(Shared {
        config,
        on_session,
        sessions: Mutex::new(HashMap::new()),
        sweeper_started: AtomicBool::new(false),
        iframe,
        iframe_etag,
    });
    Router::new()
        .route("/", get(greeting))
        .route("/info", get(info).options(options_get))
        .route("/websocket", get(raw_websocket))
        .route("/{file}", get(iframe_html))
        .route("/{server}/{session}/xhr", post(xhr).options(options_post))
        .route("/{server}/{session}/xhr_streaming", post(xhr_streaming).options(options_post))
        .route("/{server}/{session}/xhr_send", post(xhr_send).options(options_post))
        .route("/{server}/{session}/eventsource", get(eventsource))
        .route("/{server}/{session}/htmlfile", get(htmlfile))
        .route("/{server}/{session}/jsonp", get(jsonp))
        .route("/{server}/{session}/jsonp_send", post(jsonp_send))
        .route("/{server}/{session}/websocket", get(framed_websocket))
        .with_state(shared)
}

// ---------------------------------------------------------------------------
// Link halves
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CloseReason {
    code: u16,
    reason: &'static str,
}

const GO_AWAY: CloseReason = CloseReason { code: 3000, reason: "Go away!" };
const ANOTHER_CONNECTION: CloseReason = CloseReason { code: 2010, reason: "Another connection still open" };
const INTERRUPTED: CloseReason = CloseReason { code: 1002, reason: "Connection interrupted" };
const OVERFLOW: CloseReason = CloseReason { code: 3001, reason: "Too many pending messages" };
const TIMED_OUT: CloseReason = CloseReason { code: 3002, reason: "Session timed out" };

struct Session {
    state: Mutex<SessionState>,
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

struct SessionState {
    outbox: VecDeque<String>,
    /// The `o` frame has been handed to a receiver.
    opened: bool,
    close: Option<CloseReason>,
    /// Id of the receiving connection attached, if any.
    receiver: Option<u64>,
    next_receiver: u64,
    /// Since when no receiver is attached.
    idle_since: Instant,
}

impl Session {
    fn new(config: &SockJsConfig, owner: Option<IpAddr>) -> (Arc<Session>, SockJsRx, SockJsTx) {
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

    fn owned_by(&self, peer: &Peer) -> bool {
        self.owner == peer.addr.map(|a| a.ip())
    }

    /// Closes the session (first reason wins). `GO_AWAY` keeps queued messages
    /// so a receiver gets them before the close frame; other reasons drop them.
    fn close(&self, reason: CloseReason) {
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
    async fn deliver(&self, msgs: Vec<String>) {
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
    fn attach(self: &Arc<Self>, heartbeat: Duration) -> Result<Receiver, CloseReason> {
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

enum Frame {
    Open,
    Heartbeat,
    Messages(VecDeque<String>),
    Close(CloseReason),
}

impl Frame {
    fn encode(&self) -> String {
        match self {
            Frame::Open => "o".to_owned(),
            Frame::Heartbeat => "h".to_owned(),
            Frame::Messages(msgs) => encode_messages(msgs),
            Frame::Close(c) => close_frame(*c),
        }
    }
}

pub(crate) fn encode_messages<'a>(msgs: impl IntoIterator<Item = &'a String>) -> String {
    let mut out = String::from("a[");
    for (i, m) in msgs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, m);
    }
    out.push(']');
    out
}

fn close_frame(c: CloseReason) -> String {
    let mut out = format!("c[{},", c.code);
    push_json_string(&mut out, c.reason);
    out.push(']');
    out
}

/// A receiving connection attached to a session. Detaches on drop; a drop
/// before [`Receiver::release`] means the client went away mid-response, which
/// closes the session (`1002 Connection interrupted`), as SockJS servers do.
struct Receiver {
    session: Arc<Session>,
    id: u64,
    heartbeat: Duration,
    last_write: Instant,
    released: bool,
}

impl Receiver {
    /// Waits for the next frame to send. Cancel-safe: state is only taken
    /// from the session right before returning.
    async fn next_frame(&mut self) -> Frame {
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

    fn wrote(&mut self) {
        self.last_write = Instant::now();
    }

    /// Detaches normally (response complete).
    fn release(&mut self) {
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

struct Shared {
    config: SockJsConfig,
    on_session: OnSession,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    sweeper_started: AtomicBool,
    iframe: String,
    iframe_etag: String,
}

impl Shared {
    /// The session `id`, if it exists and belongs to `peer`'s address.
    fn get(&self, id: &str, peer: &Peer) -> Option<Arc<Session>> {
        self.sessions.lock().get(id).filter(|s| s.owned_by(peer)).cloned()
    }

    /// The session `id`, created (and handed to the app) if unknown;
    /// `None` when it belongs to another address.
    fn get_or_create(self: &Arc<Self>, id: &str, peer: Peer) -> Option<Arc<Session>> {
        let mut created = None;
        let session = {
            let mut map = self.sessions.lock();
            match map.get(id) {
                Some(s) if !s.owned_by(&peer) => return None,
                Some(s) => s.clone(),
                None => {
                    let (s, rx, tx) = Session::new(&self.config, peer.addr.map(|a| a.ip()));
                    map.insert(id.to_owned(), s.clone());
                    created = Some((rx, tx));
                    s
                }
            }
        };
        if let Some((rx, tx)) = created {
            self.start_sweeper();
            (self.on_session)(rx, tx, peer);
        }
        Some(session)
    }

    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let every = (self.config.disconnect_delay / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(sweep(Arc::downgrade(self), every));
    }
}

/// Drops sessions whose receiver has been gone longer than `disconnect_delay`.
async fn sweep(shared: Weak<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let delay = shared.config.disconnect_delay;
        let now = Instant::now();
        let mut dead = Vec::new();
        shared.sessions.lock().retain(|_, s| {
            let st = s.state.lock();
            let keep = st.receiver.is_some() || now.saturating_duration_since(st.idle_since) < delay;
            if !keep {
                dead.push(s.clone());
            }
            keep
        });
        for s in dead {
            s.close(TIMED_OUT);
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------

/// The peer of a request (address when the server provides `ConnectInfo`).
struct PeerInfo(Peer);

impl<S: Send + Sync> FromRequestParts<S> for PeerInfo {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let addr = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        Ok(PeerInfo(Peer { addr, transport: "sockjs" }))
    }
}

#[derive(Deserialize)]
struct Ids {
    server: String,
    session: String,
}

impl Ids {
    /// Neither part may be empty or contain a dot.
    fn valid(&self) -> bool {
        let ok = |s: &str| !s.is_empty() && !s.contains('.');
        ok(&self.server) && ok(&self.session)
    }
}

type Sh = State<Arc<Shared>>;

fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

fn response(status: StatusCode, content_type: Option<&'static str>, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

fn set(resp: &mut Response, name: HeaderName, value: &'static str) {
    resp.headers_mut().insert(name, HeaderValue::from_static(value));
}

fn no_cache(resp: &mut Response) {
    set(resp, header::CACHE_CONTROL, NO_CACHE);
}

fn cache_for_a_year(resp: &mut Response) {
    set(resp, header::CACHE_CONTROL, CACHE_YEAR);
    let expires = http_date(SystemTime::now() + Duration::from_secs(ONE_YEAR_SECS));
    if let Ok(v) = HeaderValue::from_str(&expires) {
        resp.headers_mut().insert(header::EXPIRES, v);
    }
}

/// CORS as configured (`connections.cors_origins`, `cors_credentials`):
/// any origin without credentials by default. SockJS servers traditionally
/// echo the origin with credentials, which lets any page make credentialed
/// requests; sockjs-client's XHR transports ask for credentials, so pages on
/// another origin need `cors_credentials` and their origin listed.
fn cors(config: &Cors, req: &HeaderMap, resp: &mut Response) {
    config.apply(req, resp.headers_mut());
    if let Some(v) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS).filter(|v| !v.is_empty()) {
        resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
    }
}

/// A request from a page whose origin is not allowed.
fn forbidden_origin() -> Response {
    response(StatusCode::FORBIDDEN, Some(TEXT), Body::from("origin not allowed (connections.cors_origins)\n"))
}

fn error500(msg: &'static str) -> Response {
    response(StatusCode::INTERNAL_SERVER_ERROR, Some(TEXT), Body::from(msg))
}

/// RFC 7231 IMF-fixdate.
fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------
// Static endpoints
// ---------------------------------------------------------------------------

async fn greeting() -> Response {
    response(StatusCode::OK, Some(TEXT), Body::from("Welcome to SockJS!\n"))
}

async fn info(State(shared): Sh, headers: HeaderMap) -> Response {
    let body = format!(
        "{{\"websocket\":{},\"origins\":[\"*:*\"],\"cookie_needed\":false,\"entropy\":{}}}",
        shared.config.websocket,
        rand::random::<u32>()
    );
    let mut resp = response(StatusCode::OK, Some("application/json; charset=UTF-8"), Body::from(body));
    no_cache(&mut resp);
    cors(&shared.config.cors, &headers, &mut resp);
    resp
}

fn options(shared: &Shared, headers: &HeaderMap, methods: &'static str) -> Response {
    let mut resp = response(StatusCode::NO_CONTENT, None, Body::empty());
    cache_for_a_year(&mut resp);
    set(&mut resp, header::ACCESS_CONTROL_MAX_AGE, "31536000");
    set(&mut resp, header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    cors(&shared.config.cors, headers, &mut resp);
    resp
}

async fn options_get(State(shared): Sh, headers: HeaderMap) -> Response {
    options(&shared, &headers, "OPTIONS, GET")
}

async fn options_post(State(shared): Sh, headers: HeaderMap) -> Response {
    options(&shared, &headers, "OPTIONS, POST")
}

fn iframe_page(sockjs_url: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script>
    document.domain = document.domain;
    _sockjs_onload = function(){{SockJS.bootstrap_iframe();}};
  </script>
  <script src="{sockjs_url}"></script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"#
    )
}

/// `/iframe.html` and versioned variants like `/iframe-1.6.1.html`.
async fn iframe_html(State(shared): Sh, Path(file): Path<String>, headers: HeaderMap) -> Response {
    let valid = file
        .strip_prefix("iframe")
        .and_then(|rest| rest.strip_suffix(".html"))
        .is_some_and(|mid| mid.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)));
    if !valid {
        return not_found();
    }
    let etag = shared.iframe_etag.as_str();
    let mut resp = if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        response(StatusCode::NOT_MODIFIED, None, Body::empty())
    } else {
        response(StatusCode::OK, Some(HTML), Body::from(shared.iframe.clone()))
    };
    cache_for_a_year(&mut resp);
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

// ---------------------------------------------------------------------------
// Receiving transports over HTTP
// ---------------------------------------------------------------------------

/// How frames are wrapped on the wire.
enum Wrap {
    Xhr,
    EventSource,
    HtmlFile,
    Jsonp(String),
}

impl Wrap {
    fn frame(&self, frame: &str) -> Bytes {
        let mut out = String::with_capacity(frame.len() + 32);
        match self {
            Wrap::Xhr => {
                out.push_str(frame);
                out.push('\n');
            }
            Wrap::EventSource => {
                out.push_str("data: ");
                out.push_str(frame);
                out.push_str("\r\n\r\n");
            }
            Wrap::HtmlFile => {
                out.push_str("<script>\np(");
                push_json_string(&mut out, frame);
                out.push_str(");\n</script>\r\n");
            }
            Wrap::Jsonp(callback) => {
                out.push_str(callback);
                out.push('(');
                push_json_string(&mut out, frame);
                out.push_str(");\r\n");
            }
        }
        Bytes::from(out)
    }
}

struct Streamer {
    rx: Receiver,
    wrap: Wrap,
    prelude: Option<Bytes>,
    streaming: bool,
    sent: usize,
    limit: usize,
    done: bool,
}

/// The body of a receiving request: attaches to (or creates) the session and
/// streams frames; a polling request ends after one frame, a streaming one
/// after a close frame or `response_limit` bytes.
fn receive(
    shared: &Arc<Shared>,
    id: &str,
    peer: Peer,
    streaming: bool,
    wrap: Wrap,
    prelude: Option<Bytes>,
) -> Option<Body> {
    let session = shared.get_or_create(id, peer)?;
    let rx = match session.attach(shared.config.heartbeat) {
        Ok(rx) => rx,
        Err(reason) => {
            let mut out = BytesMut::new();
            if let Some(p) = prelude {
                out.extend_from_slice(&p);
            }
            out.extend_from_slice(&wrap.frame(&close_frame(reason)));
            return Some(Body::from(out.freeze()));
        }
    };
    let streamer = Streamer { rx, wrap, prelude, streaming, sent: 0, limit: shared.config.response_limit, done: false };
    Some(Body::from_stream(futures_util::stream::unfold(streamer, |mut s| async move {
        if let Some(p) = s.prelude.take() {
            return Some((Ok::<_, Infallible>(p), s));
        }
        if s.done {
            return None;
        }
        let frame = s.rx.next_frame().await;
        let out = s.wrap.frame(&frame.encode());
        s.rx.wrote();
        s.sent += out.len();
        if !s.streaming || matches!(frame, Frame::Close(_)) || s.sent >= s.limit {
            s.done = true;
            s.rx.release();
        }
        Some((Ok(out), s))
    })))
}

fn receiving_response(
    shared: &Shared,
    content_type: &'static str,
    body: Option<Body>,
    headers: &HeaderMap,
) -> Response {
    let Some(body) = body else { return not_found() };
    let mut resp = response(StatusCode::OK, Some(content_type), body);
    no_cache(&mut resp);
    cors(&shared.config.cors, headers, &mut resp);
    resp
}

async fn xhr(State(shared): Sh, Path(ids): Path<Ids>, PeerInfo(peer): PeerInfo, headers: HeaderMap) -> Response {
    if !ids.valid() {
        return not_found();
    }
    if !shared.config.cors.allowed(&headers) {
        return forbidden_origin();
    }
    let body = receive(&shared, &ids.session, peer, false, Wrap::Xhr, None);
    receiving_response(&shared, JS, body, &headers)
}

async fn xhr_streaming(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    PeerInfo(peer): PeerInfo,
    headers: HeaderMap,
) -> Response {
    if !ids.valid() {
        return not_found();
    }
    if !shared.config.cors.allowed(&headers) {
        return forbidden_origin();
    }
    let mut prelude = vec![b'h'; XHR_STREAMING_PRELUDE];
    prelude.push(b'\n');
    let body = receive(&shared, &ids.session, peer, true, Wrap::Xhr, Some(Bytes::from(prelude)));
    receiving_response(&shared, JS, body, &headers)
}

async fn eventsource(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    PeerInfo(peer): PeerInfo,
    headers: HeaderMap,
) -> Response {
    if !ids.valid() {
        return not_found();
    }
    if !shared.config.cors.allowed(&headers) {
        return forbidden_origin();
    }
    let body = receive(&shared, &ids.session, peer, true, Wrap::EventSource, Some(Bytes::from_static(b"\r\n")));
    receiving_response(&shared, "text/event-stream; charset=UTF-8", body, &headers)
}

/// The `c` query parameter of htmlfile / jsonp.
fn callback(query: Result<Query<HashMap<String, String>>, QueryRejection>) -> Result<String, &'static str> {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    match query.get("c").filter(|c| !c.is_empty()) {
        None => Err("\"callback\" parameter required"),
        Some(c) if !c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) => {
            Err("invalid \"callback\" parameter")
        }
        Some(c) => Ok(c.clone()),
    }
}

async fn htmlfile(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    PeerInfo(peer): PeerInfo,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if !ids.valid() {
        return not_found();
    }
    if !shared.config.cors.allowed(&headers) {
        return forbidden_origin();
    }
    let callback = match callback(query) {
        Ok(c) => c,
        Err(msg) => return error500(msg),
    };
    let mut prelude = format!(
        r#"<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.{callback};
    c.start();
    function p(d) {{c.message(d);}};
    window.onload = function() {{c.stop();}};
  </script>"#
    );
    // Old IE renders nothing before 1 KiB has arrived.
    while prelude.len() < 1024 {
        prelude.push(' ');
    }
    prelude.push_str("\r\n\r\n");
    let body = receive(&shared, &ids.session, peer, true, Wrap::HtmlFile, Some(Bytes::from(prelude)));
    receiving_response(&shared, HTML, body, &headers)
}

async fn jsonp(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    PeerInfo(peer): PeerInfo,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if !ids.valid() {
        return not_found();
    }
    if !shared.config.cors.allowed(&headers) {
        return forbidden_origin();
    }
    let callback = match callback(query) {
        Ok(c) => c,
        Err(msg) => return error500(msg),
    };
    let body = receive(&shared, &ids.session, peer, false, Wrap::Jsonp(callback), None);
    receiving_response(&shared, JS, body, &headers)
}

// ---------------------------------------------------------------------------
// Sending endpoints
// ---------------------------------------------------------------------------

/// Client messages: a JSON array of strings, or (websocket) a single string.
pub(crate) fn parse_messages(data: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    match data.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'"') => serde_json::from_slice::<String>(data).map(|m| vec![m]),
        _ => serde_json::from_slice::<Vec<String>>(data),
    }
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize, deadline: Duration) -> Result<Bytes, Response> {
    let too_large = || response(StatusCode::PAYLOAD_TOO_LARGE, Some(TEXT), Body::from("Payload too large."));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(r) => r.map_err(|_| too_large()),
        Err(_) => Err(response(
            StatusCode::REQUEST_TIMEOUT,
            Some(TEXT),
            Body::from("request body not complete in time (connections.body_timeout_ms)\n"),
        )),
    }
}

enum SendOutcome {
    Unknown,
    Error(Response),
    Delivered,
}

async fn send_messages(
    shared: &Shared,
    ids: &Ids,
    peer: &Peer,
    headers: &HeaderMap,
    body: Body,
    form: bool,
) -> SendOutcome {
    if !ids.valid() {
        return SendOutcome::Unknown;
    }
    if !shared.config.cors.allowed(headers) {
        return SendOutcome::Error(forbidden_origin());
    }
    let Some(session) = shared.get(&ids.session, peer) else {
        return SendOutcome::Unknown;
    };
    let data = match read_body(headers, body, shared.config.max_inbound_bytes, shared.config.body_timeout).await {
        Ok(d) => d,
        Err(resp) => return SendOutcome::Error(resp),
    };
    let data = if form { form_field(&data, "d").map(Bytes::from).unwrap_or_default() } else { data };
    if data.is_empty() {
        return SendOutcome::Error(error500("Payload expected."));
    }
    let Ok(msgs) = parse_messages(&data) else {
        return SendOutcome::Error(error500("Broken JSON encoding."));
    };
    session.deliver(msgs).await;
    SendOutcome::Delivered
}

async fn xhr_send(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    PeerInfo(peer): PeerInfo,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut resp = match send_messages(&shared, &ids, &peer, &headers, body, false).await {
        SendOutcome::Unknown => not_found(),
        SendOutcome::Error(resp) => resp,
        SendOutcome::Delivered => response(StatusCode::NO_CONTENT, Some(TEXT), Body::empty()),
    };
    no_cache(&mut resp);
    cors(&shared.config.cors, &headers, &mut resp);
    resp
}

async fn jsonp_send(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    PeerInfo(peer): PeerInfo,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let mut resp = match send_messages(&shared, &ids, &peer, &headers, body, form).await {
        SendOutcome::Unknown => not_found(),
        SendOutcome::Error(resp) => resp,
        SendOutcome::Delivered => response(StatusCode::OK, Some(TEXT), Body::from("ok")),
    };
    no_cache(&mut resp);
    cors(&shared.config.cors, &headers, &mut resp);
    resp
}

/// Value of `name` in an `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let key = url_decode(kv.next()?);
        (key == name.as_bytes()).then(|| url_decode(kv.next().unwrap_or_default()))
    })
}

fn url_decode(s: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Websocket transports
// ---------------------------------------------------------------------------

async fn framed_websocket(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    PeerInfo(peer): PeerInfo,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !ids.valid() || !shared.config.websocket {
        return not_found();
    }
    if !shared.config.cors.allowed(&headers) {
        return forbidden_origin();
    }
    websocket(shared, peer, upgrade, true)
}

async fn raw_websocket(
    State(shared): Sh,
    PeerInfo(peer): PeerInfo,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !shared.config.websocket {
        return not_found();
    }
    if !shared.config.cors.allowed(&headers) {
        return forbidden_origin();
    }
    websocket(shared, peer, upgrade, false)
}

fn websocket(
    shared: Arc<Shared>,
    peer: Peer,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    framed: bool,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return response(StatusCode::BAD_REQUEST, Some(TEXT), Body::from("Can \"Upgrade\" only to \"WebSocket\"."));
    };
    let limit = shared.config.max_inbound_bytes;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(crate::transport::WS_READ_BUFFER)
        .on_upgrade(move |socket| run_websocket(shared, socket, peer, framed))
}

/// A websocket session lives exactly as long as its websocket: it is not in
/// the session table (SockJS allows reusing a session id over websockets).
async fn run_websocket(shared: Arc<Shared>, mut socket: WebSocket, peer: Peer, framed: bool) {
    let (session, rx, tx) = Session::new(&shared.config, peer.addr.map(|a| a.ip()));
    if !framed {
        session.state.lock().opened = true;
    }
    (shared.on_session)(rx, tx, peer);
    let Ok(mut recv) = session.attach(shared.config.heartbeat) else {
        return;
    };
    let mut close_sent = false;
    loop {
        tokio::select! {
            frame = recv.next_frame() => {
                recv.wrote();
                let sent = match (&frame, framed) {
                    (Frame::Messages(msgs), false) => {
                        let mut ok = true;
                        for m in msgs {
                            if socket.send(Message::text(m.as_str())).await.is_err() {
                                ok = false;
                                break;
                            }
                        }
                        ok
                    }
                    (Frame::Heartbeat, false) => socket.send(Message::Ping(Bytes::new())).await.is_ok(),
                    (Frame::Close(_), false) | (Frame::Open, false) => true,
                    (frame, true) => socket.send(Message::text(frame.encode())).await.is_ok(),
                };
                if !sent {
                    break;
                }
                if let Frame::Close(c) = frame {
                    let code = if framed { 1000 } else { c.code };
                    let close = WsCloseFrame { code, reason: c.reason.into() };
                    close_sent = socket.send(Message::Close(Some(close))).await.is_ok();
                    break;
                }
            }
            msg = socket.recv() => {
                let data = match msg {
                    Some(Ok(Message::Text(t))) => Bytes::from(t),
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                if data.is_empty() {
                    continue;
                }
                let msgs = if framed {
                    match parse_messages(&data) {
                        Ok(msgs) => msgs,
                        // Broken JSON: terminate abruptly, as the spec wants.
                        Err(_) => break,
                    }
                } else {
                    vec![String::from_utf8_lossy(&data).into_owned()]
                };
                session.deliver(msgs).await;
            }
        }
    }
    recv.release();
    session.close(INTERRUPTED);
    if close_sent {
        // Give the client a moment to answer the close handshake.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(msg)) = socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// JSON string encoding
// ---------------------------------------------------------------------------

/// Characters sent as `\uXXXX`: the sockjs-protocol list of characters
/// browsers mangle (control characters, invisible formatting characters, the
/// `\ufff0-\uffff` specials) plus everything outside the BMP (as surrogate
/// pairs, like JavaScript servers do).
pub(crate) fn must_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{ad}'
        | '\u{600}'..='\u{604}'
        | '\u{70f}'
        | '\u{17b4}'
        | '\u{17b5}'
        | '\u{200c}'..='\u{200f}'
        | '\u{2028}'..='\u{202f}'
        | '\u{2060}'..='\u{206f}'
        | '\u{feff}'
        | '\u{fff0}'..='\u{ffff}'
        | '\u{10000}'..)
}

/// Appends `s` as a JSON string literal, escaped as sockjs-client expects.
fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            c if must_escape(c) => Some(""),
            _ => None,
        };
        let Some(esc) = esc else { continue };
        out.push_str(&s[start..i]);
        start = i + c.len_utf8();
        if !esc.is_empty() {
            out.push_str(esc);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{:04x}", unit);
            }
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::Message as WsMsg;

    const WAIT: Duration = Duration::from_secs(10);

    /// Echoes every client message back as one message, flushing each.
    fn echo() -> OnSession {
        Arc::new(|mut rx: SockJsRx, mut tx: SockJsTx, _peer: Peer| {
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while let Ok(n) = rx.recv(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let unit = buf.split().freeze();
                    if tx.feed(unit).await.is_err() || tx.flush().await.is_err() {
                        break;
                    }
                }
                tx.close().await;
            });
        })
    }

    /// Closes every session at once.
    fn closer() -> OnSession {
        Arc::new(|_rx: SockJsRx, mut tx: SockJsTx, _peer: Peer| {
            tokio::spawn(async move { tx.close().await });
        })
    }

    async fn serve(config: SockJsConfig, on_session: OnSession) -> SocketAddr {
        let app = Router::new().nest("/stomp", router(config, on_session));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        addr
    }

    async fn serve_echo() -> SocketAddr {
        serve(SockJsConfig::default(), echo()).await
    }

    fn sid() -> String {
        format!("s{:016x}", rand::random::<u64>())
    }

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
    }

    /// A raw HTTP/1.1 client connection, one request per connection.
    struct Conn {
        stream: TcpStream,
        buf: Vec<u8>,
        status: u16,
        headers: Vec<(String, String)>,
        chunked: bool,
    }

    impl Conn {
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

        async fn open(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Conn {
            let stream = Self::send_request(addr, method, path, headers, body).await;
            let mut conn = Conn { stream, buf: Vec::new(), status: 0, headers: Vec::new(), chunked: false };
            let head = conn.read_until(b"\r\n\r\n").await.expect("response head");
            let head = String::from_utf8(head).unwrap();
            let mut lines = head.split("\r\n");
            conn.status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
            for line in lines.filter(|l| !l.is_empty()) {
                let (k, v) = line.split_once(':').unwrap();
                conn.headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            conn.chunked = conn
                .headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
            conn
        }

        /// Reads more bytes; false at EOF.
        async fn fill(&mut self) -> bool {
            let mut tmp = [0u8; 16 * 1024];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut tmp)).await.expect("read timed out").unwrap_or(0);
            self.buf.extend_from_slice(&tmp[..n]);
            n > 0
        }

        async fn read_until(&mut self, pat: &[u8]) -> Option<Vec<u8>> {
            loop {
                if let Some(pos) = self.buf.windows(pat.len()).position(|w| w == pat) {
                    let rest = self.buf.split_off(pos + pat.len());
                    return Some(std::mem::replace(&mut self.buf, rest));
                }
                if !self.fill().await {
                    return None;
                }
            }
        }

        async fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
            while self.buf.len() < n {
                if !self.fill().await {
                    return None;
                }
            }
            let rest = self.buf.split_off(n);
            Some(std::mem::replace(&mut self.buf, rest))
        }

        /// The next chunk of a chunked body; `None` at its end.
        async fn chunk(&mut self) -> Option<Vec<u8>> {
            assert!(self.chunked, "response is not chunked");
            let line = self.read_until(b"\r\n").await?;
            let size = usize::from_str_radix(std::str::from_utf8(&line).unwrap().trim(), 16).unwrap();
            if size == 0 {
                return None;
            }
            let data = self.read_exact(size + 2).await?;
            Some(data[..size].to_vec())
        }

        async fn chunk_text(&mut self) -> Option<String> {
            self.chunk().await.map(|c| String::from_utf8(c).unwrap())
        }

        async fn finish(mut self) -> Resp {
            let mut body = Vec::new();
            if self.chunked {
                while let Some(c) = self.chunk().await {
                    body.extend_from_slice(&c);
                }
            } else {
                while self.fill().await {}
                body = std::mem::take(&mut self.buf);
            }
            Resp { status: self.status, headers: self.headers, body }
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        Conn::open(addr, method, path, headers, body).await.finish().await
    }

    async fn post(addr: SocketAddr, path: &str, body: &str) -> Resp {
        request(addr, "POST", path, &[], body.as_bytes()).await
    }

    async fn get(addr: SocketAddr, path: &str) -> Resp {
        request(addr, "GET", path, &[], b"").await
    }

    fn assert_no_cache(r: &Resp) {
        assert_eq!(r.header("cache-control"), Some(NO_CACHE));
    }

    /// The default CORS answer: any origin, never credentials.
    fn assert_cors(r: &Resp, origin: &str) {
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), None);
    }

    #[tokio::test]
    async fn greeting_info_and_iframe() {
        let addr = serve_echo().await;
        let r = get(addr, "/stomp").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "Welcome to SockJS!\n");
        assert_eq!(r.header("content-type"), Some(TEXT));
        assert!(r.header("set-cookie").is_none());

        let r = get(addr, "/stomp/info").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json; charset=UTF-8"));
        assert_no_cache(&r);
        assert_cors(&r, "*");
        let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(info["websocket"], true);
        assert_eq!(info["cookie_needed"], false);
        assert_eq!(info["origins"], serde_json::json!(["*:*"]));
        let e1 = info["entropy"].as_u64().unwrap();
        let r = get(addr, "/stomp/info").await;
        let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_ne!(info["entropy"].as_u64().unwrap(), e1);

        let r = get(addr, "/stomp/iframe.html").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(HTML));
        assert!(r.text().contains("SockJS.bootstrap_iframe()"));
        assert!(r.header("cache-control").unwrap().contains("max-age=31536000"));
        assert!(r.header("expires").unwrap().ends_with(" GMT"));
        let etag = r.header("etag").unwrap().to_owned();
        let r = request(addr, "GET", "/stomp/iframe.html", &[("If-None-Match", &etag)], b"").await;
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        assert!(r.header("content-type").is_none());
        for ok in ["/stomp/iframe-a.html", "/stomp/iframe-.html", "/stomp/iframe-0.1.2abc-dirty.2144.html?t=1"] {
            assert_eq!(get(addr, ok).await.status, 200, "{ok}");
        }
        for bad in ["/stomp/iframe.htm", "/stomp/IFRAME.HTML", "/stomp/iframe-/.html", "/stomp/a", "/stomp/a/a"] {
            assert_eq!(get(addr, bad).await.status, 404, "{bad}");
        }
    }

    #[tokio::test]
    async fn info_reports_disabled_websocket() {
        let config = SockJsConfig { websocket: false, ..Default::default() };
        let addr = serve(config, echo()).await;
        let info: serde_json::Value = serde_json::from_slice(&get(addr, "/stomp/info").await.body).unwrap();
        assert_eq!(info["websocket"], false);
        assert_eq!(get(addr, "/stomp/000/abc/websocket").await.status, 404);
    }

    #[tokio::test]
    async fn xhr_polling_echo() {
        let addr = serve_echo().await;
        let s = sid();
        let r = post(addr, &format!("/stomp/000/{s}/xhr"), "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "o\n");
        assert_eq!(r.header("content-type"), Some(JS));
        assert_no_cache(&r);
        assert_cors(&r, "*");

        let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a"]"#).await;
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-type"), Some(TEXT));
        assert_no_cache(&r);
        // The server id is ignored.
        let r = post(addr, &format!("/stomp/999/{s}/xhr"), "").await;
        assert_eq!(r.text(), "a[\"a\"]\n");

        // A poll that waits gets the echo when it arrives.
        let path = format!("/stomp/000/{s}/xhr");
        let waiting = tokio::spawn(async move { post(addr, &path, "").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x\u2028y\"z"]"#).await;
        assert_eq!(r.status, 204);
        assert_eq!(waiting.await.unwrap().text(), "a[\"x\\u2028y\\\"z\"]\n");
    }

    #[tokio::test]
    async fn invalid_session_paths() {
        let addr = serve_echo().await;
        for p in ["/stomp/a./a/xhr", "/stomp/a/a./xhr", "/stomp/./././xhr"] {
            assert_eq!(post(addr, p, "").await.status, 404, "{p}");
        }
        for p in ["/stomp/_/_/xhr", "/stomp/1/1/xhr", "/stomp/abcdefgh_i-j%20/abcdefg_i-j%20/xhr"] {
            let r = post(addr, p, "").await;
            assert_eq!((r.status, r.text().as_str()), (200, "o\n"), "{p}");
        }
    }

    #[tokio::test]
    async fn xhr_send_errors() {
        let config = SockJsConfig { max_inbound_bytes: 1024, ..Default::default() };
        let addr = serve(config, echo()).await;
        let r = post(addr, "/stomp/000/bad_session/xhr_send", r#"["a"]"#).await;
        assert_eq!(r.status, 404);

        let s = sid();
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
        let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x"#).await;
        assert_eq!(r.status, 500);
        assert!(r.text().contains("Broken JSON encoding."));
        let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), "").await;
        assert_eq!(r.status, 500);
        assert!(r.text().contains("Payload expected."));
        let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"{"a":1}"#).await;
        assert_eq!(r.status, 500);

        // Oversize body: rejected, whether announced or not.
        let big = format!("[\"{}\"]", "x".repeat(2000));
        let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), &big).await;
        assert_eq!(r.status, 413);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /stomp/000/{s}/xhr_send HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await.unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 413"));

        let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a"]"#).await;
        assert_eq!(r.status, 204);
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "a[\"a\"]\n");
    }

    #[tokio::test]
    async fn xhr_streaming_frames_and_limit() {
        let config = SockJsConfig { response_limit: 4096, ..Default::default() };
        let addr = serve(config, echo()).await;
        let s = sid();
        let mut c = Conn::open(addr, "POST", &format!("/stomp/000/{s}/xhr_streaming"), &[], b"").await;
        assert_eq!(c.status, 200);
        assert_eq!(c.header("content-type"), Some(JS));
        assert_eq!(c.header("cache-control"), Some(NO_CACHE));
        assert_eq!(c.header("access-control-allow-origin"), Some("*"));
        assert_eq!(c.chunk_text().await.unwrap(), format!("{}\n", "h".repeat(2048)));
        assert_eq!(c.chunk_text().await.unwrap(), "o\n");

        let msg = format!("\"{}\"", "x".repeat(128));
        for _ in 0..31 {
            let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), &format!("[{msg}]")).await;
            assert_eq!(r.status, 204);
            assert_eq!(c.chunk_text().await.unwrap(), format!("a[{msg}]\n"));
        }
        // 4 KiB of frames delivered: the response ends.
        assert_eq!(c.chunk_text().await, None);

        // The session lives on: the next request continues it.
        let mut c = Conn::open(addr, "POST", &format!("/stomp/000/{s}/xhr_streaming"), &[], b"").await;
        c.chunk().await.unwrap();
        post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["again"]"#).await;
        assert_eq!(c.chunk_text().await.unwrap(), "a[\"again\"]\n");
    }

    #[tokio::test]
    async fn eventsource_framing() {
        let addr = serve_echo().await;
        let s = sid();
        let mut c = Conn::open(addr, "GET", &format!("/stomp/000/{s}/eventsource"), &[], b"").await;
        assert_eq!(c.status, 200);
        assert_eq!(c.header("content-type"), Some("text/event-stream; charset=UTF-8"));
        assert_eq!(c.header("cache-control"), Some(NO_CACHE));
        assert_eq!(c.chunk_text().await.unwrap(), "\r\n");
        assert_eq!(c.chunk_text().await.unwrap(), "data: o\r\n\r\n");
        post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x"]"#).await;
        assert_eq!(c.chunk_text().await.unwrap(), "data: a[\"x\"]\r\n\r\n");
        post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["  \u0000\n\r "]"#).await;
        assert_eq!(c.chunk_text().await.unwrap(), "data: a[\"  \\u0000\\n\\r \"]\r\n\r\n");
    }

    #[tokio::test]
    async fn htmlfile_and_jsonp() {
        let addr = serve_echo().await;
        let s = sid();
        let mut c = Conn::open(addr, "GET", &format!("/stomp/000/{s}/htmlfile?c=%63allback"), &[], b"").await;
        assert_eq!(c.status, 200);
        assert_eq!(c.header("content-type"), Some(HTML));
        let prelude = c.chunk_text().await.unwrap();
        assert!(prelude.len() > 1024);
        assert!(prelude.contains("var c = parent.callback;"));
        assert_eq!(c.chunk_text().await.unwrap(), "<script>\np(\"o\");\n</script>\r\n");
        post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x"]"#).await;
        assert_eq!(c.chunk_text().await.unwrap(), "<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n");
        let r = get(addr, "/stomp/a/a/htmlfile").await;
        assert_eq!(r.status, 500);
        assert!(r.text().contains("\"callback\" parameter required"));
        assert_eq!(get(addr, "/stomp/a/a/htmlfile?c=a(b)").await.status, 500);

        let s = sid();
        let r = get(addr, &format!("/stomp/000/{s}/jsonp?c=%63allback")).await;
        assert_eq!(r.header("content-type"), Some(JS));
        assert_no_cache(&r);
        assert_eq!(r.text(), "callback(\"o\");\r\n");
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let r = request(addr, "POST", &format!("/stomp/000/{s}/jsonp_send"), &form, b"d=%5B%22x%22%5D").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        for bad in ["", "d=", "p=p"] {
            let r = request(addr, "POST", &format!("/stomp/000/{s}/jsonp_send"), &form, bad.as_bytes()).await;
            assert_eq!(r.status, 500);
            assert!(r.text().contains("Payload expected."));
        }
        let r = request(
            addr,
            "POST",
            &format!("/stomp/000/{s}/jsonp_send"),
            &[("Content-Type", "text/plain")],
            br#"["%61bc"]"#,
        )
        .await;
        assert_eq!(r.text(), "ok");
        let mut got = String::new();
        while !got.contains("%61bc") {
            got.push_str(&get(addr, &format!("/stomp/000/{s}/jsonp?c=x")).await.text());
        }
        assert!(got.starts_with("x(\"a[\\\"x\\\""), "{got}");
        assert!(got.ends_with("\\\"%61bc\\\"]\");\r\n"), "{got}");
    }

    #[tokio::test]
    async fn second_receiver_gets_2010() {
        let addr = serve_echo().await;
        let s = sid();
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
        let path = format!("/stomp/000/{s}/xhr");
        let first = tokio::spawn(async move { post(addr, &path, "").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = post(addr, &format!("/stomp/000/{s}/xhr"), "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "c[2010,\"Another connection still open\"]\n");
        // Streaming transports: prelude, then the close frame, then the end.
        let body = post(addr, &format!("/stomp/000/{s}/xhr_streaming"), "").await.text();
        assert_eq!(body, format!("{}\nc[2010,\"Another connection still open\"]\n", "h".repeat(2048)));
        // The first poll is unaffected.
        post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x"]"#).await;
        assert_eq!(first.await.unwrap().text(), "a[\"x\"]\n");
    }

    #[tokio::test]
    async fn app_close_sends_go_away() {
        let addr = serve(SockJsConfig::default(), closer()).await;
        let s = sid();
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
        for _ in 0..2 {
            assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "c[3000,\"Go away!\"]\n");
        }
        let s = sid();
        let mut c = Conn::open(addr, "POST", &format!("/stomp/000/{s}/xhr_streaming"), &[], b"").await;
        c.chunk().await.unwrap();
        assert_eq!(c.chunk_text().await.unwrap(), "o\n");
        assert_eq!(c.chunk_text().await.unwrap(), "c[3000,\"Go away!\"]\n");
        assert_eq!(c.chunk().await, None);

        let url = format!("ws://{addr}/stomp/000/{s}/websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("o"));
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("c[3000,\"Go away!\"]"));
        assert!(matches!(ws.next().await, Some(Ok(WsMsg::Close(_))) | None | Some(Err(_))));
    }

    #[tokio::test]
    async fn session_times_out() {
        let config = SockJsConfig { disconnect_delay: Duration::from_millis(200), ..Default::default() };
        let (ended_tx, mut ended) = mpsc::unbounded_channel();
        let on_session: OnSession = Arc::new(move |mut rx: SockJsRx, tx: SockJsTx, peer: Peer| {
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let _tx = tx;
                let mut buf = BytesMut::new();
                while rx.recv(&mut buf).await.unwrap() > 0 {}
                ended_tx.send((buf, peer)).unwrap();
            });
        });
        let addr = serve(config, on_session).await;
        let s = sid();
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a","","b"]"#).await.status, 204);
        let start = Instant::now();
        let (got, peer) = tokio::time::timeout(WAIT, ended.recv()).await.unwrap().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(&got[..], b"ab");
        assert_eq!(peer.transport, "sockjs");
        assert_eq!(peer.addr.unwrap().ip(), std::net::Ipv4Addr::LOCALHOST);
        // Gone: sends are refused and a poll opens a fresh session.
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a"]"#).await.status, 404);
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
    }

    #[tokio::test]
    async fn waiting_poll_keeps_session_and_heartbeats() {
        let config = SockJsConfig {
            disconnect_delay: Duration::from_millis(100),
            heartbeat: Duration::from_millis(300),
            ..Default::default()
        };
        let addr = serve(config, echo()).await;
        let s = sid();
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
        // The poll outlives disconnect_delay, so the session stays; it ends with `h`.
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "h\n");
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a"]"#).await.status, 204);
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "a[\"a\"]\n");
    }

    #[tokio::test]
    async fn aborted_request_interrupts_session() {
        let config = SockJsConfig { heartbeat: Duration::from_millis(100), ..Default::default() };
        let addr = serve(config, echo()).await;
        let s = sid();
        let mut c = Conn::open(addr, "POST", &format!("/stomp/000/{s}/xhr_streaming"), &[], b"").await;
        c.chunk().await.unwrap();
        assert_eq!(c.chunk_text().await.unwrap(), "o\n");
        drop(c);
        let deadline = Instant::now() + WAIT;
        loop {
            let r = post(addr, &format!("/stomp/000/{s}/xhr"), "").await;
            if r.text() == "c[1002,\"Connection interrupted\"]\n" {
                break;
            }
            assert_eq!(r.text(), "c[2010,\"Another connection still open\"]\n");
            assert!(Instant::now() < deadline, "abort not noticed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn overflow_closes_session() {
        let config = SockJsConfig { max_pending_messages: 4, ..Default::default() };
        let (res_tx, mut res_rx) = mpsc::unbounded_channel();
        let on_session: OnSession = Arc::new(move |rx: SockJsRx, mut tx: SockJsTx, _peer: Peer| {
            let res_tx = res_tx.clone();
            tokio::spawn(async move {
                let _rx = rx;
                let mut results = Vec::new();
                for i in 0..6 {
                    let fed = tx.feed(Bytes::from(format!("m{i}"))).await;
                    results.push(fed.and(tx.flush().await).is_ok());
                }
                res_tx.send(results).unwrap();
            });
        });
        let addr = serve(config, on_session).await;
        let s = sid();
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
        let results = tokio::time::timeout(WAIT, res_rx.recv()).await.unwrap().unwrap();
        assert_eq!(results, [true, true, true, true, false, false]);
        let r = post(addr, &format!("/stomp/000/{s}/xhr"), "").await;
        assert_eq!(r.text(), "c[3001,\"Too many pending messages\"]\n");
    }

    #[tokio::test]
    async fn cors_preflight() {
        let addr = serve_echo().await;
        for path in ["/stomp/abc/abc/xhr", "/stomp/abc/abc/xhr_send", "/stomp/abc/abc/xhr_streaming", "/stomp/info"] {
            for origin in [None, Some("http://example.com"), Some("null")] {
                let mut h = vec![("Access-Control-Request-Headers", "content-type, x-a")];
                if let Some(o) = origin {
                    h.push(("Origin", o));
                }
                let r = request(addr, "OPTIONS", path, &h, b"").await;
                assert_eq!(r.status, 204, "{path}");
                assert!(r.body.is_empty());
                assert_cors(&r, "*");
                assert_eq!(r.header("access-control-allow-headers"), Some("content-type, x-a"));
                let methods = if path.ends_with("info") { "OPTIONS, GET" } else { "OPTIONS, POST" };
                assert_eq!(r.header("access-control-allow-methods"), Some(methods));
                assert!(r.header("cache-control").unwrap().contains("public"));
                assert!(r.header("cache-control").unwrap().contains("max-age=31536000"));
                assert!(r.header("expires").is_some());
                assert!(r.header("access-control-max-age").unwrap().parse::<u64>().unwrap() > 1_000_000);
            }
        }
        let s = sid();
        let r = request(addr, "POST", &format!("/stomp/000/{s}/xhr"), &[("Origin", "http://a.example")], b"").await;
        assert_cors(&r, "*");
        assert!(r.header("access-control-allow-headers").is_none());
    }

    #[tokio::test]
    async fn cors_allow_list_with_credentials() {
        let cors = Cors::new(&["http://a.example".into()], true);
        let addr = serve(SockJsConfig { cors, ..SockJsConfig::default() }, echo()).await;
        let r = request(addr, "OPTIONS", "/stomp/info", &[("Origin", "http://a.example")], b"").await;
        assert_eq!(r.header("access-control-allow-origin"), Some("http://a.example"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        let r = request(addr, "POST", &format!("/stomp/000/{}/xhr", sid()), &[("Origin", "http://evil.example")], b"")
            .await;
        assert_eq!(r.status, 403, "an origin not listed is refused");
        let r = request(addr, "POST", &format!("/stomp/000/{}/xhr", sid()), &[], b"").await;
        assert_eq!(r.status, 200, "no Origin: not a browser, allowed");
    }

    #[tokio::test]
    async fn websocket_framed_echo() {
        let addr = serve_echo().await;
        let url = format!("ws://{addr}/stomp/000/{}/websocket", sid());
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("o"));
        ws.send(WsMsg::text("")).await.unwrap();
        ws.send(WsMsg::text(r#"["a"]"#)).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text(r#"a["a"]"#));
        ws.send(WsMsg::text(r#""b""#)).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text(r#"a["b"]"#));
        ws.send(WsMsg::text("[\"\u{2028}\u{1F600}\\ufff0\"]")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text(r#"a["\u2028\ud83d\ude00\ufff0"]"#));
        // A session id may be reused over websockets.
        let (mut ws2, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(ws2.next().await.unwrap().unwrap(), WsMsg::text("o"));
        ws2.send(WsMsg::text(r#"["c"]"#)).await.unwrap();
        assert_eq!(ws2.next().await.unwrap().unwrap(), WsMsg::text(r#"a["c"]"#));
        // Broken JSON: the connection is dropped.
        ws.send(WsMsg::text(r#"["a"#)).await.unwrap();
        assert!(matches!(ws.next().await, None | Some(Err(_))));

        let r = get(addr, "/stomp/0/0/websocket").await;
        assert_eq!(r.status, 400);
        assert!(r.text().contains("Can \"Upgrade\" only to \"WebSocket\"."));
        assert_eq!(post(addr, "/stomp/0/0/websocket", "").await.status, 405);
    }

    #[tokio::test]
    async fn websocket_heartbeat_and_size_limit() {
        let config =
            SockJsConfig { heartbeat: Duration::from_millis(100), max_inbound_bytes: 1024, ..Default::default() };
        let addr = serve(config, echo()).await;
        let url = format!("ws://{addr}/stomp/000/{}/websocket", sid());
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("o"));
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("h"));
        let big = format!("[\"{}\"]", "x".repeat(2000));
        ws.send(WsMsg::text(big)).await.unwrap();
        loop {
            match ws.next().await {
                Some(Ok(WsMsg::Text(t))) => assert_eq!(t.as_str(), "h"),
                Some(Ok(WsMsg::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(other)) => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn websocket_raw_echo() {
        let addr = serve_echo().await;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/stomp/websocket")).await.unwrap();
        ws.send(WsMsg::text("Hello world!\u{ffff}")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("Hello world!\u{ffff}"));
        ws.send(WsMsg::text("[\"not parsed\"]")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("[\"not parsed\"]"));
        ws.close(None).await.unwrap();

        let addr = serve(SockJsConfig::default(), closer()).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/stomp/websocket")).await.unwrap();
        assert!(matches!(ws.next().await, Some(Ok(WsMsg::Close(_))) | None | Some(Err(_))));
    }

    #[test]
    fn json_escaping() {
        let mut out = String::new();
        push_json_string(
            &mut out,
            "a\"b\\c\n\u{0}\u{1f}\u{7f}\u{ad}\u{200c}\u{2028}\u{2060}\u{feff}\u{fff0}\u{ffff}é€\u{1F600}",
        );
        assert_eq!(out, r#""a\"b\\c\n\u0000\u001f\u007f\u00ad\u200c\u2028\u2060\ufeff\ufff0\uffffé€\ud83d\ude00""#);
        // Whatever is escaped decodes back to the same string.
        let all: String = (0..=0x10FFFFu32).step_by(7).filter_map(char::from_u32).collect();
        let mut enc = String::new();
        push_json_string(&mut enc, &all);
        assert_eq!(serde_json::from_str::<String>(&enc).unwrap(), all);
        assert_eq!(close_frame(GO_AWAY), r#"c[3000,"Go away!"]"#);
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_field(b"d=%5B%22x%22%5D", "d").unwrap(), br#"["x"]"#);
        assert_eq!(form_field(b"a=1&d=a+b%2", "d").unwrap(), b"a b%2");
        assert_eq!(form_field(b"p=p", "d"), None);
    }
}
