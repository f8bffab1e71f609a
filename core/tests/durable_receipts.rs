//! RECEIPTs of persistent SENDs to durable queues wait for the queue store's
//! ticket (docs/durability.md), over in-process links (`common::link`):
//! they come in frame order, transient ones do not overtake them, COMMIT's
//! waits for its SENDs, a full pending window holds reading back without
//! losing anything, and a failed ticket answers an ERROR to that session only.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use herald_core::message::Message;
use herald_core::store::{Durable, MemoryStore, QueueMeta, QueueStore, StoreError, StoredBinding, StoredQueue};
use herald_core::{Config, Engine};

mod common;
use common::header;
use common::link::stomp;

const USERS: &str = r#"
[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }
[[users]]
name = "alice"
password = "pw"
[[users]]
name = "bob"
password = "pw"
"#;

fn on_disk(dir: &std::path::Path, limits: &str) -> Engine {
    let text = format!("[node]\ndata_dir = {:?}\n{USERS}\n[limits]\n{limits}\n", dir.display().to_string());
    Engine::new(Config::from_toml_str(&text).expect("test config")).expect("engine")
}

fn receipt_ids(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            assert!(f.starts_with("RECEIPT\n"), "{f}");
            header(f, "receipt-id").expect("receipt-id").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn receipts_wait_for_the_disk_and_keep_frame_order() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = on_disk(tmp.path(), "");
    let mut alice = stomp(&engine, "alice").await;
    let mut expected = Vec::new();
    let mut pipeline = String::new();
    for i in 0..40 {
        pipeline += &format!("SEND\ndestination:/queue/d\npersistent:true\nreceipt:p{i}\n\nm{i}\0");
        expected.push(format!("p{i}"));
        if i == 20 {
            // Transient: nothing to wait for, but it must not overtake p0..p20.
            pipeline += "SEND\ndestination:/queue/d\nreceipt:t\n\ntransient\0";
            expected.push("t".into());
        }
    }
    // COMMIT's receipt, then its SENDs', once their tickets resolve.
    pipeline += "BEGIN\ntransaction:x\n\n\0";
    pipeline += "SEND\ndestination:/queue/d\npersistent:true\ntransaction:x\nreceipt:in-x\n\nin tx\0";
    pipeline += "COMMIT\ntransaction:x\nreceipt:commit\n\n\0";
    pipeline += "DISCONNECT\nreceipt:bye\n\n\0";
    expected.extend(["commit".into(), "in-x".into(), "bye".into()]);
    alice.send(&pipeline).await;
    let mut frames = Vec::new();
    for _ in 0..expected.len() {
        frames.push(alice.frame().await);
    }
    assert_eq!(receipt_ids(&frames), expected);
    let disk = engine.disk.as_ref().expect("a data directory");
    let (syncs, tickets) = (disk.counters.syncs.load(Ordering::Relaxed), disk.counters.tickets.load(Ordering::Relaxed));
    assert!(tickets >= 41, "every persistent SEND took a ticket: {tickets}");
    assert!((1..=tickets).contains(&syncs), "{syncs} syncs for {tickets} tickets");
    let q = engine.router.vhost("/").unwrap().queue("d").unwrap();
    assert_eq!(q.depth(), 42, "persistent and transient alike are queued");
}

#[tokio::test]
async fn a_full_pending_window_holds_reading_back_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = on_disk(tmp.path(), "max_pending_receipts = 1");
    let mut alice = stomp(&engine, "alice").await;
    let pipeline: String =
        (0..200).map(|i| format!("SEND\ndestination:/queue/w\npersistent:true\nreceipt:{i}\n\n{i}\0")).collect();
    alice.send(&pipeline).await;
    let mut frames = Vec::new();
    for _ in 0..200 {
        frames.push(alice.frame().await);
    }
    assert_eq!(receipt_ids(&frames), (0..200).map(|i| i.to_string()).collect::<Vec<_>>());
}

/// A queue store whose disk is full: every append's ticket fails.
#[derive(Debug, Default)]
struct FullDisk(MemoryStore);

impl QueueStore for FullDisk {
    fn declare(&self, vhost: &str, queue: &str, meta: &QueueMeta) -> Result<(), StoreError> {
        self.0.declare(vhost, queue, meta)
    }
    fn bind(&self, vhost: &str, queue: &str, binding: &StoredBinding) -> Result<(), StoreError> {
        self.0.bind(vhost, queue, binding)
    }
    fn delete(&self, vhost: &str, queue: &str) -> Result<(), StoreError> {
        self.0.delete(vhost, queue)
    }
    fn append(&self, _: &str, _: &str, _: &Message) -> Result<Durable, StoreError> {
        Ok(Durable::ready(Err(StoreError::Unavailable("No space left on device".into()))))
    }
    fn delivered(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError> {
        self.0.delivered(vhost, queue, id)
    }
    fn remove(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError> {
        self.0.remove(vhost, queue, id)
    }
    fn durable(&self) -> Durable {
        Durable::ready(Ok(()))
    }
    fn load(&self) -> Result<Vec<StoredQueue>, StoreError> {
        self.0.load()
    }
}

#[tokio::test]
async fn a_failed_ticket_answers_an_error_to_that_session_only() {
    let config = Config::from_toml_str(USERS).unwrap();
    let engine = Engine::with_store(config, Arc::new(FullDisk::default())).unwrap();
    let mut alice = stomp(&engine, "alice").await;
    let mut bob = stomp(&engine, "bob").await;
    alice.send("SEND\ndestination:/queue/d\nreceipt:t\n\ntransient\0").await;
    assert_eq!(header(&alice.frame().await, "receipt-id"), Some("t"), "transient: no ticket, no wait");
    alice.send("SEND\ndestination:/queue/d\npersistent:true\nreceipt:p\n\nkeep me\0").await;
    let e = alice.frame().await;
    assert!(e.starts_with("ERROR\n"), "{e}");
    assert_eq!(header(&e, "receipt-id"), Some("p"));
    assert_eq!(header(&e, "message"), Some("persistent message not stored"));
    assert!(e.contains("No space left on device"), "{e}");
    assert_eq!(alice.frame().await, "", "the session is closed");
    bob.send("SEND\ndestination:/queue/d\nreceipt:b\n\nstill here\0").await;
    assert_eq!(header(&bob.frame().await, "receipt-id"), Some("b"), "other sessions carry on");
}
