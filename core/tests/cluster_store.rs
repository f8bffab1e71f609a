//! The cluster's Redis-backed state against real Redis (issue 17): XEP-0160
//! offline storage (`store::offline_redis`) passes the offline conformance
//! suite on a standalone `redis-server` and on a 3-master Redis Cluster, and
//! the work-queue streams (`bus::streams`) share one queue between nodes,
//! settle acks in Redis and take over a dead node's unacked entries.
//!
//! Fixed ports (this suite's range): standalone 64310–64313, cluster
//! 64321–64323 with cluster bus ports 10 above. A missing `redis-server`
//! or `redis-cli` fails the test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::bus::redis::{RedisBus, RedisBusConfig, RedisConn, Target};
use herald_core::bus::streams::{stream_key, WorkQueues};
use herald_core::message::Message;
use herald_core::router::{AckMode, Overflow, Queue, QueueLimits, QueueOptions, Settle};
use herald_core::session::{Outbound, Protocol, SessionHandle};
use herald_core::store::offline::{conformance, OfflineLimits, OfflineStore};
use herald_core::store::offline_redis::{RedisOffline, RedisTarget};
use herald_core::store::QueueStore;
use herald_core::transport::{Peer, Transport};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod common;
use common::redis::{Cluster, Redis};

/// A 3-master Redis Cluster's servers.
fn cluster(ports: [u16; 3]) -> Vec<Redis> {
    Cluster::start(ports).nodes
}

fn offline(target: RedisTarget, prefix: &str, limits: OfflineLimits) -> RedisOffline {
    RedisOffline::connect(target, prefix, limits, Duration::from_secs(2)).expect("redis offline store connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_conformance_on_standalone_redis() {
    let redis = Redis::start(64310, &[]);
    let n = std::sync::atomic::AtomicU32::new(0);
    let url = redis.url();
    conformance(|limits| {
        // A fresh, empty store each time: its own prefix.
        let p = format!("t{}:", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        offline(RedisTarget::Standalone(url.clone()), &p, limits)
    })
    .await;
    // Two nodes, one store: what one keeps the other lists and removes.
    let limits = OfflineLimits::default();
    let a = offline(RedisTarget::Standalone(redis.url()), "two:", limits);
    let b = offline(RedisTarget::Standalone(redis.url()), "two:", limits);
    a.push("bob", 7, "alice@h/r", Bytes::from_static(b"<message>x</message>")).unwrap().wait().await.unwrap();
    let kept = b.list("bob").unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].stanza, Bytes::from_static(b"<message>x</message>"));
    b.remove_through("bob", kept[0].seq).unwrap();
    assert_eq!(a.count("bob").unwrap(), 0);
    assert_eq!(redis.cli(&["GET", "two:off:total"]), "0", "the total follows removals");
    // Hostile entries (anyone with access to Redis writes our keys) are skipped.
    redis.cli(&["XADD", "two:off:{bob}", "99-1", "t", "x", "f", "a"]);
    redis.cli(&["XADD", "two:off:{bob}", "100-5", "t", "1", "f", "a", "s", "b"]);
    assert!(a.list("bob").unwrap().is_empty());
    // Braces in a uid do not break the hash tag (both keys in one slot).
    a.push("{odd}", 1, "a", Bytes::from_static(b"m")).unwrap().wait().await.unwrap();
    assert_eq!(b.list("{odd}").unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_conformance_on_redis_cluster() {
    let nodes = cluster([64321, 64322, 64323]);
    let seeds: Vec<String> = nodes.iter().map(Redis::url).collect();
    let n = std::sync::atomic::AtomicU32::new(0);
    conformance(|limits| {
        let p = format!("c{}:", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        offline(RedisTarget::Cluster(seeds.clone()), &p, limits)
    })
    .await;
    // Users spread over the masters: many users, every one's box works.
    let s = offline(RedisTarget::Cluster(seeds.clone()), "spread:", OfflineLimits::default());
    for u in 0..30 {
        s.push(&format!("user{u}"), 1, "a", Bytes::from_static(b"<message/>")).unwrap().wait().await.unwrap();
    }
    for u in 0..30 {
        assert_eq!(s.count(&format!("user{u}")).unwrap(), 1);
    }
    let masters_with_keys = nodes.iter().filter(|r| r.cli(&["DBSIZE"]) != "0").count();
    assert_eq!(masters_with_keys, 3, "users' boxes spread over all masters");
}

struct Node {
    wq: Arc<WorkQueues>,
    q: Arc<Queue>,
    session: Arc<SessionHandle>,
    consumer: u64,
    shutdown: CancellationToken,
}

async fn conn(redis: &Redis, name: &str) -> RedisConn {
    let (bus, _rx) = RedisBus::connect(RedisBusConfig::new(Target::Standalone(redis.url()), name)).await.unwrap();
    let c = bus.redis();
    // The bus's connection lives on in `c` (a clone); the bus itself may go.
    std::mem::forget(bus);
    c
}

async fn node(redis: &Redis, name: &str, prefetch: usize, ttl: Duration) -> Node {
    let wq = WorkQueues::new(conn(redis, name).await, Duration::from_secs(2), name, "wq:", ttl, 1000);
    let shutdown = CancellationToken::new();
    wq.start(&TaskTracker::new(), shutdown.clone());
    let opts = QueueOptions { durable: true, exclusive: None, auto_delete: false };
    let limits = QueueLimits { max_len: 10_000, max_bytes: usize::MAX, overflow: Overflow::DropHead };
    let store: Arc<dyn QueueStore> = wq.clone();
    let q = Arc::new(Queue::with_limits("/", "jobs", opts, limits, Some(store), None));
    assert!(q.is_clustered());
    wq.declared(&q);
    let session =
        SessionHandle::new(name, "/", Protocol::Stomp, &Peer { addr: None, transport: Transport::Tcp }, 10_000);
    let consumer = q.consume(session.clone(), "s".into(), AckMode::ClientIndividual, prefetch);
    Node { wq, q, session, consumer, shutdown }
}

/// (body, tag, redelivered) of what reached the node's session since last asked.
fn deliveries(n: &Node) -> Vec<(String, u64, bool)> {
    let mut out = Vec::new();
    n.session.drain(&mut out, usize::MAX);
    out.into_iter()
        .filter_map(|o| match o {
            Outbound::Deliver(d) => Some((String::from_utf8_lossy(&d.message.body).into_owned(), d.tag, d.redelivered)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_streams_share_settle_and_take_over_a_dead_nodes_entries() {
    let redis = Redis::start(64311, &[]);
    let ttl = Duration::from_millis(600);
    // Nodes a and b are alive (their registry keys exist), c will die.
    for n in ["a", "b", "c"] {
        redis.cli(&["SET", &format!("wq:alive:{n}"), "1"]);
    }
    let a = node(&redis, "a", 3, ttl).await;
    let b = node(&redis, "b", 3, ttl).await;
    for i in 0..200 {
        a.wq.publish(&a.q, Message::new("", "jobs", vec![], Bytes::from(format!("m{i}"))))
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let key = stream_key("wq:", "/", "jobs");
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while got_a.len() + got_b.len() < 200 {
        assert!(Instant::now() < deadline, "only {} + {} delivered", got_a.len(), got_b.len());
        for (n, got) in [(&a, &mut got_a), (&b, &mut got_b)] {
            let d = deliveries(n);
            assert!(n.q.unacked_count() <= 3, "a node never holds more than its consumers' prefetch");
            for (body, tag, redelivered) in d {
                assert!(!redelivered);
                n.q.settle(n.consumer, tag, false, Settle::Ack).unwrap();
                got.push(body);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut all: Vec<String> = got_a.iter().chain(&got_b).cloned().collect();
    all.sort();
    let mut want: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(all, want, "none lost, none twice");
    assert!(!got_a.is_empty() && !got_b.is_empty(), "both nodes got some: {} / {}", got_a.len(), got_b.len());
    // Acks reach Redis: the stream empties, nothing pending.
    let until = Instant::now() + Duration::from_secs(5);
    while redis.cli(&["XLEN", &key]) != "0" {
        assert!(Instant::now() < until, "acked entries still in the stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.wq.inflight() + b.wq.inflight(), 0);

    // c fetches 3 and dies without acking (its tasks stop, its alive key goes).
    a.shutdown.cancel();
    b.q.cancel(b.consumer);
    let c = node(&redis, "c", 3, ttl).await;
    for i in 0..3 {
        c.wq.publish(&c.q, Message::new("", "jobs", vec![], Bytes::from(format!("d{i}"))))
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(5);
    while c.q.unacked_count() < 3 {
        assert!(Instant::now() < until, "c did not fetch");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.shutdown.cancel();
    redis.cli(&["DEL", "wq:alive:c"]);
    let b2 = b.q.consume(b.session.clone(), "s2".into(), AckMode::ClientIndividual, 10);
    let started = Instant::now();
    let mut taken = Vec::new();
    while taken.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(5), "dead node's entries not taken over: {taken:?}");
        for (body, tag, redelivered) in deliveries(&b) {
            assert!(redelivered, "{body} flagged redelivered");
            b.q.settle(b2, tag, false, Settle::Ack).unwrap();
            taken.push(body);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    taken.sort();
    assert_eq!(taken, ["d0", "d1", "d2"]);
    b.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_limits_and_hostile_entries() {
    let redis = Redis::start(64312, &[]);
    redis.cli(&["SET", "wq:alive:a", "1"]);
    let wq = WorkQueues::new(conn(&redis, "a").await, Duration::from_secs(2), "a", "wq:", Duration::from_secs(1), 10);
    let opts = QueueOptions { durable: false, exclusive: None, auto_delete: false };
    let store: Arc<dyn QueueStore> = wq.clone();
    let reject = QueueLimits { max_len: 2, max_bytes: usize::MAX, overflow: Overflow::RejectPublish };
    let q = Queue::with_limits("/", "full", opts, reject, Some(store.clone()), None);
    assert!(q.is_clustered(), "a non-durable shared queue is cluster-wide too");
    let shutdown = CancellationToken::new();
    wq.start(&TaskTracker::new(), shutdown.clone());
    for i in 0..2 {
        wq.publish(&q, Message::new("", "full", vec![], Bytes::from(format!("{i}")))).unwrap().wait().await.unwrap();
    }
    let e = wq.publish(&q, Message::new("", "full", vec![], Bytes::from("x"))).unwrap().wait().await.unwrap_err();
    assert!(e.to_string().contains("reject-publish"), "{e}");
    let drop_head = QueueLimits { max_len: 3, max_bytes: usize::MAX, overflow: Overflow::DropHead };
    let q2 = Arc::new(Queue::with_limits("/", "capped", opts, drop_head, Some(store), None));
    for i in 0..10 {
        wq.publish(&q2, Message::new("", "capped", vec![], Bytes::from(format!("c{i}"))))
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let key = stream_key("wq:", "/", "capped");
    assert_eq!(redis.cli(&["XLEN", &key]), "3", "max-length drops the oldest");
    // Garbage written by anyone with access to Redis is acked away and counted.
    redis.cli(&["XADD", &key, "*", "m", "garbage"]);
    redis.cli(&["XADD", &key, "*", "nothing", "here"]);
    wq.declared(&q2);
    let s = SessionHandle::new("u", "/", Protocol::Stomp, &Peer { addr: None, transport: Transport::Tcp }, 100);
    q2.consume(s.clone(), "s".into(), AckMode::Auto, 0);
    let until = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < 3 || wq.stats.bad_entries.load(std::sync::atomic::Ordering::Relaxed) < 2 {
        assert!(Instant::now() < until, "got {got:?}");
        let mut out = Vec::new();
        s.drain(&mut out, usize::MAX);
        for o in out {
            if let Outbound::Deliver(d) = o {
                got.push(String::from_utf8_lossy(&d.message.body).into_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(got, ["c7", "c8", "c9"]);

    // Bytes: a client sending large bodies fills Redis no further than the
    // queue's x-max-length-bytes (in Redis's own count of the stream).
    let body = Bytes::from(vec![b'x'; 1000]);
    let usage = |key: &str| redis.cli(&["MEMORY", "USAGE", key, "SAMPLES", "0"]).parse::<usize>().unwrap_or(0);
    let cap = QueueLimits { max_len: 100_000, max_bytes: 64 * 1024, overflow: Overflow::RejectPublish };
    let q3 = Queue::with_limits("/", "bytes", opts, cap, Some(wq.clone() as Arc<dyn QueueStore>), None);
    let mut refused = None;
    for i in 0..1000 {
        match wq.publish(&q3, Message::new("", "bytes", vec![], body.clone())).unwrap().wait().await {
            Ok(()) => {}
            Err(e) => {
                refused = Some((i, e.to_string()));
                break;
            }
        }
    }
    let (at, why) = refused.expect("1 MB of bodies does not fit in 64 KiB");
    assert!(why.contains("x-max-length-bytes"), "{why}");
    assert!((40..=64).contains(&at), "refused at message {at}");
    let key3 = stream_key("wq:", "/", "bytes");
    assert!(usage(&key3) <= 64 * 1024 + 2048, "the stream holds {} bytes", usage(&key3));
    let cap = QueueLimits { max_len: 100_000, max_bytes: 64 * 1024, overflow: Overflow::DropHead };
    let q4 = Queue::with_limits("/", "bytes-head", opts, cap, Some(wq.clone() as Arc<dyn QueueStore>), None);
    for i in 0..1000 {
        let m = Message::new("", "bytes-head", vec![], Bytes::from(format!("{i:04}{}", "x".repeat(996))));
        wq.publish(&q4, m).unwrap().wait().await.unwrap();
    }
    let key4 = stream_key("wq:", "/", "bytes-head");
    let held = usage(&key4);
    assert!(held <= 64 * 1024 + 4096, "drop-head keeps the stream near its cap: {held} bytes");
    let len: usize = redis.cli(&["XLEN", &key4]).parse().unwrap();
    assert!((30..=64).contains(&len), "{len} entries kept");
    let newest = redis.cli(&["XREVRANGE", &key4, "+", "-", "COUNT", "1"]);
    assert!(newest.contains("0999"), "the newest is kept: {newest}");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarting_under_its_name_takes_back_what_it_held() {
    let redis = Redis::start(64313, &[]);
    redis.cli(&["SET", "wq:alive:r", "1"]);
    let ttl = Duration::from_millis(500);
    let first = node(&redis, "r", 2, ttl).await;
    for i in 0..2 {
        first
            .wq
            .publish(&first.q, Message::new("", "jobs", vec![], Bytes::from(format!("h{i}"))))
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(5);
    while first.q.unacked_count() < 2 {
        assert!(Instant::now() < until, "first run did not fetch");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The process "dies" (its tasks stop, nothing acked) and comes back
    // under the same name before its alive key expires: nobody else may
    // claim, but the new run takes its own leftovers back.
    first.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await; // a restart takes a while
    let second = node(&redis, "r", 10, ttl).await;
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(5), "leftovers not taken back: {got:?}");
        for (body, tag, redelivered) in deliveries(&second) {
            assert!(redelivered);
            second.q.settle(second.consumer, tag, false, Settle::Ack).unwrap();
            got.push(body);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    got.sort();
    assert_eq!(got, ["h0", "h1"]);
    second.shutdown.cancel();
}
