//! The HTTP listener: STOMP over WebSocket at `http.ws_path` (Herald's own
//! WebSocket link, upgraded by the front server of transport/http1.rs) and
//! SockJS at `http.sockjs_path` (hyper: its answers stream).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures_util::FutureExt;
use tokio::net::TcpListener;

use super::http1::{self, Front, WsEndpoint};
use super::sockjs::{self, SockJsConfig};
use super::Peer;
use crate::engine::Engine;

/// Initial read buffer of SockJS's WebSocket transport (tungstenite), bytes:
/// small, because most connections are idle and an idle connection's
/// buffers are most of its memory.
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
    Router::new().nest(&cfg.sockjs_path, sockjs::router(sockjs_cfg, on_session))
}

/// STOMP's WebSocket endpoint for the front server.
pub fn websocket(engine: &Engine) -> Front {
    let e = engine.clone();
    let endpoint = WsEndpoint {
        path: engine.config.http.ws_path.clone(),
        protocols: &super::ws::STOMP_SUBPROTOCOLS,
        // A frame a little over the limit must reach the STOMP decoder, which
        // answers with an ERROR naming the limit; only messages far beyond it
        // (twice the frame limit) are refused by the WebSocket layer unread.
        max_message: engine.config.limits.max_frame_bytes * 2 + 64 * 1024,
        admit: Arc::new(move |addr| {
            let permit = e.connections.clone().try_acquire_owned().ok()?;
            let e = e.clone();
            Some(Box::new(move |rx, tx| {
                // No async block: one that captured the link (or the session
                // future) would keep a dead copy of it in every idle
                // session's task; `map` holds the permit alongside instead.
                let session = crate::stomp::serve(e.clone(), rx, tx, Peer { addr: Some(addr), transport: "ws" }).map(move |()| drop(permit));
                e.tasks.spawn(session);
            }))
        }),
    };
    Front { websockets: Arc::from([endpoint]), direct: Arc::from([]), plain_to_hyper: true }
}

pub async fn serve(engine: Engine, listener: TcpListener) {
    let app = router(engine.clone());
    let front = websocket(&engine);
    let limits = http1::Http1Limits {
        request_timeout: Duration::from_millis(engine.config.limits.connect_timeout_ms),
        write_timeout: Duration::from_millis(engine.config.limits.write_timeout_ms),
        ..Default::default()
    };
    // Sessions, not HTTP connections, take `limits.max_connections` slots.
    crate::transport::tcp::accept_uncounted(engine.clone(), listener, move |engine, stream, addr| {
        http1::serve_connection(stream, addr, app.clone(), front.clone(), limits.clone(), engine.shutdown.clone())
    })
    .await
}
