//! Connection admission and the pieces every listener shares: caps (node,
//! per client address, not yet authenticated), the client address behind a
//! trusted proxy (`X-Forwarded-For` / `Forwarded`, PROXY protocol v1/v2),
//! CORS for the browser transports (re-exported from `http_session.rs`), and
//! an idle deadline for connections
//! handed to hyper. docs/security.md, "Connections", states every limit.
//!
//! How a connection is counted: each listener's task (and each BOSH or
//! SockJS session, which outlives its HTTP requests) runs inside [`scope`]
//! with one [`Slot`]. A slot holds a place in `limits.max_connections`, one
//! in its client address's count and, until the session logs in, one in the
//! unauthenticated counts. Sessions call [`authenticated`] after a login;
//! the slot lives in a task-local, so sessions carry nothing for it and
//! idle memory stays flat. A WebSocket upgrade moves its HTTP connection's
//! slot into the session's task ([`take_current`]).
//!
//! [`Admission`] bundles what listeners need from the node (the gate, the
//! task tracker, the shutdown signal) so they do not take the engine;
//! [`Admission::spawn`] is the one place a slot and its task are started
//! together. Imports `config` and `net` only.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ForwardedHeader};

/// Address blocks live in the leaf `net` module, so config can check
/// `connections.trusted_proxies` without importing transport.
pub use crate::net::{canonical, Cidr};

// ---- caps ------------------------------------------------------------------

/// Why a connection was refused; the text is what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("connection limit reached (limits.max_connections)")]
    Node,
    #[error("too many connections from this address (connections.max_per_ip)")]
    PerIp,
    #[error("too many connections waiting to log in (connections.max_unauthenticated)")]
    Unauthenticated,
    #[error("too many connections from this address waiting to log in (connections.max_unauthenticated_per_ip)")]
    UnauthenticatedPerIp,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    open: u32,
    unauth: u32,
}

const SHARDS: usize = 16;

/// An address as counted: a keyed hash (random key per node, so addresses
/// cannot be chosen to collide), which keeps a [`Slot`] at 24 bytes.
type IpKey = u64;

/// The node's connection counts and the trusted proxies. One per engine
/// (`Shared::gate`), one per admin listener.
pub struct Gate {
    /// `limits.max_connections` (the engine's `connections` semaphore).
    total: Arc<Semaphore>,
    max_per_ip: usize,
    max_unauth: usize,
    max_unauth_per_ip: usize,
    unauth: AtomicUsize,
    ips: Box<[Mutex<HashMap<IpKey, Counts>>]>,
    hasher: std::collections::hash_map::RandomState,
    trusted: Vec<Cidr>,
    forwarded_header: ForwardedHeader,
    /// In a cluster: forwarded requests, and whose word on a client's
    /// address is believed (transport/forward.rs). Set once at join.
    forward: std::sync::OnceLock<super::forward::Forwarder>,
}

impl Gate {
    pub fn new(config: &Config, total: Arc<Semaphore>) -> Gate {
        let c = &config.connections;
        Gate {
            total,
            max_per_ip: c.max_per_ip,
            max_unauth: c.max_unauthenticated,
            max_unauth_per_ip: c.max_unauthenticated_per_ip,
            unauth: AtomicUsize::new(0),
            ips: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            trusted: c.trusted_proxies.iter().filter_map(|p| Cidr::parse(p).ok()).collect(),
            forwarded_header: c.forwarded_header,
            forward: std::sync::OnceLock::new(),
        }
    }

    /// The node's forwarder, in a cluster.
    pub fn forwarder(&self) -> Option<&super::forward::Forwarder> {
        self.forward.get()
    }

    /// Set once when the node joins a cluster, before its listeners bind.
    pub fn set_forwarder(&self, f: super::forward::Forwarder) {
        let _ = self.forward.set(f);
    }

    /// The admin listener's gate: its own cap, no per-address caps (admin
    /// requests carry a token, and operators may share an address).
    pub fn admin(config: &Config) -> Gate {
        let mut g = Gate::new(config, Arc::new(Semaphore::new(config.connections.admin_max_connections)));
        g.max_per_ip = 0;
        g.max_unauth = 0;
        g.max_unauth_per_ip = 0;
        g
    }

    /// Whether `ip` is a configured trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    fn key(&self, ip: IpAddr) -> IpKey {
        use std::hash::BuildHasher;
        self.hasher.hash_one(canonical(ip))
    }

    /// Connections from `ip` right now, and how many of them wait to log in.
    pub fn open_from(&self, ip: IpAddr) -> (u32, u32) {
        let key = self.key(ip);
        self.shard(key).lock().get(&key).map(|c| (c.open, c.unauth)).unwrap_or((0, 0))
    }

    /// Connections not yet authenticated on the node.
    pub fn unauthenticated(&self) -> usize {
        self.unauth.load(Ordering::Relaxed)
    }

    fn shard(&self, key: IpKey) -> &Mutex<HashMap<IpKey, Counts>> {
        &self.ips[(key >> 60) as usize % SHARDS]
    }

    /// Admits a connection (or an HTTP-polled session): a place in the node
    /// cap, and, for `ip`, in its address's count; `unauth` also counts it
    /// as waiting to log in. `ip` is `None` for what is not counted per
    /// address (a trusted proxy's HTTP connection: its clients are counted
    /// by their forwarded address, per session).
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>, unauth: bool) -> Result<Slot, Refusal> {
        let permit = self.total.clone().try_acquire_owned().map_err(|_| Refusal::Node)?;
        permit.forget();
        // From here the slot gives the place back when dropped.
        let mut slot = Slot { gate: self.clone(), ip: 0, flags: 0 };
        match ip {
            Some(ip) => slot.count_ip(self.key(ip), unauth)?,
            None if unauth => slot.count_unauth_node()?,
            None => {}
        }
        Ok(slot)
    }
}

const COUNTED_IP: u8 = 1;
const UNAUTH: u8 = 2;

/// One admitted connection or session; dropping it gives back what it
/// holds. 24 bytes: it sits in every session's task ([`scope`]).
pub struct Slot {
    gate: Arc<Gate>,
    /// The address counted per IP, when `flags & COUNTED_IP`.
    ip: IpKey,
    flags: u8,
}

impl Slot {
    fn unauth(&self) -> bool {
        self.flags & UNAUTH != 0
    }

    fn count_unauth_node(&mut self) -> Result<(), Refusal> {
        let g = &self.gate;
        let n = g.unauth.fetch_add(1, Ordering::Relaxed);
        if g.max_unauth > 0 && n >= g.max_unauth {
            g.unauth.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Unauthenticated);
        }
        self.flags |= UNAUTH;
        Ok(())
    }

    /// Counts this slot for `key` (and as unauthenticated when `unauth`).
    fn count_ip(&mut self, key: IpKey, unauth: bool) -> Result<(), Refusal> {
        if unauth && !self.unauth() {
            self.count_unauth_node()?;
        }
        let g = self.gate.clone();
        let mut map = g.shard(key).lock();
        let c = map.entry(key).or_default();
        let refused = if g.max_per_ip > 0 && c.open as usize >= g.max_per_ip {
            Some(Refusal::PerIp)
        } else if unauth && g.max_unauth_per_ip > 0 && c.unauth as usize >= g.max_unauth_per_ip {
            Some(Refusal::UnauthenticatedPerIp)
        } else {
            None
        };
        if let Some(r) = refused {
            if c.open == 0 {
                map.remove(&key);
            }
            return Err(r);
        }
        c.open += 1;
        if unauth {
            c.unauth += 1;
        }
        self.ip = key;
        self.flags |= COUNTED_IP;
        Ok(())
    }

    /// The session on this connection logged in: it no longer counts as
    /// unauthenticated.
    pub fn authenticated(&mut self) {
        if !self.unauth() {
            return;
        }
        self.flags &= !UNAUTH;
        self.gate.unauth.fetch_sub(1, Ordering::Relaxed);
        if self.flags & COUNTED_IP != 0 {
            if let Some(c) = self.gate.shard(self.ip).lock().get_mut(&self.ip) {
                c.unauth = c.unauth.saturating_sub(1);
            }
        }
    }

    /// This connection becomes a session that must log in, from `client`
    /// (the forwarded address behind a trusted proxy): counted for `client`
    /// and as unauthenticated. A WebSocket upgrade does this with its HTTP
    /// connection's slot, so the session is not counted twice.
    pub fn into_session(mut self, client: IpAddr) -> Result<Slot, Refusal> {
        // Counted again from scratch: the address may change (a proxy's
        // connection, the forwarded client) and the unauthenticated caps apply.
        self.release_ip();
        let key = self.gate.key(client);
        self.count_ip(key, true)?;
        Ok(self)
    }

    fn release_ip(&mut self) {
        if self.flags & COUNTED_IP == 0 {
            return;
        }
        self.flags &= !COUNTED_IP;
        let mut map = self.gate.shard(self.ip).lock();
        if let Some(c) = map.get_mut(&self.ip) {
            c.open = c.open.saturating_sub(1);
            if self.unauth() {
                c.unauth = c.unauth.saturating_sub(1);
            }
            if c.open == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release_ip();
        if self.unauth() {
            self.gate.unauth.fetch_sub(1, Ordering::Relaxed);
        }
        self.gate.total.add_permits(1);
    }
}

thread_local! {
    /// The slot of the task being polled on this thread, while a [`Scoped`]
    /// polls its future; null otherwise.
    static CURRENT: Cell<*const Cell<Option<Slot>>> = const { Cell::new(std::ptr::null()) };
}

/// A connection's or session's task with its slot beside it. Not tokio's
/// task-locals: those add a key and an `Option` around the future; this
/// adds the 24-byte slot only (8 more than the semaphore permit tasks held
/// before).
pub struct Scoped<F> {
    slot: Cell<Option<Slot>>,
    fut: F,
}

/// Runs `fut` (a connection's or session's task) holding `slot`.
pub fn scope<F: Future>(slot: Slot, fut: F) -> Scoped<F> {
    Scoped { slot: Cell::new(Some(slot)), fut }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `fut` is structurally pinned (never moved out of `self`,
        // which is pinned); `slot` is only reached through `CURRENT`.
        let this = unsafe { self.get_unchecked_mut() };
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        struct Restore(*const Cell<Option<Slot>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(&this.slot)));
        fut.poll(cx)
    }
}

/// `f` over the slot of the task being polled, if it has one.
fn with_current<R>(f: impl FnOnce(&Cell<Option<Slot>>) -> R) -> Option<R> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: non-null only while the `Scoped` that owns the cell polls its
    // future on this thread; the cell lives (pinned) until that poll returns.
    (!p.is_null()).then(|| f(unsafe { &*p }))
}

/// Tells the current connection's slot that its session logged in (STOMP
/// CONNECT accepted, XMPP SASL success). Outside a counted task: nothing.
pub fn authenticated() {
    with_current(|c| {
        let mut slot = c.take();
        if let Some(s) = slot.as_mut() {
            s.authenticated();
        }
        c.set(slot);
    });
}

/// Takes the current task's slot (a WebSocket upgrade moves it into the
/// session's task).
pub fn take_current() -> Option<Slot> {
    with_current(|c| c.take()).flatten()
}

/// Puts `slot` back as the current task's (after [`Slot::into_session`]).
pub fn put_current(slot: Slot) {
    with_current(|c| c.set(Some(slot)));
}

/// The slot for a session starting now from `client`: the current task's
/// (a WebSocket upgrade, already counted by [`Slot::into_session`]), or a
/// new one (an HTTP-polled BOSH or SockJS session, which outlives the
/// requests that carry it).
pub fn session_slot(gate: &Arc<Gate>, client: Option<IpAddr>) -> Result<Slot, Refusal> {
    match take_current() {
        Some(slot) if slot.unauth() => Ok(slot),
        Some(slot) => {
            // An HTTP connection's slot stays with the connection.
            put_current(slot);
            gate.admit(client, true)
        }
        None => gate.admit(client, true),
    }
}

// ---- admission ---------------------------------------------------------------

/// What every listener of a node admits its connections through and runs
/// them in: the node's [`Gate`], its task tracker and shutdown signal, and
/// the `[connections]` settings the accept loop needs. The accept loop and
/// the edges' listeners take this, not the engine, so transport depends on
/// nothing above it. Built once per node at start; clones share it.
#[derive(Clone)]
pub struct Admission {
    pub gate: Arc<Gate>,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// The listeners that take PROXY protocol headers (`connections.proxy_protocol`).
    proxy_protocol: Arc<[String]>,
    /// How long a PROXY header may take (`connections.header_timeout_ms`).
    pub header_timeout: Duration,
}

impl Admission {
    pub fn new(config: &Config, gate: Arc<Gate>, tasks: TaskTracker, shutdown: CancellationToken) -> Admission {
        let c = &config.connections;
        Admission {
            gate,
            tasks,
            shutdown,
            proxy_protocol: c.proxy_protocol.iter().cloned().collect(),
            header_timeout: Duration::from_millis(c.header_timeout_ms),
        }
    }

    /// The same node with another gate (the admin listener has its own cap).
    pub fn with_gate(&self, gate: Arc<Gate>) -> Admission {
        Admission { gate, ..self.clone() }
    }

    /// Whether the listener `name` takes PROXY protocol headers.
    pub fn takes_proxy_header(&self, name: &str) -> bool {
        self.proxy_protocol.iter().any(|l| l == name)
    }

    /// The slot for a session starting now from `client` ([`session_slot`]).
    pub fn session_slot(&self, client: Option<IpAddr>) -> Result<Slot, Refusal> {
        session_slot(&self.gate, client)
    }

    /// Runs a connection's or session's task on the node, holding `slot`
    /// beside it ([`scope`]). Pass the session's future itself, not
    /// `async move { work.await }`: an async block would store the future
    /// twice (captured, then awaited), and that is what every idle
    /// connection costs.
    pub fn spawn<F>(&self, slot: Slot, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(scope(slot, work));
    }
}

// ---- the client address ----------------------------------------------------

/// The client's address for a request that came from `peer`: `peer` itself
/// unless it is a trusted proxy, then the nearest address in `Forwarded`
/// (RFC 7239) or `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_addr(gate: &Gate, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
    // A request another node forwarded names its client; believed only
    // from a node with the cluster's token (transport/forward.rs).
    if let Some(client) = gate.forward.get().and_then(|f| f.forwarded_client(peer.ip(), headers)) {
        return client;
    }
    if gate.trusted.is_empty() || !gate.is_trusted(peer.ip()) {
        return peer;
    }
    // Only the configured header: the proxy passes the client's other
    // headers through untouched, so reading a second one (or falling back
    // to it) would let the client choose its own address.
    let mut hops: Vec<SocketAddr> = Vec::new();
    match gate.forwarded_header {
        ForwardedHeader::Forwarded => {
            for v in headers.get_all(header::FORWARDED).iter().filter_map(|v| v.to_str().ok()) {
                for element in v.split(',') {
                    for pair in element.split(';') {
                        if let Some((k, v)) = pair.split_once('=') {
                            if k.trim().eq_ignore_ascii_case("for") {
                                if let Some(a) = parse_node(v.trim().trim_matches('"')) {
                                    hops.push(a);
                                }
                            }
                        }
                    }
                }
            }
        }
        ForwardedHeader::XForwardedFor => {
            for v in headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()) {
                hops.extend(v.split(',').filter_map(|h| parse_node(h.trim())));
            }
        }
    }
    // Right to left: the first hop a trusted proxy did not add is the client.
    hops.into_iter().rev().find(|a| !gate.is_trusted(a.ip())).unwrap_or(peer)
}

/// `1.2.3.4`, `1.2.3.4:5`, `[::1]:5`, `::1`.
fn parse_node(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(SocketAddr::new(canonical(a.ip()), a.port()));
    }
    let s = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(s);
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(canonical(ip), 0))
}

// ---- PROXY protocol ----------------------------------------------------------

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Parses a PROXY v1 line (`PROXY TCP4 src dst sport dport`, without its
/// CRLF). `Ok(None)`: `UNKNOWN` (use the peer's address).
pub fn parse_proxy_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut parts = line.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyError::Missing);
    }
    match parts.next() {
        Some("UNKNOWN") => Ok(None),
        Some("TCP4") | Some("TCP6") => {
            let src: IpAddr =
                parts.next().and_then(|s| s.parse().ok()).ok_or(ProxyError::Malformed("source address"))?;
            let _dst: IpAddr =
                parts.next().and_then(|s| s.parse().ok()).ok_or(ProxyError::Malformed("destination address"))?;
            let sport: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(ProxyError::Malformed("source port"))?;
            let _dport: u16 =
                parts.next().and_then(|s| s.parse().ok()).ok_or(ProxyError::Malformed("destination port"))?;
            if parts.next().is_some() {
                return Err(ProxyError::Malformed("trailing fields"));
            }
            Ok(Some(SocketAddr::new(canonical(src), sport)))
        }
        _ => Err(ProxyError::Malformed("protocol")),
    }
}

/// Parses a PROXY v2 header's address block (after the 16 fixed bytes).
/// `Ok(None)`: `LOCAL` or an address family without an IP (use the peer's).
pub fn parse_proxy_v2(fixed: &[u8; 16], rest: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    if fixed[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    if fixed[12] >> 4 != 2 {
        return Err(ProxyError::Malformed("version"));
    }
    if fixed[12] & 0x0f == 0 {
        return Ok(None); // LOCAL: the proxy's own health check
    }
    match fixed[13] >> 4 {
        1 if rest.len() >= 12 => {
            let ip = std::net::Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([rest[8], rest[9]]))))
        }
        2 if rest.len() >= 36 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&rest[..16]);
            Ok(Some(SocketAddr::new(canonical(IpAddr::V6(o.into())), u16::from_be_bytes([rest[32], rest[33]]))))
        }
        1 | 2 => Err(ProxyError::Malformed("address block too short")),
        _ => Ok(None),
    }
}

/// Reads a PROXY v1 or v2 header from a trusted proxy's connection, exactly
/// (what follows is the client's). The client's address, or `peer` for
/// `UNKNOWN` / `LOCAL`.
pub async fn read_proxy_header<R: AsyncRead + Unpin>(r: &mut R, peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let io = |_| ProxyError::Malformed("connection closed");
    let mut head = [0u8; 16];
    r.read_exact(&mut head[..8]).await.map_err(io)?;
    if head[..6] == *b"PROXY " {
        // v1: at most 107 bytes with the CRLF; read a byte at a time so
        // nothing past it is consumed.
        let mut line = head[..8].to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= 107 {
                return Err(ProxyError::Malformed("v1 line longer than 107 bytes"));
            }
            line.push(r.read_u8().await.map_err(io)?);
        }
        line.truncate(line.len() - 2);
        return Ok(parse_proxy_v1(&line)?.unwrap_or(peer));
    }
    if head[..8] != V2_SIGNATURE[..8] {
        return Err(ProxyError::Missing);
    }
    r.read_exact(&mut head[8..]).await.map_err(io)?;
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    if len > 1024 {
        return Err(ProxyError::Malformed("v2 address block longer than 1024 bytes"));
    }
    let mut rest = vec![0u8; len];
    r.read_exact(&mut rest).await.map_err(io)?;
    Ok(parse_proxy_v2(&head, &rest)?.unwrap_or(peer))
}

// ---- CORS --------------------------------------------------------------------

/// CORS for the browser transports lives with the other HTTP session helpers.
pub use super::http_session::Cors;

// ---- idle deadline for hyper's connections -----------------------------------

/// A stream closed (reads and writes fail with `TimedOut`) once neither has
/// moved a byte for `idle`. hyper's `header_read_timeout` bounds a request
/// head; this bounds everything else hyper (or an upgraded WebSocket over
/// hyper) holds: a connection idle between requests, or one that sent a
/// request and went quiet. Streaming answers (SockJS heart-beats every
/// `http.sockjs_heartbeat_ms`) write, so they stay open.
pub struct Idle<T> {
    io: T,
    idle: Duration,
    last: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<T> Idle<T> {
    pub fn new(io: T, idle: Duration) -> Idle<T> {
        let now = tokio::time::Instant::now();
        Idle { io, idle, last: now, timer: Box::pin(tokio::time::sleep_until(now + idle)) }
    }

    /// Whether the deadline passed (registering the timer otherwise). The
    /// timer is moved on only when it fires, not at every read.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last + self.idle;
            if due <= tokio::time::Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
    }
}

impl<T> Idle<T> {
    /// A write's outcome: bytes written move the deadline on; a write still
    /// pending past the deadline fails.
    fn wrote(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last = tokio::time::Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle (connections.idle_timeout_ms)")
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.last = tokio::time::Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, b);
        self.wrote(cx, r)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, b);
        self.wrote(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(text: &str) -> Arc<Gate> {
        let c = Config::from_toml_str(text).unwrap();
        Arc::new(Gate::new(&c, Arc::new(Semaphore::new(c.limits.max_connections))))
    }

    #[test]
    fn a_slot_adds_few_bytes_to_a_task() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
        let g = gate("");
        let work = async { tokio::task::yield_now().await };
        let bare = std::mem::size_of_val(&work);
        let scoped = scope(g.admit(None, false).unwrap(), async { tokio::task::yield_now().await });
        assert!(std::mem::size_of_val(&scoped) <= bare + 24, "{} vs {bare}", std::mem::size_of_val(&scoped));
    }

    #[tokio::test]
    async fn admission_runs_a_task_with_its_slot_and_knows_its_proxied_listeners() {
        let text = "[limits]\nmax_connections = 1\n[connections]\ntrusted_proxies = [\"10.0.0.1\"]\n\
                    proxy_protocol = [\"xmpp-c2s\"]\n";
        let config = Config::from_toml_str(text).unwrap();
        let g = gate(text);
        let admission = Admission::new(&config, g.clone(), TaskTracker::new(), CancellationToken::new());
        assert!(admission.takes_proxy_header("xmpp-c2s"));
        assert!(!admission.takes_proxy_header("stomp-tcp"));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let (done, wait) = tokio::sync::oneshot::channel::<()>();
        admission.spawn(g.admit(Some(a), true).unwrap(), async move {
            let _ = wait.await;
            // The task's own slot, as sessions see it.
            authenticated();
        });
        // The node's one place is the task's until it ends.
        assert_eq!(g.admit(None, false).err(), Some(Refusal::Node));
        done.send(()).unwrap();
        admission.tasks.close();
        admission.tasks.wait().await;
        assert_eq!((g.open_from(a), g.unauthenticated()), ((0, 0), 0));
        assert!(g.admit(None, false).is_ok());
    }

    #[tokio::test]
    async fn a_login_inside_the_scope_marks_the_slot() {
        let g = gate("");
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let g2 = g.clone();
        let task = scope(g.admit(Some(a), true).unwrap(), async move {
            assert_eq!((g2.open_from(a), g2.unauthenticated()), ((1, 1), 1));
            tokio::task::yield_now().await;
            authenticated();
            assert_eq!((g2.open_from(a), g2.unauthenticated()), ((1, 0), 0));
        });
        tokio::spawn(task).await.unwrap();
        assert_eq!(g.open_from(a), (0, 0), "released with the task");
        authenticated(); // outside a counted task: nothing
        assert!(take_current().is_none());
    }

    #[test]
    fn connections_config_is_validated() {
        let err = |t: &str| Config::from_toml_str(t).unwrap_err().to_string();
        let c = Config::from_toml_str("").unwrap().connections;
        assert_eq!(
            (c.header_timeout_ms, c.max_per_ip, c.max_unauthenticated_per_ip, c.cors_credentials),
            (10_000, 1_000, 100, false)
        );
        assert!(err("[connections]\ntrusted_proxies = [\"10.0.0.0/40\"]\n").contains("connections.trusted_proxies[0]"));
        assert!(err("[connections]\nproxy_protocol = [\"http\"]\ntrusted_proxies = [\"10.0.0.1\"]\n")
            .contains("connections.proxy_protocol[0]"));
        assert!(err("[connections]\nproxy_protocol = [\"stomp-tcp\"]\n").contains("trusted_proxies"));
        assert!(err("[connections]\nheader_timeout_ms = 0\n").contains("connections.header_timeout_ms"));
        assert!(err("[connections]\ncors_origins = [\"evil.example\"]\n").contains("connections.cors_origins[0]"));
        assert!(err("[connections]\nmax_per_addr = 1\n").contains("max_per_addr"));
    }

    #[test]
    fn cidr_blocks() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped counts as IPv4");
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("nope").is_err());
    }

    #[test]
    fn caps_per_address_and_unauthenticated() {
        let g = gate("[limits]\nmax_connections = 10\n[connections]\nmax_per_ip = 3\nmax_unauthenticated_per_ip = 2\nmax_unauthenticated = 4\n");
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let mut s1 = g.admit(Some(a), true).unwrap();
        let _s2 = g.admit(Some(a), true).unwrap();
        assert_eq!(g.admit(Some(a), true).err(), Some(Refusal::UnauthenticatedPerIp));
        s1.authenticated();
        assert_eq!(g.open_from(a), (2, 1));
        let _s3 = g.admit(Some(a), true).unwrap();
        assert_eq!(g.admit(Some(a), false).err(), Some(Refusal::PerIp));
        let _b1 = g.admit(Some(b), true).unwrap();
        let _b2 = g.admit(Some(b), true).unwrap();
        let c: IpAddr = "127.0.0.4".parse().unwrap();
        assert_eq!(g.admit(Some(c), true).err(), Some(Refusal::Unauthenticated), "4 waiting on the node");
        let _c1 = g.admit(Some(c), false).unwrap();
        drop(s1);
        assert_eq!(g.open_from(a), (2, 2));
        assert_eq!(g.total.available_permits(), 10 - 5);
        drop((_s2, _s3, _b1, _b2, _c1));
        assert_eq!((g.open_from(a), g.unauthenticated(), g.total.available_permits()), ((0, 0), 0, 10));
        assert!(g.ips.iter().all(|s| s.lock().is_empty()), "no entry kept for gone addresses");
    }

    #[test]
    fn a_websocket_upgrade_moves_its_slot() {
        let g =
            gate("[limits]\nmax_connections = 2\n[connections]\nmax_per_ip = 1\ntrusted_proxies = [\"10.0.0.1\"]\n");
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let conn = g.admit(Some(a), false).unwrap();
        let session = conn.into_session(a).unwrap();
        assert_eq!((g.open_from(a), g.unauthenticated()), ((1, 1), 1));
        drop(session);
        // A proxy's connection is not counted per address; its client is, on upgrade.
        let conn = g.admit(None, false).unwrap();
        let _other = g.admit(Some(a), false).unwrap();
        assert_eq!(conn.into_session(a).err(), Some(Refusal::PerIp));
        assert_eq!(g.total.available_permits(), 1);
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let g = gate("[connections]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    axum::http::HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let xff = h(&[("x-forwarded-for", "198.51.100.1, 192.0.2.7, 10.0.0.9")]);
        assert_eq!(
            client_addr(&g, proxy, &xff).ip(),
            "192.0.2.7".parse::<IpAddr>().unwrap(),
            "the nearest untrusted hop"
        );
        assert_eq!(client_addr(&g, stranger, &xff), stranger, "an untrusted peer's header is ignored");
        assert_eq!(client_addr(&g, proxy, &h(&[("x-forwarded-for", "garbage")])), proxy);
        // The proxy sets X-Forwarded-For and passes the client's own
        // `Forwarded` through: it must not be read (nor be a fallback).
        let fwd = h(&[("forwarded", "for=198.51.100.1, for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(client_addr(&g, proxy, &fwd), proxy, "only the configured header");
        let both = h(&[("forwarded", "for=198.51.100.1"), ("x-forwarded-for", "192.0.2.7")]);
        assert_eq!(client_addr(&g, proxy, &both).ip(), "192.0.2.7".parse::<IpAddr>().unwrap());

        let g = gate("[connections]\ntrusted_proxies = [\"10.0.0.0/8\"]\nforwarded_header = \"forwarded\"\n");
        assert_eq!(client_addr(&g, proxy, &fwd), "[2001:db8::1]:4711".parse().unwrap());
        assert_eq!(client_addr(&g, proxy, &xff), proxy, "X-Forwarded-For is not read when Forwarded is configured");
        assert_eq!(client_addr(&g, proxy, &both).ip(), "198.51.100.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn proxy_protocol_headers() {
        assert_eq!(
            parse_proxy_v1(b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 61613").unwrap(),
            Some("192.0.2.1:5000".parse().unwrap())
        );
        assert_eq!(
            parse_proxy_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 5000 61613").unwrap(),
            Some("[2001:db8::1]:5000".parse().unwrap())
        );
        assert_eq!(parse_proxy_v1(b"PROXY UNKNOWN").unwrap(), None);
        assert!(parse_proxy_v1(b"PROXY TCP4 nope 192.0.2.2 5000 61613").is_err());
        assert_eq!(parse_proxy_v1(b"CONNECT").unwrap_err(), ProxyError::Missing);
        let mut fixed = [0u8; 16];
        fixed[..12].copy_from_slice(&V2_SIGNATURE);
        fixed[12] = 0x21;
        fixed[13] = 0x11;
        fixed[15] = 12;
        let rest = [192, 0, 2, 1, 192, 0, 2, 2, 0x13, 0x88, 0xf0, 0x0d];
        assert_eq!(parse_proxy_v2(&fixed, &rest).unwrap(), Some("192.0.2.1:5000".parse().unwrap()));
        fixed[12] = 0x20;
        assert_eq!(parse_proxy_v2(&fixed, &rest).unwrap(), None, "LOCAL");
    }

    #[tokio::test]
    async fn proxy_header_is_read_exactly() {
        let peer: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mut wire: &[u8] = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 61613\r\nCONNECT\n";
        assert_eq!(read_proxy_header(&mut wire, peer).await.unwrap(), "192.0.2.1:5000".parse().unwrap());
        assert_eq!(wire, b"CONNECT\n");
        let mut wire: &[u8] = b"CONNECT\nlogin:x\n\n\0";
        assert_eq!(read_proxy_header(&mut wire, peer).await.unwrap_err(), ProxyError::Missing);
    }
}
