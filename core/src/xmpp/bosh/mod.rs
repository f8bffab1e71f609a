//! BOSH connection manager (XEP-0124 with XEP-0206): XMPP for browsers over
//! plain HTTP requests, as strophe.js and other HTTP-binding clients speak it.
//!
//! [`router`] returns an axum [`Router`] that the caller nests at the service
//! path (`/http-bind`, `/bosh`). Every new BOSH session is handed to the
//! [`OnSession`] callback as a [`BoshRx`] / [`BoshTx`] pair that implements
//! the transport-independent [`XmppRx`] / [`XmppTx`] link.
//!
//! How a session works:
//!
//! - Each request is a `<body/>` with a `rid`. Requests are processed
//!   strictly in `rid` order (out-of-order arrivals wait for the missing
//!   ones) and answered in `rid` order. The children of a body become
//!   [`XmppIn::Stanza`]s; session creation and `xmpp:restart` become
//!   [`XmppIn::Open`]; `type='terminate'` becomes [`XmppIn::Close`] after its
//!   children.
//! - With nothing to send, up to `hold` requests are kept waiting until the
//!   session flushes stanzas or `wait` runs out (then an empty `<body/>`); a
//!   newer request releases the oldest one. Stanzas flushed while no request
//!   waits are queued for the next one.
//! - The response to a creation or restart request waits (at most
//!   [`OPEN_WAIT`]) for the session's first flush after [`XmppTx::open`], so
//!   it carries the `<stream:features/>` as XEP-0206 asks.
//! - The last `window` responses are kept: a request with a `rid` already
//!   answered (a retransmission after a broken connection) gets the same
//!   response again. Nothing is tied to an HTTP connection, so a page that
//!   kept `sid` and `rid` can carry on ("re-attach").
//! - A session ends when the client terminates it, when the app closes it
//!   ([`XmppTx::close`]), on a binding error (`rid` outside the window,
//!   too many requests, too frequent polling, outbound queue overflow) or
//!   after `inactivity` without any request waiting or arriving. Then it is
//!   forgotten: its `sid` gets `item-not-found`.
//!
//! Memory is bounded per session: request bodies are at most
//! [`BoshConfig::max_body_bytes`]; client stanzas wait for the app in an inbox
//! of about one body (further requests then wait, unprocessed: HTTP
//! backpressure, and `requests` bounds how many may wait); stanzas for the
//! client wait in an outbox of at most [`BoshConfig::max_pending_stanzas`]
//! (overflow ends the session); at most `window` responses are kept.
//!
//! Not implemented (all optional in XEP-0124): session pause (`pause` is
//! ignored and `maxpause` not announced), acknowledgements (`ack` is ignored
//! and never sent, no `report`), key sequencing (`key`/`newkey` ignored),
//! multiple streams (`stream` not announced, so extra `to` attributes on later
//! requests are ignored as the XEP asks), request compression (`accept`) and
//! character sets other than UTF-8, `route`. Errors use HTTP 200 with a
//! terminal `<body type='terminate' condition='…'/>`, except malformed
//! requests (400 with a text reason, session untouched) and oversized bodies
//! (413).
//!
//! # Layout
//!
//! As ejabberd keeps `mod_bosh` (HTTP and session table) apart from
//! `ejabberd_bosh` (the per-session machine that poses as a socket):
//!
//! - `machine.rs`: the rid-window machine of one session, plain state with
//!   effects, unit-tested without sockets or tasks.
//! - `body.rs`: the `<body/>` codec (response bodies, request parsing).
//! - `session.rs`: the machine behind a lock, the [`BoshRx`] / [`BoshTx`]
//!   link halves, the session's entry in the shared HTTP session table
//!   ([`crate::transport::http_session`], whose sweeper ends idle sessions).
//! - `http.rs`: the HTTP handlers (`POST`, preflight, info page).
//!
//! This module may import the XMPP link and XML types, the transport layer
//! (`Peer`, the front server's direct route, the HTTP session table) and
//! the shaper; never the engine or the XMPP session: it hands each new
//! session to [`OnSession`], which `xmpp::listen` wires to the engine.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::config::ShaperConfig;
use crate::transport::http1::Direct;
use crate::transport::Peer;
use crate::xmpp::xml::Limits;

mod body;
mod http;
mod machine;
mod session;
#[cfg(test)]
mod tests;

pub use body::{NS_HTTPBIND, NS_XBOSH};
pub use machine::OPEN_WAIT;
pub use session::{BoshRx, BoshTx};

/// Tuning of the BOSH endpoint.
#[derive(Debug, Clone)]
pub struct BoshConfig {
    /// Cap on the client's `wait`: the longest a request is held (default 60 s).
    pub max_wait: Duration,
    /// The `inactivity` announced: a session with no request waiting or
    /// arriving for this long is dropped (default 60 s).
    pub max_inactivity: Duration,
    /// Cap on the client's `hold` (default 1).
    pub max_hold: u32,
    /// The `requests` announced, at least `hold + 1` (default 2). More
    /// unanswered requests at once is a `policy-violation`.
    pub max_requests: u32,
    /// The `polling` announced (default 2 s): an empty request that comes
    /// sooner than this after an empty request that got an empty response,
    /// with nothing held, is a `policy-violation`. Zero disables the check
    /// (and the attribute).
    pub polling: Duration,
    /// How far ahead of the last processed `rid` a request may be, and how
    /// many responses are kept for retransmissions (at least `requests`;
    /// default 2).
    pub window: u64,
    /// Largest request body (default 256 KiB); larger gets `413`.
    pub max_body_bytes: usize,
    /// Stanzas that may wait for the client's next request; more ends the
    /// session with `policy-violation` (default 4096).
    pub max_pending_stanzas: usize,
    /// Limits of the stanzas in a body (depth counts from the stanza; a
    /// stanza may be as large as the body).
    pub xml_limits: Limits,
    /// Origins allowed to use the endpoint from a browser; `None` allows any
    /// (the request's origin is echoed). Others get `403`. Requests without
    /// an `Origin` header (non-browser clients) are always allowed.
    pub allowed_origins: Option<Vec<String>>,
    /// Answer `Access-Control-Allow-Credentials: true` to allowed origins
    /// (`connections.cors_credentials`; off by default).
    pub cors_credentials: bool,
    /// Inbound rate limits; BOSH applies the byte rate to request bodies
    /// (stanzas are shaped by the XMPP session). Off by default.
    pub shaper: ShaperConfig,
    /// In a cluster: requests for sessions held by another node go there
    /// (transport/forward.rs), and sids name this node.
    pub forward: Option<crate::transport::forward::Forwarder>,
}

impl Default for BoshConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(60),
            max_inactivity: Duration::from_secs(60),
            max_hold: 1,
            max_requests: 2,
            polling: Duration::from_secs(2),
            window: 2,
            max_body_bytes: 256 * 1024,
            max_pending_stanzas: 4096,
            xml_limits: Limits::default(),
            allowed_origins: None,
            cors_credentials: false,
            shaper: ShaperConfig::default(),
            forward: None,
        }
    }
}

/// Called once per new BOSH session with its two halves. Runs on the
/// request's task: spawn, don't block. To refuse a session, close the
/// [`BoshTx`] (the creation request then gets the stream error).
pub type OnSession = Arc<dyn Fn(BoshRx, BoshTx, Peer) + Send + Sync>;

/// The BOSH endpoint at each of `paths`, with and without the trailing slash
/// many strophe.js configurations use; every path shares the sessions.
/// `POST`s are the front server's direct route (transport/http1.rs); the
/// router serves the `OPTIONS` preflight, a `GET` info page, and `POST`s on
/// connections hyper serves. The peer address is taken from
/// `ConnectInfo<SocketAddr>`.
pub fn mount(config: BoshConfig, on_session: OnSession, paths: &[&str]) -> (Router, Direct) {
    let (bosh, handler) = http::endpoint(config, on_session);
    // `nest_service`, unlike `nest`, also serves `/http-bind/`.
    let router = paths.iter().fold(Router::new(), |r, p| r.nest_service(p, bosh.clone()));
    let paths = paths.iter().flat_map(|p| [p.to_string(), format!("{p}/")]).collect();
    (router, Direct { method: axum::http::Method::POST, paths, handler })
}
