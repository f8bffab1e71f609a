//! The seven SockJS transports. Receiving: xhr polling, xhr streaming,
//! EventSource, htmlfile and JSONP polling (a request attaches to the
//! session and streams frames); sending: `xhr_send` and `jsonp_send`; and
//! the framed and raw websockets, whose session lives exactly as long as
//! the websocket.
//!
//! May import: axum/http types, the shared HTTP helpers
//! ([`crate::transport::http_session`]), the framing, the session, and the
//! endpoint's [`Shared`] state.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame as WsCloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::{Bytes, BytesMut};

use super::framing::{close_frame, form_field, parse_messages, Frame, Wrap, INTERRUPTED};
use super::http::{cors, error500, forbidden_origin, no_cache, not_found, response, Ids, HTML, JS, TEXT};
use super::session::{Receiver, Session};
use super::{Sh, Shared};
use crate::transport::http_session::PeerAddr;
use crate::transport::Peer;

/// Length of the `xhr_streaming` prelude (`h` bytes, then `\n`).
const XHR_STREAMING_PRELUDE: usize = 2048;

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

pub(super) async fn xhr(State(shared): Sh, Path(ids): Path<Ids>, peer: PeerAddr, headers: HeaderMap) -> Response {
    let peer = peer.peer(crate::transport::Transport::SockJs);
    if !ids.valid() {
        return not_found();
    }
    if !shared.config.cors.allowed(&headers) {
        return forbidden_origin();
    }
    let body = receive(&shared, &ids.session, peer, false, Wrap::Xhr, None);
    receiving_response(&shared, JS, body, &headers)
}

pub(super) async fn xhr_streaming(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    peer: PeerAddr,
    headers: HeaderMap,
) -> Response {
    let peer = peer.peer(crate::transport::Transport::SockJs);
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

pub(super) async fn eventsource(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    peer: PeerAddr,
    headers: HeaderMap,
) -> Response {
    let peer = peer.peer(crate::transport::Transport::SockJs);
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

pub(super) async fn htmlfile(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    peer: PeerAddr,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let peer = peer.peer(crate::transport::Transport::SockJs);
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

pub(super) async fn jsonp(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    peer: PeerAddr,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let peer = peer.peer(crate::transport::Transport::SockJs);
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

pub(super) async fn xhr_send(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    peer: PeerAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = peer.peer(crate::transport::Transport::SockJs);
    let mut resp = match send_messages(&shared, &ids, &peer, &headers, body, false).await {
        SendOutcome::Unknown => not_found(),
        SendOutcome::Error(resp) => resp,
        SendOutcome::Delivered => response(StatusCode::NO_CONTENT, Some(TEXT), Body::empty()),
    };
    no_cache(&mut resp);
    cors(&shared.config.cors, &headers, &mut resp);
    resp
}

pub(super) async fn jsonp_send(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    peer: PeerAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = peer.peer(crate::transport::Transport::SockJs);
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

pub(super) async fn framed_websocket(
    State(shared): Sh,
    Path(ids): Path<Ids>,
    peer: PeerAddr,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let peer = peer.peer(crate::transport::Transport::SockJs);
    if !ids.valid() || !shared.config.websocket {
        return not_found();
    }
    if !shared.config.cors.allowed(&headers) {
        return forbidden_origin();
    }
    websocket(shared, peer, upgrade, true)
}

pub(super) async fn raw_websocket(
    State(shared): Sh,
    peer: PeerAddr,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let peer = peer.peer(crate::transport::Transport::SockJs);
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
