//! The XMPP edge: c2s over TCP (STARTTLS), WebSocket (RFC 7395) and BOSH
//! (XEP-0124/0206), for strophe.js in browsers and Smack, XMPPFramework or
//! slixmpp on phones and servers.
//!
//! `xml` is the sans-IO stream parser and element tree; `link` the framing-
//! independent interface every transport implements; `session` runs one
//! client (SASL, bind, roster, presence, messages) and translates stanzas
//! into engine calls. Routing and presence decisions are the engine's.
//! `sm` is XEP-0198 (stream management): the counters and unacked queue,
//! and the registry through which a resuming stream takes a session over.
//! [`listen`] binds c2s and the HTTP listener (BOSH, WebSocket) over
//! transport's accept loop, as `stomp::listen` does for STOMP; only the
//! node's start-up calls it.

pub mod bosh;
pub mod jid;
pub mod link;
pub mod offline;
pub mod session;
pub mod sm;
pub mod tcp;
pub mod ws;
pub mod xml;

/// Namespaces used on the wire.
pub mod ns {
    pub const CLIENT: &str = "jabber:client";
    pub const STREAM: &str = "http://etherx.jabber.org/streams";
    pub const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
    pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
    pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    pub const ROSTER: &str = "jabber:iq:roster";
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    pub const PING: &str = "urn:xmpp:ping";
    pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
    pub const DELAY: &str = "urn:xmpp:delay";
}

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, EngineError, Listener};
use crate::transport::conn::Admission;
use crate::transport::tcp::{self as tcp_listener, ListenerRules};
use crate::transport::{http1, Peer};

/// Binds the XMPP listeners that are configured: c2s (`xmpp-c2s`) and the
/// HTTP listener for BOSH and WebSocket (`xmpp-http`).
pub async fn listen(engine: &Engine, admission: &Admission, bound: &mut Vec<Listener>) -> Result<(), EngineError> {
    let x = &engine.config.xmpp;
    if let Some(addr) = x.listen {
        let tls = match x.starttls {
            crate::config::StartTls::Required => Some(tcp::tls_acceptor(engine)?),
            crate::config::StartTls::Off => None,
        };
        let (l, local) = tcp_listener::bind(addr, "xmpp-c2s").await?;
        bound.push(Listener { name: "xmpp-c2s", addr: local });
        let rules = ListenerRules { name: "xmpp-c2s", login: true, refusal: tcp::refusal };
        let e = engine.clone();
        admission.tasks.spawn(tcp_listener::accept(admission.clone(), l, rules, move |stream, addr| {
            tcp::handle(e.clone(), stream, addr, tls.clone())
        }));
    }
    if let Some(addr) = x.http_listen {
        let (l, local) = tcp_listener::bind(addr, "xmpp-http").await?;
        bound.push(Listener { name: "xmpp-http", addr: local });
        let (app, front) = http_front(engine, admission);
        // BOSH parks a request per session: the small front server holds no
        // buffers while one waits (transport/http1.rs); upgrades go to hyper.
        // Every connection takes a slot; a WebSocket session takes over its
        // connection's, a BOSH session has its own (it outlives requests).
        let c = &engine.config.connections;
        let limits = http1::Http1Limits {
            max_body_bytes: bosh_body_limit(x),
            header_timeout: Duration::from_millis(c.header_timeout_ms),
            body_timeout: Duration::from_millis(c.body_timeout_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            write_timeout: Duration::from_millis(engine.config.limits.write_timeout_ms),
            ..Default::default()
        };
        let shutdown = admission.shutdown.clone();
        admission.tasks.spawn(tcp_listener::accept_http(admission.clone(), l, "xmpp-http", move |stream, addr| {
            http1::serve_connection(stream, addr, app.clone(), front.clone(), limits.clone(), shutdown.clone())
        }));
    }
    Ok(())
}

/// The largest BOSH request body: one stanza at the limit plus room for
/// the `<body/>` wrapper around it.
fn bosh_body_limit(x: &crate::config::XmppConfig) -> usize {
    x.max_stanza_bytes + 4096
}

/// BOSH at `/http-bind` and `/bosh`, WebSocket at `/xmpp-websocket` and
/// `/ws`: the router and what the front server serves itself.
pub fn http_front(engine: &Engine, admission: &Admission) -> (axum::Router, http1::Front) {
    let x = &engine.config.xmpp;
    let cfg = bosh::BoshConfig {
        max_wait: Duration::from_secs(x.bosh_max_wait_secs),
        max_inactivity: Duration::from_secs(x.bosh_inactivity_secs),
        max_pending_stanzas: engine.config.limits.outbound_queue,
        max_body_bytes: bosh_body_limit(x),
        xml_limits: tcp::limits(engine),
        // `xmpp.bosh_allowed_origins` (older key) decides when set;
        // otherwise `connections.cors_origins`.
        allowed_origins: if !x.bosh_allowed_origins.is_empty() {
            Some(x.bosh_allowed_origins.clone())
        } else if engine.config.connections.cors_origins.iter().any(|o| o == "*") {
            None
        } else {
            Some(engine.config.connections.cors_origins.clone())
        },
        cors_credentials: engine.config.connections.cors_credentials,
        shaper: engine.config.shaper.clone(),
        forward: admission.gate.forwarder().cloned(),
        ..bosh::BoshConfig::default()
    };
    let (e, a) = (engine.clone(), admission.clone());
    let on_session: bosh::OnSession = Arc::new(move |rx, tx, peer| {
        // A BOSH session outlives its requests: its own slot, counted for
        // its client and as unauthenticated until SASL succeeds.
        match a.session_slot(peer.addr.map(|a| a.ip())) {
            Ok(slot) => a.spawn(slot, session::serve(e.clone(), rx, tx, peer)),
            Err(r) => {
                tracing::debug!(peer = ?peer.addr, "BOSH session refused: {r}");
                a.tasks.spawn(async move {
                    let mut tx = tx;
                    let err = link::StreamError::new("resource-constraint", r.to_string());
                    link::XmppTx::close(&mut tx, Some(err)).await;
                    drop(rx);
                });
            }
        }
    });
    let (router, direct) = bosh::mount(cfg, on_session, &["/http-bind", "/bosh"]);
    let front = http1::Front {
        websockets: websockets(engine, admission),
        direct: Arc::from([direct]),
        plain_to_hyper: false,
        gate: Some(admission.gate.clone()),
        cors: crate::transport::conn::Cors::from_config(&engine.config),
    };
    (router, front)
}

/// XMPP over WebSocket at `/ws` and `/xmpp-websocket`, served by the front server.
fn websockets(engine: &Engine, admission: &Admission) -> Arc<[http1::WsEndpoint]> {
    let endpoint = |path: &str| {
        let (engine, a) = (engine.clone(), admission.clone());
        http1::WsEndpoint {
            path: path.to_owned(),
            protocols: &["xmpp"],
            max_message: engine.config.xmpp.max_stanza_bytes + 1024,
            admit: Arc::new(move |addr| {
                // The upgraded connection's slot (http1 counted it for the client).
                let slot = a.session_slot(Some(addr.ip())).ok()?;
                let (engine, a) = (engine.clone(), a.clone());
                Some(Box::new(move |rx, tx| {
                    let (rx, tx) = ws::link(
                        rx,
                        tx,
                        tcp::limits(&engine),
                        crate::shaper::Shaper::new(&engine.config.shaper, true, false),
                    );
                    // The scope holds the slot without a second copy of the
                    // session future (Admission::spawn says why).
                    let session = session::serve(
                        engine,
                        rx,
                        tx,
                        Peer { addr: Some(addr), transport: crate::transport::Transport::Ws },
                    );
                    a.spawn(slot, session);
                }))
            }),
        }
    };
    Arc::from([endpoint("/xmpp-websocket"), endpoint("/ws")])
}
