//! XEP-0198 over in-process links (`common::link`): acknowledgements both
//! ways, the stream error for an `h` beyond what was sent, and a detached
//! session whose resumption time passes leaving its unacknowledged chat
//! messages in `engine.offline`, oldest first.

use std::time::Duration;

use herald_core::xmpp::sm;
use herald_core::xmpp::xml::Element;
use herald_core::Engine;

mod common;
use common::link::{xmpp as connect, XmppClient};

const CONFIG: &str = r#"
[xmpp]
domain = "example.test"
resume_timeout_secs = 1
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

fn chat(c: &XmppClient, to: &str, body: &str) {
    c.send(&format!("<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"));
}

#[tokio::test]
async fn acks_go_both_ways_and_an_h_beyond_what_was_sent_ends_the_stream() {
    let engine = engine();
    let mut bob = connect(&engine, "bob", "phone").await;
    bob.send(&format!("<enable xmlns='{}'/>", sm::NS));
    let enabled = bob.element().await;
    assert!(enabled.is("enabled", sm::NS), "{enabled}");
    assert_eq!(enabled.attr("id"), None, "no resumption asked, no id");
    // One stanza from the client, one answer: the server counts the first
    // and asks for an ack of the second after writing it.
    bob.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
    let (pong, _) = bob.until("iq").await;
    assert_eq!(pong.attr("id"), Some("p1"));
    let r = bob.element().await;
    assert!(r.is("r", sm::NS), "the server asks for an ack: {r}");
    bob.send(&format!("<r xmlns='{}'/>", sm::NS));
    let a = bob.element().await;
    assert!(a.is("a", sm::NS) && a.attr("h") == Some("1"), "one stanza handled: {a}");
    bob.send(&format!("<a xmlns='{}' h='1'/>", sm::NS));
    bob.silent_for(Duration::from_millis(200)).await;
    // Two more acknowledged than were sent.
    bob.send(&format!("<a xmlns='{}' h='3'/>", sm::NS));
    let err = bob.element().await;
    assert_eq!(err.name, "error", "{err}");
    let too_high = err.child("handled-count-too-high", sm::NS).expect("XEP-0198 §4 condition");
    assert_eq!((too_high.attr("h"), too_high.attr("send-count")), (Some("3"), Some("1")));
    assert!(err.elements().any(|c| c.name == "undefined-condition"), "{err}");
    assert_eq!(bob.closed().await, None);
    assert!(engine.hub.user_sessions("bob").is_empty());
}

#[tokio::test]
async fn enable_before_bind_fails_and_a_second_enable_fails() {
    let engine = engine();
    let (rx, tx, mut c) = common::link::xmpp_pair();
    tokio::spawn(herald_core::xmpp::session::serve(
        engine.clone(),
        rx,
        tx,
        common::link::peer(herald_core::transport::Transport::Local),
    ));
    c.authenticate(common::link::DOMAIN, "bob", "pw").await;
    c.send(&format!("<enable xmlns='{}'/>", sm::NS));
    let f = c.element().await;
    assert!(f.is("failed", sm::NS) && f.child("unexpected-request", "urn:ietf:params:xml:ns:xmpp-stanzas").is_some());
    let mut bob = connect(&engine, "bob", "desk").await;
    bob.send(&format!("<enable xmlns='{}' resume='true' max='9999'/>", sm::NS));
    let e = bob.element().await;
    assert_eq!(e.attr("max"), Some("1"), "a client's max cannot exceed resume_timeout_secs: {e}");
    assert!(e.attr("id").is_some_and(|id| id.len() >= 32), "a random id: {e}");
    bob.send(&format!("<enable xmlns='{}'/>", sm::NS));
    assert!(bob.element().await.is("failed", sm::NS));
}

#[tokio::test]
async fn past_the_resumption_time_unacked_chat_goes_to_offline_storage_in_order() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "laptop").await;
    let mut bob = connect(&engine, "bob", "phone").await;
    bob.send(&format!("<enable xmlns='{}' resume='true'/>", sm::NS));
    let enabled = bob.element().await;
    assert_eq!(enabled.attr("resume"), Some("true"), "{enabled}");
    bob.send("<presence/>");
    alice.send("<presence/>");
    // Written to bob and never acknowledged.
    chat(&alice, "bob@example.test", "m1");
    let (m, _) = bob.until("message").await;
    assert_eq!(m.attr("id"), Some("m1"));
    // A headline is not for offline storage.
    alice.send("<message to='bob@example.test' type='headline'><body>news</body></message>");
    bob.until("message").await;

    bob.vanish();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(engine.hub.user_sessions("bob").len(), 1, "detached, not gone");
    // Queued while bob is away.
    chat(&alice, "bob@example.test", "m2");
    chat(&alice, "bob@example.test", "m3");
    // The second passes: the session ends as a normal disconnect.
    let p = loop {
        let (p, _) = alice.until("presence").await;
        if p.attr("type") == Some("unavailable") {
            break p;
        }
    };
    assert_eq!((p.attr("from"), p.attr("type")), (Some("bob@example.test/phone"), Some("unavailable")));
    for _ in 0..50 {
        if engine.hub.user_sessions("bob").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(engine.hub.user_sessions("bob").is_empty());
    let kept = engine.offline.list("bob").expect("offline storage readable");
    let bodies: Vec<String> = kept
        .iter()
        .map(|m| {
            let s = String::from_utf8_lossy(&m.stanza).into_owned();
            let start = s.find("<body>").expect("a body") + 6;
            s[start..s.find("</body>").expect("a body")].to_owned()
        })
        .collect();
    assert_eq!(bodies, ["m1", "m2", "m3"], "unacked then queued, oldest first, no headline");
    assert!(kept.iter().all(|m| m.from == "alice@example.test/laptop"), "{kept:?}");
}

/// The features after SASL on a link of `transport`.
async fn features_after_sasl(engine: &Engine, transport: herald_core::transport::Transport) -> Element {
    use base64::Engine as _;
    let (rx, tx, mut c) = common::link::xmpp_pair();
    tokio::spawn(herald_core::xmpp::session::serve(engine.clone(), rx, tx, common::link::peer(transport)));
    for round in 0..2 {
        c.open(common::link::DOMAIN);
        assert!(matches!(c.next().await, common::link::XmppOut::Open { .. }));
        let f = c.element().await;
        if round == 1 {
            return f;
        }
        let creds = base64::engine::general_purpose::STANDARD.encode("\0bob\0pw");
        c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"));
        assert_eq!(c.element().await.name, "success");
    }
    unreachable!()
}

#[tokio::test]
async fn sm_is_offered_after_sasl_except_on_bosh() {
    use herald_core::transport::Transport;
    let engine = engine();
    let f = features_after_sasl(&engine, Transport::Ws).await;
    assert!(f.child("sm", sm::NS).is_some(), "WebSocket: {f}");
    let f = features_after_sasl(&engine, Transport::Bosh).await;
    assert!(f.child("sm", sm::NS).is_none(), "BOSH acknowledges by its requests: {f}");
    let off = common::link::engine(&CONFIG.replace("resume_timeout_secs = 1", "stream_management = false"));
    let f = features_after_sasl(&off, Transport::Tcp).await;
    assert!(f.child("sm", sm::NS).is_none(), "stream_management = false: {f}");
}

/// Detached sessions hold no connection, so without a per-user cap a user
/// could keep connecting, enabling resumption and dropping the link, each
/// session living `resume_timeout_secs`: the cap bounds them.
#[tokio::test]
async fn a_user_gets_resumption_on_at_most_sm_max_resumable_per_user_streams() {
    let engine = engine();
    let max = engine.config.xmpp.sm_max_resumable_per_user;
    assert!(max > 0 && max < 50, "a small default: {max}");
    let mut kept = Vec::new();
    for i in 0..=max {
        let mut bob = connect(&engine, "bob", &format!("r{i}")).await;
        bob.send(&format!("<enable xmlns='{}' resume='true'/>", sm::NS));
        let e = bob.element().await;
        assert!(e.is("enabled", sm::NS), "{e}");
        if i < max {
            assert_eq!(e.attr("resume"), Some("true"), "stream {i}: {e}");
            bob.vanish();
        } else {
            assert_eq!((e.attr("resume"), e.attr("id")), (None, None), "over the cap: managed, not resumable: {e}");
        }
        kept.push(bob);
    }
    // Another user is not affected by bob's sessions.
    let mut alice = connect(&engine, "alice", "laptop").await;
    alice.send(&format!("<enable xmlns='{}' resume='true'/>", sm::NS));
    assert_eq!(alice.element().await.attr("resume"), Some("true"));
}
