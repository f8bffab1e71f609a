//! What the HTTP session transports (BOSH, SockJS) share: the table of
//! sessions by id with its sweeper, the peer of a request, and CORS (the
//! configured [`Cors`] policy of SockJS and WebSocket upgrades, BOSH's
//! [`echo_origin`]).
//!
//! A session of these transports outlives every HTTP request that carries
//! it, so it lives in a [`SessionTable`] under its id; requests look it up,
//! and a sweeper task ends the ones whose client stopped coming (what
//! "stopped coming" means is each transport's: [`Swept::sweep`]).
//!
//! May import: the standard library, tokio, axum/http types, `parking_lot`,
//! [`super::Peer`] and the typed config. Nothing from the engine, STOMP or XMPP.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use parking_lot::{Mutex, MutexGuard};
use tokio::time::Instant;

use super::Peer;
use crate::config::Config;

/// What the sweeper does with a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Still in use.
    Keep,
    /// Already over: forget it.
    Forget,
    /// Its client stopped coming: forget it, then [`Swept::expire`] it.
    Expire,
}

/// A session kept in a [`SessionTable`].
pub trait Swept: Send + Sync + 'static {
    /// Decides the session's fate at `now`; `idle` is the table's idle
    /// limit (the one given to [`SessionTable::start_sweeper`]). Called with
    /// the table locked: only a look at the session's own state.
    fn sweep(&self, now: Instant, idle: Duration) -> Sweep;
    /// Ends a session the sweeper has forgotten (the table is not locked).
    fn expire(&self);
}

/// Sessions by id, and the sweeper that ends idle ones.
pub struct SessionTable<S> {
    sessions: Mutex<HashMap<String, Arc<S>>>,
    sweeper_started: AtomicBool,
}

impl<S> Default for SessionTable<S> {
    fn default() -> Self {
        SessionTable { sessions: Mutex::new(HashMap::new()), sweeper_started: AtomicBool::new(false) }
    }
}

impl<S: Swept> SessionTable<S> {
    pub fn get(&self, id: &str) -> Option<Arc<S>> {
        self.sessions.lock().get(id).cloned()
    }

    /// The map itself, for a look-up and insert under one lock.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<S>>> {
        self.sessions.lock()
    }

    pub fn insert(&self, id: String, session: Arc<S>) {
        self.sessions.lock().insert(id, session);
    }

    /// Forgets `id` if it is still `session` (a new session may have taken the id).
    pub fn remove_if(&self, id: &str, session: &S) {
        let mut map = self.sessions.lock();
        if map.get(id).is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), session)) {
            map.remove(id);
        }
    }

    /// Starts the sweeper on the first call: every `idle / 4` (between 10 ms
    /// and 1 s) it asks each session whether to keep it (`idle` is the
    /// transport's idle limit: BOSH's `inactivity`, SockJS's disconnect delay). It stops once the
    /// table is dropped.
    pub fn start_sweeper(self: &Arc<Self>, idle: Duration) {
        if self.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(sweep(Arc::downgrade(self), idle, every));
    }
}

async fn sweep<S: Swept>(table: Weak<SessionTable<S>>, idle: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(table) = table.upgrade() else { return };
        let now = Instant::now();
        let mut dead = Vec::new();
        table.sessions.lock().retain(|_, s| match s.sweep(now, idle) {
            Sweep::Keep => true,
            Sweep::Forget => false,
            Sweep::Expire => {
                dead.push(s.clone());
                false
            }
        });
        // Outside the table's lock: expiring may look the table up again.
        for s in dead {
            s.expire();
        }
    }
}

/// The client address of a request, when the server provides `ConnectInfo`
/// (both the front server of `http1.rs` and hyper's do).
pub struct PeerAddr(pub Option<SocketAddr>);

impl PeerAddr {
    pub fn peer(self, transport: crate::transport::Transport) -> Peer {
        Peer { addr: self.0, transport }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

/// CORS for SockJS and WebSocket upgrades (`connections.cors_origins`,
/// `connections.cors_credentials`).
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// `None`: any origin.
    origins: Option<Vec<String>>,
    pub credentials: bool,
}

impl Cors {
    pub fn new(origins: &[String], credentials: bool) -> Cors {
        let any = origins.iter().any(|o| o == "*");
        Cors {
            origins: (!any).then(|| origins.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect()),
            credentials,
        }
    }

    pub fn from_config(config: &Config) -> Cors {
        Cors::new(&config.connections.cors_origins, config.connections.cors_credentials)
    }

    /// Whether a request with these headers may be served: no `Origin`
    /// (not a browser), or an allowed one.
    pub fn allowed(&self, headers: &HeaderMap) -> bool {
        match (&self.origins, headers.get(header::ORIGIN)) {
            (None, _) | (_, None) => true,
            (Some(list), Some(o)) => {
                o.to_str().is_ok_and(|o| list.iter().any(|a| a.eq_ignore_ascii_case(o.trim_end_matches('/'))))
            }
        }
    }

    /// `Access-Control-Allow-Origin` for an allowed request: `*` unless
    /// credentials are on (then the origin itself, as browsers require)
    /// or origins are listed.
    pub fn allow_origin(&self, headers: &HeaderMap) -> HeaderValue {
        let origin = headers.get(header::ORIGIN).filter(|o| !o.is_empty() && o.as_bytes() != b"null");
        match origin {
            Some(o) if self.credentials || self.origins.is_some() => o.clone(),
            _ => HeaderValue::from_static("*"),
        }
    }

    /// Sets the CORS answer headers (origin, credentials when on, `Vary`).
    pub fn apply(&self, req: &HeaderMap, resp: &mut HeaderMap) {
        let allow = self.allow_origin(req);
        let star = allow.as_bytes() == b"*";
        resp.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if self.credentials && !star {
            resp.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        resp.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Sets `Access-Control-Allow-Origin` and `Vary: Origin` on an answer.
/// (Which origin to allow is the caller's policy: [`Cors`] for SockJS and
/// WebSocket upgrades, [`echo_origin`] for BOSH.)
pub fn set_allow_origin(resp: &mut HeaderMap, allow: HeaderValue) {
    resp.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    resp.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The origin to allow for a request: the request's own (`*` without one,
/// or for `null`), or `None` when `allowed` is a list without it. Requests
/// without an `Origin` (not from a browser) are always allowed.
pub fn echo_origin(allowed: Option<&[String]>, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN).filter(|o| !o.is_empty());
    if let (Some(allowed), Some(origin)) = (allowed, origin) {
        let o = origin.to_str().unwrap_or_default().trim_end_matches('/');
        if !allowed.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(o)) {
            return None;
        }
    }
    Some(origin.filter(|o| o.as_bytes() != b"null").cloned().unwrap_or(HeaderValue::from_static("*")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct S {
        fate: Mutex<Sweep>,
        expired: AtomicUsize,
    }

    impl Swept for S {
        fn sweep(&self, _now: Instant, _idle: Duration) -> Sweep {
            *self.fate.lock()
        }
        fn expire(&self) {
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn s(fate: Sweep) -> Arc<S> {
        Arc::new(S { fate: Mutex::new(fate), expired: AtomicUsize::new(0) })
    }

    #[tokio::test]
    async fn sweeper_forgets_and_expires() {
        let table = Arc::new(SessionTable::default());
        let (keep, forget, expire) = (s(Sweep::Keep), s(Sweep::Forget), s(Sweep::Expire));
        table.insert("k".into(), keep.clone());
        table.insert("f".into(), forget.clone());
        table.insert("e".into(), expire.clone());
        table.start_sweeper(Duration::from_millis(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(table.get("k").is_some());
        assert!(table.get("f").is_none() && table.get("e").is_none());
        assert_eq!(forget.expired.load(Ordering::Relaxed), 0);
        assert_eq!(expire.expired.load(Ordering::Relaxed), 1);
        assert_eq!(keep.expired.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn remove_if_only_removes_the_same_session() {
        let table = SessionTable::default();
        let (a, b) = (s(Sweep::Keep), s(Sweep::Keep));
        table.insert("x".into(), a.clone());
        table.remove_if("x", &b);
        assert!(table.get("x").is_some());
        table.remove_if("x", &a);
        assert!(table.get("x").is_none());
    }

    #[test]
    fn cors_answers() {
        let mut req = HeaderMap::new();
        req.insert(header::ORIGIN, HeaderValue::from_static("https://app.example"));
        let mut resp = HeaderMap::new();
        Cors::default().apply(&req, &mut resp);
        assert_eq!(resp.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*");
        assert!(resp.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(), "no credentials by default");
        let listed = Cors::new(&["https://app.example".into()], true);
        assert!(listed.allowed(&req) && listed.allowed(&HeaderMap::new()));
        let mut resp = HeaderMap::new();
        listed.apply(&req, &mut resp);
        assert_eq!(resp.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://app.example");
        assert_eq!(resp.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(), "true");
        req.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!listed.allowed(&req));
    }

    #[test]
    fn echo_origin_policy() {
        let h = |o: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            h
        };
        assert_eq!(echo_origin(None, &HeaderMap::new()).unwrap(), "*");
        assert_eq!(echo_origin(None, &h("http://a.example")).unwrap(), "http://a.example");
        assert_eq!(echo_origin(None, &h("null")).unwrap(), "*");
        let list = ["https://ok.example/".to_owned()];
        assert_eq!(echo_origin(Some(&list), &h("https://OK.example")).unwrap(), "https://OK.example");
        assert!(echo_origin(Some(&list), &h("https://evil.example")).is_none());
        assert_eq!(echo_origin(Some(&list), &HeaderMap::new()).unwrap(), "*");
    }
}
