//! Security review of issue 19: holes a hostile STOMP client found in the
//! least-privilege rules after the change, each on the wire against a real
//! engine on port 0 (docs/security.md "Access").

use std::net::SocketAddr;

use herald_core::{Config, Engine};

mod common;
use common::{header, Raw};

const CONFIG: &str = r#"
[stomp]
listen = "127.0.0.1:0"
[http]
listen = "off"
[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }
[[users]]
name = "guest"
password = "guest"
[[users]]
name = "alice"
password = "secret"
[[users]]
name = "bob"
password = "secret"
[[users]]
name = "dave"
password = "secret"
[[users]]
name = "jean"
password = "secret"
[[users]]
name = "jean-pierre"
password = "secret"
[[users]]
name = "carol"
password = "secret"
permissions = { "/" = { configure = ".*", write = ".*", read = "^(carol.*|amq\\.fanout|stomp-subscription-.*)$" } }
[[projects]]
id = "p1"
members = ["alice", "bob"]
[[projects]]
id = "p2"
members = ["dave", "jean", "jean-pierre"]
"#;

async fn start() -> (Engine, SocketAddr) {
    let engine = Engine::new(Config::from_toml_str(CONFIG).expect("test config")).expect("engine");
    let listeners = engine.start().await.expect("start");
    let addr = listeners.iter().find(|l| l.name == "stomp-tcp").expect("stomp listener").addr;
    (engine, addr)
}

// The helpers box `Raw`'s reads (a 64 KiB buffer each): a test calling them
// many times would otherwise overflow the test thread's stack in debug builds.

async fn login(addr: SocketAddr, user: &str) -> Raw {
    let pass = if user == "guest" { "guest" } else { "secret" };
    let (c, f) = Box::pin(Raw::login(addr, user, pass)).await;
    assert!(f.starts_with("CONNECTED\n"), "{user}: {f}");
    c
}

/// Sends `frame` (with a receipt) and returns the answer: RECEIPT or ERROR.
async fn ask(c: &mut Raw, frame: &str) -> String {
    let (head, body) = frame.split_once("\n\n").unwrap_or((frame, ""));
    c.send(&format!("{head}\nreceipt:r\n\n{body}\0")).await;
    next(c).await
}

async fn next(c: &mut Raw) -> String {
    Box::pin(c.frame()).await
}

fn refused(answer: &str) -> bool {
    answer.starts_with("ERROR\n") && header(answer, "message") == Some("access_refused")
}

#[tokio::test]
async fn reply_queue_does_not_reach_other_users_queues() {
    let (_engine, addr) = start().await;
    let mut bob = login(addr, "bob").await;
    let a = ask(&mut bob, "SUBSCRIBE\nid:0\ndestination:/queue/bob-inbox").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let a = ask(&mut bob, "SUBSCRIBE\nid:1\ndestination:/exchange/feed/bob\ndurable:true").await;
    assert!(a.starts_with("RECEIPT"), "{a}");

    // dave shares no project with bob: neither his queue nor, past the chat
    // policy, his feed subscription's queue may be written through /reply-queue/.
    let mut dave = login(addr, "dave").await;
    let a = ask(&mut dave, "SEND\ndestination:/queue/bob-inbox\n\nforged").await;
    assert!(refused(&a), "the owner rule on /queue/: {a}");
    for q in ["bob-inbox", "stomp-subscription-bob-1"] {
        let mut dave = login(addr, "dave").await;
        let a = ask(&mut dave, &format!("SEND\ndestination:/reply-queue/{q}\n\nforged")).await;
        assert!(refused(&a), "/reply-queue/{q}: {a}");
    }

    // Nothing forged reached bob: his next message is his own.
    let a = ask(&mut bob, "SEND\ndestination:/queue/bob-inbox\n\nlegit").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let m = next(&mut bob).await;
    assert!(m.starts_with("MESSAGE\n") && m.ends_with("\n\nlegit"), "bob got {m:?}");

    // The temp-queue round trip still works: guest answers alice's request.
    let mut guest = login(addr, "guest").await;
    let a = ask(&mut guest, "SUBSCRIBE\nid:0\ndestination:/queue/svc").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let mut alice = login(addr, "alice").await;
    let a = ask(&mut alice, "SEND\ndestination:/queue/svc\nreply-to:/temp-queue/r\n\nping").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let req = next(&mut guest).await;
    let reply_to = header(&req, "reply-to").unwrap_or_else(|| panic!("no reply-to in {req:?}")).to_owned();
    assert!(reply_to.starts_with("/reply-queue/amq.gen-"), "{reply_to}");
    let a = ask(&mut guest, &format!("SEND\ndestination:{reply_to}\n\npong")).await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let m = next(&mut alice).await;
    assert!(m.starts_with("MESSAGE\n") && m.ends_with("\n\npong"), "alice got {m:?}");
    assert_eq!(header(&m, "destination"), Some("/temp-queue/r"));
}

#[tokio::test]
async fn a_user_does_not_own_a_longer_users_queues() {
    let (engine, addr) = start().await;
    let mut jp = login(addr, "jean-pierre").await;
    let a = ask(&mut jp, "SUBSCRIBE\nid:s1\ndestination:/exchange/feed/jean-pierre\ndurable:true").await;
    assert!(a.starts_with("RECEIPT"), "{a}");

    for dest in ["/amq/queue/stomp-subscription-jean-pierre-s1", "/queue/jean-pierre-inbox"] {
        let mut jean = login(addr, "jean").await;
        let a = ask(&mut jean, &format!("SUBSCRIBE\nid:0\ndestination:{dest}")).await;
        assert!(refused(&a), "jean on {dest}: {a}");
    }
    let mut jean = login(addr, "jean").await;
    let a = ask(&mut jean, "SUBSCRIBE\nid:0\ndestination:/queue/jean-inbox").await;
    assert!(a.starts_with("RECEIPT"), "jean's own queue: {a}");

    // jean-pierre's feed reaches only jean-pierre.
    engine.publish("/", "feed", "jean-pierre", vec![], bytes::Bytes::from_static(b"for jp")).unwrap();
    let m = next(&mut jp).await;
    assert!(m.ends_with("\n\nfor jp"), "{m:?}");
}

#[tokio::test]
async fn x_queue_name_needs_read_on_the_queue() {
    let (_engine, addr) = start().await;
    let mut guest = login(addr, "guest").await;
    let a = ask(&mut guest, "SEND\ndestination:/queue/jobs\n\nsecret job").await;
    assert!(a.starts_with("RECEIPT"), "{a}");

    // carol may not read 'jobs' (read = carol.*): naming it as the queue of a
    // durable subscription must not let her consume it either.
    let mut carol = login(addr, "carol").await;
    let a = ask(&mut carol, "SUBSCRIBE\nid:0\ndestination:/queue/jobs").await;
    assert!(refused(&a), "{a}");
    let mut carol = login(addr, "carol").await;
    let a = ask(&mut carol, "SUBSCRIBE\nid:0\ndestination:/exchange/amq.fanout\ndurable:true\nx-queue-name:jobs").await;
    assert!(refused(&a), "x-queue-name:jobs: {a}");

    // Her own names still work.
    let mut carol = login(addr, "carol").await;
    let a = ask(&mut carol, "SUBSCRIBE\nid:0\ndestination:/exchange/amq.fanout\ndurable:true\nx-queue-name:carol-jobs").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
}

#[tokio::test]
async fn a_user_id_header_names_the_publisher() {
    let (_engine, addr) = start().await;
    let mut guest = login(addr, "guest").await;
    let a = ask(&mut guest, "SUBSCRIBE\nid:0\ndestination:/queue/t").await;
    assert!(a.starts_with("RECEIPT"), "{a}");

    // RabbitMQ refuses a user-id that is not the publisher's; so do we, in a
    // transaction too, so a subscriber can trust it.
    let mut alice = login(addr, "alice").await;
    let a = ask(&mut alice, "SEND\ndestination:/queue/t\nuser-id:bob\n\nfrom bob?").await;
    assert!(a.starts_with("ERROR\n") && header(&a, "message") == Some("precondition_failed"), "{a}");
    let mut alice = login(addr, "alice").await;
    alice.send("BEGIN\ntransaction:tx\n\n\0SEND\ndestination:/queue/t\ntransaction:tx\nuser-id:bob\n\nfrom bob?\0").await;
    let a = ask(&mut alice, "COMMIT\ntransaction:tx").await;
    assert!(a.starts_with("ERROR\n") && header(&a, "message") == Some("precondition_failed"), "in a transaction: {a}");

    let mut alice = login(addr, "alice").await;
    let a = ask(&mut alice, "SEND\ndestination:/queue/t\nuser-id:alice\n\nfrom alice").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let m = next(&mut guest).await;
    assert!(m.ends_with("\n\nfrom alice"), "the forged ones never arrived: {m:?}");
    assert_eq!(header(&m, "user-id"), Some("alice"));
}
