//! SockJS server transport (protocol 0.3.3), so browser code written for
//! RabbitMQ Web-STOMP (`new SockJS(url)` + `Stomp.over(ws)`) works unchanged.
//!
//! [`router`] returns an axum [`Router`] that the caller nests at the service
//! prefix (e.g. `/stomp`). It knows nothing about the protocol carried: every
//! new SockJS session, whatever its transport, is handed to the [`OnSession`]
//! callback as a [`SockJsRx`] / [`SockJsTx`] pair.
//!
//! Transports: framed websocket (`/{server}/{session}/websocket`), raw
//! websocket (`/websocket`), xhr polling, xhr streaming, eventsource, htmlfile
//! and jsonp polling, with `xhr_send` / `jsonp_send` for client messages.
//!
//! Memory is bounded per session: client → app messages go through a small
//! bounded channel (senders wait: HTTP/TCP backpressure), app → client messages
//! wait in an outbox of at most [`SockJsConfig::max_pending_messages`] messages
//! (overflow closes the session), and a request body or websocket message is at
//! most [`SockJsConfig::max_inbound_bytes`].
//!
//! # Layout
//!
//! - `session.rs`: a session and its link halves, in the shared HTTP
//!   session table ([`crate::transport::http_session`]).
//! - `transports.rs`: the receiving, sending and websocket transports.
//! - `framing.rs`: frames, their wrapping per transport, JSON escaping and
//!   client message decoding (sans-IO, unit-tested).
//! - `http.rs`: HTTP plumbing and the static endpoints.
//! - `forward.rs`: in a cluster, requests for sessions held by another
//!   node are forwarded there.
//!
//! May import: the transport layer's own modules (link traits, `Peer`,
//! CORS, the HTTP session table, the websocket read buffer size); never the
//! engine or a protocol: the carried protocol is wired in by the caller.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;

use super::http_session::Cors;
use super::http_session::SessionTable;
use super::Peer;

mod forward;
mod framing;
mod http;
mod session;
#[cfg(test)]
mod tests;
mod transports;

pub(crate) use framing::{encode_messages, form_field, must_escape, parse_messages};
use http::{greeting, iframe_html, iframe_page, info, options_get, options_post};
use session::Session;
pub use session::{SockJsRx, SockJsTx};
use transports::{
    eventsource, framed_websocket, htmlfile, jsonp, jsonp_send, raw_websocket, xhr, xhr_send, xhr_streaming,
};

/// Where the iframe page (`/iframe.html`) loads sockjs-client from. Only the
/// iframe-based transports of old browsers use it.
pub const SOCKJS_CLIENT_URL: &str = "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js";

/// Tuning of the SockJS endpoint.
#[derive(Debug, Clone)]
pub struct SockJsConfig {
    /// Interval of `h` frames on an open receiving connection (default 25 s).
    pub heartbeat: Duration,
    /// A session is closed when it has had no receiving request for this long
    /// (default 5 s).
    pub disconnect_delay: Duration,
    /// Streaming responses (`xhr_streaming`, `eventsource`, `htmlfile`) end
    /// after this many bytes of frames (default 128 KiB).
    pub response_limit: usize,
    /// Messages that may wait for a client between polls; more closes the
    /// session (default 4096).
    pub max_pending_messages: usize,
    /// Largest `xhr_send` / `jsonp_send` body and websocket message (default
    /// 1 MiB); larger gets `413` / closes the websocket.
    pub max_inbound_bytes: usize,
    /// Whether the websocket transports are offered (default true).
    pub websocket: bool,
    /// An `xhr_send` / `jsonp_send` body must arrive within this (default
    /// 30 s, `connections.body_timeout_ms`); 408 after.
    pub body_timeout: Duration,
    /// Origins allowed (others get 403) and whether credentials are
    /// allowed (`connections.cors_*`; default: any origin, no credentials).
    pub cors: Cors,
    /// In a cluster: requests for sessions another node holds go there
    /// (`forward.rs`).
    pub forward: Option<super::forward::Forwarder>,
    /// The path the endpoint is nested at (forwarded requests need it).
    pub mount: String,
}

impl Default for SockJsConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(25),
            disconnect_delay: Duration::from_secs(5),
            response_limit: 128 * 1024,
            max_pending_messages: 4096,
            max_inbound_bytes: 1024 * 1024,
            websocket: true,
            body_timeout: Duration::from_secs(30),
            cors: Cors::default(),
            forward: None,
            mount: String::new(),
        }
    }
}

/// Called once per new SockJS session (any transport) with the session's two
/// halves. Runs on the request's task: spawn, don't block.
pub type OnSession = Arc<dyn Fn(SockJsRx, SockJsTx, Peer) + Send + Sync>;

/// The SockJS endpoints, relative to the point where the caller nests them.
///
/// The peer address is taken from `ConnectInfo<SocketAddr>` when the server is
/// run with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(config: SockJsConfig, on_session: OnSession) -> Router {
    let iframe = iframe_page(SOCKJS_CLIENT_URL);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    iframe.hash(&mut hasher);
    let iframe_etag = format!("\"{:016x}\"", hasher.finish());
    let shared =
        Arc::new(Shared { config, on_session, sessions: Arc::new(SessionTable::default()), iframe, iframe_etag });
    let router = Router::new()
        .route("/", get(greeting))
        .route("/info", get(info).options(options_get))
        .route("/websocket", get(raw_websocket))
        .route("/{file}", get(iframe_html))
        .route("/{server}/{session}/xhr", post(xhr).options(options_post))
        .route("/{server}/{session}/xhr_streaming", post(xhr_streaming).options(options_post))
        .route("/{server}/{session}/xhr_send", post(xhr_send).options(options_post))
        .route("/{server}/{session}/eventsource", get(eventsource))
        .route("/{server}/{session}/htmlfile", get(htmlfile))
        .route("/{server}/{session}/jsonp", get(jsonp))
        .route("/{server}/{session}/jsonp_send", post(jsonp_send))
        .route("/{server}/{session}/websocket", get(framed_websocket))
        .with_state(shared.clone());
    match shared.config.forward.clone() {
        None => router,
        Some(f) => {
            tokio::spawn(forward::keep(Arc::downgrade(&shared), f));
            router.layer(axum::middleware::from_fn_with_state(shared, forward::layer))
        }
    }
}

struct Shared {
    config: SockJsConfig,
    on_session: OnSession,
    sessions: Arc<SessionTable<Session>>,
    iframe: String,
    iframe_etag: String,
}

impl Shared {
    /// The session `id`, if it exists and belongs to `peer`'s address.
    fn get(&self, id: &str, peer: &Peer) -> Option<Arc<Session>> {
        self.sessions.get(id).filter(|s| s.owned_by(peer))
    }

    /// The session `id`, created (and handed to the app) if unknown;
    /// `None` when it belongs to another address.
    fn get_or_create(self: &Arc<Self>, id: &str, peer: Peer) -> Option<Arc<Session>> {
        let mut created = None;
        let session = {
            let mut map = self.sessions.lock();
            match map.get(id) {
                Some(s) if !s.owned_by(&peer) => return None,
                Some(s) => s.clone(),
                None => {
                    let (s, rx, tx) = Session::new(&self.config, peer.addr.map(|a| a.ip()));
                    map.insert(id.to_owned(), s.clone());
                    created = Some((rx, tx));
                    s
                }
            }
        };
        if let Some((rx, tx)) = created {
            self.sessions.start_sweeper(self.config.disconnect_delay);
            (self.on_session)(rx, tx, peer);
        }
        Some(session)
    }
}

type Sh = State<Arc<Shared>>;
