//! Forwarded requests (docs/cluster.md, "No sticky sessions"): a BOSH or
//! SockJS request that reaches a node other than the one holding its
//! session is sent on to that node over plain HTTP and its answer relayed,
//! so a round-robin proxy in front of the cluster needs no sticky sessions.
//!
//! This file knows HTTP, not Redis: who holds a session and where a node is
//! reached come from [`Owners`], which the cluster module implements over
//! the node registry. What it decides:
//!
//! - **Loop-proof**: a forwarded request carries [`FORWARDED`]; a request
//!   that carries it (from a node or from a client pretending to be one) is
//!   served locally and never forwarded again.
//! - **The client's address**: [`CLIENT`] names it, and the owner believes
//!   it ([`Forwarder::forwarded_client`]) only when [`FORWARDED`] holds the
//!   cluster's token and the request comes from a registered node's
//!   address; otherwise the header is ignored (the peer is the client).
//! - **Bounded**: at most `max_concurrent` forwards at once per node (over
//!   it: 503 with the reason), a deadline to connect and to get the answer's
//!   head, request bodies as the edges already limit them, whole answers
//!   (BOSH) within a byte limit.
//!
//! One connection per forwarded request: a parked BOSH request or a SockJS
//! stream holds its connection anyway, and nodes reach each other on an
//! internal network.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, Response, StatusCode};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

/// Marks a forwarded request: its value is the cluster's token.
pub const FORWARDED: &str = "x-herald-forwarded";
/// The client's address, as the forwarding node saw it.
pub const CLIENT: &str = "x-herald-client";

/// Which listener of the owner a forwarded request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `xmpp.http_listen`.
    Bosh,
    /// `http.listen`.
    SockJs,
}

/// Who holds a session, as far as the registry knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node, or nobody (serve it here as before).
    Here,
    /// Another live node, reached at this address.
    Node { name: String, addr: SocketAddr },
    /// The registry cannot be asked (Redis down or slow).
    Unknown,
}

/// The cluster's answers, over Redis (`cluster::forward`).
pub trait Owners: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> &str;
    /// Where live node `name` takes forwarded requests for `service`;
    /// `Here` for this node or a node that is dead or unknown.
    fn locate(&self, name: &str, service: Service) -> BoxFuture<'static, Owner>;
    /// Who holds SockJS session `key` (`<server>/<session>`).
    fn sockjs_owner(&self, key: &str) -> BoxFuture<'static, Owner>;
    /// Claims SockJS session `key` for this node unless a live node holds it.
    fn sockjs_claim(&self, key: &str) -> BoxFuture<'static, Owner>;
    /// Keeps this node's claims alive (`held`) and drops claims on sessions
    /// that ended (`gone`).
    fn sockjs_keep(&self, held: Vec<String>, gone: Vec<String>) -> BoxFuture<'static, ()>;
    /// Whether `ip` is a registered node's address.
    fn is_node(&self, ip: IpAddr) -> bool;
    /// The cluster's token (shared through Redis).
    fn token(&self) -> Option<Arc<str>>;
}

/// Limits of forwarding (`[cluster] forward_*`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_concurrent: usize,
    /// To connect and to get the answer's head (a BOSH long poll adds its `wait`).
    pub timeout: Duration,
    /// A whole answer (BOSH) larger than this is a failure.
    pub max_answer_bytes: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests sent on to another node.
    pub forwarded: AtomicU64,
    /// Forwarded requests this node served for another node.
    pub served: AtomicU64,
    /// Refused: over `max_concurrent`, or the registry could not be asked.
    pub refused: AtomicU64,
    /// The owner could not be reached or did not answer in time.
    pub failed: AtomicU64,
}

/// Why a forward did not produce the owner's answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("too many forwarded requests at once on this node ([cluster] forward_max_concurrent)")]
    Busy,
    #[error("node {0} did not answer: {1}")]
    Unreachable(String, String),
    #[error("node {0}'s answer is larger than {1} bytes")]
    TooLarge(String, usize),
}

impl ForwardError {
    /// What the client gets instead of the owner's answer.
    pub fn response(&self) -> Response<Bytes> {
        let status = match self {
            ForwardError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        let mut resp = Response::new(Bytes::from(format!("{self}\n")));
        *resp.status_mut() = status;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    }
}

/// The node's forwarder: the cluster's answers, the limits, the counters.
/// Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    pub owners: Arc<dyn Owners>,
    limits: Limits,
    permits: Arc<Semaphore>,
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("node", &self.owners.node()).field("limits", &self.limits).finish()
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), the ones a forward sets itself,
/// and the client-written proxy headers: the owner learns the client's
/// address from [`CLIENT`] only, so a failed token check can never fall back
/// to an address the client wrote itself.
fn skipped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | FORWARDED
            | CLIENT
            | "x-forwarded-for"
            | "forwarded"
            | "x-real-ip"
    )
}

impl Forwarder {
    pub fn new(owners: Arc<dyn Owners>, limits: Limits) -> Forwarder {
        let permits = Arc::new(Semaphore::new(limits.max_concurrent));
        Forwarder { owners, limits, permits, stats: Arc::default() }
    }

    pub fn node(&self) -> &str {
        self.owners.node()
    }

    /// Whether a request was forwarded already (it is then never forwarded
    /// again, whoever set the header).
    pub fn is_forwarded(headers: &HeaderMap) -> bool {
        headers.contains_key(FORWARDED)
    }

    /// The client's address named by a forwarding node: only from a
    /// registered node's address with the cluster's token.
    pub fn forwarded_client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<SocketAddr> {
        let named = headers.get(CLIENT)?;
        let token = self.owners.token()?;
        let given = headers.get(FORWARDED)?;
        let same = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes());
        if !bool::from(same) || !self.owners.is_node(peer) {
            tracing::debug!(%peer, "forwarded client address not trusted (token or peer not a node)");
            return None;
        }
        let ip = named.to_str().ok()?.trim().parse::<IpAddr>().ok()?;
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        Some(SocketAddr::new(crate::net::canonical(ip), 0))
    }

    /// Sends a request on to `owner` and returns its answer's head with the
    /// body streaming through (SockJS). `extra` is added to the timeout for
    /// the answer's head.
    #[allow(clippy::too_many_arguments)] // one request's parts, each used once
    pub async fn forward(
        &self,
        owner: (&str, SocketAddr),
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
        client: Option<IpAddr>,
        extra: Duration,
    ) -> Result<Response<Body>, ForwardError> {
        let (name, addr) = owner;
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ForwardError::Busy);
        };
        let unreachable = |e: &dyn std::fmt::Display| {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            ForwardError::Unreachable(name.to_owned(), e.to_string())
        };
        let mut req = Request::builder().method(method).uri(path_and_query);
        for (k, v) in headers {
            if !skipped(k) {
                req = req.header(k, v);
            }
        }
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| unreachable(&e))?;
        req = req.header(header::HOST, host).header(header::CONTENT_LENGTH, body.len());
        if let Some(token) = self.owners.token() {
            req = req.header(FORWARDED, token.as_ref());
        } else {
            req = req.header(FORWARDED, "-");
        }
        if let Some(ip) = client {
            req = req.header(CLIENT, ip.to_string());
        }
        let req = req.body(http_body_util::Full::new(body)).map_err(|e| unreachable(&e))?;
        let head = async {
            let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| unreachable(&e))?;
            let _ = stream.set_nodelay(true);
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(&e))?;
            // The connection runs until the answer is read or dropped; the
            // permit is released with it.
            tokio::spawn(async move {
                let _permit = permit;
                let _ = conn.await;
            });
            send.send_request(req).await.map_err(|e| unreachable(&e))
        };
        let resp = match tokio::time::timeout(self.limits.timeout + extra, head).await {
            Ok(r) => r?,
            Err(_) => return Err(unreachable(&"timed out")),
        };
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        let (mut parts, incoming) = resp.into_parts();
        parts.headers.retain_hop_by_hop();
        Ok(Response::from_parts(parts, Body::new(incoming)))
    }

    /// [`Forwarder::forward`] for a whole answer (BOSH), within
    /// `max_answer_bytes` and the same deadline.
    pub fn forward_whole(
        &self,
        owner: (String, SocketAddr),
        path: String,
        headers: HeaderMap,
        body: Bytes,
        client: Option<IpAddr>,
        extra: Duration,
    ) -> BoxFuture<'static, Result<Response<Bytes>, ForwardError>> {
        let this = self.clone();
        Box::pin(async move {
            let (name, addr) = owner;
            let resp = this.forward((&name, addr), Method::POST, &path, &headers, body, client, extra).await?;
            let (parts, body) = resp.into_parts();
            let limited = http_body_util::Limited::new(body, this.limits.max_answer_bytes);
            let deadline = this.limits.timeout + extra;
            match tokio::time::timeout(deadline, limited.collect()).await {
                Ok(Ok(collected)) => Ok(Response::from_parts(parts, collected.to_bytes())),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    this.stats.failed.fetch_add(1, Ordering::Relaxed);
                    Err(ForwardError::TooLarge(name, this.limits.max_answer_bytes))
                }
                Ok(Err(e)) => {
                    this.stats.failed.fetch_add(1, Ordering::Relaxed);
                    Err(ForwardError::Unreachable(name, e.to_string()))
                }
                Err(_) => {
                    this.stats.failed.fetch_add(1, Ordering::Relaxed);
                    Err(ForwardError::Unreachable(name, "timed out".into()))
                }
            }
        })
    }
}

/// Drops hop-by-hop headers of a relayed answer.
trait RetainHopByHop {
    fn retain_hop_by_hop(&mut self);
}

impl RetainHopByHop for HeaderMap {
    fn retain_hop_by_hop(&mut self) {
        for name in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"] {
            self.remove(name);
        }
    }
}

/// A BOSH sid that names the node holding it: `<32 hex>-<node name in
/// hex>`. Without a cluster sids stay 32 hex digits.
pub fn bosh_sid(random: &str, node: &str) -> String {
    let mut sid = String::with_capacity(random.len() + 1 + node.len() * 2);
    sid.push_str(random);
    sid.push('-');
    for b in node.bytes() {
        sid.push_str(&format!("{b:02x}"));
    }
    sid
}

/// The node a BOSH sid names; `None` for a sid of another shape (hostile
/// input: bounded, any bytes refused but hex digits).
pub fn bosh_sid_node(sid: &str) -> Option<String> {
    let (_, hex) = sid.split_once('-')?;
    if hex.is_empty() || hex.len() > 512 || hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster's answers, fixed: one other node at `addr`.
    struct Fixed {
        addr: SocketAddr,
    }

    impl Owners for Fixed {
        fn node(&self) -> &str {
            "here"
        }
        fn locate(&self, _: &str, _: Service) -> BoxFuture<'static, Owner> {
            let addr = self.addr;
            Box::pin(async move { Owner::Node { name: "there".into(), addr } })
        }
        fn sockjs_owner(&self, _: &str) -> BoxFuture<'static, Owner> {
            Box::pin(async { Owner::Here })
        }
        fn sockjs_claim(&self, _: &str) -> BoxFuture<'static, Owner> {
            Box::pin(async { Owner::Here })
        }
        fn sockjs_keep(&self, _: Vec<String>, _: Vec<String>) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
        fn is_node(&self, ip: IpAddr) -> bool {
            ip == self.addr.ip()
        }
        fn token(&self) -> Option<Arc<str>> {
            Some("s3cret".into())
        }
    }

    fn forwarder(addr: SocketAddr, max_concurrent: usize, timeout_ms: u64) -> Forwarder {
        let limits = Limits { max_concurrent, timeout: Duration::from_millis(timeout_ms), max_answer_bytes: 65_536 };
        Forwarder::new(Arc::new(Fixed { addr }), limits)
    }

    /// A node's HTTP listener: `/slow` answers after 400 ms, `/big` with
    /// 100 KB, anything else echoes what the forward told it.
    async fn owner() -> SocketAddr {
        use axum::routing::post;
        let echo = |headers: HeaderMap, body: Bytes| async move {
            let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap_or("?").to_owned()).unwrap_or_default();
            format!("{}|{}|{}|{}", h(FORWARDED), h(CLIENT), h("x-app"), String::from_utf8_lossy(&body))
        };
        let app = axum::Router::new()
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    "slow"
                }),
            )
            .route("/big", post(|| async { "x".repeat(100_000) }))
            .route("/echo", post(echo));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    }

    async fn text(r: Response<Body>) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_forward_carries_the_token_and_the_client_and_drops_the_clients_own() {
        let addr = owner().await;
        let f = forwarder(addr, 4, 2_000);
        let mut headers = HeaderMap::new();
        headers.insert("x-app", HeaderValue::from_static("kept"));
        headers.insert(FORWARDED, HeaderValue::from_static("from-the-client"));
        headers.insert(CLIENT, HeaderValue::from_static("203.0.113.9"));
        let client = Some("198.51.100.7".parse().unwrap());
        let r = f
            .forward(("there", addr), Method::POST, "/echo", &headers, Bytes::from("body"), client, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(text(r).await, "s3cret|198.51.100.7|kept|body");
        assert_eq!(f.stats.forwarded.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn over_the_cap_is_503_and_a_slow_owner_502() {
        let addr = owner().await;
        let f = forwarder(addr, 1, 200);
        let h = HeaderMap::new();
        // The first holds the only permit for 400 ms (over the 200 ms deadline:
        // a 502), the second meanwhile is refused.
        let first = f.forward(("there", addr), Method::POST, "/slow", &h, Bytes::new(), None, Duration::ZERO);
        let second = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            f.forward(("there", addr), Method::POST, "/echo", &h, Bytes::new(), None, Duration::ZERO).await
        };
        let (first, second) = tokio::join!(first, second);
        assert!(matches!(first, Err(ForwardError::Unreachable(..))), "{first:?}");
        let busy = second.unwrap_err();
        assert!(matches!(busy, ForwardError::Busy));
        let resp = busy.response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(resp.body()).contains("forward_max_concurrent"));
        assert_eq!(f.stats.refused.load(Ordering::Relaxed), 1);
        assert_eq!(f.stats.failed.load(Ordering::Relaxed), 1);
        // With `extra` (a BOSH wait) the slow answer arrives; the permit came back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = f
            .forward(("there", addr), Method::POST, "/slow", &h, Bytes::new(), None, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(text(r).await, "slow");
    }

    #[tokio::test]
    async fn whole_answers_are_bounded_and_a_dead_owner_is_502() {
        let addr = owner().await;
        let f = forwarder(addr, 4, 2_000);
        let got = f.forward_whole(
            ("there".into(), addr),
            "/big".into(),
            HeaderMap::new(),
            Bytes::new(),
            None,
            Duration::ZERO,
        );
        assert!(matches!(got.await, Err(ForwardError::TooLarge(..))));
        let dead: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let got = f.forward_whole(
            ("gone".into(), dead),
            "/echo".into(),
            HeaderMap::new(),
            Bytes::new(),
            None,
            Duration::ZERO,
        );
        let e = got.await.unwrap_err();
        assert_eq!(e.response().status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn a_client_address_is_believed_only_from_a_node_with_the_token() {
        let node: SocketAddr = "10.1.2.3:5280".parse().unwrap();
        let f = forwarder(node, 1, 1_000);
        let headers = |token: &str, client: &str| {
            let mut h = HeaderMap::new();
            h.insert(FORWARDED, HeaderValue::from_str(token).unwrap());
            h.insert(CLIENT, HeaderValue::from_str(client).unwrap());
            h
        };
        let ok = f.forwarded_client(node.ip(), &headers("s3cret", "198.51.100.7"));
        assert_eq!(ok, Some("198.51.100.7:0".parse().unwrap()));
        assert_eq!(f.forwarded_client(node.ip(), &headers("guess", "198.51.100.7")), None, "wrong token");
        assert_eq!(f.forwarded_client(node.ip(), &headers("s3cret2", "198.51.100.7")), None, "longer token");
        let stranger = "10.9.9.9".parse().unwrap();
        assert_eq!(f.forwarded_client(stranger, &headers("s3cret", "198.51.100.7")), None, "not a node");
        assert_eq!(f.forwarded_client(node.ip(), &headers("s3cret", "not-an-ip")), None);
        let mut only_client = HeaderMap::new();
        only_client.insert(CLIENT, HeaderValue::from_static("198.51.100.7"));
        assert_eq!(f.forwarded_client(node.ip(), &only_client), None, "no token at all");
    }

    #[test]
    fn bosh_sids_name_their_node() {
        let sid = bosh_sid("0123456789abcdef0123456789abcdef", "n1@host");
        assert!(sid.starts_with("0123456789abcdef0123456789abcdef-"));
        assert_eq!(bosh_sid_node(&sid).as_deref(), Some("n1@host"));
        assert_eq!(bosh_sid_node("0123456789abcdef0123456789abcdef"), None);
        assert_eq!(bosh_sid_node("x-"), None);
        assert_eq!(bosh_sid_node("x-6"), None);
        assert_eq!(bosh_sid_node("x-zz"), None);
        assert_eq!(bosh_sid_node("x-ff"), None, "not UTF-8");
        assert_eq!(bosh_sid_node(&format!("x-{}", "61".repeat(300))), None, "too long");
        // Multi-byte characters round-trip; a sid is ASCII whatever the name.
        let sid = bosh_sid("ab", "nœud");
        assert!(sid.is_ascii());
        assert_eq!(bosh_sid_node(&sid).as_deref(), Some("nœud"));
    }

    #[test]
    fn hop_by_hop_and_own_headers_are_not_passed_on() {
        for h in ["connection", "transfer-encoding", "host", FORWARDED, CLIENT, "x-forwarded-for", "forwarded"] {
            assert!(skipped(&HeaderName::from_static(h)), "{h}");
        }
        assert!(!skipped(&header::CONTENT_TYPE));
        assert!(!skipped(&header::ORIGIN));
    }
}
