//! In a cluster: a SockJS request over an HTTP transport for a session
//! that another node holds is forwarded there (transport/forward.rs), and
//! this node's claims on its sessions are kept alive in the registry.
//!
//! Who holds a session: the node whose receiving request created it claims
//! its id (`Owners::sockjs_claim`, a Redis key with an expiry) before the
//! session exists; [`keep`] refreshes the claims of the sessions still in
//! the table and drops those of sessions that ended. The claim is on the
//! session id alone, as this node's table is: the server id in the URL is
//! only there for sticky load balancers (SockJS protocol).
//!
//! The websocket transports need nothing: one connection carries the whole
//! session, so it lives on the node the connection reached.
//!
//! May import: axum/http types, the forwarder, the endpoint's [`Shared`] state.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::http::{response, TEXT};
use super::Shared;
use crate::transport::forward::{Forwarder, Owner};

/// How often [`keep`] refreshes this node's claims (their expiry is longer:
/// `cluster::forward`).
pub const KEEP_EVERY: Duration = Duration::from_secs(10);

/// Longest server or session id that is looked up in the registry.
const MAX_ID: usize = 128;

enum Kind {
    /// Attaches to the session, or creates it.
    Receive,
    /// Needs an existing session.
    Send,
}

/// The layer in front of the endpoint's routes.
pub(super) async fn layer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let Some(f) = shared.config.forward.as_ref() else {
        return next.run(req).await;
    };
    let mut parts = req.uri().path().trim_start_matches('/').split('/');
    let (Some(server), Some(session), Some(transport), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return next.run(req).await;
    };
    let kind = match transport {
        "xhr" | "xhr_streaming" | "eventsource" | "htmlfile" | "jsonp" => Kind::Receive,
        "xhr_send" | "jsonp_send" => Kind::Send,
        _ => return next.run(req).await,
    };
    let ok = |s: &str| !s.is_empty() && s.len() <= MAX_ID && !s.contains('.');
    if Forwarder::is_forwarded(req.headers()) || !ok(server) || !ok(session) || shared.sessions.get(session).is_some() {
        return next.run(req).await;
    }
    let owner = match kind {
        Kind::Receive => f.owners.sockjs_claim(session).await,
        Kind::Send => f.owners.sockjs_owner(session).await,
    };
    let (name, addr) = match owner {
        Owner::Here => return next.run(req).await,
        Owner::Unknown => {
            f.stats.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let text = "cluster registry unavailable: cannot tell which node holds this SockJS session\n";
            return response(StatusCode::SERVICE_UNAVAILABLE, Some(TEXT), Body::from(text));
        }
        Owner::Node { name, addr } => (name, addr),
    };
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let (parts, body) = req.into_parts();
    // Bounded as the endpoint bounds its own bodies.
    let limit = shared.config.max_inbound_bytes;
    let body = match tokio::time::timeout(shared.config.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    let pq = parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str());
    let path = format!("{}{pq}", shared.config.mount);
    match f.forward((&name, addr), parts.method, &path, &parts.headers, body, client, Duration::ZERO).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!("SockJS request not forwarded: {e}");
            e.response().map(Body::from)
        }
    }
}

/// Keeps this node's claims while the endpoint lives.
pub(super) async fn keep(shared: Weak<Shared>, f: Forwarder) {
    let mut before: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(KEEP_EVERY).await;
        let Some(s) = shared.upgrade() else { return };
        let now: HashSet<String> = s.sessions.lock().keys().cloned().collect();
        drop(s);
        let gone = before.difference(&now).cloned().collect();
        f.owners.sockjs_keep(now.iter().cloned().collect(), gone).await;
        before = now;
    }
}
