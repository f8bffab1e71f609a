//! XEP-0160 offline messages through the engine's door, without sockets:
//! who is "available" (a resource that sent presence, not one merely bound,
//! not a STOMP session), what is kept, delivery at initial presence with
//! `<delay/>`, the cap, and a full JID reaching a bound resource live.

use herald_core::xmpp::ns;
use herald_core::Engine;

mod common;
use common::link::{stomp, xmpp, XmppClient, QUIET};

const CONFIG: &str = r#"
[xmpp]
domain = "example.test"
[xmpp.offline]
max_messages_per_user = 2
[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }
[[users]]
name = "alice"
password = "pw"
[[users]]
name = "bob"
password = "pw"
[[projects]]
id = "p1"
members = ["alice", "bob"]
"#;

fn engine() -> Engine {
    common::link::engine(CONFIG)
}

/// Initial presence; returns the messages that came with it.
async fn available(c: &mut XmppClient) -> Vec<herald_core::xmpp::xml::Element> {
    c.send("<presence/>");
    let (_own, _) = c.until("presence").await;
    let mut out = Vec::new();
    while let Ok(e) = tokio::time::timeout(QUIET, c.element()).await {
        out.push(e);
    }
    out
}

fn body(e: &herald_core::xmpp::xml::Element) -> String {
    e.child("body", ns::CLIENT).map(|b| b.text()).unwrap_or_default()
}

#[tokio::test]
async fn a_bound_resource_without_presence_gets_kept_messages_at_its_initial_presence() {
    let engine = engine();
    let mut bob = xmpp(&engine, "bob", "b1").await;
    let alice = xmpp(&engine, "alice", "a1").await;
    alice.send("<message to='bob@example.test' type='chat' id='c1'><body>one</body></message>");
    alice.send("<message to='bob@example.test' id='n1'><body>two</body></message>");
    alice.send("<message to='bob@example.test' type='headline' id='h1'><body>news</body></message>");
    // A headline is never kept: it goes as before, to whoever is bound.
    let h = bob.element().await;
    assert_eq!((body(&h).as_str(), h.attr("type")), ("news", Some("headline")), "{h}");
    bob.silent_for(QUIET).await;
    assert_eq!(engine.offline.count("bob").unwrap(), 2);
    let got = available(&mut bob).await;
    let kept: Vec<_> = got.iter().filter(|e| e.name == "message").collect();
    assert_eq!(kept.iter().map(|e| body(e)).collect::<Vec<_>>(), ["one", "two"], "{got:?}");
    for m in &kept {
        let d = m.child("delay", ns::DELAY).expect("delay");
        assert_eq!(d.attr("from"), Some("example.test"));
        assert_eq!(m.attr("to"), Some("bob@example.test"), "as the sender addressed it");
        assert_eq!(m.attr("from"), Some("alice@example.test/a1"));
    }
    assert_eq!(engine.offline.count("bob").unwrap(), 0, "removed once handed over");
    alice.send("<message to='bob@example.test' type='chat' id='c2'><body>live</body></message>");
    let m = bob.element().await;
    assert_eq!(body(&m), "live");
    assert!(m.child("delay", ns::DELAY).is_none());
    assert_eq!(engine.offline.count("bob").unwrap(), 0);
}

#[tokio::test]
async fn over_the_cap_the_sender_gets_resource_constraint() {
    let engine = engine();
    let mut alice = xmpp(&engine, "alice", "a1").await;
    for i in 0..2 {
        alice.send(&format!("<message to='bob@example.test' type='chat' id='k{i}'><body>k</body></message>"));
    }
    alice.send("<message to='bob@example.test' type='chat' id='over'><body>k</body></message>");
    let e = alice.element().await;
    assert_eq!((e.name.as_str(), e.attr("type"), e.attr("id")), ("message", Some("error"), Some("over")), "{e}");
    let err = e.child("error", ns::CLIENT).unwrap();
    assert_eq!(err.attr("type"), Some("wait"));
    assert!(err.child("resource-constraint", ns::STANZAS).is_some(), "{e}");
    alice.silent_for(QUIET).await;
}

#[tokio::test]
async fn a_full_jid_reaches_its_bound_resource_live_and_stomp_counts_as_no_resource() {
    let engine = engine();
    let mut bob = xmpp(&engine, "bob", "b1").await;
    let mut page = stomp(&engine, "bob").await;
    page.subscribe("0", "/exchange/feed/bob").await;
    let alice = xmpp(&engine, "alice", "a1").await;
    alice.send("<message to='bob@example.test/b1' type='chat' id='f1'><body>to b1</body></message>");
    assert_eq!(body(&bob.element().await), "to b1");
    assert!(page.frame().await.ends_with("to b1"));
    assert_eq!(engine.offline.count("bob").unwrap(), 0);
    // A bare JID: bob has a STOMP page and a bound resource, none available.
    alice.send("<message to='bob@example.test' type='chat' id='c1'><body>kept</body></message>");
    assert!(page.frame().await.ends_with("kept"), "STOMP subscribers still see it live");
    bob.silent_for(QUIET).await;
    assert_eq!(engine.offline.count("bob").unwrap(), 1);
}
