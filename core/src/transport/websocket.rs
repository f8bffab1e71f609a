//! WebSocket (RFC 6455) for Herald's own endpoints: STOMP at `http.ws_path`
//! and XMPP at `/ws` and `/xmpp-websocket`.
//!
//! Why not tungstenite behind hyper: an idle WebSocket session is mostly its
//! transport. tungstenite holds a read buffer for the connection's life, and
//! splitting its socket adds a lock; measured (bench/profile.sh stomp-ws),
//! those layers were ~1.9 KB of a 6 KB idle session. Here the front server
//! (transport/http1.rs) answers the handshake and the link reads on readiness
//! like the TCP link: no buffer while idle, and the two halves share only a
//! small control slot (pongs and the close code owed to the client).
//!
//! The handshake check and the frame codec are sans-IO ([`handshake`],
//! [`Decoder`], [`encode_frame`]) with tests beside them; [`WsRx`] and
//! [`WsTx`] only move bytes. SockJS's WebSocket transport stays on axum's.

use std::io;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::tcp::poll_read_ready_buf;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Control frames owed to the client at most (a few pongs).
const MAX_OWED: usize = 1024;

/// Outgoing data is written once this much is buffered, even before a flush.
const WRITE_HIGH_WATER: usize = 64 * 1024;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes Herald sends (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Why an upgrade request was refused; each is an HTTP status with a reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("a WebSocket upgrade must be a GET")]
    Method,
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
    #[error("unsupported Sec-WebSocket-Version (this server speaks 13)")]
    Version,
}

impl HandshakeError {
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeError::Method => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeError::Key => StatusCode::BAD_REQUEST,
            HandshakeError::Version => StatusCode::UPGRADE_REQUIRED,
        }
    }
}

/// An accepted handshake: what the 101 answer carries.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub accept: String,
    /// The endpoint's first subprotocol (in its order of preference) that the
    /// client offered; a client offering none of them is accepted without one
    /// (as axum and RabbitMQ's Web-STOMP do).
    pub protocol: Option<&'static str>,
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Checks an upgrade request (its `Upgrade`/`Connection` headers were seen by
/// the caller) and picks the subprotocol from `protocols`.
pub fn handshake(method: &Method, headers: &HeaderMap, protocols: &[&'static str]) -> Result<Accepted, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::Method);
    }
    if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
        return Err(HandshakeError::Version);
    }
    let key = headers.get("sec-websocket-key").map(|v| v.as_bytes()).ok_or(HandshakeError::Key)?;
    // The key is 16 random bytes, base64: 24 characters.
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    // The endpoint's preference wins, not the client's order: RabbitMQ's
    // Web-STOMP answers `v10.stomp, v11.stomp` with `v11.stomp` (the
    // highest version offered), and STOMP lists its versions highest first.
    let offered = |p: &str| {
        headers
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|o| o.trim() == p)
    };
    let protocol = protocols.iter().copied().find(|p| offered(p));
    Ok(Accepted { accept: accept_key(key), protocol })
}

/// The 101 answer for an accepted handshake.
pub fn switching_protocols(accepted: &Accepted) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\n",
        accepted.accept
    );
    if let Some(p) = accepted.protocol {
        out.push_str(&format!("sec-websocket-protocol: {p}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Why the client's frames cannot be read; each maps to the close code sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("WebSocket text message is not valid UTF-8")]
    Utf8,
    #[error("WebSocket message larger than {0} bytes")]
    TooBig(usize),
}

impl WsError {
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => CLOSE_PROTOCOL,
            WsError::Utf8 => CLOSE_INVALID_DATA,
            WsError::TooBig(_) => CLOSE_TOO_BIG,
        }
    }
}

/// What the client sent, one whole message or control frame at a time.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The client's close code, when it gave a valid one.
    Close(Option<u16>),
}

/// Client frames to messages: unmasks, reassembles fragments, enforces the
/// message size limit from the frame header (before buffering the payload)
/// and checks text for UTF-8.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// A fragmented message in progress: whether it is text, and its bytes.
    /// Boxed: rare, and this is part of every idle session.
    partial: Option<Box<(bool, BytesMut)>>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Decoder { max_message, partial: None }
    }

    /// Consumes one frame from `buf` if it is complete; `Ok(None)` when more
    /// bytes are needed (or a fragment was stored and no message is whole yet
    /// and `buf` holds no further complete frame).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, WsError> {
        loop {
            let Some((fin, opcode, payload)) = self.frame(buf)? else { return Ok(None) };
            match opcode {
                OP_PING => return Ok(Some(Event::Ping(payload))),
                OP_PONG => return Ok(Some(Event::Pong)),
                OP_CLOSE => return close_event(&payload).map(Some),
                OP_TEXT | OP_BINARY if self.partial.is_some() => {
                    return Err(WsError::Protocol("new message before the last one ended"))
                }
                OP_TEXT | OP_BINARY if fin => return message(opcode == OP_TEXT, payload).map(Some),
                OP_TEXT | OP_BINARY => self.partial = Some(Box::new((opcode == OP_TEXT, BytesMut::from(&payload[..])))),
                OP_CONTINUATION => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(WsError::Protocol("continuation without a message"));
                    };
                    partial.1.extend_from_slice(&payload);
                    if fin {
                        let (text, data) = *self.partial.take().unwrap_or_default();
                        return message(text, data.freeze()).map(Some);
                    }
                }
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
        }
    }

    /// One complete frame off `buf`: FIN, opcode, unmasked payload.
    fn frame(&self, buf: &mut BytesMut) -> Result<Option<(bool, u8, Bytes)>, WsError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set (no extension was agreed)"));
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::Protocol("client frames must be masked"));
        }
        let control = opcode & 0x08 != 0;
        let (len, at) = match b1 & 0x7F {
            126 if buf.len() < 4 => return Ok(None),
            126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() < 10 => return Ok(None),
            127 => (u64::from_be_bytes(buf[2..10].try_into().unwrap_or_default()), 10),
            n => (u64::from(n), 2),
        };
        if control && (!fin || len > 125) {
            return Err(WsError::Protocol("control frames are single and at most 125 bytes"));
        }
        let so_far = self.partial.as_ref().map_or(0, |p| p.1.len() as u64);
        if !control && so_far.saturating_add(len) > self.max_message as u64 {
            return Err(WsError::TooBig(self.max_message));
        }
        let len = len as usize; // within max_message (or 125), so it fits
        if buf.len() < at + 4 + len {
            return Ok(None);
        }
        let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        buf.advance(at + 4);
        let mut payload = buf.split_to(len);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        Ok(Some((fin, opcode, payload.freeze())))
    }
}

fn message(text: bool, data: Bytes) -> Result<Event, WsError> {
    if !text {
        return Ok(Event::Binary(data));
    }
    std::str::from_utf8(&data).map_err(|_| WsError::Utf8)?;
    Ok(Event::Text(data))
}

fn close_event(payload: &[u8]) -> Result<Event, WsError> {
    match payload.len() {
        0 => Ok(Event::Close(None)),
        1 => Err(WsError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            // Codes an endpoint may send (§7.4): 1000–1003, 1007–1014, 3000–4999.
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(WsError::Protocol("invalid close code"));
            }
            std::str::from_utf8(&payload[2..]).map_err(|_| WsError::Utf8)?;
            Ok(Event::Close(Some(code)))
        }
    }
}

/// Appends one unmasked server frame (FIN set) whose payload is `parts`.
pub fn encode_frame(opcode: u8, parts: &[&[u8]], out: &mut BytesMut) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(10 + len);
    out.put_u8(0x80 | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// What the reading half owes the client, written by whichever half can:
/// the reader writes it at once unless the writer is mid-write, and the
/// writer writes it before its own frames, so frames never interleave.
#[derive(Debug, Default)]
struct Control {
    /// Encoded control frames (pongs) not written yet.
    pending: Vec<u8>,
    /// The writer is writing: the reader must leave `pending` to it.
    writing: bool,
    /// The close code the closing handshake sends: the client's, echoed, or
    /// why its frames were refused.
    close_code: Option<u16>,
}

type Shared = Arc<Mutex<Control>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Control> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Splits an upgraded connection; `read` holds bytes that came after the
/// handshake.
pub fn split(stream: TcpStream, read: BytesMut, max_message: usize) -> (WsRx, WsTx) {
    let (r, w) = stream.into_split();
    let shared = Shared::default();
    (
        WsRx { io: r, buf: read, decoder: Decoder::new(max_message), shared: shared.clone() },
        WsTx { io: w, out: BytesMut::new(), shared },
    )
}

/// A whole data message from the client.
#[derive(Debug)]
pub struct Message {
    pub text: bool,
    pub data: Bytes,
}

/// Reading half: whole messages; pings are answered here.
pub struct WsRx {
    io: OwnedReadHalf,
    buf: BytesMut,
    decoder: Decoder,
    shared: Shared,
}

impl WsRx {
    /// The next data message; `Ok(None)` when the client closed (with a
    /// close frame or not). Protocol errors are `InvalidData` carrying a
    /// [`WsError`], after which the close frame says the matching code.
    /// Cancel-safe: bytes read stay in `self` until a message is whole.
    pub fn read_message(&mut self) -> impl std::future::Future<Output = io::Result<Option<Message>>> + Send + '_ {
        // Polled, like the TCP link (tcp::poll_read_ready_buf says why).
        std::future::poll_fn(move |cx| self.poll_next(cx))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Message>>> {
        loop {
            let event = self.decoder.decode(&mut self.buf);
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                // Payloads keep their slice of the chunk alive; the buffer
                // itself is dropped so an idle session holds none.
                self.buf = BytesMut::new();
            }
            match event {
                Ok(Some(Event::Text(data))) => return Poll::Ready(Ok(Some(Message { text: true, data }))),
                Ok(Some(Event::Binary(data))) => return Poll::Ready(Ok(Some(Message { text: false, data }))),
                Ok(Some(Event::Ping(payload))) => {
                    self.pong(&payload);
                    continue;
                }
                Ok(Some(Event::Pong)) => continue,
                Ok(Some(Event::Close(code))) => {
                    lock(&self.shared).close_code.get_or_insert(code.unwrap_or(CLOSE_NORMAL));
                    return Poll::Ready(Ok(None));
                }
                Err(e) => {
                    lock(&self.shared).close_code.get_or_insert(e.close_code());
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
                Ok(None) => {}
            }
            if ready!(poll_read_ready_buf(self.io.as_ref(), cx, &mut self.buf))? == 0 {
                return Poll::Ready(Ok(None));
            }
        }
    }

    fn pong(&self, payload: &[u8]) {
        let mut c = lock(&self.shared);
        if c.pending.len() > MAX_OWED {
            // A client pinging faster than it reads: answering the latest
            // ping is enough (RFC 6455 §5.5.3), and this stays bounded.
            return;
        }
        let mut frame = BytesMut::new();
        encode_frame(OP_PONG, &[payload], &mut frame);
        c.pending.extend_from_slice(&frame);
        if !c.writing {
            // Without waiting: what the socket does not take now goes out
            // ahead of the writer's next frames.
            let stream: &TcpStream = self.io.as_ref();
            if let Ok(n) = stream.try_write(&c.pending) {
                c.pending.drain(..n);
            }
            if c.pending.is_empty() {
                c.pending = Vec::new();
            }
        }
    }
}

/// Writing half: one frame per message, buffered until [`WsTx::flush`].
pub struct WsTx {
    io: OwnedWriteHalf,
    out: BytesMut,
    shared: Shared,
}

impl WsTx {
    /// Queues one message made of `parts` (one frame, no copy joins them first).
    pub async fn feed(&mut self, text: bool, parts: &[&[u8]]) -> io::Result<()> {
        super::reserve_write(&mut self.out, 10 + parts.iter().map(|p| p.len()).sum::<usize>());
        encode_frame(if text { OP_TEXT } else { OP_BINARY }, parts, &mut self.out);
        if self.out.len() >= WRITE_HIGH_WATER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes owed control frames, then everything fed.
    pub async fn flush(&mut self) -> io::Result<()> {
        loop {
            let owed = {
                let mut c = lock(&self.shared);
                if c.pending.is_empty() && self.out.is_empty() {
                    c.writing = false;
                    return Ok(());
                }
                c.writing = true;
                std::mem::take(&mut c.pending)
            };
            self.io.write_all(&owed).await?;
            if !self.out.is_empty() {
                self.io.write_all(&self.out).await?;
                // Released, not kept: an idle session holds no write buffer.
                self.out = BytesMut::new();
            }
        }
    }

    /// Flushes, sends the close frame (the client's code echoed, or why we
    /// close) and shuts the sending side.
    pub async fn close(&mut self) {
        if self.flush().await.is_err() {
            return;
        }
        let code = lock(&self.shared).close_code.unwrap_or(CLOSE_NORMAL);
        encode_frame(OP_CLOSE, &[&code.to_be_bytes()], &mut self.out);
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// A client frame as a browser sends it: masked.
    fn client_frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn accept_key_is_the_rfc_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn handshake_picks_the_endpoints_preferred_offered_protocol_and_refuses_bad_requests() {
        let ok = [("sec-websocket-version", "13"), ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")];
        // STOMP's list (stomp::ws::STOMP_SUBPROTOCOLS): highest version first.
        let stomp = &["v12.stomp", "v11.stomp", "v10.stomp"];
        let mut h = headers(&ok);
        h.append("sec-websocket-protocol", HeaderValue::from_static("v10.stomp, mqtt"));
        h.append("sec-websocket-protocol", HeaderValue::from_static("v12.stomp"));
        let a = handshake(&Method::GET, &h, stomp).unwrap();
        assert_eq!(a, Accepted { accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(), protocol: Some("v12.stomp") });
        let text = String::from_utf8(switching_protocols(&a)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\n")
                && text.ends_with("sec-websocket-protocol: v12.stomp\r\n\r\n"),
            "{text}"
        );
        assert_eq!(
            handshake(&Method::GET, &headers(&ok), &["xmpp"]).unwrap().protocol,
            None,
            "no protocol offered: accepted without one"
        );
        // RabbitMQ 3.10 Web-STOMP (observed): `v10.stomp, v11.stomp` → `v11.stomp`,
        // `v13.stomp, v11.stomp` → `v11.stomp`; `stomp` or `foo` → 101 without one.
        for (offer, chosen) in [
            ("v10.stomp, v11.stomp", Some("v11.stomp")),
            ("v13.stomp, v11.stomp", Some("v11.stomp")),
            ("v10.stomp,v12.stomp,v11.stomp", Some("v12.stomp")),
            ("stomp", None),
            ("foo", None),
        ] {
            let mut h = headers(&ok);
            h.append("sec-websocket-protocol", HeaderValue::from_static(offer));
            assert_eq!(handshake(&Method::GET, &h, stomp).unwrap().protocol, chosen, "{offer}");
        }
        assert_eq!(handshake(&Method::POST, &headers(&ok), &[]), Err(HandshakeError::Method));
        let e = handshake(&Method::GET, &headers(&[("sec-websocket-version", "8"), ok[1]]), &[]).unwrap_err();
        assert_eq!((e.clone(), e.status()), (HandshakeError::Version, StatusCode::UPGRADE_REQUIRED));
        let e = handshake(&Method::GET, &headers(&[ok[0], ("sec-websocket-key", "short")]), &[]).unwrap_err();
        assert_eq!((e.clone(), e.status()), (HandshakeError::Key, StatusCode::BAD_REQUEST));
        assert_eq!(handshake(&Method::GET, &headers(&ok[..1]), &[]), Err(HandshakeError::Key));
    }

    #[test]
    fn frames_decode_at_every_split_and_fragments_reassemble() {
        let mut wire = client_frame(0x01, b"SEND", [1, 2, 3, 4]); // text, not final
        wire.extend(client_frame(0x89, b"hi", [9, 9, 9, 9])); // a ping between fragments
        wire.extend(client_frame(0x80, "\ndestination:é\n\n\0".as_bytes(), [5, 6, 7, 8]));
        wire.extend(client_frame(0x82, &[0u8, 255, 0], [0, 0, 0, 1]));
        let big = vec![b'x'; 70_000];
        wire.extend(client_frame(0x81, &big, [3, 1, 4, 1])); // 64-bit length
        wire.extend(client_frame(0x81, &big[..300], [2, 7, 1, 8])); // 16-bit length
        wire.extend(client_frame(0x88, &[0x03, 0xE8, b'o', b'k'], [1, 1, 1, 1]));
        let want = vec![
            Event::Ping(Bytes::from_static(b"hi")),
            Event::Text(Bytes::from("SEND\ndestination:é\n\n\0")),
            Event::Binary(Bytes::from_static(&[0, 255, 0])),
            Event::Text(Bytes::from(big.clone())),
            Event::Text(Bytes::from(big[..300].to_vec())),
            Event::Close(Some(1000)),
        ];
        for split in [0, 1, 2, 5, 7, 13, 100, 70_005, wire.len()] {
            let mut dec = Decoder::new(100_000);
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = Vec::new();
            while let Some(e) = dec.decode(&mut buf).unwrap() {
                got.push(e);
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(e) = dec.decode(&mut buf).unwrap() {
                got.push(e);
            }
            assert_eq!(got, want, "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bad_frames_are_errors_with_close_codes() {
        let err = |wire: Vec<u8>, max: usize| Decoder::new(max).decode(&mut BytesMut::from(&wire[..])).unwrap_err();
        let unmasked = vec![0x81, 0x02, b'h', b'i'];
        assert_eq!(err(unmasked, 100), WsError::Protocol("client frames must be masked"));
        let e = err(client_frame(0x81, &[0xC3, 0x28], [1, 2, 3, 4]), 100);
        assert_eq!((e.clone(), e.close_code()), (WsError::Utf8, CLOSE_INVALID_DATA));
        // Refused from the header: the payload is not waited for.
        let mut head = client_frame(0x82, &[0; 200], [0; 4]);
        head.truncate(8);
        let e = err(head, 100);
        assert_eq!((e.clone(), e.close_code()), (WsError::TooBig(100), CLOSE_TOO_BIG));
        // Fragments count together against the limit.
        let mut two = client_frame(0x02, &[0; 60], [0; 4]);
        two.extend(client_frame(0x80, &[0; 60], [0; 4]));
        let mut dec = Decoder::new(100);
        let mut buf = BytesMut::from(&two[..]);
        assert_eq!(dec.decode(&mut buf), Err(WsError::TooBig(100)));
        for (wire, why) in [
            (client_frame(0xC1, b"x", [0; 4]), "reserved bits"),
            (client_frame(0x80, b"x", [0; 4]), "continuation"),
            (client_frame(0x83, b"x", [0; 4]), "unknown opcode"),
            (client_frame(0x09, b"x", [0; 4]), "control frames"),
            (client_frame(0x89, &[0; 126], [0; 4]), "control frames"),
            (client_frame(0x88, &[3], [0; 4]), "one-byte"),
            (client_frame(0x88, &[0x03, 0xED], [0; 4]), "invalid close code"),
        ] {
            let e = err(wire, 1000);
            assert!(matches!(e, WsError::Protocol(m) if m.contains(why)), "{why}: {e:?}");
            assert_eq!(e.close_code(), CLOSE_PROTOCOL);
        }
        let mut interleaved = client_frame(0x01, b"a", [0; 4]);
        interleaved.extend(client_frame(0x81, b"b", [0; 4]));
        assert_eq!(
            Decoder::new(100).decode(&mut BytesMut::from(&interleaved[..])),
            Err(WsError::Protocol("new message before the last one ended"))
        );
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        for (len, head) in
            [(5usize, vec![0x81, 5]), (126, vec![0x81, 126, 0, 126]), (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0])]
        {
            let payload = vec![b'a'; len];
            let mut out = BytesMut::new();
            encode_frame(OP_TEXT, &[&payload[..len / 2], &payload[len / 2..]], &mut out);
            assert_eq!(&out[..head.len()], &head[..], "len {len}");
            assert_eq!(out.len(), head.len() + len);
        }
    }

    /// The front server's own WebSocket over real sockets: handshake and
    /// subprotocol, echo, ping/pong, close echo, a refused handshake, a full
    /// server (503), and a bad frame closed with its code.
    mod wire {
        use std::net::SocketAddr;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;

        use futures_util::{SinkExt, StreamExt};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::Message as TMsg;
        use tokio_util::sync::CancellationToken;

        use super::super::*;
        use crate::transport::http1::{serve_connection, Front, Http1Limits, WsEndpoint};

        async fn server() -> SocketAddr {
            server_with(Arc::new(AtomicBool::new(false))).await
        }

        /// `full`: the endpoint refuses sessions (a connection limit reached).
        async fn server_with(full: Arc<AtomicBool>) -> SocketAddr {
            let endpoint = WsEndpoint {
                path: "/ws".into(),
                protocols: &["v12.stomp", "xmpp"],
                max_message: 1000,
                admit: Arc::new(move |_peer| {
                    if full.load(Ordering::SeqCst) {
                        return None;
                    }
                    Some(Box::new(|mut rx: WsRx, mut tx: WsTx| {
                        tokio::spawn(async move {
                            while let Ok(Some(m)) = rx.read_message().await {
                                let mut reply = b"echo ".to_vec();
                                reply.extend_from_slice(&m.data);
                                tx.feed(m.text, &[&reply]).await.unwrap();
                                tx.flush().await.unwrap();
                            }
                            tx.close().await;
                        });
                    }))
                }),
            };
            let front = Front { websockets: Arc::from([endpoint]), ..Front::default() };
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = listener.accept().await.unwrap();
                    tokio::spawn(serve_connection(
                        stream,
                        peer,
                        axum::Router::new(),
                        front.clone(),
                        Http1Limits::default(),
                        CancellationToken::new(),
                    ));
                }
            });
            addr
        }

        async fn raw(addr: SocketAddr, request: &str) -> (tokio::net::TcpStream, String) {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                assert_eq!(
                    tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await.unwrap().unwrap(),
                    1,
                    "closed: {head:?}"
                );
                head.push(b[0]);
            }
            (s, String::from_utf8(head).unwrap())
        }

        const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

        #[tokio::test]
        async fn a_real_client_talks_pings_and_closes() {
            let addr = server().await;
            let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
            req.headers_mut().insert("sec-websocket-protocol", "mqtt, xmpp".parse().unwrap());
            let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
            assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "xmpp");
            ws.send(TMsg::text("hello")).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), TMsg::text("echo hello"));
            ws.send(TMsg::binary(vec![0u8, 1, 255])).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), TMsg::binary(b"echo \0\x01\xff".to_vec()));
            ws.send(TMsg::Ping(Bytes::from_static(b"p1"))).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), TMsg::Pong(Bytes::from_static(b"p1")));
            let big = "x".repeat(900);
            ws.send(TMsg::text(big.clone())).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), TMsg::text(format!("echo {big}")));
            ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Away,
                reason: "bye".into(),
            }))
            .await
            .unwrap();
            match ws.next().await.unwrap().unwrap() {
                TMsg::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away, "the client's code is echoed"),
                other => panic!("expected a close frame, got {other:?}"),
            }
        }

        #[tokio::test]
        async fn over_the_limit_and_unmasked_frames_are_closed_with_their_codes() {
            let addr = server().await;
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
            ws.send(TMsg::text("y".repeat(1001))).await.unwrap();
            match ws.next().await.unwrap().unwrap() {
                TMsg::Close(Some(f)) => assert_eq!(f.code, CloseCode::Size),
                other => panic!("expected close 1009, got {other:?}"),
            }
            let (mut s, head) = raw(addr, &format!("{UPGRADE}Sec-WebSocket-Version: 13\r\n\r\n")).await;
            assert!(
                head.starts_with("HTTP/1.1 101 ")
                    && head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
                "{head}"
            );
            assert!(!head.contains("sec-websocket-protocol"), "none offered, none chosen: {head}");
            s.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap(); // not masked
            let mut frame = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut frame)).await.unwrap().unwrap();
            assert_eq!(frame, [0x88, 0x02, 0x03, 0xEA], "close 1002");
        }

        #[tokio::test]
        async fn refused_handshakes_say_why() {
            let addr = server().await;
            let (_, head) = raw(addr, &format!("{UPGRADE}Sec-WebSocket-Version: 8\r\n\r\n")).await;
            assert!(head.starts_with("HTTP/1.1 426 ") && head.contains("sec-websocket-version: 13\r\n"), "{head}");
            let (_, head) = raw(
                addr,
                "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await;
            assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        }

        #[tokio::test]
        async fn a_full_server_answers_503() {
            let full = Arc::new(AtomicBool::new(true));
            let addr = server_with(full.clone()).await;
            let (_, head) = raw(addr, &format!("{UPGRADE}Sec-WebSocket-Version: 13\r\n\r\n")).await;
            assert!(head.starts_with("HTTP/1.1 503 ") && head.ends_with("\r\n\r\n"), "{head}");
            full.store(false, Ordering::SeqCst);
            let (_, head) = raw(addr, &format!("{UPGRADE}Sec-WebSocket-Version: 13\r\n\r\n")).await;
            assert!(head.starts_with("HTTP/1.1 101 "), "a slot free again: {head}");
        }
    }
}
