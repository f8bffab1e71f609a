//! Cluster presence against real Redis: the [`shared_conformance`] suite
//! and concurrent logins/logouts from three nodes leaving the online sets
//! exact, on a standalone `redis-server` and on a 3-master Redis Cluster.
//!
//! Fixed ports (this area's range 64200–64299): standalone 64201, cluster
//! 64211–64213 with cluster bus ports 10 above. A missing `redis-server` or
//! `redis-cli` fails the test: `sudo bash tests/services/install.sh`.

#![allow(dead_code)] // the Redis harness is shared with bus.rs; not every helper is used here

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use herald_core::bus::redis::{RedisBus, RedisBusConfig, Target};
use herald_core::presence::cluster::{RedisSharedPresence, SharedLimits};
use herald_core::presence::{shared_conformance, Availability, PresenceStore, SharedPresence, SharedResource};

mod common;
use common::redis::{Cluster, Redis};

async fn node(t: &Target, name: &str, prefix: &str) -> (RedisBus, RedisSharedPresence) {
    let mut cfg = RedisBusConfig::new(t.clone(), name);
    cfg.prefix = prefix.to_owned();
    let (bus, _rx) = RedisBus::connect(cfg).await.expect("connects");
    let shared = RedisSharedPresence::new(bus.redis(), bus.timeout(), prefix, name, SharedLimits::default());
    (bus, shared)
}

async fn conformance_on(t: Target) {
    let (_ba, a) = node(&t, "n1", "conf:").await;
    let (_bb, b) = node(&t, "n2", "conf:").await;
    shared_conformance(&a, &b, &a).await;
}

/// Three nodes log 60 users in and out concurrently (several resources per
/// user per node, in random order); at the end each project's online set
/// is exactly the users with a resource left, and each user hash says so.
async fn concurrent_on(t: Target) {
    let mut nodes = Vec::new();
    for n in ["n1", "n2", "n3"] {
        nodes.push(Arc::new(node(&t, n, "conc:").await));
    }
    let users: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    let projects = |uid: &str| -> Vec<String> {
        let i: usize = uid[1..].parse().unwrap();
        vec![format!("p{}", i % 3), "all".to_owned()]
    };
    let mut tasks = Vec::new();
    for (ni, nd) in nodes.iter().enumerate() {
        for (ui, uid) in users.iter().enumerate() {
            let nd = nd.clone();
            let uid = uid.clone();
            let ps = projects(&uid);
            tasks.push(tokio::spawn(async move {
                let shared = &nd.1;
                // Deterministic but interleaved: session s of this node ends
                // present when (user + node + s) is divisible by 4.
                let mut present = Vec::new();
                for round in 0..6u64 {
                    for s in 1..=3u64 {
                        let on = (ui as u64 + ni as u64 * 7 + s * 3 + round).is_multiple_of(2);
                        let state = SharedResource {
                            node: shared.node().to_owned(),
                            session: s,
                            resource: format!("r{s}"),
                            availability: if s == 2 { Availability::Away } else { Availability::Online },
                            status: String::new(),
                            priority: 0,
                        };
                        shared.update(&uid, s, on.then_some(&state), &ps).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                }
                for s in 1..=3u64 {
                    if (ui as u64 + ni as u64 + s).is_multiple_of(4) {
                        let state = SharedResource {
                            node: shared.node().to_owned(),
                            session: s,
                            resource: format!("r{s}"),
                            availability: Availability::Online,
                            status: String::new(),
                            priority: 0,
                        };
                        shared.update(&uid, s, Some(&state), &ps).await.unwrap();
                        present.push(s);
                    } else {
                        shared.update(&uid, s, None, &ps).await.unwrap();
                    }
                }
                (uid, !present.is_empty())
            }));
        }
    }
    let mut online: HashMap<String, bool> = HashMap::new();
    for t in tasks {
        let (uid, on) = t.await.unwrap();
        *online.entry(uid).or_default() |= on;
    }
    let store = &nodes[0].1;
    for p in ["p0", "p1", "p2", "all"] {
        let want: BTreeSet<String> = online
            .iter()
            .filter(|(u, on)| **on && (p == "all" || projects(u)[0] == p))
            .map(|(u, _)| u.clone())
            .collect();
        let got: BTreeSet<String> = store.online(p).await.unwrap().into_iter().collect();
        assert_eq!(got, want, "online set of {p}");
        assert!(!want.is_empty() || p != "all");
    }
    for (uid, on) in &online {
        let u = store.get_user(uid).await.unwrap();
        assert_eq!(u.map(|u| u.availability), on.then_some(Availability::Online), "aggregate of {uid}");
        let left = store.resources(uid).await.unwrap().len();
        assert_eq!(left > 0, *on, "resources of {uid}");
    }
}

/// Thousands of sessions of one node logging in at the same moment, then
/// out (a restart, a load balancer dropping every connection): with a
/// command timeout of 300 ms every update still succeeds, because the node
/// sends `presence::cluster::UPDATES_IN_FLIGHT` at a time and the rest wait on the node, not
/// in Redis (sent all at once, 16,469 of the 20,000 logins timed out).
async fn burst_on(t: Target) {
    let mut cfg = RedisBusConfig::new(t.clone(), "n1");
    cfg.prefix = "burst:".to_owned();
    cfg.timeout = std::time::Duration::from_millis(300);
    let (bus, _rx) = RedisBus::connect(cfg).await.expect("connects");
    let shared =
        Arc::new(RedisSharedPresence::new(bus.redis(), bus.timeout(), "burst:", "n1", SharedLimits::default()));
    let n = 20_000u64;
    for online in [true, false] {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let r = SharedResource {
                        node: "n1".into(),
                        session: i,
                        resource: "web".into(),
                        availability: Availability::Online,
                        status: String::new(),
                        priority: 0,
                    };
                    let uid = format!("b{i}");
                    shared.update(&uid, i, online.then_some(&r), &["all".to_owned()]).await
                })
            })
            .collect();
        let mut failed = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 0, "{failed} of {n} updates (online: {online}) failed with a 300 ms timeout");
        let online_now: u64 =
            bus.redis().query(redis::cmd("SCARD").arg("burst:online:all"), bus.timeout()).await.expect("SCARD");
        assert_eq!(online_now, if online { n } else { 0 }, "the project's online set after the burst");
    }
}

/// Logins and logouts per second through the update script (printed, for
/// docs/cluster.md; `--nocapture`): 16 users at a time, each a login
/// (set) and a logout (del) with two projects.
async fn rate_on(t: Target) {
    let what = if matches!(t, Target::Cluster(_)) { "Redis Cluster" } else { "standalone" };
    let nd = Arc::new(node(&t, "n1", "rate:").await);
    let n = 4_000u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let nd = nd.clone();
        tasks.push(tokio::spawn(async move {
            let ps = ["p1".to_owned(), "p2".to_owned()];
            for i in (w..n).step_by(16) {
                let uid = format!("user{i}");
                let r = SharedResource {
                    node: "n1".into(),
                    session: i,
                    resource: "phone".into(),
                    availability: Availability::Online,
                    status: String::new(),
                    priority: 0,
                };
                nd.1.update(&uid, i, Some(&r), &ps).await.unwrap();
                nd.1.update(&uid, i, None, &ps).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("presence updates on {what}: {} in {secs:.2}s = {:.0}/s (debug build)", 2 * n, 2.0 * n as f64 / secs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_presence_on_standalone_redis() {
    let redis = Redis::start(64201, &[]);
    conformance_on(Target::Standalone(redis.url())).await;
    concurrent_on(Target::Standalone(redis.url())).await;
    burst_on(Target::Standalone(redis.url())).await;
    rate_on(Target::Standalone(redis.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_presence_on_redis_cluster() {
    let cluster = Cluster::start([64211, 64212, 64213]);
    conformance_on(Target::Cluster(cluster.seeds())).await;
    concurrent_on(Target::Cluster(cluster.seeds())).await;
    rate_on(Target::Cluster(cluster.seeds())).await;
}
