//! A small HTTP/1.1 server for long-poll requests (BOSH), in front of hyper.
//!
//! Why not hyper for everything: a BOSH client parks one request on the
//! server (`hold=1`) for up to `wait` seconds, so an idle BOSH session *is*
//! an open HTTP connection with a request in flight. hyper keeps an 8 KiB
//! write buffer and an 8–16 KiB read buffer per connection for its whole
//! life; measured (bench/profile.sh bosh), that was ~24 KiB of a 27 KiB
//! idle BOSH session. This server holds no buffer while a request is parked:
//! it reads on readiness, parses the head with `httparse`, hands an
//! `http::Request` to the same axum `Router`, and writes the answer in one
//! go. Anything it does not do itself (a WebSocket upgrade) is handed, with
//! the bytes already read, to hyper on the same connection, so routes and
//! handlers are shared and nothing else changes.
//!
//! Parsing and encoding are sans-IO functions ([`parse_head`],
//! [`ChunkedDecoder`], [`encode_response`]) with tests beside them; the
//! connection loop only moves bytes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{self, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::conn::{self, Cors, Gate};
use super::websocket::{self, WsRx, WsTx};

/// Limits of the front server; every one is a clear HTTP error when passed.
#[derive(Debug, Clone)]
pub struct Http1Limits {
    /// Request line plus headers (431 beyond).
    pub max_head_bytes: usize,
    /// Header count (431 beyond).
    pub max_headers: usize,
    /// Request body (413 beyond).
    pub max_body_bytes: usize,
    /// A request head must be complete this long after its first byte, or
    /// after the connection opened for the first request (408 after; hyper
    /// closes). `connections.header_timeout_ms`.
    pub header_timeout: Duration,
    /// A request body must be complete this long after its head (408).
    /// `connections.body_timeout_ms`.
    pub body_timeout: Duration,
    /// An idle keep-alive connection is closed after this; a connection
    /// handed to hyper, once it moved no byte for this long.
    pub idle_timeout: Duration,
    /// A client that does not take its answer within this is dropped.
    pub write_timeout: Duration,
}

impl Default for Http1Limits {
    fn default() -> Self {
        Http1Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// What the front server does itself, beyond answering plain requests
/// through the router.
#[derive(Clone, Default)]
pub struct Front {
    /// WebSocket endpoints served by Herald's own link (transport/websocket.rs);
    /// other upgrades go to hyper.
    pub websockets: Arc<[WsEndpoint]>,
    /// Plain requests answered by a handler directly, not through the router.
    pub direct: Arc<[Direct]>,
    /// Hand plain requests to hyper instead of answering them here: for
    /// routes with streaming answers (SockJS), which this server does not do.
    pub plain_to_hyper: bool,
    /// The engine's admission (trusted proxies for the client address, the
    /// slot a WebSocket upgrade takes over); `None` in tests without one.
    pub gate: Option<Arc<Gate>>,
    /// Origins allowed to open the WebSocket endpoints (403 otherwise).
    pub cors: Cors,
}

impl Front {
    fn websocket(&self, path: &str) -> Option<&WsEndpoint> {
        self.websockets.iter().find(|w| w.path == path)
    }

    fn direct(&self, head: &Head) -> Option<&Direct> {
        self.direct.iter().find(|d| d.method == head.method && d.paths.iter().any(|p| p == head.target.path()))
    }
}

/// A route the front server answers without the router. Why: the router's
/// futures (routing, the body reader, response mapping) are part of every
/// parked long-poll request; measured (bench/profile.sh bosh), ~1.8 KB of a
/// 10 KB idle BOSH session.
pub struct Direct {
    pub method: Method,
    pub paths: Vec<String>,
    /// Gets the request's headers, its whole body (within `max_body_bytes`)
    /// and the peer.
    pub handler: DirectHandler,
}

/// The answer's body is whole (`Bytes`): nothing is left to collect while
/// a request is parked.
pub type DirectHandler = Arc<
    dyn Fn(&HeaderMap, Bytes, SocketAddr) -> futures_util::future::BoxFuture<'static, Response<Bytes>> + Send + Sync,
>;

/// A WebSocket endpoint of the front server.
pub struct WsEndpoint {
    pub path: String,
    /// Subprotocols it speaks, for the client's choice.
    pub protocols: &'static [&'static str],
    /// Largest message (all fragments) the link reads; larger is closed with 1009.
    pub max_message: usize,
    /// Before the 101: takes what the session needs (a connection slot) and
    /// returns what starts it on its own task, or `None` to refuse with 503.
    pub admit: Arc<dyn Fn(SocketAddr) -> Option<WsStart> + Send + Sync>,
}

/// Starts a WebSocket session over the upgraded connection's halves.
pub type WsStart = Box<dyn FnOnce(WsRx, WsTx) + Send>;

/// How much one read may add to the buffer; reserved only once the socket
/// is readable, so a connection waiting for a request keeps no buffer.
const READ_CHUNK: usize = 4096;

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub target: http::Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// Bytes the head took in the buffer.
    pub len: usize,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the client asked to switch protocols (a WebSocket): such
    /// requests go to hyper, which owns upgrades.
    pub fn is_upgrade(&self) -> bool {
        self.headers.contains_key(http::header::UPGRADE) && self.has_token("connection", "upgrade")
    }

    /// HTTP/1.1 keeps the connection unless told otherwise; 1.0 only when asked.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::HTTP_10 => self.has_token("connection", "keep-alive"),
            _ => !self.has_token("connection", "close"),
        }
    }
}

/// Request body framing, from the head.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
}

/// Why a request could not be read; each maps to a status and a reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("more than {0} request headers")]
    TooManyHeaders(usize),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("transfer-encoding other than chunked is not supported")]
    UnsupportedEncoding,
    #[error("request not complete within {0} s")]
    Timeout(u64),
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::Malformed(_) => StatusCode::BAD_REQUEST,
            RequestError::HeadTooLarge(_) | RequestError::TooManyHeaders(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            RequestError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnsupportedEncoding => StatusCode::NOT_IMPLEMENTED,
            RequestError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// Parses a request head at the start of `buf`. `Ok(None)`: not complete yet.
pub fn parse_head(buf: &[u8], limits: &Http1Limits) -> Result<Option<Head>, RequestError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders(limits.max_headers)),
        Err(_) => return Err(RequestError::Malformed("bad request line or header")),
    };
    let len = match status {
        httparse::Status::Complete(len) if len > limits.max_head_bytes => {
            return Err(RequestError::HeadTooLarge(limits.max_head_bytes))
        }
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > limits.max_head_bytes => {
            return Err(RequestError::HeadTooLarge(limits.max_head_bytes))
        }
        httparse::Status::Partial => return Ok(None),
    };
    let method =
        Method::from_bytes(req.method.unwrap_or("").as_bytes()).map_err(|_| RequestError::Malformed("bad method"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| RequestError::Malformed("bad header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| RequestError::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    let target = req.path.unwrap_or("/").parse().map_err(|_| RequestError::Malformed("bad request target"))?;
    Ok(Some(Head { method, target, version, headers, len }))
}

/// How the body of `head` is framed (RFC 9112 §6.3), within `max_body`.
pub fn framing(head: &Head, max_body: usize) -> Result<Framing, RequestError> {
    if let Some(te) = head.header("transfer-encoding") {
        return if te.trim().eq_ignore_ascii_case("chunked") {
            Ok(Framing::Chunked)
        } else {
            Err(RequestError::UnsupportedEncoding)
        };
    }
    let mut lengths = head.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let len = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .ok_or(RequestError::Malformed("bad content-length"))?,
        (Some(_), Some(_)) => return Err(RequestError::Malformed("several content-length headers")),
    };
    if len > max_body {
        return Err(RequestError::BodyTooLarge(max_body));
    }
    Ok(Framing::Length(len))
}

/// Decodes a chunked body as it arrives (RFC 9112 §7.1); trailers are
/// read and dropped.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    body: BytesMut,
    /// Bytes left in the current chunk, or `None` between chunks.
    in_chunk: Option<usize>,
    /// The last chunk was seen: reading trailers until an empty line.
    trailers: bool,
}

impl ChunkedDecoder {
    /// Consumes what it can from `buf`; `Ok(Some(body))` once complete.
    pub fn decode(&mut self, buf: &mut BytesMut, max_body: usize) -> Result<Option<Bytes>, RequestError> {
        loop {
            if self.trailers {
                let Some(end) = find_crlf(buf) else {
                    // Bounded like a chunk-size line: otherwise one endless
                    // trailer line grows the buffer (each read rescanning it)
                    // until the request timeout. Found by fuzz/http1_head.
                    if buf.len() > 1024 {
                        return Err(RequestError::Malformed("trailer line too long"));
                    }
                    return Ok(None);
                };
                buf.advance(end + 2);
                if end == 0 {
                    return Ok(Some(std::mem::take(&mut self.body).freeze()));
                }
                continue;
            }
            match self.in_chunk {
                None => {
                    let (consumed, size) = match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete(x)) => x,
                        Ok(httparse::Status::Partial) if buf.len() > 1024 => {
                            return Err(RequestError::Malformed("chunk size line too long"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(None),
                        Err(_) => return Err(RequestError::Malformed("bad chunk size")),
                    };
                    buf.advance(consumed);
                    let size = usize::try_from(size).map_err(|_| RequestError::BodyTooLarge(max_body))?;
                    if size == 0 {
                        self.trailers = true;
                    } else if self.body.len().saturating_add(size) > max_body {
                        return Err(RequestError::BodyTooLarge(max_body));
                    } else {
                        self.in_chunk = Some(size);
                    }
                }
                Some(left) => {
                    // The chunk's data, then its CRLF.
                    if buf.len() < left + 2 {
                        let take = buf.len().min(left);
                        self.body.extend_from_slice(&buf[..take]);
                        buf.advance(take);
                        self.in_chunk = Some(left - take);
                        if left - take > 0 || buf.len() < 2 {
                            return Ok(None);
                        }
                        continue;
                    }
                    self.body.extend_from_slice(&buf[..left]);
                    if &buf[left..left + 2] != b"\r\n" {
                        return Err(RequestError::Malformed("chunk not followed by CRLF"));
                    }
                    buf.advance(left + 2);
                    self.in_chunk = None;
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// The bytes of a response: status line, headers with `content-length`
/// (and `connection: close` when closing), then the body (not for HEAD).
pub fn encode_response(parts: &http::response::Parts, body: &[u8], head_only: bool, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + parts.headers.len() * 32 + if head_only { 0 } else { body.len() });
    let reason = parts.status.canonical_reason().unwrap_or("");
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_u16()).as_bytes());
    for (name, value) in parts.headers.iter() {
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(http::header::DATE) {
        out.extend_from_slice(
            format!("date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now())).as_bytes(),
        );
    }
    let no_body = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    if !no_body {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !no_body {
        out.extend_from_slice(body);
    }
    out
}

/// A plain-text error answer; the connection closes after it.
fn error_response(e: &RequestError) -> Vec<u8> {
    refusal(e.status(), &e.to_string())
}

/// A status with its reason as plain text, closing the connection.
fn refusal(status: StatusCode, reason: &str) -> Vec<u8> {
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    parts.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if status == StatusCode::UPGRADE_REQUIRED {
        parts.headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    }
    encode_response(&parts, format!("{reason}\n").as_bytes(), false, true)
}

/// Serves one connection until the client closes it, a limit or error ends
/// it, or `shutdown` fires between requests. `front`'s WebSocket endpoints
/// are upgraded here; other upgrade requests (and, with `plain_to_hyper`,
/// every request) are served by hyper with the same `router`.
///
/// A plain `fn` around an `async move` block that holds only the
/// connection and, while a request is parked, its boxed answer: every phase
/// (reading, hand-overs, writing) is boxed, because this future is what an
/// idle BOSH session costs, and a future is as large as its largest state.
/// (As one `async fn` it held the request read, its result and the
/// arguments twice; its budget is in core/tests/session_budget.rs.)
pub fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    front: Front,
    limits: Http1Limits,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    let mut c = Conn { stream, peer, router, front, limits, shutdown, buf: BytesMut::new(), first: true };
    async move {
        loop {
            // `Next` is moved on whole: a value matched in place would be
            // kept across the hand-over's await, in every state.
            let Parked { mut work, keep_alive, head_only } = match Box::pin(c.next_request()).await {
                Next::Parked(p) => p,
                Next::Close => return,
                other => return Box::pin(c.hand_over(other)).await,
            };
            let Some(answer) = parked(&c.stream, &mut work).await else {
                return; // the client left while its request was parked
            };
            drop(work);
            if !Box::pin(c.respond(answer, head_only, keep_alive)).await {
                return;
            }
        }
    }
}

/// A connection between requests.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    front: Front,
    limits: Http1Limits,
    shutdown: CancellationToken,
    /// Bytes read and not yet used (a pipelined request); emptied buffers
    /// are dropped, not kept.
    buf: BytesMut,
    /// No request read yet: its head is due `header_timeout` after the open.
    first: bool,
}

/// What the connection does next.
enum Next {
    Close,
    /// Hand the connection to hyper (from the start of the head in `buf`).
    Hyper,
    /// Upgrade to one of the front's WebSocket endpoints.
    WebSocket(Head),
    Parked(Parked),
}

/// A request being answered: all a parked request holds besides the connection.
struct Parked {
    work: futures_util::future::BoxFuture<'static, (http::response::Parts, Bytes)>,
    keep_alive: bool,
    head_only: bool,
}

impl Conn {
    /// Waits for the next request (no buffer held while idle), reads it and
    /// starts answering it. Errors are answered here, then `Close`.
    async fn next_request(&mut self) -> Next {
        let limits = &self.limits;
        // The first request's head is due `header_timeout` after the
        // connection opened; later ones after their first byte.
        let mut head_deadline = tokio::time::Instant::now() + limits.header_timeout;
        if self.buf.is_empty() && !self.first {
            // Between requests: wait for bytes, the idle limit or shutdown.
            self.buf = BytesMut::new();
            tokio::select! {
                _ = self.shutdown.cancelled() => return Next::Close,
                _ = tokio::time::sleep(limits.idle_timeout) => return Next::Close,
                r = read_some(&self.stream, &mut self.buf) => match r {
                    Ok(0) | Err(_) => return Next::Close,
                    Ok(_) => {}
                },
            }
            head_deadline = tokio::time::Instant::now() + limits.header_timeout;
        }
        self.first = false;
        let request = match read_request(&self.stream, &mut self.buf, &self.front, limits, head_deadline).await {
            Ok(Some(r)) => r,
            Ok(None) => return Next::Close, // closed mid-request
            Err(e) => {
                let _ = write_all(&self.stream, &error_response(&e), limits.write_timeout).await;
                return Next::Close;
            }
        };
        let (head, body) = match request {
            Incoming::Hyper => return Next::Hyper,
            Incoming::WebSocket(head) => return Next::WebSocket(head),
            Incoming::Request(head, body) => (head, body),
        };
        let client = self.client(&head.headers);
        if self.buf.is_empty() {
            // Not pipelined: no read chunk is kept while the request is parked.
            self.buf = BytesMut::new();
        }
        let keep_alive = head.keep_alive() && !self.shutdown.is_cancelled();
        let head_only = head.method == Method::HEAD;
        let work: futures_util::future::BoxFuture<'static, _> = match self.front.direct(&head) {
            // Not kept while the request is parked: the head (dropped here)
            // and a second future around the handler's.
            Some(d) => Box::pin((d.handler)(&head.headers, body, client).map(Response::into_parts)),
            None => Box::pin(answer(&self.router, into_request(head, body, client))),
        };
        Next::Parked(Parked { work, keep_alive, head_only })
    }

    /// The client's address: the peer's, or the forwarded one when the peer
    /// is a trusted proxy (`connections.trusted_proxies`).
    fn client(&self, headers: &HeaderMap) -> SocketAddr {
        match &self.front.gate {
            Some(g) => conn::client_addr(g, self.peer, headers),
            None => self.peer,
        }
    }

    /// Writes the answer; whether the connection goes on.
    async fn respond(
        &mut self,
        (parts, body): (http::response::Parts, Bytes),
        head_only: bool,
        keep_alive: bool,
    ) -> bool {
        let close = !keep_alive || self.shutdown.is_cancelled();
        let bytes = encode_response(&parts, &body, head_only, close);
        drop((parts, body));
        write_all(&self.stream, &bytes, self.limits.write_timeout).await.is_ok() && !close
    }

    /// Gives the connection to hyper (which reads the head again from what
    /// is buffered) or to a WebSocket endpoint; or just closes it.
    async fn hand_over(self, next: Next) {
        match next {
            Next::Hyper => {
                let io =
                    conn::Idle::new(Prefixed { pre: self.buf.freeze(), io: self.stream }, self.limits.idle_timeout);
                serve_with_hyper(io, self.peer, self.router, self.front.gate, &self.limits, self.shutdown).await
            }
            Next::WebSocket(head) => {
                let client = self.client(&head.headers);
                if let Some(endpoint) = self.front.websocket(head.target.path()) {
                    upgrade(self.stream, self.buf, client, head, endpoint, &self.front.cors, &self.limits).await;
                }
            }
            Next::Close | Next::Parked(_) => {}
        }
    }
}

// One per request, moved once: boxing the head would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Incoming {
    Request(Head, Bytes),
    /// An upgrade to one of the front's WebSocket endpoints (head consumed).
    WebSocket(Head),
    /// For hyper, from the start of the head.
    Hyper,
}

/// Reads one whole request (head and body) from `buf` and the socket.
/// `Ok(None)`: the client closed before it was complete.
async fn read_request(
    stream: &TcpStream,
    buf: &mut BytesMut,
    front: &Front,
    limits: &Http1Limits,
    head_deadline: tokio::time::Instant,
) -> Result<Option<Incoming>, RequestError> {
    let head = loop {
        if let Some(head) = parse_head(buf, limits)? {
            break head;
        }
        if read_until(stream, buf, head_deadline, limits.header_timeout).await? == 0 {
            return Ok(None);
        }
    };
    if head.is_upgrade() && head.has_token("upgrade", "websocket") && front.websocket(head.target.path()).is_some() {
        buf.advance(head.len);
        return Ok(Some(Incoming::WebSocket(head)));
    }
    if head.is_upgrade() || front.plain_to_hyper {
        return Ok(Some(Incoming::Hyper));
    }
    let framing = framing(&head, limits.max_body_bytes)?;
    buf.advance(head.len);
    if head.has_token("expect", "100-continue") && !matches!(framing, Framing::Length(0)) {
        let _ = write_all(stream, b"HTTP/1.1 100 Continue\r\n\r\n", limits.write_timeout).await;
    }
    let body_deadline = tokio::time::Instant::now() + limits.body_timeout;
    let body = match framing {
        Framing::Length(len) => {
            while buf.len() < len {
                if read_until(stream, buf, body_deadline, limits.body_timeout).await? == 0 {
                    return Ok(None);
                }
            }
            buf.split_to(len).freeze()
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::default();
            loop {
                if let Some(body) = dec.decode(buf, limits.max_body_bytes)? {
                    break body;
                }
                if read_until(stream, buf, body_deadline, limits.body_timeout).await? == 0 {
                    return Ok(None);
                }
            }
        }
    };
    // Small bodies are copied out so the request does not pin a read chunk.
    let body = if body.len() < READ_CHUNK / 2 { Bytes::copy_from_slice(&body) } else { body };
    Ok(Some(Incoming::Request(head, body)))
}

fn into_request(head: Head, body: Bytes, peer: SocketAddr) -> Request<Body> {
    let mut req = Request::new(Body::from(body));
    *req.method_mut() = head.method;
    *req.version_mut() = head.version;
    *req.uri_mut() = head.target;
    *req.headers_mut() = head.headers;
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

/// The router's answer to `req`, body collected. Combinators, not an
/// `async` block, so the request and the handler's future are held once.
fn answer(
    router: &axum::Router,
    req: Request<Body>,
) -> impl std::future::Future<Output = (http::response::Parts, Bytes)> + Send {
    router.clone().oneshot(req).then(|resp| match resp {
        Ok(r) => collected(r),
        Err(never) => match never {},
    })
}

/// A response with its body collected.
fn collected(resp: Response<Body>) -> impl std::future::Future<Output = (http::response::Parts, Bytes)> + Send {
    let (parts, body) = resp.into_parts();
    body.collect().map(move |c| (parts, c.map(|c| c.to_bytes()).unwrap_or_default()))
}

/// Waits for `work` while watching the connection. `None` when the client
/// closed it first: `work` (the handler) is then dropped, as hyper does, so
/// a parked BOSH request is seen as gone. Pipelined bytes are left unread
/// until the answer is out. A `poll_fn` over two references and a flag:
/// the one-byte peek holds no buffer and no readiness future (which would
/// keep a waiter, ~150 B, in every parked request; tcp::poll_read_ready_buf
/// says more), and no `async` state is kept beside it.
fn parked<'a, F: std::future::Future + Unpin>(
    stream: &'a TcpStream,
    work: &'a mut F,
) -> impl std::future::Future<Output = Option<F::Output>> + 'a {
    let mut watching = true;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(answer) = std::future::Future::poll(Pin::new(&mut *work), cx) {
            return Poll::Ready(Some(answer));
        }
        if watching {
            let mut probe = [0u8; 1];
            match stream.poll_peek(cx, &mut ReadBuf::new(&mut probe)) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                // Data: a pipelined request. Stop watching; answer first.
                Poll::Ready(Ok(_)) => watching = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
}

/// One read before `deadline` (`limit` is what the client is told).
async fn read_until(
    stream: &TcpStream,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
    limit: Duration,
) -> Result<usize, RequestError> {
    match tokio::time::timeout_at(deadline, read_some(stream, buf)).await {
        Ok(r) => r.map_err(|_| RequestError::Malformed("read failed")),
        Err(_) => Err(RequestError::Timeout(limit.as_secs().max(1))),
    }
}

/// One read on readiness into `buf` (space reserved only then).
async fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        buf.reserve(READ_CHUNK);
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8], limit: Duration) -> io::Result<()> {
    let work = async {
        while !bytes.is_empty() {
            stream.writable().await?;
            match stream.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Answers a WebSocket handshake for `endpoint` and starts its session;
/// a refused handshake gets its status and reason.
async fn upgrade(
    stream: TcpStream,
    buf: BytesMut,
    peer: SocketAddr,
    head: Head,
    endpoint: &WsEndpoint,
    cors: &Cors,
    limits: &Http1Limits,
) {
    if !cors.allowed(&head.headers) {
        let _ = write_all(
            &stream,
            &refusal(StatusCode::FORBIDDEN, "origin not allowed (connections.cors_origins)"),
            limits.write_timeout,
        )
        .await;
        return;
    }
    let accepted = match websocket::handshake(&head.method, &head.headers, endpoint.protocols) {
        Ok(a) => a,
        Err(e) => {
            let _ = write_all(&stream, &refusal(e.status(), &e.to_string()), limits.write_timeout).await;
            return;
        }
    };
    drop(head);
    // The connection's slot becomes the session's: counted for the client
    // and as unauthenticated until it logs in.
    if let Some(slot) = conn::take_current() {
        match slot.into_session(peer.ip()) {
            Ok(slot) => conn::put_current(slot),
            Err(r) => {
                let status = match r {
                    conn::Refusal::PerIp | conn::Refusal::UnauthenticatedPerIp => StatusCode::TOO_MANY_REQUESTS,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                let _ = write_all(&stream, &refusal(status, &r.to_string()), limits.write_timeout).await;
                return;
            }
        }
    }
    let Some(start) = (endpoint.admit)(peer) else {
        let _ = write_all(
            &stream,
            &refusal(StatusCode::SERVICE_UNAVAILABLE, "connection limit reached"),
            limits.write_timeout,
        )
        .await;
        return;
    };
    if write_all(&stream, &websocket::switching_protocols(&accepted), limits.write_timeout).await.is_err() {
        return;
    }
    // Bytes after the handshake (a first frame sent without waiting) are the link's.
    let (rx, tx) = websocket::split(stream, if buf.is_empty() { BytesMut::new() } else { buf }, endpoint.max_message);
    start(rx, tx);
}

/// hyper on this connection (with upgrades), for what the front server
/// does not do itself; at shutdown it finishes the request in flight.
/// Bounded like the front server: a request head within `header_timeout`
/// (hyper's `header_read_timeout`, also between requests), and no more than
/// `idle_timeout` without a byte moving ([`conn::Idle`], which stays on an
/// upgraded connection). Bodies are bounded by their readers (SockJS).
pub async fn serve_with_hyper<I>(
    io: I,
    peer: SocketAddr,
    router: axum::Router,
    gate: Option<Arc<Gate>>,
    limits: &Http1Limits,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let client = match &gate {
            Some(g) => conn::client_addr(g, peer, req.headers()),
            None => peer,
        };
        req.extensions_mut().insert(ConnectInfo(client));
        router.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// A TCP stream that first yields bytes already read from it.
struct Prefixed {
    pre: Bytes,
    io: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(out.remaining());
            out.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            if self.pre.is_empty() {
                // An emptied slice still pins the whole read chunk.
                self.pre = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, b)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Http1Limits {
        Http1Limits { max_head_bytes: 256, max_headers: 8, max_body_bytes: 64, ..Http1Limits::default() }
    }

    #[test]
    fn a_partial_head_is_not_an_error() {
        assert!(parse_head(b"POST /http-bind HTTP/1.1\r\nHost: x\r\n", &limits()).unwrap().is_none());
        let h = parse_head(b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", &limits())
            .unwrap()
            .unwrap();
        assert_eq!((h.method.as_str(), h.target.path(), h.len), ("POST", "/http-bind", 56));
        assert_eq!(framing(&h, 64), Ok(Framing::Length(3)));
        assert!(h.keep_alive() && !h.is_upgrade());
    }

    #[test]
    fn limits_and_garbage_are_errors_with_statuses() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(300));
        let e = parse_head(big.as_bytes(), &limits()).unwrap_err();
        assert_eq!(
            (e.clone(), e.status()),
            (RequestError::HeadTooLarge(256), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let many: String = (0..9).map(|i| format!("X{i}: 1\r\n")).collect();
        let e = parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(), &limits()).unwrap_err();
        assert_eq!(e, RequestError::TooManyHeaders(8));
        assert_eq!(parse_head(b"\x01\x02 nonsense\r\n\r\n", &limits()).unwrap_err().status(), StatusCode::BAD_REQUEST);
        let h = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", &limits()).unwrap().unwrap();
        assert_eq!(framing(&h, 64), Err(RequestError::BodyTooLarge(64)));
        let h = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &limits())
            .unwrap()
            .unwrap();
        assert!(matches!(framing(&h, 64), Err(RequestError::Malformed(_))), "request smuggling guard");
        let h = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &limits()).unwrap().unwrap();
        assert_eq!(framing(&h, 64).unwrap_err().status(), StatusCode::NOT_IMPLEMENTED);
    }

    #[test]
    fn keep_alive_and_upgrade_rules() {
        let h = |s: &str| parse_head(s.as_bytes(), &limits()).unwrap().unwrap();
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(h("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(!h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(h("GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").is_upgrade());
        assert!(!h("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").is_upgrade());
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let wire = b"4\r\n<bod\r\n3;ext=1\r\ny/>\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let mut dec = ChunkedDecoder::default();
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = dec.decode(&mut buf, 64).unwrap();
            buf.extend_from_slice(&wire[split..]);
            if got.is_none() {
                got = dec.decode(&mut buf, 64).unwrap();
            }
            assert_eq!(got.as_deref(), Some(&b"<body/>"[..]), "split at {split}");
            assert_eq!(&buf[..], b"NEXT", "what follows is left for the next request");
        }
        let mut buf = BytesMut::from(&b"41\r\n"[..]);
        assert_eq!(ChunkedDecoder::default().decode(&mut buf, 64), Err(RequestError::BodyTooLarge(64)));
        let mut buf = BytesMut::from(&b"1\r\nab\r\n"[..]);
        assert!(matches!(ChunkedDecoder::default().decode(&mut buf, 64), Err(RequestError::Malformed(_))));
    }

    #[test]
    fn an_endless_trailer_line_is_refused() {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\nX-Trailer: "[..]);
        assert_eq!(dec.decode(&mut buf, 64), Ok(None));
        buf.extend_from_slice(&[b'a'; 1100]);
        assert_eq!(dec.decode(&mut buf, 64), Err(RequestError::Malformed("trailer line too long")));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let mut resp = Response::new(());
        resp.headers_mut().insert("content-type", HeaderValue::from_static("text/xml"));
        resp.headers_mut().insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let (parts, ()) = resp.into_parts();
        let text = String::from_utf8(encode_response(&parts, b"<body/>", false, true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ndate: "), "{text}");
        assert!(text.ends_with("content-length: 7\r\nconnection: close\r\n\r\n<body/>"), "{text}");
        assert!(!text.contains("chunked"), "the body is sent whole");
        let head = String::from_utf8(encode_response(&parts, b"<body/>", true, false)).unwrap();
        assert!(head.ends_with("content-length: 7\r\n\r\n"), "HEAD: length, no body: {head}");
        let text = String::from_utf8(error_response(&RequestError::BodyTooLarge(64))).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 413 Payload Too Large\r\n")
                && text.ends_with("request body larger than 64 bytes\n"),
            "{text}"
        );
    }

    /// The connection loop over a real socket: keep-alive, pipelining, a
    /// limit answered with its status, a client leaving while its request is
    /// parked, and an upgrade handed to hyper.
    mod wire {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
        use axum::routing::{get, post};
        use futures_util::{SinkExt, StreamExt};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;

        use super::*;

        /// Counts parked handlers that were dropped before answering.
        struct Dropped(Arc<AtomicUsize>, bool);
        impl Drop for Dropped {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }

        async fn server(dropped: Arc<AtomicUsize>) -> SocketAddr {
            let app = axum::Router::new()
                .route(
                    "/echo",
                    post(|ConnectInfo(peer): ConnectInfo<SocketAddr>, body: Bytes| async move {
                        format!("{}:{}", peer.ip(), String::from_utf8_lossy(&body))
                    }),
                )
                .route(
                    "/park",
                    post(move || {
                        let guard = Dropped(dropped.clone(), false);
                        async move {
                            let mut guard = guard; // the whole guard, not a copy of its flag
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            guard.1 = true;
                            "late"
                        }
                    }),
                )
                .route(
                    "/ws",
                    get(|ws: WebSocketUpgrade| async move {
                        ws.on_upgrade(|mut socket| async move {
                            while let Some(Ok(WsMessage::Text(t))) = socket.next().await {
                                let _ = socket.send(WsMessage::Text(format!("echo {t}").into())).await;
                            }
                        })
                    }),
                );
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = listener.accept().await.unwrap();
                    let limits = Http1Limits { max_body_bytes: 32, ..Http1Limits::default() };
                    tokio::spawn(serve_connection(
                        stream,
                        peer,
                        app.clone(),
                        Front::default(),
                        limits,
                        CancellationToken::new(),
                    ));
                }
            });
            addr
        }

        /// Reads `n` whole responses (all have content-length) from `s`.
        async fn responses(s: &mut TcpStream, n: usize) -> Vec<(u16, String)> {
            let mut raw = Vec::new();
            let mut out = Vec::new();
            while out.len() < n {
                let mut chunk = [0u8; 4096];
                let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                    .await
                    .expect("response timed out")
                    .unwrap();
                assert!(got > 0, "closed after {} responses: {:?}", out.len(), String::from_utf8_lossy(&raw));
                raw.extend_from_slice(&chunk[..got]);
                while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map(|v| v.parse().unwrap())
                        .unwrap_or(0);
                    if raw.len() < end + 4 + len {
                        break;
                    }
                    let status = head[9..12].parse().unwrap();
                    out.push((status, String::from_utf8(raw[end + 4..end + 4 + len].to_vec()).unwrap()));
                    raw.drain(..end + 4 + len);
                }
            }
            out
        }

        #[tokio::test]
        async fn keep_alive_pipelining_and_limits() {
            let addr = server(Arc::default()).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            // Two pipelined requests, the second chunked: answered in order on one connection.
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiPOST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nyou\r\n0\r\n\r\n").await.unwrap();
            assert_eq!(
                responses(&mut s, 2).await,
                [(200, "127.0.0.1:hi".to_owned()), (200, "127.0.0.1:you".to_owned())]
            );
            // Over the body limit: 413 with the reason, then the connection closes.
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 33\r\n\r\n").await.unwrap();
            assert_eq!(responses(&mut s, 1).await, [(413, "request body larger than 32 bytes\n".to_owned())]);
            let mut rest = Vec::new();
            assert_eq!(
                tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap(),
                0
            );
            // Garbage: 400; other connections are unaffected.
            let mut bad = TcpStream::connect(addr).await.unwrap();
            bad.write_all(b"\x16\x03\x01 not http\r\n\r\n").await.unwrap();
            assert_eq!(responses(&mut bad, 1).await[0].0, 400);
            let mut good = TcpStream::connect(addr).await.unwrap();
            good.write_all(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nok").await.unwrap();
            assert_eq!(responses(&mut good, 1).await, [(200, "127.0.0.1:ok".to_owned())]);
        }

        #[tokio::test]
        async fn a_client_that_leaves_drops_its_parked_handler() {
            let dropped = Arc::new(AtomicUsize::new(0));
            let addr = server(dropped.clone()).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"POST /park HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(dropped.load(Ordering::SeqCst), 0, "parked, not dropped");
            drop(s);
            for _ in 0..50 {
                if dropped.load(Ordering::SeqCst) == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("the handler of a closed connection was not dropped");
        }

        #[tokio::test]
        async fn upgrades_are_served_by_hyper_on_the_same_connection() {
            let addr = server(Arc::default()).await;
            // A plain request first, then the upgrade on the same connection.
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na").await.unwrap();
            assert_eq!(responses(&mut s, 1).await, [(200, "127.0.0.1:a".to_owned())]);
            let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), s).await.unwrap();
            assert_eq!(resp.status(), 101);
            ws.send(tokio_tungstenite::tungstenite::Message::text("hello")).await.unwrap();
            let echo = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(echo.into_text().unwrap().as_str(), "echo hello");
        }
    }
}
