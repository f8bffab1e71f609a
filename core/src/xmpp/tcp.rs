//! XMPP c2s over TCP: one XML stream, STARTTLS first (RFC 6120 §5).
//!
//! With `xmpp.starttls = "required"` the connection is upgraded here, before
//! the session sees it: the first stream offers only `<starttls/>`, and
//! anything else is a `policy-violation`. The session then starts on the
//! TLS stream with the client's new header.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::link::{StreamError, XmppIn, XmppRx, XmppTx};
use super::ns;
use super::xml::{Element, Limits, StreamParser, XmlEvent};
use crate::engine::Engine;
use crate::shaper::{self, Shaper};
use crate::transport::tcp::{StreamRx, StreamTx};
use crate::transport::{LinkRx, LinkTx, Peer};

fn stream_header(id: &str, from: &str) -> Bytes {
    Bytes::from(format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{id}' from='{from}' version='1.0' xml:lang='en'>",
        ns::CLIENT,
        ns::STREAM
    ))
}

fn open_event(header: &Element) -> XmppIn {
    XmppIn::Open {
        to: header.attr("to").map(str::to_owned),
        lang: header.attr("xml:lang").map(str::to_owned),
        version: header.attr("version").map(str::to_owned),
    }
}

/// RFC 6120 §4.8 and §4.9.3.10: the header must be `<stream>` in the streams
/// namespace with `jabber:client` as the default content namespace, or the
/// stream ends with `invalid-namespace`. (An undeclared prefix is already a
/// `bad-namespace-prefix` from the parser.)
fn check_header(h: &Element, parser: &StreamParser) -> Result<(), StreamError> {
    if !h.is("stream", ns::STREAM) {
        return Err(StreamError::new("invalid-namespace", format!("expected <stream> in {}", ns::STREAM)));
    }
    if parser.stream_default_ns() != ns::CLIENT {
        return Err(StreamError::new("invalid-namespace", format!("expected a stream in {}", ns::CLIENT)));
    }
    Ok(())
}

pub struct TcpXmppRx<R> {
    link: StreamRx<R>,
    parser: StreamParser,
    buf: BytesMut,
    /// Bytes per second (`[shaper]`); `None` when off.
    shaper: Option<Box<Shaper>>,
}

impl<R: AsyncRead + Unpin + Send + 'static> XmppRx for TcpXmppRx<R> {
    async fn recv(&mut self) -> Result<Option<XmppIn>, StreamError> {
        loop {
            match self.parser.parse(&mut self.buf) {
                Ok(Some(XmlEvent::StreamOpen(h))) => {
                    check_header(&h, &self.parser)?;
                    return Ok(Some(open_event(&h)));
                }
                Ok(Some(XmlEvent::Stanza(s))) => return Ok(Some(XmppIn::Stanza(s))),
                Ok(Some(XmlEvent::StreamClose)) => return Ok(Some(XmppIn::Close)),
                Ok(None) => {}
                Err(e) => return Err(StreamError::new(e.condition(), e.to_string())),
            }
            if self.buf.is_empty() && self.buf.capacity() > 16 * 1024 {
                self.buf = BytesMut::new();
            }
            // Over its byte rate, the client is not read from until its
            // tokens refill; what is already buffered was handed out above.
            if shaper::paused(&mut self.shaper) {
                shaper::pause(&mut self.shaper).await;
            }
            match self.link.recv(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => {
                    if let Some(s) = self.shaper.as_deref_mut() {
                        s.read(n);
                    }
                }
            }
        }
    }

    fn restart(&mut self) {
        self.parser.reset();
    }
}

pub struct TcpXmppTx<W> {
    link: StreamTx<W>,
    opened: bool,
    domain: String,
}

impl<W: AsyncWrite + Unpin + Send + 'static> XmppTx for TcpXmppTx<W> {
    async fn open(&mut self, id: &str, from: &str) -> io::Result<()> {
        self.opened = true;
        self.link.feed(stream_header(id, from)).await
    }

    async fn send(&mut self, element: Bytes) -> io::Result<()> {
        self.link.feed(element).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.link.flush().await
    }

    async fn close(&mut self, error: Option<StreamError>) {
        if !self.opened {
            // RFC 6120 §4.9.1.2: an error before our header still gets one.
            let _ = self.link.feed(stream_header("error", &self.domain)).await;
        }
        if let Some(e) = error {
            let _ = self.link.feed(e.to_element().to_bytes()).await;
        }
        let _ = self.link.feed(Bytes::from_static(b"</stream:stream>")).await;
        self.link.close().await;
    }
}

fn split<S: AsyncRead + AsyncWrite + Send + 'static>(
    s: S,
    limits: Limits,
    domain: &str,
    buf: BytesMut,
    shaper: Option<Box<Shaper>>,
) -> (TcpXmppRx<tokio::io::ReadHalf<S>>, TcpXmppTx<tokio::io::WriteHalf<S>>) {
    let (r, w) = tokio::io::split(s);
    (
        TcpXmppRx { link: StreamRx(r), parser: StreamParser::new(limits), buf, shaper },
        TcpXmppTx { link: StreamTx::new(w), opened: false, domain: domain.to_owned() },
    )
}

/// What a refused c2s connection is told (`connections.*` caps): a stream
/// header and a `policy-violation` stream error with the reason.
pub fn refusal(r: &crate::transport::conn::Refusal) -> Vec<u8> {
    let mut out = stream_header("refused", "").to_vec();
    out.extend_from_slice(&StreamError::new("policy-violation", r.to_string()).to_element().to_bytes());
    out.extend_from_slice(b"</stream:stream>");
    out
}

pub fn limits(engine: &Engine) -> Limits {
    Limits {
        max_depth: engine.config.xmpp.max_depth,
        max_stanza_bytes: engine.config.xmpp.max_stanza_bytes,
        ..Limits::default()
    }
}

/// One c2s connection: STARTTLS when configured, then the session.
pub async fn handle(engine: Engine, mut stream: TcpStream, addr: SocketAddr, tls: Option<TlsAcceptor>) {
    let domain = engine.config.xmpp.domain.clone();
    let limits = limits(&engine);
    let Some(acceptor) = tls else {
        let (rx, tx) = split(stream, limits, &domain, BytesMut::new(), Shaper::new(&engine.config.shaper, true, false));
        return super::session::serve(
            engine,
            rx,
            tx,
            Peer { addr: Some(addr), transport: crate::transport::Transport::Tcp },
        )
        .await;
    };
    let deadline = Duration::from_millis(engine.config.limits.connect_timeout_ms);
    let upgraded = tokio::time::timeout(deadline, starttls(&mut stream, &domain, limits)).await;
    match upgraded {
        Ok(Ok(PreTls::Proceed)) => {}
        Ok(Ok(PreTls::Closed)) => {
            // The client closed its stream before TLS: close ours, no error.
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(b"</stream:stream>")).await;
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "STARTTLS negotiation failed");
            let mut out = BytesMut::new();
            out.extend_from_slice(&e.to_element().to_bytes());
            out.extend_from_slice(b"</stream:stream>");
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
            return;
        }
        Err(_) => return,
    }
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => {
            let (rx, tx) =
                split(tls_stream, limits, &domain, BytesMut::new(), Shaper::new(&engine.config.shaper, true, false));
            super::session::serve(
                engine,
                rx,
                tx,
                Peer { addr: Some(addr), transport: crate::transport::Transport::Tls },
            )
            .await
        }
        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
    }
}

/// How the pre-TLS stream ended without an error.
enum PreTls {
    /// `<proceed/>` was sent: the TLS handshake comes next.
    Proceed,
    /// The client closed its stream.
    Closed,
}

/// SASL attempts on the pre-TLS stream before it is closed: each is told
/// `encryption-required` (RFC 6120 §6.5.3), as ejabberd does.
const MAX_CLEAR_AUTH: u32 = 3;

/// The pre-TLS stream: header, `<starttls required/>`, `<proceed/>`.
async fn starttls(stream: &mut TcpStream, domain: &str, limits: Limits) -> Result<PreTls, StreamError> {
    let mut parser = StreamParser::new(limits);
    let mut buf = BytesMut::new();
    let mut header_sent = false;
    let mut clear_auth = 0;
    loop {
        let event = match parser.parse(&mut buf) {
            Ok(Some(e)) => e,
            Ok(None) => {
                buf.reserve(4096);
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return Err(StreamError::new("connection-timeout", "closed before TLS")),
                    Ok(_) => {}
                }
                continue;
            }
            Err(e) => {
                if !header_sent {
                    let _ = stream.write_all(&stream_header("pre-tls", domain)).await;
                }
                return Err(StreamError::new(e.condition(), e.to_string()));
            }
        };
        match event {
            XmlEvent::StreamOpen(h) => {
                let mut out = BytesMut::new();
                out.extend_from_slice(&stream_header(&uuid::Uuid::new_v4().simple().to_string(), domain));
                header_sent = true;
                // The pre-TLS stream is held to the same namespaces as the session's.
                if let Err(e) = check_header(&h, &parser) {
                    stream.write_all(&out).await.map_err(|e| StreamError::new("connection-timeout", e.to_string()))?;
                    return Err(e);
                }
                if h.attr("to").is_some_and(|to| !to.eq_ignore_ascii_case(domain)) {
                    stream.write_all(&out).await.map_err(|e| StreamError::new("connection-timeout", e.to_string()))?;
                    return Err(StreamError::new("host-unknown", format!("this server serves {domain}")));
                }
                let features = Element::new("features", ns::STREAM)
                    .with_child(Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS)));
                out.extend_from_slice(&features.to_bytes());
                stream.write_all(&out).await.map_err(|e| StreamError::new("connection-timeout", e.to_string()))?;
            }
            XmlEvent::Stanza(s) if s.is("starttls", ns::TLS) => {
                if !buf.is_empty() {
                    return Err(StreamError::new("policy-violation", "data after <starttls/>"));
                }
                let proceed = Element::new("proceed", ns::TLS).to_bytes();
                stream.write_all(&proceed).await.map_err(|e| StreamError::new("connection-timeout", e.to_string()))?;
                return Ok(PreTls::Proceed);
            }
            XmlEvent::Stanza(s) if s.is("auth", ns::SASL) && clear_auth < MAX_CLEAR_AUTH => {
                clear_auth += 1;
                let failure =
                    Element::new("failure", ns::SASL).with_child(Element::new("encryption-required", ns::SASL));
                stream
                    .write_all(&failure.to_bytes())
                    .await
                    .map_err(|e| StreamError::new("connection-timeout", e.to_string()))?;
            }
            XmlEvent::Stanza(_) => return Err(StreamError::new("policy-violation", "STARTTLS is required")),
            XmlEvent::StreamClose => return Ok(PreTls::Closed),
        }
    }
}

/// The certificate for STARTTLS: from config, or a self-signed one for the
/// domain generated at start (development; clients must be told to trust it).
pub fn tls_acceptor(engine: &Engine) -> Result<TlsAcceptor, crate::transport::tcp::ListenError> {
    let x = &engine.config.xmpp;
    if let (Some(cert), Some(key)) = (&x.cert, &x.key) {
        return crate::transport::tcp::acceptor_from_files(cert, key, "xmpp.cert");
    }
    tracing::warn!(domain = %x.domain, "no xmpp.cert configured: using a generated self-signed certificate");
    let generated = rcgen::generate_simple_self_signed(vec![x.domain.clone()])
        .map_err(|e| crate::transport::tcp::ListenError::Tls(format!("generating a certificate: {e}")))?;
    let cert = generated.cert.der().clone();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    crate::transport::tcp::acceptor(vec![cert], key)
}
