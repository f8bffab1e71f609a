//! Messages across STOMP and XMPP, and engine-side closes, without sockets:
//! STOMP and XMPP sessions over in-process links (`common::link`) meet in one
//! router. A STOMP SEND to a user's feed reaches their XMPP resources; an
//! XMPP message reaches STOMP subscribers of the feed or the project; the
//! engine's kick and stop end XMPP and STOMP sessions with their reasons.

use std::time::Duration;

use herald_core::xmpp::ns;
use herald_core::Engine;

mod common;
use common::header;
use common::link::{stomp, xmpp, QUIET};

const CONFIG: &str = r#"
[xmpp]
domain = "example.test"
[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }
[[users]]
name = "alice"
password = "pw"
[[users]]
name = "bob"
password = "pw"
[[users]]
name = "dave"
password = "pw"
[[projects]]
id = "p1"
members = ["alice", "bob"]
"#;

fn engine() -> Engine {
    common::link::engine(CONFIG)
}

fn body(frame: &str) -> &str {
    frame.split_once("\n\n").map(|(_, b)| b).unwrap_or_default()
}

#[tokio::test]
async fn stomp_send_to_a_feed_reaches_the_users_xmpp_resources() {
    let engine = engine();
    let mut alice = xmpp(&engine, "alice", "a1").await;
    let mut bob = stomp(&engine, "bob").await;
    bob.send("SEND\ndestination:/exchange/feed/alice\nsubject:hello\nreceipt:s\n\nfrom stomp\0").await;
    assert!(bob.frame().await.starts_with("RECEIPT"));
    let m = alice.element().await;
    assert_eq!(m.name, "message", "{m}");
    assert_eq!(m.attr("from"), Some("bob@example.test"), "a STOMP sender is its bare JID");
    assert_eq!(m.attr("to"), Some("alice@example.test/a1"));
    assert_eq!(m.child("subject", ns::CLIENT).map(|s| s.text()).as_deref(), Some("hello"));
    assert_eq!(m.child("body", ns::CLIENT).map(|s| s.text()).as_deref(), Some("from stomp"));
}

#[tokio::test]
async fn stomp_cannot_forge_xmpp_headers() {
    let engine = engine();
    let mut alice = xmpp(&engine, "alice", "a1").await;
    let mut bob = stomp(&engine, "bob").await;
    bob.send("SEND\ndestination:/exchange/feed/alice\nx-xmpp-from:dave@example.test/x\nx-xmpp-to-resource:elsewhere\n\nforged?\0")
        .await;
    let m = alice.element().await;
    assert_eq!(m.attr("from"), Some("bob@example.test"), "the server's headers are the server's: {m}");
}

#[tokio::test]
async fn xmpp_message_reaches_a_stomp_feed_subscriber() {
    let engine = engine();
    let mut bob = stomp(&engine, "bob").await;
    bob.subscribe("0", "/exchange/feed/bob").await;
    let alice = xmpp(&engine, "alice", "a1").await;
    alice.send("<message to='bob@example.test' type='chat' id='c1'><body>to your browser</body></message>");
    let f = bob.frame().await;
    assert!(f.starts_with("MESSAGE\n"), "{f}");
    assert_eq!(header(&f, "x-xmpp-from"), Some("alice@example.test/a1"));
    assert_eq!(header(&f, "x-xmpp-type"), Some("chat"));
    assert_eq!(header(&f, "x-xmpp-id"), Some("c1"));
    assert_eq!(body(&f), "to your browser");
}

#[tokio::test]
async fn xmpp_project_message_reaches_stomp_project_subscribers() {
    let engine = engine();
    let mut bob = stomp(&engine, "bob").await;
    bob.subscribe("0", "/exchange/project/p1").await;
    let mut alice = xmpp(&engine, "alice", "a1").await;
    alice.send("<message to='p1@projects.example.test' type='groupchat'><body>all hands</body></message>");
    let f = bob.frame().await;
    assert_eq!(header(&f, "x-xmpp-from"), Some("p1@projects.example.test/alice"), "{f}");
    assert_eq!(body(&f), "all hands");
    // And a STOMP SEND to the project reaches the XMPP member, from the project.
    let (echo, _) = alice.until("message").await;
    assert_eq!(echo.child("body", ns::CLIENT).map(|b| b.text()).as_deref(), Some("all hands"));
    bob.send("SEND\ndestination:/exchange/project/p1\n\nfrom the board\0").await;
    let m = alice.element().await;
    assert_eq!(m.attr("from"), Some("p1@projects.example.test"), "{m}");
    assert_eq!(m.child("body", ns::CLIENT).map(|b| b.text()).as_deref(), Some("from the board"));
}

#[tokio::test]
async fn kick_closes_the_users_sessions_with_a_reason() {
    let engine = engine();
    let mut alice_x = xmpp(&engine, "alice", "a1").await;
    let mut alice_s = stomp(&engine, "alice").await;
    let mut bob = xmpp(&engine, "bob", "b1").await;
    assert_eq!(engine.kick("alice"), 2);
    assert_eq!(alice_x.closed().await, Some("policy-violation"));
    let f = alice_s.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert_eq!(alice_s.frame().await, "", "closed after the ERROR");
    bob.silent_for(QUIET).await;
    assert!(engine.hub.user_sessions("alice").is_empty());
}

#[tokio::test]
async fn stop_closes_xmpp_sessions_with_system_shutdown() {
    let engine = engine();
    let mut alice = xmpp(&engine, "alice", "a1").await;
    let mut bob = stomp(&engine, "bob").await;
    engine.stop(Duration::from_secs(2)).await;
    assert_eq!(alice.closed().await, Some("system-shutdown"));
    let f = bob.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f}");
}
