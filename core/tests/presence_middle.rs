//! Presence across STOMP and XMPP, without sockets: STOMP sessions
//! (`stomp::serve` over an in-memory stream) and XMPP sessions
//! (`xmpp::session::serve` over an in-process link) on one engine that was
//! never started. A STOMP subscriber to `/exchange/presence/<pid>.*` sees an
//! XMPP user's availability; an XMPP contact sees a STOMP user's, as the
//! application sets it (`Engine::set_user_presence`).

use herald_core::presence::Availability;
use herald_core::xmpp::ns;
use herald_core::Engine;

mod common;
use common::header;
use common::link::{stomp, xmpp, XmppClient, QUIET};

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
[[projects]]
id = "p2"
members = ["dave"]
"#;

fn engine() -> Engine {
    common::link::engine(CONFIG)
}

/// The JSON body of a presence event, checked against its routing key.
fn event(frame: &str) -> serde_json::Value {
    assert!(frame.starts_with("MESSAGE\n"), "{frame}");
    let body = frame.split_once("\n\n").expect("headers end").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("presence event JSON ({e}): {body}"))
}

/// Sends XMPP presence and waits until the session handled it.
async fn presence(c: &mut XmppClient, stanza: &str) {
    c.send(stanza);
    c.send("<iq type='get' id='mark'><ping xmlns='urn:xmpp:ping'/></iq>");
    let (pong, _) = c.until("iq").await;
    assert_eq!(pong.attr("id"), Some("mark"));
}

#[tokio::test]
async fn stomp_subscriber_sees_an_xmpp_users_availability() {
    let engine = engine();
    let mut bob = stomp(&engine, "bob").await;
    bob.subscribe("0", "/exchange/presence/p1.*").await;
    let mut alice = xmpp(&engine, "alice", "a1").await;
    // Bound but not yet available: nothing is announced.
    bob.silent_for(QUIET).await;
    presence(&mut alice, "<presence/>").await;
    let f = bob.frame().await;
    assert_eq!(header(&f, "destination"), Some("/exchange/presence/p1.alice"), "{f}");
    let e = event(&f);
    assert_eq!(e["uid"], "alice");
    assert_eq!(e["project"], "p1");
    assert_eq!(e["state"], "online");
    presence(&mut alice, "<presence><show>dnd</show><status>focus</status></presence>").await;
    let e = event(&bob.frame().await);
    assert_eq!((e["state"].as_str(), e["status"].as_str()), (Some("dnd"), Some("focus")));
    assert_eq!(engine.user_presence("alice").await.unwrap().map(|p| p.availability), Some(Availability::Dnd));
    // The session ending takes the user offline.
    alice.close();
    alice.closed().await;
    let e = event(&bob.frame().await);
    assert_eq!(e["state"], "offline");
    assert_eq!(engine.online_users("p1").await.unwrap(), ["bob"], "alice left the online set");
}

#[tokio::test]
async fn only_the_aggregate_reaches_stomp() {
    // A second resource changing nothing about the user's best availability
    // is an XMPP matter: STOMP subscribers hear of the user, not resources.
    let engine = engine();
    let mut bob = stomp(&engine, "bob").await;
    bob.subscribe("0", "/exchange/presence/p1.alice").await;
    let mut a1 = xmpp(&engine, "alice", "a1").await;
    let mut a2 = xmpp(&engine, "alice", "a2").await;
    presence(&mut a1, "<presence/>").await;
    assert_eq!(event(&bob.frame().await)["state"], "online");
    presence(&mut a2, "<presence><show>away</show></presence>").await;
    bob.silent_for(QUIET).await;
    a1.close();
    a1.closed().await;
    assert_eq!(event(&bob.frame().await)["state"], "away", "the remaining resource is the user's presence");
}

#[tokio::test]
async fn xmpp_contact_sees_a_stomp_users_presence() {
    let engine = engine();
    let mut alice = xmpp(&engine, "alice", "a1").await;
    let mut dave = xmpp(&engine, "dave", "d1").await;
    presence(&mut alice, "<presence/>").await;
    presence(&mut dave, "<presence/>").await;
    // A STOMP CONNECT is an online resource of its user.
    let mut bob = stomp(&engine, "bob").await;
    let p = alice.element().await;
    assert_eq!(p.name, "presence", "{p}");
    let from = p.attr("from").expect("from").to_owned();
    assert!(from.starts_with("bob@example.test/"), "{from}");
    assert_eq!(p.attr("type"), None, "available");
    // The application sets it.
    assert_eq!(engine.set_user_presence("bob", Availability::Away, "in a meeting").await, 1);
    let p = alice.element().await;
    assert_eq!(p.attr("from"), Some(from.as_str()), "the same resource");
    assert_eq!(p.child("show", ns::CLIENT).map(|s| s.text()).as_deref(), Some("away"));
    assert_eq!(p.child("status", ns::CLIENT).map(|s| s.text()).as_deref(), Some("in a meeting"));
    // Disconnecting is unavailable.
    bob.send("DISCONNECT\nreceipt:bye\n\n\0").await;
    assert!(bob.frame().await.starts_with("RECEIPT"));
    let p = alice.element().await;
    assert_eq!(p.attr("type"), Some("unavailable"), "{p}");
    dave.silent_for(QUIET).await;
}

#[tokio::test]
async fn set_user_presence_leaves_xmpp_resources_alone() {
    let engine = engine();
    let mut alice = xmpp(&engine, "alice", "a1").await;
    let mut bob = xmpp(&engine, "bob", "b1").await;
    presence(&mut alice, "<presence/>").await;
    presence(&mut bob, "<presence/>").await;
    alice.until("presence").await;
    // Bob has no STOMP session: XMPP resources set their own presence.
    assert_eq!(engine.set_user_presence("bob", Availability::Dnd, "").await, 0);
    alice.silent_for(QUIET).await;
}

#[tokio::test]
async fn a_non_member_cannot_subscribe_to_project_presence() {
    let engine = engine();
    let mut dave = stomp(&engine, "dave").await;
    dave.send("SUBSCRIBE\nid:0\ndestination:/exchange/presence/p1.*\nreceipt:r\n\n\0").await;
    let f = dave.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f}");
}
