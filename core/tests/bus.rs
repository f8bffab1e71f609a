//! The cluster bus against real Redis: the [`conformance`] suite on a
//! standalone `redis-server` and on a 3-master Redis Cluster built on
//! loopback, and a Redis restart (kill -9, start again on the same port)
//! after which delivery resumes.
//!
//! Ports are fixed in 63800–63899 (the restart needs the same port again):
//! standalone 63810–63813, clusters 63821–63823 and 63841–63843 with
//! cluster bus ports 10 above. A missing `redis-server` or `redis-cli` fails the test:
//! install them with `sudo bash tests/services/install.sh`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::bus::redis::{RedisBus, RedisBusConfig, Target};
use herald_core::bus::{conformance, BusError, Envelope, Interest, TestNode};

mod common;
use common::redis::{binary, Cluster, Redis};

async fn node(target: Target, name: &str) -> TestNode {
    let (bus, rx) = RedisBus::connect(RedisBusConfig::new(target, name)).await.expect("bus connects");
    TestNode { bus: Arc::new(bus), rx }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_standalone_redis() {
    let redis = Redis::start(63810, &[]);
    // One node configured the way `[cluster]` in herald.toml does it.
    let cfg = herald_core::config::Config::from_toml_str(&format!("[cluster]\nredis = \"{}\"\n", redis.url())).unwrap();
    let (bus, rx) = RedisBus::connect(RedisBusConfig::from_config(cfg.cluster.as_ref().unwrap(), "a")).await.unwrap();
    let mut a = TestNode { bus: Arc::new(bus), rx };
    let t = Target::Standalone(redis.url());
    let (mut b, mut c) = (node(t.clone(), "b").await, node(t, "c").await);
    conformance(&mut a, &mut b, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_redis_cluster() {
    let cluster = Cluster::start([63821, 63822, 63823]);
    let t = Target::Cluster(cluster.seeds());
    let (mut a, mut b, mut c) = (node(t.clone(), "a").await, node(t.clone(), "b").await, node(t, "c").await);
    conformance(&mut a, &mut b, &mut c).await;
    // Sharded: the channels spread over the masters, each holding some.
    for n in 0..30 {
        let i = Interest::exact("conf", "amq.topic", &format!("u{n}"));
        b.bus.subscribe(&i).await.unwrap();
        a.bus.publish(env(&format!("u{n}"))).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), b.rx.recv()).await.expect("delivery").unwrap();
        assert_eq!(got.routing_key, format!("u{n}"));
    }
    let mut total = 0;
    for r in &cluster.nodes {
        let out = Command::new(binary("redis-cli"))
            .args(["-p", &r.port.to_string(), "pubsub", "shardchannels"])
            .output()
            .unwrap();
        let here = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("bus:k:")).count();
        assert!(here > 0, "master {} holds none of the 30 key channels", r.port);
        total += here;
    }
    assert_eq!(total, 30, "each key channel on exactly one master");
}

fn env(key: &str) -> Envelope {
    Envelope {
        origin: String::new(),
        seq: 0,
        vhost: "conf".into(),
        exchange: "amq.topic".into(),
        routing_key: key.into(),
        headers: vec![],
        body: Bytes::from_static(b"x"),
        persistent: false,
        sender: None,
        also_exact: false,
    }
}

async fn until(what: &str, within: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_reconnects_and_resubscribes() {
    let port = 63811;
    let mut redis = Redis::start(port, &[]);
    let t = Target::Standalone(redis.url());
    let (a, mut b) = (node(t.clone(), "a").await, node(t, "b").await);
    let k = Interest::exact("conf", "amq.topic", "feed.u1");
    let w = Interest::wildcard("conf", "amq.direct");
    b.bus.subscribe(&k).await.unwrap();
    b.bus.subscribe(&w).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.bus.publish(env("feed.u1")).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), b.rx.recv()).await.expect("delivery before").unwrap();
    assert_eq!(got.routing_key, "feed.u1");

    redis.kill();
    until("publisher sees the disconnection", Duration::from_secs(10), || !a.bus.is_connected()).await;
    match a.bus.publish(env("feed.u1")) {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("publish while Redis is down: {other:?}"),
    }
    assert!(a.bus.stats().refused >= 1);

    let _redis = Redis::start(port, &[]);
    until("both reconnect", Duration::from_secs(15), || a.bus.is_connected() && b.bus.is_connected()).await;
    // The exact interest was resubscribed; the wildcard one re-announced in
    // the new (empty) Redis, and the publisher learnt it again.
    let mut e = env("any.key");
    e.exchange = "amq.direct".into();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut exact_ok, mut wild_ok) = (false, false);
    while !(exact_ok && wild_ok) {
        assert!(Instant::now() < deadline, "delivery resumes (exact {exact_ok}, wildcard {wild_ok})");
        if !exact_ok {
            a.bus.publish(env("feed.u1")).unwrap();
        }
        if !wild_ok {
            a.bus.publish(e.clone()).unwrap();
        }
        while let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(200), b.rx.recv()).await {
            exact_ok |= got.routing_key == "feed.u1";
            wild_ok |= got.exchange == "amq.direct";
        }
    }
}

/// `PUBLISH channel payload` with any bytes (redis-cli `-x` reads the last
/// argument from stdin).
fn publish_raw(port: u16, channel: &str, payload: &[u8]) {
    let mut child = Command::new(binary("redis-cli"))
        .args(["-p", &port.to_string(), "-x", "publish", channel])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), payload).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

/// Anyone with access to Redis can publish on the bus channels: garbage is
/// counted and dropped, and delivery goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_are_dropped() {
    let redis = Redis::start(63812, &[]);
    let t = Target::Standalone(redis.url());
    let (a, mut b) = (node(t.clone(), "a").await, node(t, "b").await);
    let k = Interest::exact("conf", "amq.topic", "feed.u1");
    b.bus.subscribe(&k).await.unwrap();
    let ch = k.channel("herald:");
    let good = herald_core::bus::encode(&Envelope { origin: "z".into(), ..env("feed.u1") }).unwrap();
    let mut wrong_key = env("feed.u2");
    wrong_key.origin = "z".into();
    let wrong_key = herald_core::bus::encode(&wrong_key).unwrap();
    let truncated = &good[..good.len() - 1];
    for payload in [&b""[..], b"garbage", b"H\x01\x00", truncated, &wrong_key] {
        publish_raw(63812, &ch, payload);
    }
    // Control notices too.
    publish_raw(63812, "herald:bus:ctl", b"?");
    publish_raw(63812, "herald:bus:ctl", b"+no-separators");
    a.bus.publish(env("feed.u1")).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), b.rx.recv()).await.expect("delivery").unwrap();
    assert_eq!(got.origin, "a");
    assert_eq!(b.bus.stats().bad_frames, 7, "{:?}", b.bus.stats());
}

/// A Redis that stops answering (SIGSTOP): the outgoing buffer fills and
/// publish is refused with `Full`, memory does not grow; once Redis runs
/// again, delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_fills_the_buffer_and_publish_is_refused() {
    let redis = Redis::start(63813, &[]);
    let t = Target::Standalone(redis.url());
    let mut cfg = RedisBusConfig::new(t.clone(), "a");
    cfg.publish_buffer = 8;
    cfg.timeout = Duration::from_secs(30);
    let (a, _rx) = RedisBus::connect(cfg).await.unwrap();
    let mut b = node(t, "b").await;
    let k = Interest::exact("conf", "amq.topic", "feed.u1");
    b.bus.subscribe(&k).await.unwrap();
    redis.pause(true);
    let mut accepted = 0;
    let refused = loop {
        match herald_core::bus::Bus::publish(&a, env("feed.u1")) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 10_000, "the buffer never filled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(refused, BusError::Full);
    assert!(accepted <= 8 + 256 + 1, "accepted {accepted} with a buffer of 8 (and one batch in flight)");
    redis.pause(false);
    for _ in 0..accepted {
        tokio::time::timeout(Duration::from_secs(10), b.rx.recv())
            .await
            .expect("every accepted publish arrives")
            .unwrap();
    }
}

/// kill -9 of one master of the cluster, restarted with its nodes.conf:
/// the sharded subscriptions it held are re-issued and delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_restart_resubscribes() {
    let mut cluster = Cluster::start([63841, 63842, 63843]);
    let t = Target::Cluster(cluster.seeds());
    let (a, mut b) = (node(t.clone(), "a").await, node(t, "b").await);
    let keys: Vec<String> = (0..12).map(|n| format!("u{n}")).collect();
    for k in &keys {
        b.bus.subscribe(&Interest::exact("conf", "amq.topic", k)).await.unwrap();
    }
    let on_first: Vec<&String> = {
        let out = Command::new(binary("redis-cli")).args(["-p", "63841", "pubsub", "shardchannels"]).output().unwrap();
        let chans = String::from_utf8_lossy(&out.stdout).into_owned();
        keys.iter().filter(|k| chans.lines().any(|l| l.ends_with(&format!(":{k}")))).collect()
    };
    assert!(!on_first.is_empty(), "some of 12 channels live on the first master");
    cluster.nodes[0].restart();
    cluster.wait_ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut missing: std::collections::BTreeSet<String> = keys.iter().cloned().collect();
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "delivery resumes on every key; missing {missing:?} (first master held {on_first:?}); a: {} {:?}, b: {} {:?}",
            a.bus.is_connected(),
            a.bus.stats(),
            b.bus.is_connected(),
            b.bus.stats()
        );
        if a.bus.is_connected() {
            for k in &missing {
                let _ = a.bus.publish(env(k));
            }
        }
        while let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(300), b.rx.recv()).await {
            missing.remove(&got.routing_key);
        }
    }
}
