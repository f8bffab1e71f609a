//! Byte streams: the accept loop every TCP listener runs (STOMP, XMPP c2s,
//! the HTTP listeners, admin), TLS acceptors from PEM files or a
//! certificate, and the byte-stream link halves ([`TcpRx`], [`StreamRx`],
//! [`StreamTx`]) the edges run over.
//!
//! Part of the lower floor: it knows connections, not protocols or the
//! engine. It may import `config` and the rest of `transport`; what a
//! connection runs is the caller's closure, and how it is admitted is a
//! [`conn::Admission`] and a listener's [`ListenerRules`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::conn::{self, Admission, Refusal};
use super::{LinkRx, LinkTx};

/// How much a read may add to the buffer at once. `TcpRx` reserves it only
/// once the socket is readable, so idle sessions keep no read buffer.
const READ_CHUNK: usize = 4096;

/// Why a listener could not start. The engine wraps it (`EngineError`);
/// the texts are what the binary prints.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: io::Error },
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Binds the listener `what` and returns it with the address it got (port
/// 0 in the config picks a free port).
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<(TcpListener, SocketAddr), ListenError> {
    let err = |source| ListenError::Bind { what, addr, source };
    let l = TcpListener::bind(addr).await.map_err(err)?;
    let local = l.local_addr().map_err(err)?;
    Ok((l, local))
}

/// A rustls acceptor from PEM files; errors name the config key.
pub fn acceptor_from_files(
    cert: &std::path::Path,
    key: &std::path::Path,
    key_name: &str,
) -> Result<TlsAcceptor, ListenError> {
    let err = |what: &str, e: &dyn std::fmt::Display| ListenError::Tls(format!("{what}: {e}"));
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(
        std::fs::File::open(cert).map_err(|e| err(&format!("{key_name} certificate {}", cert.display()), &e))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| err(key_name, &e))?;
    let key = rustls_pemfile::private_key(&mut io::BufReader::new(
        std::fs::File::open(key).map_err(|e| err(&format!("{key_name} key {}", key.display()), &e))?,
    ))
    .map_err(|e| err(key_name, &e))?
    .ok_or_else(|| ListenError::Tls(format!("{key_name}: no private key in file")))?;
    acceptor(certs, key)
}

pub fn acceptor(
    certs: Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
    key: tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, ListenError> {
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ListenError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ListenError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How one listener treats its connections (transport/conn.rs admits them).
#[derive(Debug, Clone, Copy)]
pub struct ListenerRules {
    /// The listener's name (`stomp-tcp`, `xmpp-c2s`, `http`, ...): whether
    /// it takes PROXY protocol headers (`connections.proxy_protocol`).
    pub name: &'static str,
    /// A stream protocol whose connection must log in: it counts as
    /// unauthenticated until then. HTTP connections do not (the sessions
    /// they upgrade to or carry do); they are bounded by deadlines instead.
    pub login: bool,
    /// What a refused client is told before the close (best effort).
    pub refusal: fn(&Refusal) -> Vec<u8>,
}

impl ListenerRules {
    /// An HTTP listener: connections do not log in; a refused client gets
    /// a 503 or 429 with the reason.
    pub fn http(name: &'static str) -> ListenerRules {
        ListenerRules { name, login: false, refusal: http_refusal }
    }
}

/// No bytes: the client's first bytes are a TLS handshake.
pub fn silent_refusal(_: &Refusal) -> Vec<u8> {
    Vec::new()
}

/// The next accepted connection, or `None` once `shutdown` fires. Accept
/// errors (out of file descriptors, mostly) back off, up to 1 s, instead of
/// spinning; `backoff` is the loop's state.
pub async fn next_connection(
    listener: &TcpListener,
    shutdown: &tokio_util::sync::CancellationToken,
    backoff: &mut Duration,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(x) => { *backoff = Duration::from_millis(5); return Some(x) }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off {:?}", backoff);
                    tokio::time::sleep(*backoff).await;
                    *backoff = (*backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
}

/// Accepts until shutdown and hands each admitted connection to `on_conn`
/// in its own task, with the client's address (from a PROXY header when
/// the peer is a trusted proxy and the listener takes them). Each task
/// holds its connection's [`conn::Slot`]: `limits.max_connections`, the
/// per-address and unauthenticated caps. A refused connection is told why
/// (`rules.refusal`) and closed. Accept errors (out of file descriptors,
/// mostly) back off instead of spinning.
pub async fn accept<F, Fut>(admission: Admission, listener: TcpListener, rules: ListenerRules, on_conn: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on_conn = Arc::new(on_conn);
    let proxied = admission.takes_proxy_header(rules.name);
    let header_timeout = admission.header_timeout;
    let mut backoff = Duration::from_millis(5);
    loop {
        let Some((stream, addr)) = next_connection(&listener, &admission.shutdown, &mut backoff).await else { return };
        let addr = SocketAddr::new(conn::canonical(addr.ip()), addr.port());
        let trusted = admission.gate.is_trusted(addr.ip());
        // A trusted proxy's connection is counted by its client's address
        // (after the PROXY header, or per session for HTTP), not the proxy's.
        // So is another node's forwarded request (transport/forward.rs): one
        // node holds a connection per forwarded long poll, and counting them
        // by its address would let a thousand of them shut every other
        // forwarded client out (`connections.max_per_ip`).
        let from_node = !trusted && admission.gate.forwarder().is_some_and(|f| f.owners.is_node(addr.ip()));
        let by_address = if trusted || from_node { None } else { Some(addr.ip()) };
        let slot = match admission.gate.admit(by_address, rules.login) {
            Ok(slot) => slot,
            Err(r) => {
                tracing::debug!(%addr, listener = rules.name, "connection refused: {r}");
                let _ = stream.try_write(&(rules.refusal)(&r));
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if proxied && trusted {
            let on_conn = on_conn.clone();
            admission.tasks.spawn(async move {
                let mut stream = stream;
                let client = match tokio::time::timeout(header_timeout, conn::read_proxy_header(&mut stream, addr))
                    .await
                {
                    Ok(Ok(client)) => client,
                    Ok(Err(e)) => return tracing::debug!(%addr, error = %e, "PROXY header refused"),
                    Err(_) => return tracing::debug!(%addr, "no PROXY header in time (connections.header_timeout_ms)"),
                };
                let slot = match slot.into_session(client.ip()) {
                    Ok(s) => s,
                    Err(r) => {
                        let _ = stream.try_write(&(rules.refusal)(&r));
                        return tracing::debug!(%client, "connection refused: {r}");
                    }
                };
                // The box in a statement of its own: see stomp::listen::accept_loop.
                let work = Box::pin(conn::scope(slot, on_conn(stream, client)));
                work.await
            });
            continue;
        }
        admission.spawn(slot, on_conn(stream, addr));
    }
}

/// [`accept`] for HTTP listeners: connections count against
/// `limits.max_connections` and `connections.max_per_ip` (not for a trusted
/// proxy: its clients are counted per session by their forwarded address),
/// not as unauthenticated; a refused client gets a 503 or 429 with the reason.
pub async fn accept_http<F, Fut>(admission: Admission, listener: TcpListener, name: &'static str, on_conn: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    accept(admission, listener, ListenerRules::http(name), on_conn).await
}

/// The HTTP answer to a refused connection: 503 when the node is full,
/// 429 for an address over its cap.
pub fn http_refusal(r: &Refusal) -> Vec<u8> {
    let status = match r {
        Refusal::Node | Refusal::Unauthenticated => "503 Service Unavailable",
        Refusal::PerIp | Refusal::UnauthenticatedPerIp => "429 Too Many Requests",
    };
    let body = format!("{r}\n");
    format!("HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

/// Reading half of a plain TCP connection. It waits for readiness before
/// it reserves buffer space, so an idle session holds no read buffer (the
/// edges drop an emptied buffer); a generic [`StreamRx`] must reserve first.
pub struct TcpRx(pub tokio::net::tcp::OwnedReadHalf);

impl LinkRx for TcpRx {
    fn recv(&mut self, buf: &mut BytesMut) -> impl std::future::Future<Output = io::Result<usize>> + Send {
        let stream: &TcpStream = self.0.as_ref();
        std::future::poll_fn(move |cx| poll_read_ready_buf(stream, cx, buf))
    }
}

/// Reads into `buf` once `stream` is readable, reserving space only then.
///
/// Polled, not `readable().await`: a readiness future holds a waiter node
/// (~150 B) in every idle session's state for as long as it waits, while
/// `poll_read_ready` keeps the one waker in the socket's registration. Only
/// the session's own task reads, so that one waker is enough. No state is
/// kept between polls: dropping the caller loses nothing (cancel-safe).
pub fn poll_read_ready_buf(stream: &TcpStream, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        buf.reserve(READ_CHUNK);
        match stream.try_read_buf(buf) {
            // Readiness was stale (it is cleared only by a WouldBlock): give
            // the space back, then poll again to register the waker.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if buf.is_empty() {
                    *buf = BytesMut::new();
                }
            }
            r => return Poll::Ready(r),
        }
    }
}

/// Reading half of any byte stream.
pub struct StreamRx<R>(pub R);

impl<R: AsyncRead + Unpin + Send + 'static> LinkRx for StreamRx<R> {
    async fn recv(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        buf.reserve(READ_CHUNK);
        // `read_buf` is cancel-safe: bytes are in `buf` once it returns.
        self.0.read_buf(buf).await
    }
}

/// Writing half of any byte stream, with a write buffer that is empty (and
/// small) between bursts.
pub struct StreamTx<W> {
    inner: W,
    out: BytesMut,
}

impl<W> StreamTx<W> {
    pub fn new(inner: W) -> Self {
        StreamTx { inner, out: BytesMut::new() }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> LinkTx for StreamTx<W> {
    async fn feed(&mut self, unit: Bytes) -> io::Result<()> {
        super::reserve_write(&mut self.out, unit.len());
        self.out.extend_from_slice(&unit);
        if self.out.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn feed_split(&mut self, head: Bytes, tail: Bytes) -> io::Result<()> {
        super::reserve_write(&mut self.out, head.len() + tail.len());
        self.out.extend_from_slice(&head);
        self.out.extend_from_slice(&tail);
        if self.out.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.inner.write_all(&self.out).await?;
            // Released, not kept: an idle connection holds no write buffer.
            self.out = BytesMut::new();
        }
        self.inner.flush().await
    }

    async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.inner.shutdown().await;
    }
}

/// Connects a plain TCP client (tests and the benchmark use this).
pub async fn connect(addr: SocketAddr) -> io::Result<(TcpRx, StreamTx<tokio::net::tcp::OwnedWriteHalf>)> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (r, w) = s.into_split();
    Ok((TcpRx(r), StreamTx::new(w)))
}
