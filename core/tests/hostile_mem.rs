//! Issue 19, finding 5: memory is bounded in bytes (docs/security.md,
//! "Memory"). A real engine on port 0, raw STOMP on the wire; the bigger
//! floods and the RSS checks against the binary are in
//! tests/py/test_hostile_mem.py.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use herald_core::engine::EngineEvent;
use herald_core::router::RouteError;
use herald_core::{Config, Engine};

mod common;
use common::{header, Raw};

const USERS: &str = r#"
[stomp]
listen = "127.0.0.1:0"
[http]
listen = "off"
[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }
[[users]]
name = "guest"
password = "guest"
"#;

async fn start(limits: &str) -> (Engine, SocketAddr) {
    let config = Config::from_toml_str(&format!("{USERS}\n[limits]\n{limits}\n")).expect("test config");
    let engine = Engine::new(config).expect("engine");
    let listeners = engine.start().await.expect("start");
    let addr = listeners.iter().find(|l| l.name == "stomp-tcp").expect("stomp listener").addr;
    (engine, addr)
}

#[tokio::test]
async fn slow_consumer_is_cut_off_by_bytes_queued() {
    // Frames alone would allow 10,000 messages (640 MB of these); bytes stop it at 1 MiB.
    let (engine, addr) = start("outbound_bytes = 1048576\noutbound_queue = 10000").await;
    let mut events = engine.events();
    let mut slow = Raw::connected(addr, "").await;
    slow.send("SUBSCRIBE\nid:0\ndestination:/topic/flood\nreceipt:r\n\n\0").await;
    assert!(slow.frame().await.starts_with("RECEIPT"));
    let mut publisher = Raw::connected(addr, "").await;
    let body = "z".repeat(64 * 1024);
    let mut cut = None;
    for i in 0..400 {
        publisher.send(&format!("SEND\ndestination:/topic/flood\nseq:{i}\n\n{body}\0")).await;
        while let Ok(e) = events.try_recv() {
            if let EngineEvent::Session { event: "close", reason: Some(r), .. } = e {
                cut = Some((i, r));
            }
        }
        if cut.is_some() {
            break;
        }
    }
    publisher.send("SEND\ndestination:/topic/other\nreceipt:done\n\n\0").await;
    assert!(publisher.frame().await.starts_with("RECEIPT"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cut.is_none() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(EngineEvent::Session { event: "close", reason: Some(r), .. })) => cut = Some((400, r)),
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let (at, reason) = cut.expect("the slow consumer was cut off");
    assert!(reason.starts_with("slow consumer (3003)"), "{reason}");
    assert!(reason.contains("1048576 bytes") && reason.contains("limits.outbound_bytes"), "{reason}");
    // Its budget, the socket buffers and one batch in flight: far below 400 messages.
    assert!(at < 300, "cut off only after {at} messages of 64 KiB");
    assert!(slow.closed_within(Duration::from_secs(5)).await, "the slow connection was closed");
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn memory_alarm_refuses_publishes_until_held_bytes_fall() {
    // The monitor's own checks are slowed down; the test checks by hand.
    let (engine, addr) = start("memory_high_watermark = 100000\nmemory_check_interval_ms = 600000").await;
    let fill = Bytes::from(vec![b'f'; 60_000]);
    assert_eq!(engine.publish_to("/queue/fill", vec![], fill.clone()).unwrap(), 1);
    assert!(!engine.check_memory().alarm, "60 kB held: below the watermark");
    engine.publish_to("/queue/fill", vec![], fill).unwrap();
    let m = engine.check_memory();
    assert!(m.alarm && m.queue_bytes >= 120_000 && m.high_watermark == Some(100_000), "{m:?}");

    // In-process publish: an error.
    let e = engine.publish("/", "amq.topic", "k", vec![], Bytes::from_static(b"x")).unwrap_err();
    assert!(matches!(e, RouteError::MemoryAlarm { .. }), "{e}");
    assert!(e.to_string().starts_with("memory alarm: node above its high watermark, publishing refused"), "{e}");
    // STOMP SEND: an ERROR frame saying why.
    let mut c = Raw::connected(addr, "").await;
    c.send("SEND\ndestination:/topic/k\nreceipt:r\n\nx\0").await;
    let f = c.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f}");
    // STOMP 1.2 escapes the colon in a header value.
    assert_eq!(header(&f, "message"), Some("memory alarm\\c node above its high watermark, publishing refused"));
    assert_eq!(header(&f, "receipt-id"), Some("r"));

    // The queue is consumed: the held bytes fall and publishing resumes.
    let mut d = Raw::connected(addr, "").await;
    d.send("SUBSCRIBE\nid:0\ndestination:/queue/fill\n\n\0").await;
    for _ in 0..2 {
        assert!(d.frame().await.starts_with("MESSAGE\n"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while engine.check_memory().alarm {
        assert!(tokio::time::Instant::now() < deadline, "alarm still on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.publish("/", "amq.topic", "k", vec![], Bytes::from_static(b"x")).expect("publishing resumed");
    let mut p = Raw::connected(addr, "").await;
    p.send("SEND\ndestination:/topic/k\nreceipt:r2\n\nx\0").await;
    assert!(p.frame().await.starts_with("RECEIPT\n"));
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn transaction_bytes_queue_limits_and_queue_caps() {
    let (engine, addr) = start("max_transaction_bytes = 100000\nmax_queues_per_user = 3").await;
    // Transaction: 3 x 40 kB buffered > 100 kB.
    let mut c = Raw::connected(addr, "").await;
    let body = "t".repeat(40_000);
    c.send("BEGIN\ntransaction:t\n\n\0").await;
    for _ in 0..3 {
        c.send(&format!("SEND\ndestination:/topic/x\ntransaction:t\n\n{body}\0")).await;
    }
    let f = c.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f:.200}");
    assert_eq!(header(&f, "message"), Some("transaction too large"));
    assert_eq!(header(&f, "code"), Some("4006"));
    assert!(f.contains("100000 bytes"), "{f}");

    // Queues per user: three durable queues, the fourth refused.
    let mut c = Raw::connected(addr, "").await;
    for i in 0..3 {
        c.send(&format!("SUBSCRIBE\nid:{i}\ndestination:/queue/mine-{i}\n\n\0")).await;
    }
    c.send("SUBSCRIBE\nid:3\ndestination:/queue/mine-3\n\n\0").await;
    let f = c.frame().await;
    assert_eq!(header(&f, "message"), Some("queue limit reached"), "{f}");
    assert!(f.contains("limits.max_queues_per_user"), "{f}");

    // Deleting one makes room again.
    assert!(engine.router.vhost("/").unwrap().delete_queue("mine-0").is_some());
    let mut c = Raw::connected(addr, "").await;
    // x-max-length on the declaring SEND, drop-head: the newest stay.
    for i in 0..5 {
        c.send(&format!("SEND\ndestination:/queue/capped\nx-max-length:2\nseq:{i}\nreceipt:{i}\n\n\0")).await;
        assert!(c.frame().await.starts_with("RECEIPT"));
    }
    assert_eq!(engine.router.vhost("/").unwrap().queue("capped").unwrap().depth(), 2);
    c.send("SUBSCRIBE\nid:0\ndestination:/queue/capped\n\n\0").await;
    for want in ["3", "4"] {
        let f = c.frame().await;
        assert_eq!(header(&f, "seq"), Some(want), "{f}");
    }
    engine.stop(Duration::from_secs(1)).await;
}
