//! STOMP over TCP and TLS: accept loop and the byte-stream link.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::conn::{self, Refusal};
use super::{LinkRx, LinkTx, Peer};
use crate::config::TlsConfig;
use crate::engine::{Engine, EngineError};

/// How much a read may add to the buffer at once. `TcpRx` reserves it only
/// once the socket is readable, so idle sessions keep no read buffer.
const READ_CHUNK: usize = 4096;

pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, EngineError> {
    TcpListener::bind(addr).await.map_err(|source| EngineError::Listen { what, addr, source })
}

pub fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, EngineError> {
    acceptor_from_files(&tls.cert, &tls.key, "stomp.tls")
}

/// A rustls acceptor from PEM files; errors name the config key.
pub fn acceptor_from_files(
    cert: &std::path::Path,
    key: &std::path::Path,
    key_name: &str,
) -> Result<TlsAcceptor, EngineError> {
    let err = |what: &str, e: &dyn std::fmt::Display| EngineError::Tls(format!("{what}: {e}"));
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(
        std::fs::File::open(cert).map_err(|e| err(&format!("{key_name} certificate {}", cert.display()), &e))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| err(key_name, &e))?;
    let key = rustls_pemfile::private_key(&mut io::BufReader::new(
        std::fs::File::open(key).map_err(|e| err(&format!("{key_name} key {}", key.display()), &e))?,
    ))
    .map_err(|e| err(key_name, &e))?
    .ok_or_else(|| EngineError::Tls(format!("{key_name}: no private key in file")))?;
    acceptor(certs, key)
}

pub fn acceptor(
    certs: Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
    key: tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, EngineError> {
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| EngineError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| EngineError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How a listener's connections are admitted (transport/conn.rs).
#[derive(Debug, Clone, Copy)]
pub struct Admission {
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

impl Admission {
    /// A STOMP listener: a refused client gets an ERROR frame.
    pub fn stomp(name: &'static str) -> Admission {
        Admission { name, login: true, refusal: stomp_refusal }
    }
}

fn stomp_refusal(r: &Refusal) -> Vec<u8> {
    format!("ERROR\ncontent-type:text/plain\nmessage:{r}\n\n{r}\0").into_bytes()
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
/// (`admission.refusal`) and closed. Accept errors (out of file
/// descriptors, mostly) back off instead of spinning.
pub async fn accept<F, Fut>(engine: Engine, listener: TcpListener, admission: Admission, on_conn: F)
where
    F: Fn(Engine, TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on_conn = Arc::new(on_conn);
    let proxied = engine.config.connections.proxy_protocol.iter().any(|l| l == admission.name);
    let header_timeout = Duration::from_millis(engine.config.connections.header_timeout_ms);
    let mut backoff = Duration::from_millis(5);
    loop {
        let Some((stream, addr)) = next_connection(&listener, &engine.shutdown, &mut backoff).await else { return };
        let addr = SocketAddr::new(conn::canonical(addr.ip()), addr.port());
        let trusted = engine.gate.is_trusted(addr.ip());
        // A trusted proxy's connection is counted by its client's address
        // (after the PROXY header, or per session for HTTP), not the proxy's.
        let by_address = if trusted { None } else { Some(addr.ip()) };
        let slot = match engine.gate.admit(by_address, admission.login) {
            Ok(slot) => slot,
            Err(r) => {
                tracing::debug!(%addr, listener = admission.name, "connection refused: {r}");
                let _ = stream.try_write(&(admission.refusal)(&r));
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if proxied && trusted {
            let on_conn = on_conn.clone();
            let engine2 = engine.clone();
            engine.tasks.spawn(async move {
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
                        let _ = stream.try_write(&(admission.refusal)(&r));
                        return tracing::debug!(%client, "connection refused: {r}");
                    }
                };
                let work = Box::pin(conn::scope(slot, on_conn(engine2, stream, client)));
                work.await
            });
            continue;
        }
        // No `async move { work.await }`: an async block would store the
        // connection's future twice (captured, then awaited), and that is
        // what every idle connection costs.
        let work = on_conn(engine.clone(), stream, addr);
        engine.tasks.spawn(conn::scope(slot, work));
    }
}

/// [`accept`] for HTTP listeners: connections count against
/// `limits.max_connections` and `connections.max_per_ip` (not for a trusted
/// proxy: its clients are counted per session by their forwarded address),
/// not as unauthenticated; a refused client gets a 503 or 429 with the reason.
pub async fn accept_http<F, Fut>(engine: Engine, listener: TcpListener, name: &'static str, on_conn: F)
where
    F: Fn(Engine, TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    accept(engine, listener, Admission { name, login: false, refusal: http_refusal }, on_conn).await
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

/// The STOMP listener (TCP, or TLS when `tls` is given).
pub async fn accept_loop(engine: Engine, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let admission = match tls {
        None => Admission::stomp("stomp-tcp"),
        Some(_) => Admission { refusal: silent_refusal, ..Admission::stomp("stomp-tls") },
    };
    accept(engine, listener, admission, move |engine, stream, addr| {
        let tls = tls.clone();
        // Each branch is boxed on its own: one task's memory is then the
        // state of the branch it runs, not the largest of both (a TLS
        // handshake's state is several KiB). The box is made in a statement
        // of its own and awaited in the next: a future built inside the
        // awaited expression is a temporary that lives to the end of that
        // statement, so rustc keeps room for it (640 B) in this block's
        // state beside the box, and the task was a 1 KiB allocation.
        async move {
            let session: Pin<Box<dyn Future<Output = ()> + Send>> = match tls {
                None => {
                    let (r, w) = stream.into_split();
                    let peer = Peer { addr: Some(addr), transport: "tcp" };
                    Box::pin(crate::stomp::serve(engine, TcpRx(r), StreamTx::new(w), peer))
                }
                Some(acceptor) => Box::pin(serve_tls(engine, acceptor, stream, addr)),
            };
            session.await
        }
    })
    .await
}

async fn serve_tls(engine: Engine, acceptor: TlsAcceptor, stream: TcpStream, addr: SocketAddr) {
    let limit = Duration::from_millis(engine.config.limits.connect_timeout_ms);
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => {
            let (r, w) = tokio::io::split(tls_stream);
            let peer = Peer { addr: Some(addr), transport: "tls" };
            crate::stomp::serve(engine, StreamRx(r), StreamTx::new(w), peer).await;
        }
        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
    }
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
        self.out.extend_from_slice(&unit);
        if self.out.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn feed_split(&mut self, head: Bytes, tail: Bytes) -> io::Result<()> {
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
