//! The HTTP listener: STOMP over WebSocket at `http.ws_path` (Herald's own
//! WebSocket link, upgraded by the front server of transport/http1.rs) and
//! SockJS at `http.sockjs_path` (hyper: its answers stream).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use super::conn::{self, Cors};
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
        body_timeout: Duration::from_millis(engine.config.connections.body_timeout_ms),
        cors: Cors::from_config(&engine.config),
        ..SockJsConfig::default()
    };
    let e = engine.clone();
    let on_session: sockjs::OnSession = Arc::new(move |rx, tx, peer| {
        let e2 = e.clone();
        // A SockJS session outlives the requests that carry it: it has a
        // slot of its own (counted for its client, unauthenticated until
        // CONNECT), apart from its HTTP connections'.
        let slot = match conn::session_slot(&e.gate, peer.addr.map(|a| a.ip())) {
            Ok(slot) => slot,
            Err(r) => {
                tracing::debug!(peer = ?peer.addr, "SockJS session refused: {r}");
                e.tasks.spawn(async move {
                    let mut tx = tx;
                    let refusal = format!("ERROR\ncontent-type:text/plain\nmessage:{r}\n\n{r}\0");
                    let _ = crate::transport::LinkTx::feed(&mut tx, bytes::Bytes::from(refusal)).await;
                    crate::transport::LinkTx::close(&mut tx).await;
                    drop(rx);
                });
                return;
            }
        };
        e.tasks.spawn(conn::scope(slot, crate::stomp::serve(e2, rx, tx, peer)));
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
            // The upgraded connection's slot (http1 counted it for the client).
            let slot = conn::session_slot(&e.gate, Some(addr.ip())).ok()?;
            let e = e.clone();
            Some(Box::new(move |rx, tx| {
                // No async block: one that captured the link (or the session
                // future) would keep a dead copy of it in every idle
                // session's task; the scope holds the slot alongside instead.
                let session = crate::stomp::serve(e.clone(), rx, tx, Peer { addr: Some(addr), transport: "ws" });
                e.tasks.spawn(conn::scope(slot, session));
            }))
        }),
    };
    Front {
        websockets: Arc::from([endpoint]),
        direct: Arc::from([]),
        plain_to_hyper: true,
        gate: Some(engine.gate.clone()),
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

pub async fn serve(engine: Engine, listener: TcpListener) {
    let app = router(engine.clone());
    let front = websocket(&engine);
    let limits = http_limits(&engine);
    // Every connection takes a slot (a WebSocket session takes over its
    // connection's; SockJS sessions have their own).
    crate::transport::tcp::accept_http(engine.clone(), listener, "http", move |engine, stream, addr| {
        http1::serve_connection(stream, addr, app.clone(), front.clone(), limits.clone(), engine.shutdown.clone())
    })
    .await
}
