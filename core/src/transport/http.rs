//! The HTTP listener: STOMP over WebSocket at `http.ws_path`, SockJS at
//! `http.sockjs_path`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};

use super::sockjs::{self, SockJsConfig};
use super::Peer;
use crate::engine::Engine;

/// Initial WebSocket read buffer, bytes: small, because most connections
/// are idle and an idle connection's buffers are most of its memory.
pub const WS_READ_BUFFER: usize = 1024;

pub fn router(engine: Engine) -> Router {
    let cfg = &engine.config.http;
    let sockjs_cfg = SockJsConfig {
        heartbeat: Duration::from_millis(cfg.sockjs_heartbeat_ms),
        disconnect_delay: Duration::from_millis(cfg.sockjs_disconnect_delay_ms),
        max_pending_messages: engine.config.limits.outbound_queue,
        // SockJS carries frames JSON-escaped (up to 6 bytes per byte for
        // control characters) and batched: the STOMP decoder enforces the
        // frame limit with a clear ERROR; this only bounds one request.
        max_inbound_bytes: engine.config.limits.max_frame_bytes * 6 + 64 * 1024,
        ..SockJsConfig::default()
    };
    let e = engine.clone();
    let on_session: sockjs::OnSession = Arc::new(move |rx, tx, peer| {
        let e2 = e.clone();
        let Ok(permit) = e.connections.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached (limits.max_connections); refusing SockJS session");
            e.tasks.spawn(async move {
                let mut tx = tx;
                crate::transport::LinkTx::close(&mut tx).await;
                drop(rx);
            });
            return;
        };
        e.tasks.spawn(crate::stomp::serve(e2, rx, tx, peer).map(move |()| drop(permit)));
    });
    Router::new()
        .route(&cfg.ws_path, get(stomp_ws))
        .with_state(engine.clone())
        .nest(&cfg.sockjs_path, sockjs::router(sockjs_cfg, on_session))
}

async fn stomp_ws(State(engine): State<Engine>, ConnectInfo(addr): ConnectInfo<SocketAddr>, ws: WebSocketUpgrade) -> Response {
    let Ok(permit) = engine.connections.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "connection limit reached").into_response();
    };
    let addr = Some(addr);
    // A frame a little over the limit must reach the STOMP decoder, which
    // answers with an ERROR naming the limit; only messages far beyond it
    // (twice the frame limit) are refused by the WebSocket layer unread.
    let max = engine.config.limits.max_frame_bytes * 2 + 64 * 1024;
    ws.protocols(super::ws::STOMP_SUBPROTOCOLS)
        .max_message_size(max)
        .max_frame_size(max)
        .write_buffer_size(0)
        // tungstenite's default is a 128 KiB read buffer per connection; frames
        // larger than this are still read whole (the buffer grows for them).
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            // No async block: one that captured the `WebSocket` (or the
            // session future) would keep a dead copy of it in every idle
            // session's task; `map` holds the permit alongside instead.
            let (rx, tx) = super::ws::split(socket);
            crate::stomp::serve(engine, rx, tx, Peer { addr, transport: "ws" }).map(move |()| drop(permit))
        })
}

/// Nagle off, as on the STOMP TCP listener: a reply written in two parts
/// (XMPP stream open + features, WebSocket frames) must not wait for the
/// client's delayed ACK (40 ms on Linux).
pub fn nodelay(listener: TcpListener) -> axum::serve::TapIo<TcpListener, fn(&mut TcpStream)> {
    fn set(tcp: &mut TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    axum::serve::ListenerExt::tap_io(listener, set as fn(&mut TcpStream))
}

pub async fn serve(engine: Engine, listener: TcpListener) {
    let app = router(engine.clone());
    let shutdown = engine.shutdown.clone();
    let listener = nodelay(listener);
    let result = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}
