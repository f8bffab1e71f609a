//! The Bus: how a message published on one node reaches the bindings on the
//! others (DESIGN.md "Cluster"), and control messages between nodes
//! ([`control`]). The engine publishes through it ([`crate::engine`]);
//! `cluster/` connects it and routes what arrives.
//!
//! # What crosses
//!
//! An [`Envelope`]: the origin node, a sequence per publisher, vhost,
//! exchange, routing key, headers, body, the persistent flag and the
//! authenticated sender. The receiving node routes it into its own vhost as
//! if it had been published there, minus the origin's own bindings (the
//! origin routed locally already, so a node drops envelopes it sent itself).
//!
//! # Channel scheme: interest-based
//!
//! A node subscribes only to the [`Interest`]s it has bindings for, so a push
//! to a user costs one Redis publish and nothing on nodes without that user.
//! The router counts bindings per interest ([`Interests`], and
//! [`Interest::of_binding`] for which interest a binding needs) and calls
//! [`Bus::subscribe`] for the first one and [`Bus::unsubscribe`] after the
//! last (the Bus does not count; a second `subscribe` of the same interest
//! is a no-op).
//!
//! - **Exact interest** (direct, fanout, a topic or headers binding whose
//!   key has no wildcard): one channel per (vhost, exchange, routing key),
//!   [`Interest::channel`]. A publish goes to the channel of its routing key.
//! - **Wildcard interest** (a topic pattern with `*` or `#`, such as
//!   `/topic/a.*`, `#`, `/exchange/presence/p1.*`; a headers binding; a
//!   fanout binding that ignores keys): one channel per (vhost, exchange),
//!   the exchange's *wildcard channel*. Every node with at least one such
//!   binding on the exchange subscribes it and matches patterns itself. A
//!   publisher also publishes on the wildcard channel, but only while some
//!   node has wildcard interest in that exchange, which it learns from the
//!   Redis set `<prefix>bus:wild` (members `vhost NUL exchange NUL node`)
//!   read at connect and on every reconnect, and kept current by notices on
//!   the control channel `<prefix>bus:ctl`. Redis Cluster's sharded pub/sub
//!   has no patterns, so this one scheme serves both standalone Redis and a
//!   cluster (PSUBSCRIBE would work on standalone only).
//! - **Once per node.** A node subscribed both to a key's channel and the
//!   exchange's wildcard channel hears the message twice; the copy on the
//!   wildcard channel carries [`Envelope::also_exact`], and a node drops such
//!   a copy when it holds the exact interest (it gets the other copy).
//! - **Order.** Per publisher and channel Redis keeps order, so per publisher
//!   and routing key every node sees publish order (exact subscribers all
//!   through the key channel, wildcard subscribers all through the wildcard
//!   channel).
//!
//! # What a subscription costs Redis at 300k users
//!
//! One exact channel per user feed key (`feed/<uid>`), subscribed by the
//! node holding that user's sessions: 300k channels cluster-wide, each with
//! one subscriber. Redis keeps per channel a dict entry and a list with one
//! client: roughly 150–200 bytes, so about 50–60 MB over all shards, and
//! each SSUBSCRIBE is one O(1) command at login (one SUNSUBSCRIBE at
//! logout). On Redis Cluster, sharded channels spread over the shards by
//! hash slot, so the subscriptions and publish traffic divide among masters
//! instead of every master seeing every publish (classic PUBLISH in a
//! cluster is broadcast to all nodes). Each Herald node keeps one Redis
//! connection per shard for its subscriptions, not one per channel.
//!
//! # Failure
//!
//! [`Bus::publish`] never waits: it queues into a bounded buffer and fails
//! with [`BusError::Full`] when the buffer is full (a slow Redis), or
//! [`BusError::Unavailable`] while disconnected. The engine has delivered
//! locally already and does not refuse the publisher: the message reached
//! this node only, counted in [`BusStats::refused`] (docs/cluster.md,
//! "Redis down"). Received envelopes go into a bounded channel too; when
//! the router falls behind that far, an envelope is dropped and counted.

pub mod codec;
pub mod control;
pub mod interest;
#[cfg(feature = "redis")]
pub mod redis;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

pub use codec::{decode, encode, DecodeError};
pub use interest::Interests;

/// A boxed, sendable future (object-safe async trait methods).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A message crossing from one node to the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The publishing node's name, unique in the cluster.
    pub origin: String,
    /// Per publisher, strictly increasing (gaps allowed: a refused publish
    /// consumes a number).
    pub seq: u64,
    pub vhost: String,
    pub exchange: String,
    pub routing_key: String,
    /// Header names and values in publish order; names may repeat.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub persistent: bool,
    /// The authenticated sender, stamped by the origin.
    pub sender: Option<String>,
    /// Set on the copy sent on the exchange's wildcard channel when the
    /// same message also went to its key channel (see the module doc).
    pub also_exact: bool,
}

/// What a node wants to hear.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interest {
    pub vhost: String,
    pub exchange: String,
    /// `Some(key)`: messages published with exactly this routing key.
    /// `None`: every message on the exchange (the wildcard channel).
    pub key: Option<String>,
}

impl Interest {
    pub fn exact(vhost: &str, exchange: &str, key: &str) -> Interest {
        Interest { vhost: vhost.into(), exchange: exchange.into(), key: Some(key.into()) }
    }

    pub fn wildcard(vhost: &str, exchange: &str) -> Interest {
        Interest { vhost: vhost.into(), exchange: exchange.into(), key: None }
    }

    /// The pub/sub channel name. Lengths before vhost and exchange keep it
    /// unambiguous whatever bytes the names hold (`a/b` + `c` vs `a` + `b/c`).
    pub fn channel(&self, prefix: &str) -> String {
        let (v, e) = (&self.vhost, &self.exchange);
        match &self.key {
            Some(k) => format!("{prefix}bus:k:{}:{v}:{}:{e}:{k}", v.len(), e.len()),
            None => format!("{prefix}bus:w:{}:{v}:{}:{e}", v.len(), e.len()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusError {
    /// The outgoing buffer is full (Redis is slower than the publishers).
    Full,
    /// Not connected to Redis, or a subscribe failed; the text says why.
    Unavailable(String),
    /// The envelope cannot be encoded (a field over its length limit).
    TooLarge(&'static str),
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Full => f.write_str("cluster bus: outgoing buffer full"),
            BusError::Unavailable(why) => write!(f, "cluster bus unavailable: {why}"),
            BusError::TooLarge(what) => write!(f, "cluster bus: {what} too large"),
        }
    }
}

impl std::error::Error for BusError {}

/// The node-to-node transport. Guarantees (checked by [`conformance`]):
/// a published envelope reaches every *other* node holding a matching
/// interest, once; a node without one receives nothing; per publisher and
/// routing key, in publish order; after `unsubscribe` nothing more arrives
/// for that interest; after a Redis restart the bus reconnects, resubscribes
/// every interest and delivery resumes. Envelopes published while
/// disconnected are refused, not queued.
pub trait Bus: Send + Sync {
    /// This node's name (the `origin` of what it publishes).
    fn node(&self) -> &str;

    /// Queues `env` for every node with interest in its key or in its
    /// exchange's wildcard channel. `env.origin`, `env.seq` and
    /// `env.also_exact` are set by the bus. Never waits.
    fn publish(&self, env: Envelope) -> Result<(), BusError>;

    /// Starts hearing `interest`; resolves once Redis confirmed it.
    fn subscribe<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<(), BusError>>;

    /// Stops hearing `interest`.
    fn unsubscribe<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<(), BusError>>;

    /// Whether the bus is connected right now.
    fn is_connected(&self) -> bool;

    /// Counters for metrics and the log.
    fn stats(&self) -> BusStats;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    pub published: u64,
    pub refused: u64,
    pub received: u64,
    /// Frames that did not decode (logged and dropped).
    pub bad_frames: u64,
    /// Envelopes dropped because the receiving channel was full.
    pub dropped: u64,
}

/// The bus of a single node: nothing to reach, so every publish succeeds
/// at once and nothing is ever received.
#[derive(Debug)]
pub struct NoBus {
    node: String,
    published: AtomicU64,
}

impl NoBus {
    pub fn new(node: &str) -> NoBus {
        NoBus { node: node.into(), published: AtomicU64::new(0) }
    }
}

impl Bus for NoBus {
    fn node(&self) -> &str {
        &self.node
    }
    fn publish(&self, _env: Envelope) -> Result<(), BusError> {
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn subscribe<'a>(&'a self, _: &'a Interest) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async { Ok(()) })
    }
    fn unsubscribe<'a>(&'a self, _: &'a Interest) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async { Ok(()) })
    }
    fn is_connected(&self) -> bool {
        true
    }
    fn stats(&self) -> BusStats {
        BusStats { published: self.published.load(Ordering::Relaxed), ..BusStats::default() }
    }
}

/// One node under test: its bus and what it receives.
pub struct TestNode {
    pub bus: std::sync::Arc<dyn Bus>,
    pub rx: mpsc::Receiver<Envelope>,
}

/// The conformance suite every [`Bus`] connecting nodes must pass: three
/// nodes on the same Redis (standalone or cluster), fresh (no interests),
/// with distinct names. Uses vhost `conf` so runs do not meet other tests.
/// Panics on the first broken guarantee.
pub async fn conformance(a: &mut TestNode, b: &mut TestNode, c: &mut TestNode) {
    use std::time::Duration;
    let quiet = Duration::from_millis(300);
    let wait = Duration::from_secs(5);
    let msg = |key: &str, n: u32| Envelope {
        origin: String::new(),
        seq: 0,
        vhost: "conf".into(),
        exchange: "amq.topic".into(),
        routing_key: key.into(),
        headers: vec![("n".into(), n.to_string()), ("content-type".into(), "text/plain".into())],
        body: Bytes::from(format!("body {n}")),
        persistent: n.is_multiple_of(2),
        sender: Some("alice".into()),
        also_exact: false,
    };
    async fn next(rx: &mut mpsc::Receiver<Envelope>, wait: Duration) -> Envelope {
        tokio::time::timeout(wait, rx.recv()).await.expect("an envelope within the wait").expect("bus open")
    }
    async fn nothing(rx: &mut mpsc::Receiver<Envelope>, quiet: Duration, what: &str) {
        if let Ok(Some(e)) = tokio::time::timeout(quiet, rx.recv()).await {
            panic!("{what}: unexpected envelope {e:?}");
        }
    }
    for n in [&*a, &*b, &*c] {
        assert!(n.bus.is_connected(), "{} connected", n.bus.node());
    }

    // 1. Exact interest: reaches the subscriber once, not the others, whole.
    let k1 = Interest::exact("conf", "amq.topic", "feed.u1");
    b.bus.subscribe(&k1).await.expect("subscribe");
    b.bus.subscribe(&k1).await.expect("second subscribe is a no-op");
    a.bus.publish(msg("feed.u1", 0)).expect("publish");
    let got = next(&mut b.rx, wait).await;
    assert_eq!(got.origin, a.bus.node());
    assert_eq!((got.vhost.as_str(), got.exchange.as_str(), got.routing_key.as_str()), ("conf", "amq.topic", "feed.u1"));
    assert_eq!(got.body, Bytes::from("body 0"));
    assert_eq!(got.headers, msg("feed.u1", 0).headers);
    assert!(got.persistent);
    assert_eq!(got.sender.as_deref(), Some("alice"));
    nothing(&mut b.rx, quiet, "b after one publish (once)").await;
    nothing(&mut c.rx, Duration::from_millis(1), "c without interest").await;
    nothing(&mut a.rx, Duration::from_millis(1), "the publisher itself").await;

    // 2. Order per publisher and key, with two publishers interleaved.
    for n in 1..=200 {
        a.bus.publish(msg("feed.u1", n)).expect("publish");
        c.bus.publish(msg("feed.u1", 1000 + n)).expect("publish");
    }
    let (mut from_a, mut from_c) = (Vec::new(), Vec::new());
    while from_a.len() + from_c.len() < 400 {
        let e = next(&mut b.rx, wait).await;
        let n: u32 = e.headers[0].1.parse().unwrap();
        if e.origin == a.bus.node() {
            from_a.push((e.seq, n))
        } else {
            from_c.push((e.seq, n))
        }
    }
    assert_eq!(from_a.iter().map(|p| p.1).collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>());
    assert_eq!(from_c.iter().map(|p| p.1).collect::<Vec<_>>(), (1001..=1200).collect::<Vec<_>>());
    assert!(from_a.windows(2).all(|w| w[0].0 < w[1].0), "seq increases per publisher");
    nothing(&mut b.rx, quiet, "b after the ordered run").await;

    // 3. Wildcard interest: hears every key of the exchange; a node holding
    //    both the exact and the wildcard interest hears each message once.
    let w = Interest::wildcard("conf", "amq.topic");
    c.bus.subscribe(&w).await.expect("subscribe wildcard");
    b.bus.subscribe(&w).await.expect("subscribe wildcard");
    // The publisher learns of wildcard interest through the control channel.
    tokio::time::sleep(quiet).await;
    a.bus.publish(msg("presence.p1.u9", 7)).expect("publish");
    a.bus.publish(msg("feed.u1", 8)).expect("publish");
    let c1 = next(&mut c.rx, wait).await;
    let c2 = next(&mut c.rx, wait).await;
    assert_eq!((c1.routing_key.as_str(), c2.routing_key.as_str()), ("presence.p1.u9", "feed.u1"));
    let b1 = next(&mut b.rx, wait).await;
    let b2 = next(&mut b.rx, wait).await;
    let mut keys = vec![b1.routing_key, b2.routing_key];
    keys.sort();
    assert_eq!(keys, ["feed.u1", "presence.p1.u9"]);
    nothing(&mut b.rx, quiet, "b holding exact and wildcard (once per node)").await;
    nothing(&mut c.rx, Duration::from_millis(1), "c after two").await;
    // Order per publisher and key holds on the wildcard channel too.
    for n in 1..=50 {
        a.bus.publish(msg("x.y", n)).expect("publish");
    }
    for n in 1..=50 {
        assert_eq!(next(&mut c.rx, wait).await.headers[0].1, n.to_string());
    }

    // 4. Unsubscribe stops delivery.
    b.bus.unsubscribe(&w).await.expect("unsubscribe");
    b.bus.unsubscribe(&k1).await.expect("unsubscribe");
    c.bus.unsubscribe(&w).await.expect("unsubscribe");
    tokio::time::sleep(quiet).await;
    for _ in 0..50 {
        let _ = b.rx.try_recv();
    }
    a.bus.publish(msg("feed.u1", 9)).expect("publish");
    a.bus.publish(msg("other", 10)).expect("publish");
    nothing(&mut b.rx, quiet, "b after unsubscribe").await;
    nothing(&mut c.rx, Duration::from_millis(1), "c after unsubscribe").await;

    // 5. A body with every byte value and empty fields survive.
    let k2 = Interest::exact("conf", "", "");
    a.bus.subscribe(&k2).await.expect("subscribe");
    let mut e = msg("", 11);
    e.exchange.clear();
    e.body = Bytes::from((0..=255u8).collect::<Vec<_>>());
    e.headers.clear();
    e.sender = None;
    c.bus.publish(e.clone()).expect("publish");
    let got = next(&mut a.rx, wait).await;
    assert_eq!((got.body, got.headers, got.sender), (e.body, e.headers, None));
    a.bus.unsubscribe(&k2).await.expect("unsubscribe");
    for n in [&*a, &*b, &*c] {
        let s = n.bus.stats();
        assert_eq!((s.bad_frames, s.dropped), (0, 0), "{}: {s:?}", n.bus.node());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_unambiguous() {
        let a = Interest::exact("a/b", "c", "k").channel("h:");
        let b = Interest::exact("a", "b/c", "k").channel("h:");
        assert_ne!(a, b);
        assert_eq!(
            Interest::exact("/", "amq.topic", "feed.u1").channel("herald:"),
            "herald:bus:k:1:/:9:amq.topic:feed.u1"
        );
        assert_eq!(Interest::wildcard("/", "amq.topic").channel("herald:"), "herald:bus:w:1:/:9:amq.topic");
    }

    #[tokio::test]
    async fn no_bus_accepts_everything() {
        let bus = NoBus::new("n1");
        let i = Interest::exact("/", "x", "k");
        bus.subscribe(&i).await.unwrap();
        let env = Envelope {
            origin: String::new(),
            seq: 0,
            vhost: "/".into(),
            exchange: "x".into(),
            routing_key: "k".into(),
            headers: vec![],
            body: Bytes::new(),
            persistent: false,
            sender: None,
            also_exact: false,
        };
        bus.publish(env).unwrap();
        assert!(bus.is_connected());
        assert_eq!(bus.stats().published, 1);
    }
}
