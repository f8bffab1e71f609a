//! STOMP's listeners, mirroring `xmpp::listen`: plain TCP (`stomp-tcp`),
//! TLS (`stomp-tls`), and the HTTP listener (`http`) with STOMP over
//! WebSocket at `http.ws_path` (Herald's own WebSocket link, upgraded by
//! the front server of transport/http1.rs) and SockJS at `http.sockjs_path`
//! (hyper: its answers stream).
//!
//! Wiring only: it binds, hands each connection to the accept loop of
//! transport/tcp.rs with STOMP's rules, and starts [`super::serve`] on
//! the link it gets. It may import the engine (for the session), config
//! and transport; nothing imports it but the node's start-up (`crate::listen`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::engine::{Engine, EngineError, Listener};
use crate::transport::conn::{Admission, Cors, Refusal};
use crate::transport::http1::{self, Front, WsEndpoint};
use crate::transport::sockjs::{self, SockJsConfig};
use crate::transport::tcp::{self, ListenerRules, StreamRx, StreamTx, TcpRx};
use crate::transport::{LinkTx, Peer};

/// Binds the STOMP listeners that are configured (TCP, TLS, HTTP) and
/// starts accepting.
pub async fn listen(engine: &Engine, admission: &Admission, bound: &mut Vec<Listener>) -> Result<(), EngineError> {
    if let Some(addr) = engine.config.stomp.listen {
        let (l, local) = tcp::bind(addr, "stomp-tcp").await?;
        bound.push(Listener { name: "stomp-tcp", addr: local });
        admission.tasks.spawn(accept_loop(engine.clone(), admission.clone(), l, None));
    }
    if let Some(tls) = &engine.config.stomp.tls {
        let acceptor = tls_acceptor(tls)?;
        let (l, local) = tcp::bind(tls.listen, "stomp-tls").await?;
        bound.push(Listener { name: "stomp-tls", addr: local });
        admission.tasks.spawn(accept_loop(engine.clone(), admission.clone(), l, Some(acceptor)));
    }
    if let Some(addr) = engine.config.http.listen {
        let (l, local) = tcp::bind(addr, "http").await?;
        bound.push(Listener { name: "http", addr: local });
        admission.tasks.spawn(serve_http(engine.clone(), admission.clone(), l));
    }
    Ok(())
}

pub fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, tcp::ListenError> {
    tcp::acceptor_from_files(&tls.cert, &tls.key, "stomp.tls")
}

/// A STOMP listener's rules: connections must log in; a refused client
/// gets an ERROR frame (none over TLS: its first bytes are a handshake).
fn rules(name: &'static str, tls: bool) -> ListenerRules {
    let refusal = if tls { tcp::silent_refusal } else { refusal };
    ListenerRules { name, login: true, refusal }
}

fn refusal(r: &Refusal) -> Vec<u8> {
    format!("ERROR\ncontent-type:text/plain\nmessage:{r}\n\n{r}\0").into_bytes()
}

/// The STOMP listener (TCP, or TLS when `tls` is given).
pub async fn accept_loop(engine: Engine, admission: Admission, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let rules = match tls {
        None => rules("stomp-tcp", false),
        Some(_) => rules("stomp-tls", true),
    };
    tcp::accept(admission, listener, rules, move |stream, addr| {
        let engine = engine.clone();
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
                    let peer = Peer { addr: Some(addr), transport: crate::transport::Transport::Tcp };
                    Box::pin(super::serve(engine, TcpRx(r), StreamTx::new(w), peer))
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
            let peer = Peer { addr: Some(addr), transport: crate::transport::Transport::Tls };
            super::serve(engine, StreamRx(r), StreamTx::new(w), peer).await;
        }
        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
    }
}

/// SockJS at `http.sockjs_path`, each session a STOMP session.
pub fn router(engine: &Engine, admission: &Admission) -> Router {
    let cfg = &engine.config.http;
    let sockjs_cfg = SockJsConfig {
        heartbeat: Duration::from_millis(cfg.sockjs_heartbeat_ms),
        disconnect_delay: Duration::from_millis(cfg.sockjs_disconnect_delay_ms),
        max_pending_messages: engine.config.limits.outbound_queue,
        // SockJS carries frames JSON-escaped (up to 6 bytes per byte for
        // control characters) and batched: the STOMP decoder enforces the
        // frame limit with a clear ERROR; this only bounds one request.
        max_inbound_bytes: engine.config.limits.max_frame_bytes * 6 + 64 * 1024,
        body_timeout: Duration::from_millis(engine.config.connections.body_timeout_ms),
        cors: Cors::from_config(&engine.config),
        forward: admission.gate.forwarder().cloned(),
        mount: cfg.sockjs_path.clone(),
        ..SockJsConfig::default()
    };
    let (e, admission) = (engine.clone(), admission.clone());
    let on_session: sockjs::OnSession = Arc::new(move |rx, tx, peer| {
        // A SockJS session outlives the requests that carry it: it has a
        // slot of its own (counted for its client, unauthenticated until
        // CONNECT), apart from its HTTP connections'.
        let slot = match admission.session_slot(peer.addr.map(|a| a.ip())) {
            Ok(slot) => slot,
            Err(r) => {
                tracing::debug!(peer = ?peer.addr, "SockJS session refused: {r}");
                admission.tasks.spawn(async move {
                    let mut tx = tx;
                    let _ = tx.feed(bytes::Bytes::from(refusal(&r))).await;
                    tx.close().await;
                    drop(rx);
                });
                return;
            }
        };
        admission.spawn(slot, super::serve(e.clone(), rx, tx, peer));
    });
    Router::new().nest(&cfg.sockjs_path, sockjs::router(sockjs_cfg, on_session))
}

/// STOMP's WebSocket endpoint for the front server.
pub fn websocket(engine: &Engine, admission: &Admission) -> Front {
    let (e, a) = (engine.clone(), admission.clone());
    let endpoint = WsEndpoint {
        path: engine.config.http.ws_path.clone(),
        protocols: &super::ws::STOMP_SUBPROTOCOLS,
        // A frame a little over the limit must reach the STOMP decoder, which
        // answers with an ERROR naming the limit; only messages far beyond it
        // (twice the frame limit) are refused by the WebSocket layer unread.
        max_message: engine.config.limits.max_frame_bytes * 2 + 64 * 1024,
        admit: Arc::new(move |addr| {
            // The upgraded connection's slot (http1 counted it for the client).
            let slot = a.session_slot(Some(addr.ip())).ok()?;
            let (e, a) = (e.clone(), a.clone());
            Some(Box::new(move |rx, tx| {
                // No async block: one that captured the link (or the session
                // future) would keep a dead copy of it in every idle
                // session's task; the scope holds the slot alongside instead.
                a.spawn(
                    slot,
                    super::serve(e, rx, tx, Peer { addr: Some(addr), transport: crate::transport::Transport::Ws }),
                );
            }))
        }),
    };
    Front {
        websockets: Arc::from([endpoint]),
        direct: Arc::from([]),
        plain_to_hyper: true,
        gate: Some(admission.gate.clone()),
        cors: Cors::from_config(&engine.config),
    }
}

/// The STOMP HTTP listener's deadlines (`[connections]`). hyper's idle
/// deadline must outlast SockJS heart-beats, which keep streams open.
pub fn http_limits(engine: &Engine) -> http1::Http1Limits {
    let c = &engine.config.connections;
    http1::Http1Limits {
        header_timeout: Duration::from_millis(c.header_timeout_ms),
        body_timeout: Duration::from_millis(c.body_timeout_ms),
        idle_timeout: Duration::from_millis(c.idle_timeout_ms.max(engine.config.http.sockjs_heartbeat_ms * 2)),
        write_timeout: Duration::from_millis(engine.config.limits.write_timeout_ms),
        ..Default::default()
    }
}

/// The HTTP listener's accept loop.
pub async fn serve_http(engine: Engine, admission: Admission, listener: TcpListener) {
    let app = router(&engine, &admission);
    let front = websocket(&engine, &admission);
    let limits = http_limits(&engine);
    let shutdown = admission.shutdown.clone();
    // Every connection takes a slot (a WebSocket session takes over its
    // connection's; SockJS sessions have their own).
    tcp::accept_http(admission, listener, "http", move |stream, addr| {
        http1::serve_connection(stream, addr, app.clone(), front.clone(), limits.clone(), shutdown.clone())
    })
    .await
}
