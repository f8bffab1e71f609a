//! Publishes across nodes: engines in one process joined over a real
//! `redis-server` (`cluster::join`, as `Engine::start` does with
//! `[cluster]`), each with its own bindings. A publish on one node reaches
//! the matching bindings on every node once, in order per publisher and
//! key; a node subscribes only to what it has bindings for (checked with
//! `PUBSUB CHANNELS`/`NUMSUB`); with Redis down a publish reaches the
//! publisher's node only and is not refused; after a restart routing
//! resumes.
//!
//! Fixed ports 64101–64105 (a restart needs the same port). A missing
//! `redis-server` or `redis-cli` fails the test (tests/services/install.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::config::Config;
use herald_core::engine::Engine;
use herald_core::router::{AckMode, Queue, QueueOptions};
use herald_core::session::{Outbound, Protocol, SessionHandle};
use herald_core::transport::{Peer, Transport};

mod common;
use common::redis::Redis;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

async fn node(name: &str, redis: &Redis, prefix: &str) -> Engine {
    node_with(name, redis, prefix, "").await
}

async fn node_with(name: &str, redis: &Redis, prefix: &str, extra: &str) -> Engine {
    let toml = format!(
        "[node]\nname = \"{name}\"\n[cluster]\nredis = \"redis://127.0.0.1:{}/\"\nprefix = \"{prefix}\"\n\
         heartbeat_ms = 200\nttl_ms = 1000\n{extra}",
        redis.port
    );
    let engine = Engine::new(Config::from_toml_str(&toml).unwrap()).unwrap();
    herald_core::cluster::join(&engine).await.expect("joins the cluster");
    engine
}

/// A subscriber on one node: a queue bound to `exchange`/`key`, read by a
/// session. Made the way a STOMP SUBSCRIBE makes it (bind, then wait for
/// the Bus subscription as the RECEIPT does).
struct Sub {
    session: Arc<SessionHandle>,
    queue: Arc<Queue>,
    engine: Engine,
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn subscribe(engine: &Engine, exchange: &str, key: &str) -> Sub {
    let vhost = engine.router.vhost("/").unwrap();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let opts = QueueOptions { durable: false, exclusive: None, auto_delete: false };
    let queue = vhost.declare_queue(&format!("sub-{n}"), opts, None).unwrap();
    vhost.bind(exchange, &queue, key, None).unwrap();
    let session =
        SessionHandle::new("u", "/", Protocol::Stomp, &Peer { addr: None, transport: Transport::Tcp }, 100_000);
    queue.consume(session.clone(), "s".into(), AckMode::Auto, 0);
    engine.interests_settled().await;
    Sub { session, queue, engine: engine.clone() }
}

impl Sub {
    /// The next `n` bodies, waiting up to WAIT for them.
    async fn bodies(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < n {
            let mut out = Vec::new();
            self.session.drain(&mut out, n - got.len());
            for o in out {
                if let Outbound::Deliver(d) = o {
                    got.push(String::from_utf8_lossy(&d.message.body).into_owned());
                }
            }
            if got.len() < n {
                assert!(Instant::now() < deadline, "{} of {n} within {WAIT:?}: {got:?}", got.len());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        got
    }

    async fn nothing(&self, what: &str) {
        tokio::time::sleep(QUIET).await;
        let mut out = Vec::new();
        self.session.drain(&mut out, 100);
        let bodies: Vec<String> = out
            .into_iter()
            .filter_map(|o| match o {
                Outbound::Deliver(d) => Some(String::from_utf8_lossy(&d.message.body).into_owned()),
                _ => None,
            })
            .collect();
        assert!(bodies.is_empty(), "{what}: unexpected {bodies:?}");
    }

    async fn cancel(self) {
        self.engine.router.vhost("/").unwrap().delete_queue(&self.queue.name);
        self.engine.interests_settled().await;
    }
}

fn publish(engine: &Engine, exchange: &str, key: &str, body: &str) {
    engine.publish("/", exchange, key, vec![], Bytes::from(body.to_owned())).expect("publish accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binding_kind_hears_other_nodes_once_and_only_subscribed_nodes_listen() {
    let redis = Redis::start(64101, &[]);
    let p = "t1:";
    let (a, b, c) = (node("a", &redis, p).await, node("b", &redis, p).await, node("c", &redis, p).await);
    let exact = |x: &str, k: &str| format!("{p}bus:k:1:/:{}:{x}:{k}", x.len());
    let wild = |x: &str| format!("{p}bus:w:1:/:{}:{x}", x.len());

    // b: an exact topic key, `/topic/a.*` and a fanout; c: `#`, a direct
    // key and `/exchange/presence/p1.*`; a: a local binding of its own.
    let b_exact = subscribe(&b, "amq.topic", "a.b").await;
    let b_pattern = subscribe(&b, "amq.topic", "a.*").await;
    let b_fanout = subscribe(&b, "amq.fanout", "").await;
    let c_all = subscribe(&c, "amq.topic", "#").await;
    let c_direct = subscribe(&c, "amq.direct", "k").await;
    let c_presence = subscribe(&c, "presence", "p1.*").await;
    let a_local = subscribe(&a, "amq.topic", "a.b").await;
    assert_eq!(redis.numsub(&exact("amq.topic", "a.b")), 2, "a and b, once each");
    assert_eq!(redis.numsub(&exact("amq.direct", "k")), 1);
    assert_eq!(redis.numsub(&wild("amq.topic")), 2, "b (a.*) and c (#)");
    assert_eq!(redis.numsub(&wild("amq.fanout")), 1, "fanout is the exchange's wildcard interest");
    assert_eq!(redis.numsub(&wild("presence")), 1);
    // Nobody bound the fanout per key, and nobody binds amq.direct's other keys.
    let mut channels = redis.cli_lines(&["PUBSUB", "CHANNELS", &format!("{p}bus:*")]);
    channels.sort();
    let mut expected = vec![
        exact("amq.direct", "k"),
        exact("amq.topic", "a.b"),
        wild("amq.fanout"),
        wild("amq.topic"),
        wild("presence"),
        format!("{p}bus:ctl"),
        format!("{p}bus:k:0::11:herald.node:*"),
        format!("{p}bus:k:0::11:herald.node:a"),
        format!("{p}bus:k:0::11:herald.node:b"),
        format!("{p}bus:k:0::11:herald.node:c"),
    ];
    expected.sort();
    assert_eq!(channels, expected);

    publish(&a, "amq.topic", "a.b", "1");
    publish(&a, "amq.topic", "a.c", "2");
    publish(&a, "amq.topic", "x.y", "3");
    publish(&a, "amq.direct", "k", "4");
    publish(&a, "amq.direct", "other", "5");
    publish(&a, "amq.fanout", "whatever", "6");
    publish(&a, "presence", "p1.alice", "7");
    publish(&a, "presence", "p2.alice", "8");
    assert_eq!(b_exact.bodies(1).await, ["1"]);
    assert_eq!(b_pattern.bodies(2).await, ["1", "2"]);
    assert_eq!(b_fanout.bodies(1).await, ["6"]);
    assert_eq!(c_all.bodies(3).await, ["1", "2", "3"]);
    assert_eq!(c_direct.bodies(1).await, ["4"]);
    assert_eq!(c_presence.bodies(1).await, ["7"]);
    assert_eq!(a_local.bodies(1).await, ["1"], "the publisher's node routed locally");
    for (s, what) in [
        (&b_exact, "b exact"),
        (&b_pattern, "b pattern"),
        (&b_fanout, "b fanout"),
        (&c_all, "c #"),
        (&c_direct, "c direct"),
        (&c_presence, "c presence"),
        (&a_local, "a (its own publish not back from the Bus)"),
    ] {
        s.nothing(what).await;
    }
    // From another publisher, the same.
    publish(&c, "amq.topic", "a.b", "9");
    assert_eq!(b_exact.bodies(1).await, ["9"]);
    assert_eq!(b_pattern.bodies(1).await, ["9"]);
    assert_eq!(a_local.bodies(1).await, ["9"]);
    assert_eq!(c_all.bodies(1).await, ["9"]);

    // Several subscribers of one key on one node: one subscription.
    let feed1 = subscribe(&b, "feed", "u1").await;
    let feed2 = subscribe(&b, "feed", "u1").await;
    assert_eq!(redis.numsub(&exact("feed", "u1")), 1);
    a.send_to_user("u1", vec![], Bytes::from_static(b"hi")).unwrap();
    assert_eq!(feed1.bodies(1).await, ["hi"]);
    assert_eq!(feed2.bodies(1).await, ["hi"]);
    feed1.cancel().await;
    assert_eq!(redis.numsub(&exact("feed", "u1")), 1, "one subscriber left");
    feed2.cancel().await;
    assert_eq!(redis.numsub(&exact("feed", "u1")), 0, "the last one gone: unsubscribed");

    // Unsubscribing stops the traffic; the node is no longer subscribed.
    b_exact.cancel().await;
    b_pattern.cancel().await;
    b_fanout.cancel().await;
    assert_eq!(redis.numsub(&exact("amq.topic", "a.b")), 1, "a only");
    assert_eq!(redis.numsub(&wild("amq.topic")), 1, "c only");
    assert_eq!(redis.numsub(&wild("amq.fanout")), 0);
    publish(&c, "amq.topic", "a.b", "10");
    assert_eq!(a_local.bodies(1).await, ["10"]);
    let stats = b.bus().unwrap().stats();
    let before = stats.received;
    tokio::time::sleep(QUIET).await;
    assert_eq!(b.bus().unwrap().stats().received, before, "b hears nothing more");
    for e in [&a, &b, &c] {
        let s = e.bus().unwrap().stats();
        assert_eq!((s.refused, s.bad_frames, s.dropped), (0, 0, 0), "{}: {s:?}", e.node());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_publisher_and_key_on_exact_and_wildcard_bindings() {
    let redis = Redis::start(64102, &[]);
    let p = "t2:";
    let (a, b, c) = (node("a", &redis, p).await, node("b", &redis, p).await, node("c", &redis, p).await);
    let exact = subscribe(&c, "amq.topic", "o.k").await;
    let pattern = subscribe(&c, "amq.topic", "o.*").await;
    for n in 0..300 {
        publish(&a, "amq.topic", "o.k", &format!("a{n}"));
        publish(&b, "amq.topic", "o.k", &format!("b{n}"));
    }
    for sub in [&exact, &pattern] {
        let got = sub.bodies(600).await;
        let from = |who: &str| got.iter().filter(|s| s.starts_with(who)).cloned().collect::<Vec<_>>();
        assert_eq!(from("a"), (0..300).map(|n| format!("a{n}")).collect::<Vec<_>>());
        assert_eq!(from("b"), (0..300).map(|n| format!("b{n}")).collect::<Vec<_>>());
        sub.nothing("once per node").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_delivers_locally_only_and_routing_resumes_after_a_restart() {
    let mut redis = Redis::start(64103, &[]);
    let p = "t3:";
    let (a, b) = (node("a", &redis, p).await, node("b", &redis, p).await);
    let local = subscribe(&a, "amq.topic", "r.k").await;
    let remote = subscribe(&b, "amq.topic", "r.k").await;
    publish(&a, "amq.topic", "r.k", "before");
    assert_eq!(local.bodies(1).await, ["before"]);
    assert_eq!(remote.bodies(1).await, ["before"]);

    redis.kill();
    let deadline = Instant::now() + WAIT;
    while a.bus().unwrap().is_connected() {
        assert!(Instant::now() < deadline, "a notices Redis is gone");
        // A publish is what makes the connection notice a dead socket.
        let _ = a.publish("/", "amq.topic", "nobody", vec![], Bytes::new());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = a.bus().unwrap().stats().refused;
    // Not refused: delivered on the publisher's node only, and counted.
    publish(&a, "amq.topic", "r.k", "during");
    assert_eq!(local.bodies(1).await, ["during"]);
    remote.nothing("b while Redis is down").await;
    assert_eq!(a.bus().unwrap().stats().refused, refused + 1);
    // A binding made during the outage is subscribed once Redis is back.
    let late = subscribe(&b, "amq.direct", "late").await;

    redis = Redis::start(64103, &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(a.bus().unwrap().is_connected() && b.bus().unwrap().is_connected()) {
        assert!(Instant::now() < deadline, "both nodes reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while redis.numsub(&format!("{p}bus:k:1:/:10:amq.direct:late")) == 0 {
        assert!(Instant::now() < deadline, "the binding made during the outage is subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish(&a, "amq.topic", "r.k", "after");
    publish(&a, "amq.direct", "late", "late");
    assert_eq!(local.bodies(1).await, ["after"]);
    assert_eq!(remote.bodies(1).await, ["after"]);
    assert_eq!(late.bodies(1).await, ["late"]);
    remote.nothing("nothing from the outage is replayed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_restored_before_the_join_are_subscribed_at_the_join() {
    use herald_core::store::{MemoryStore, QueueStore};
    let redis = Redis::start(64104, &[]);
    let p = "t4:";
    let config = |name: &str| {
        let toml = format!(
            "[node]\nname = \"{name}\"\n[cluster]\nredis = \"redis://127.0.0.1:{}/\"\nprefix = \"{p}\"\n",
            redis.port
        );
        Config::from_toml_str(&toml).unwrap()
    };
    // A durable queue bound in an earlier run of node b, restored from its store.
    let store: Arc<dyn QueueStore> = Arc::new(MemoryStore::default());
    {
        let before = Engine::with_store(config("b"), store.clone()).unwrap();
        let vhost = before.router.vhost("/").unwrap();
        let opts = QueueOptions { durable: true, exclusive: None, auto_delete: false };
        let q = vhost.declare_queue("kept", opts, None).unwrap();
        vhost.bind("amq.topic", &q, "pre.k", None).unwrap();
    }
    let b = Engine::with_store(config("b"), store).unwrap();
    assert_eq!(redis.numsub(&format!("{p}bus:k:1:/:9:amq.topic:pre.k")), 0);
    herald_core::cluster::join(&b).await.expect("b joins");
    assert_eq!(redis.numsub(&format!("{p}bus:k:1:/:9:amq.topic:pre.k")), 1, "subscribed by the join itself");
    let a = node("a", &redis, p).await;
    publish(&a, "amq.topic", "pre.k", "kept");
    let q = b.router.vhost("/").unwrap().queue("kept").unwrap();
    let deadline = Instant::now() + WAIT;
    while q.depth() == 0 {
        assert!(Instant::now() < deadline, "the restored queue gets node a's publish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(q.depth(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_fills_the_buffer_and_publishes_stay_local_without_refusing_anyone() {
    let redis = Redis::start(64105, &[]);
    let p = "t5:";
    let a = node_with("a", &redis, p, "publish_buffer = 4\n").await;
    let b = node("b", &redis, p).await;
    let local = subscribe(&a, "amq.topic", "s.k").await;
    let remote = subscribe(&b, "amq.topic", "s.k").await;
    redis.pause(true);
    for n in 0..100 {
        // `publish` would fail the test if the publisher were refused.
        publish(&a, "amq.topic", "s.k", &n.to_string());
    }
    let refused = a.bus().unwrap().stats().refused;
    redis.pause(false);
    assert_eq!(local.bodies(100).await, (0..100).map(|n| n.to_string()).collect::<Vec<_>>());
    assert!(refused >= 90, "at most the buffer (4) and one batch in flight crossed; refused {refused}");
    // What the buffer held arrives once Redis answers again, in order.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut out = Vec::new();
    remote.session.drain(&mut out, 200);
    let crossed: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            Outbound::Deliver(d) => std::str::from_utf8(&d.message.body).ok()?.parse().ok(),
            _ => None,
        })
        .collect();
    assert!(crossed.len() as u64 <= 100 - refused, "{crossed:?}");
    assert!(crossed.windows(2).all(|w| w[0] < w[1]), "in publish order: {crossed:?}");
    let deadline = Instant::now() + WAIT;
    while !a.bus().unwrap().is_connected() {
        assert!(Instant::now() < deadline, "a connected again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(&a, "amq.topic", "s.k", "after");
    assert_eq!(remote.bodies(1).await, ["after"]);
}
