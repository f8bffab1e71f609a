//! The BOSH endpoint's HTTP side: the `POST` handlers (the front server's
//! direct route and the router's), the `OPTIONS` preflight and the `GET`
//! info page. A handler checks the origin and size, decodes the `<body/>`,
//! finds (or creates) the session in the table, submits the request and
//! waits for its answer, releasing it when its `wait` runs out.
//!
//! May import: axum/http types, the shared HTTP session table, peer and
//! CORS helpers ([`crate::transport::http_session`]), the front server's
//! direct-route types ([`crate::transport::http1`]), the shaper, and the
//! other BOSH modules. No decisions about rids or holding: those are the
//! machine's.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::body::{content_type, negotiate_ver, terminal_body, Kind, OpenDefaults, Request, NS_HTTPBIND, XML};
use super::machine::{Params, OPEN_WAIT};
use super::session::{BoshRx, BoshTx, Session, Table};
use super::{BoshConfig, OnSession};
use crate::shaper::{self, Shaper};
use crate::transport::forward::{self as forwarder, Forwarder};
use crate::transport::http1::DirectHandler;
use crate::transport::http_session::{echo_origin, set_allow_origin, PeerAddr};
use crate::transport::Peer;
use crate::xmpp::xml::{parse_element, Element, Limits};

pub(super) const TEXT: &str = "text/plain; charset=utf-8";
/// Responses are data for scripts, never documents to render.
const CSP: &str = "default-src 'none'; frame-ancestors 'none'";
const ALLOW_METHODS: &str = "POST, GET, OPTIONS";
const PREFLIGHT_MAX_AGE: &str = "86400";

/// The endpoint at the root of a router, and the direct `POST` handler.
pub(super) fn endpoint(config: BoshConfig, on_session: OnSession) -> (Router, DirectHandler) {
    let mut body_limits = config.xml_limits;
    body_limits.max_depth = body_limits.max_depth.saturating_add(1);
    body_limits.max_stanza_bytes = body_limits.max_stanza_bytes.max(config.max_body_bytes);
    let shared = Arc::new(Shared { config, body_limits, on_session, sessions: Arc::new(Table::default()) });
    let direct_shared = shared.clone();
    let direct: DirectHandler = Arc::new(move |headers, data, addr| {
        post_whole(
            direct_shared.clone(),
            Peer { addr: Some(addr), transport: crate::transport::Transport::Bosh },
            headers,
            data,
        )
    });
    (Router::new().route("/", post(handle_post).get(info).options(preflight)).with_state(shared), direct)
}

struct Shared {
    config: BoshConfig,
    /// `config.xml_limits` widened by the `<body/>` wrapper.
    body_limits: Limits,
    on_session: OnSession,
    sessions: Arc<Table>,
}

type Sh = State<Arc<Shared>>;

/// The `Access-Control-Allow-Origin` to answer with; `None` for an origin
/// not allowed.
fn allow_origin(config: &BoshConfig, headers: &HeaderMap) -> Option<HeaderValue> {
    echo_origin(config.allowed_origins.as_deref(), headers)
}

/// BOSH answers are whole: the front server writes them without
/// collecting a body, and the router's path converts them.
type Answer = Response<Bytes>;

fn forbidden() -> Answer {
    text_response(StatusCode::FORBIDDEN, "origin not allowed\n", None)
}

fn set_cors(resp: &mut Answer, allow: Option<HeaderValue>) {
    if let Some(allow) = allow {
        set_allow_origin(resp.headers_mut(), allow);
    }
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
fn handle_post(State(shared): Sh, peer: PeerAddr, headers: HeaderMap, body: Body) -> BoxFuture<'static, Response> {
    let peer = peer.peer(crate::transport::Transport::Bosh);
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
    // In a cluster, a request for a session held elsewhere is forwarded,
    // unless it was forwarded already (transport/forward.rs).
    let forwardable = shared.config.forward.is_some() && !Forwarder::is_forwarded(headers);
    let headers = forwardable.then_some(headers);
    if shared.config.cors_credentials && allow.as_bytes() != b"*" {
        // Only when configured: no extra state in a parked request otherwise.
        return Box::pin(on_body(&shared, peer, data, allow, headers).map(with_credentials));
    }
    on_body(&shared, peer, data, allow, headers)
}

fn with_credentials(mut a: Answer) -> Answer {
    a.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    a
}

/// XEP-0124 §14.1: a `rid` never exceeds 2^53 - 1 (the largest integer every
/// client language represents exactly); it also keeps `rid + window` far
/// from overflowing.
pub(super) const MAX_RID: u64 = (1 << 53) - 1;

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

fn on_body(
    shared: &Arc<Shared>,
    peer: Peer,
    data: Bytes,
    allow: HeaderValue,
    forward: Option<&HeaderMap>,
) -> BoxFuture<'static, Answer> {
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
            let Some(session) = shared.sessions.get(sid) else {
                if let (Some(f), Some(headers)) = (&shared.config.forward, forward) {
                    if let Some(node) = forwarder::bosh_sid_node(sid).filter(|n| n != f.node()) {
                        return forward_to(f, node, shared.config.max_wait, headers.clone(), data, peer, allow);
                    }
                }
                return answer(xml_response(
                    StatusCode::OK,
                    HeaderValue::from_static(XML),
                    terminal_body(Some("item-not-found"), &[]),
                    allow,
                ));
            };
            let req = Request::parse(body, false, data.len(), Some(&session.p.defaults));
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

/// Forwards a request for a session that node `node` holds (its sid names
/// it) and relays the answer; `item-not-found` when that node is not alive.
fn forward_to(
    f: &Forwarder,
    node: String,
    wait: Duration,
    headers: HeaderMap,
    data: Bytes,
    peer: Peer,
    allow: HeaderValue,
) -> BoxFuture<'static, Answer> {
    let f = f.clone();
    Box::pin(async move {
        let not_found = |allow| {
            xml_response(
                StatusCode::OK,
                HeaderValue::from_static(XML),
                terminal_body(Some("item-not-found"), &[]),
                allow,
            )
        };
        let addr = match f.owners.locate(&node, forwarder::Service::Bosh).await {
            forwarder::Owner::Node { addr, .. } => addr,
            forwarder::Owner::Here => return not_found(allow),
            forwarder::Owner::Unknown => {
                return text_response(StatusCode::SERVICE_UNAVAILABLE, "cluster registry unavailable\n", Some(allow))
            }
        };
        let client = peer.addr.map(|a| a.ip());
        // A long poll is held up to its `wait` (at most `max_wait`) there.
        let extra = wait + OPEN_WAIT;
        match f.forward_whole((node, addr), "/http-bind".into(), headers, data, client, extra).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let ct = parts.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static(XML));
                xml_response(parts.status, ct, body, allow)
            }
            Err(e) => {
                tracing::debug!("BOSH request not forwarded: {e}");
                let mut resp = e.response();
                set_cors(&mut resp, Some(allow));
                resp
            }
        }
    })
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
    let random = uuid::Uuid::new_v4().simple().to_string();
    let p = Params {
        // In a cluster the sid names this node: any node can forward its
        // requests here without asking Redis.
        sid: match &c.forward {
            Some(f) => forwarder::bosh_sid(&random, f.node()),
            None => random,
        },
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
        defaults: OpenDefaults::of(body),
    };
    let sid = p.sid.clone();
    let (session, rx, tx) = Session::new(p, rid, Arc::downgrade(&shared.sessions), Shaper::new(&c.shaper, true, false));
    shared.sessions.insert(sid.clone(), session.clone());
    shared.sessions.start_sweeper(c.max_inactivity);
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
