//! STOMP over the wire against a real engine on port 0: the limits and
//! failure paths that client libraries cannot provoke on purpose. (The real
//! client libraries are exercised by the tests in `tests/` at the repo root.)

use std::net::SocketAddr;
use std::time::Duration;

use herald_core::{Config, Engine};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

mod common;
use common::{header, Raw};

const USERS: &str = r#"
[stomp]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }
[[users]]
name = "guest"
password = "guest"
[[users]]
name = "reader"
password = "pw"
permissions = { "/" = { configure = "", write = "", read = "feed" } }
"#;

async fn start(extra: &str) -> (Engine, SocketAddr) {
    start_with(extra, |_| {}).await
}

async fn start_with(extra: &str, adjust: impl FnOnce(&mut Config)) -> (Engine, SocketAddr) {
    let mut config = Config::from_toml_str(&format!("{USERS}\n{extra}")).expect("test config");
    adjust(&mut config);
    let engine = Engine::new(config).expect("engine");
    let listeners = engine.start().await.expect("start");
    let addr = listeners.iter().find(|l| l.name == "stomp-tcp").expect("stomp listener").addr;
    (engine, addr)
}

#[tokio::test]
async fn version_negotiation_and_unsupported_version() {
    let (engine, addr) = start("").await;
    let mut c = Raw::open(addr).await;
    c.send("CONNECT\naccept-version:1.0,1.1\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n\0").await;
    let f = c.frame().await;
    assert_eq!(header(&f, "version"), Some("1.1"));
    let mut c = Raw::open(addr).await;
    c.send("CONNECT\nlogin:guest\npasscode:guest\n\n\0").await;
    assert_eq!(header(&c.frame().await, "version"), Some("1.0"), "no accept-version means 1.0");
    let mut c = Raw::open(addr).await;
    c.send("CONNECT\naccept-version:2.0\nlogin:guest\npasscode:guest\n\n\0").await;
    let f = c.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert_eq!(header(&f, "code"), Some("4007"));
    assert!(c.closed_within(Duration::from_secs(2)).await);
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn oversized_frame_errors_and_other_sessions_keep_working() {
    let (engine, addr) = start("[limits]\nmax_frame_bytes = 1024\n").await;
    let mut sub = Raw::connected(addr, "").await;
    sub.send("SUBSCRIBE\nid:0\ndestination:/queue/keep\nreceipt:r\n\n\0").await;
    assert!(sub.frame().await.starts_with("RECEIPT"));
    let mut bad = Raw::connected(addr, "").await;
    bad.send(&format!("SEND\ndestination:/queue/keep\n\n{}\0", "x".repeat(2000))).await;
    let f = bad.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert!(header(&f, "message").unwrap().contains("frame larger than"), "{f}");
    assert_eq!(header(&f, "code"), Some("4001"));
    assert!(bad.closed_within(Duration::from_secs(2)).await);
    let mut good = Raw::connected(addr, "").await;
    good.send("SEND\ndestination:/queue/keep\n\nstill here\0").await;
    let m = sub.frame().await;
    assert!(m.starts_with("MESSAGE\n") && m.ends_with("still here"), "{m}");
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connect_timeout_closes_silent_connections() {
    let (engine, addr) = start("[limits]\nconnect_timeout_ms = 200\n").await;
    let mut c = Raw::open(addr).await;
    let f = c.frame().await;
    assert!(f.starts_with("ERROR\n") && header(&f, "code") == Some("3005"), "{f}");
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn heart_beats_are_sent_and_silence_is_punished() {
    let (engine, addr) = start_with("", |c| c.stomp.min_heartbeat_ms = 100).await;
    let mut c = Raw::open(addr).await;
    // We promise a beat every 100 ms and want one every 100 ms.
    c.send("CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\nheart-beat:100,100\n\n\0").await;
    let f = c.frame().await;
    assert_eq!(header(&f, "heart-beat"), Some("100,100"));
    let mut buf = [0u8; 16];
    let n = timeout(Duration::from_secs(2), c.s.read(&mut buf)).await.unwrap().unwrap();
    assert!(n > 0 && buf[..n].iter().all(|b| *b == b'\n'), "server heart-beat");
    // Then we go silent: closed after about 2 × 100 ms.
    assert!(c.closed_within(Duration::from_secs(3)).await, "silent client disconnected");
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn slow_consumer_is_closed_without_hurting_others() {
    let (engine, addr) = start("[limits]\noutbound_queue = 8\n").await;
    // The slow client never reads: its socket buffers fill, then its outbox.
    let mut slow = Raw::connected(addr, "").await;
    slow.send("SUBSCRIBE\nid:0\ndestination:/topic/flood\n\n\0").await;
    let mut fast = Raw::connected(addr, "").await;
    fast.send("SUBSCRIBE\nid:0\ndestination:/topic/flood\nreceipt:r\n\n\0").await;
    assert!(fast.frame().await.starts_with("RECEIPT"));
    let mut publisher = Raw::connected(addr, "").await;
    // Lockstep: each message is published once the fast consumer has the
    // previous one, so only the client that stopped reading falls behind
    // (its socket buffers fill first, then its 8-frame outbox).
    let body = "y".repeat(64 * 1024);
    let total = 400;
    for i in 0..total {
        publisher.send(&format!("SEND\ndestination:/topic/flood\nseq:{i}\n\n{body}\0")).await;
        let f = fast.frame().await;
        assert!(f.starts_with("MESSAGE\n"), "fast consumer got {f:.80}");
        assert_eq!(header(&f, "seq"), Some(i.to_string().as_str()));
    }
    // The slow session leaves the hub (its queue with it) while the fast
    // one and the publisher stay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while engine.hub.session_count() > 2 {
        assert!(tokio::time::Instant::now() < deadline, "slow session still registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its client reads what had been written, then EOF; if the server got to
    // say why, it said "slow consumer".
    let mut frames = 0;
    loop {
        let f = slow.frame().await;
        if f.is_empty() {
            break;
        }
        frames += 1;
        if f.starts_with("ERROR\n") {
            assert_eq!(header(&f, "message"), Some("slow consumer"), "{f:.200}");
            assert_eq!(header(&f, "code"), Some("3003"));
        } else {
            assert!(f.starts_with("MESSAGE\n"), "{f:.80}");
        }
    }
    assert!(frames < total, "the slow client did not get the whole flood");
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn permissions_and_subscription_limit() {
    let (engine, addr) = start("[limits]\nmax_subscriptions = 2\n").await;
    let mut r = Raw::open(addr).await;
    r.send("CONNECT\naccept-version:1.2\nlogin:reader\npasscode:pw\n\n\0").await;
    assert!(r.frame().await.starts_with("CONNECTED"));
    r.send("SUBSCRIBE\nid:0\ndestination:/exchange/feed/reader\nreceipt:ok\n\n\0").await;
    assert!(r.frame().await.starts_with("RECEIPT"), "read on feed is granted");
    r.send("SEND\ndestination:/exchange/feed/reader\nreceipt:no\n\nx\0").await;
    let f = r.frame().await;
    assert_eq!(header(&f, "message"), Some("access_refused"), "{f}");
    assert_eq!(header(&f, "receipt-id"), Some("no"));

    let mut c = Raw::connected(addr, "").await;
    for i in 0..2 {
        c.send(&format!("SUBSCRIBE\nid:{i}\ndestination:/topic/t{i}\n\n\0")).await;
    }
    c.send("SUBSCRIBE\nid:9\ndestination:/topic/t9\n\n\0").await;
    let f = c.frame().await;
    assert_eq!(header(&f, "code"), Some("4006"), "{f}");
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn kick_and_shutdown_close_sessions_with_a_reason() {
    let (engine, addr) = start("").await;
    let mut c = Raw::connected(addr, "").await;
    let mut d = Raw::connected(addr, "").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(engine.stats().sessions, 2);
    assert_eq!(engine.kick("guest"), 2);
    for x in [&mut c, &mut d] {
        let f = x.frame().await;
        assert_eq!(header(&f, "code"), Some("3002"), "{f}");
    }
    let mut e = Raw::connected(addr, "").await;
    let stopper = engine.clone();
    let stop = tokio::spawn(async move { stopper.stop(Duration::from_secs(2)).await });
    let f = e.frame().await;
    assert_eq!(header(&f, "code"), Some("3001"), "{f}");
    stop.await.unwrap();
    assert_eq!(engine.hub.session_count(), 0);
}

#[tokio::test]
async fn unsubscribe_requeues_unacked_to_the_next_consumer() {
    let (engine, addr) = start("").await;
    let mut a = Raw::connected(addr, "").await;
    a.send("SUBSCRIBE\nid:a\ndestination:/queue/work\nack:client\nreceipt:r\n\n\0").await;
    assert!(a.frame().await.starts_with("RECEIPT"));
    let mut p = Raw::connected(addr, "").await;
    p.send("SEND\ndestination:/queue/work\n\njob-1\0").await;
    let m = a.frame().await;
    assert!(m.ends_with("job-1"), "{m}");
    a.send("DISCONNECT\nreceipt:bye\n\n\0").await;
    assert!(a.frame().await.starts_with("RECEIPT"));
    let mut b = Raw::connected(addr, "").await;
    b.send("SUBSCRIBE\nid:b\ndestination:/queue/work\n\n\0").await;
    let m = b.frame().await;
    assert!(m.ends_with("job-1"), "{m}");
    assert_eq!(header(&m, "redelivered"), Some("true"));
    engine.stop(Duration::from_secs(1)).await;
}
