//! XMPP sessions end to end without sockets: each client is an in-process
//! link pair (`common::link`) handed to `xmpp::session::serve`, against an
//! engine that was never started. SASL and bind, messages to bare and full
//! JIDs, presence among contacts, the roster and its pushes, and project
//! JIDs (`<pid>@projects.<domain>`) that fan out to the project's members.

use herald_core::xmpp::{ns, session};
use herald_core::Engine;

mod common;
use common::link::{peer, xmpp_pair, XmppClient, XmppOut, DOMAIN, QUIET};

const PROJECTS: &str = "projects.example.test";

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
name = "carol"
password = "pw"
[[users]]
name = "dave"
password = "pw"
[[projects]]
id = "p1"
name = "Apollo"
members = ["alice", "bob", "carol"]
[[projects]]
id = "p2"
name = "Gemini"
members = ["dave"]
"#;

fn engine() -> Engine {
    common::link::engine(CONFIG)
}

use common::link::xmpp as connect;

/// Sends initial presence and reads until the presence of the session's own
/// JID's contacts stops arriving; returns the `from`s seen. The session's own
/// presence comes back to it (RFC 6121 §4.2.2) and is not in the list.
async fn available(c: &mut XmppClient, show: Option<&str>) -> Vec<String> {
    match show {
        None => c.send("<presence/>"),
        Some(s) => c.send(&format!("<presence><show>{s}</show></presence>")),
    }
    // A ping marks the end of whatever the presence made the session send.
    c.send("<iq type='get' id='mark'><ping xmlns='urn:xmpp:ping'/></iq>");
    let (pong, before) = c.until("iq").await;
    assert_eq!(pong.attr("id"), Some("mark"));
    let presences: Vec<_> = before.iter().filter(|e| e.name == "presence").collect();
    let own = presences.iter().filter(|e| e.attr("from").is_some() && e.attr("from") == e.attr("to")).count();
    assert_eq!(own, 1, "the sender gets its own presence back: {before:?}");
    presences
        .iter()
        .filter(|e| e.attr("from") != e.attr("to"))
        .filter_map(|e| e.attr("from").map(str::to_owned))
        .collect()
}

fn body(e: &herald_core::xmpp::xml::Element) -> String {
    e.child("body", ns::CLIENT).map(|b| b.text()).unwrap_or_default()
}

#[tokio::test]
async fn sasl_plain_then_bind_registers_the_session() {
    let engine = engine();
    let mut c = connect(&engine, "alice", "laptop").await;
    assert_eq!(c.restarts(), 1, "the link is told to restart once, after SASL success");
    let sessions = engine.hub.user_sessions("alice");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].resource.get().map(String::as_str), Some("laptop"));
    c.close();
    assert_eq!(c.closed().await, None, "a client close is answered without a stream error");
    // Cleanup runs before the stream close is written.
    assert!(engine.hub.user_sessions("alice").is_empty());
}

#[tokio::test]
async fn wrong_password_fails_and_three_failures_close_the_stream() {
    let engine = engine();
    let (rx, tx, mut c) = xmpp_pair();
    tokio::spawn(session::serve(engine.clone(), rx, tx, peer(herald_core::transport::Transport::Local)));
    c.open(DOMAIN);
    assert!(matches!(c.next().await, XmppOut::Open { ref from, .. } if from == DOMAIN));
    assert!(c.element().await.is("features", ns::STREAM));
    use base64::Engine as _;
    let wrong = base64::engine::general_purpose::STANDARD.encode("\0alice\0nope");
    for _ in 0..3 {
        c.send(&format!("<auth xmlns='{}' mechanism='PLAIN'>{wrong}</auth>", ns::SASL));
        let f = c.element().await;
        assert!(f.is("failure", ns::SASL) && f.child("not-authorized", ns::SASL).is_some(), "{f}");
    }
    assert_eq!(c.closed().await, Some("policy-violation"));
    assert_eq!(c.restarts(), 0);
    assert!(engine.hub.user_sessions("alice").is_empty());
}

#[tokio::test]
async fn stanzas_before_bind_are_refused() {
    let engine = engine();
    let (rx, tx, mut c) = xmpp_pair();
    tokio::spawn(session::serve(engine.clone(), rx, tx, peer(herald_core::transport::Transport::Local)));
    c.authenticate(DOMAIN, "alice", "pw").await;
    c.send("<message to='bob@example.test'><body>early</body></message>");
    assert_eq!(c.closed().await, Some("not-authorized"));
}

#[tokio::test]
async fn wrong_domain_is_host_unknown() {
    let engine = engine();
    let (rx, tx, mut c) = xmpp_pair();
    tokio::spawn(session::serve(engine.clone(), rx, tx, peer(herald_core::transport::Transport::Local)));
    c.open("elsewhere.test");
    assert_eq!(c.closed().await, Some("host-unknown"));
}

#[tokio::test]
async fn message_to_a_bare_jid_reaches_every_resource() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    let mut b1 = connect(&engine, "bob", "b1").await;
    let mut b2 = connect(&engine, "bob", "b2").await;
    // Available resources (RFC 6121 §8.5.2.1.1): without presence, the
    // message would wait in offline storage for the first initial presence.
    for b in [&mut b1, &mut b2] {
        b.send("<presence/>");
        b.until("presence").await;
    }
    alice.send("<message to='bob@example.test' type='chat' id='m1'><body>hi bob</body></message>");
    for b in [&mut b1, &mut b2] {
        let (m, _) = b.until("message").await;
        assert_eq!(m.name, "message", "{m}");
        assert_eq!(m.attr("from"), Some("alice@example.test/a1"), "the server stamps the sender's full JID");
        assert_eq!(m.attr("type"), Some("chat"));
        assert_eq!(m.attr("id"), Some("m1"));
        assert_eq!(body(&m), "hi bob");
    }
    alice.silent_for(QUIET).await;
}

#[tokio::test]
async fn message_to_a_full_jid_reaches_that_resource_only() {
    let engine = engine();
    let alice = connect(&engine, "alice", "a1").await;
    let mut b1 = connect(&engine, "bob", "b1").await;
    let mut b2 = connect(&engine, "bob", "b2").await;
    alice.send("<message to='bob@example.test/b2' type='chat'><body>just b2</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>");
    let m = b2.element().await;
    assert_eq!(m.attr("to"), Some("bob@example.test/b2"));
    assert_eq!(body(&m), "just b2");
    assert!(m.child("active", "http://jabber.org/protocol/chatstates").is_some(), "extensions travel along: {m}");
    b1.silent_for(QUIET).await;
}

#[tokio::test]
async fn message_to_a_stranger_is_forbidden() {
    // `access.chat_policy = contacts` (the default): dave shares no project with alice.
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    let mut dave = connect(&engine, "dave", "d1").await;
    alice.send("<message to='dave@example.test' id='x'><body>hello?</body></message>");
    let e = alice.element().await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert_eq!(e.attr("id"), Some("x"));
    assert!(e.child("error", ns::CLIENT).and_then(|e| e.child("forbidden", ns::STANZAS)).is_some(), "{e}");
    dave.silent_for(QUIET).await;
}

#[tokio::test]
async fn presence_goes_to_contacts_and_not_to_strangers() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    let mut bob = connect(&engine, "bob", "b1").await;
    let mut dave = connect(&engine, "dave", "d1").await;
    assert!(available(&mut alice, None).await.is_empty(), "no contact is available yet");
    assert!(available(&mut dave, None).await.is_empty());
    // Bob's initial presence: he learns alice's, alice learns his.
    assert_eq!(available(&mut bob, Some("chat")).await, vec!["alice@example.test/a1".to_owned()]);
    let p = alice.element().await;
    assert_eq!(p.name, "presence", "{p}");
    assert_eq!(p.attr("from"), Some("bob@example.test/b1"));
    assert_eq!(p.attr("to"), Some("alice@example.test/a1"));
    assert_eq!(p.child("show", ns::CLIENT).map(|s| s.text()).as_deref(), Some("chat"));
    // A change goes out; the same presence again does not.
    bob.send("<presence><show>away</show><status>lunch</status></presence>");
    let p = alice.element().await;
    assert_eq!(p.child("show", ns::CLIENT).map(|s| s.text()).as_deref(), Some("away"));
    assert_eq!(p.child("status", ns::CLIENT).map(|s| s.text()).as_deref(), Some("lunch"));
    bob.send("<presence><show>away</show><status>lunch</status></presence>");
    alice.silent_for(QUIET).await;
    // Bob vanishing (no close) is announced as unavailable.
    bob.vanish();
    let p = alice.element().await;
    assert_eq!(p.attr("from"), Some("bob@example.test/b1"));
    assert_eq!(p.attr("type"), Some("unavailable"), "{p}");
    dave.silent_for(QUIET).await;
}

#[tokio::test]
async fn presence_reaches_only_sessions_that_sent_initial_presence() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    let mut bob = connect(&engine, "bob", "b1").await;
    available(&mut bob, None).await;
    alice.silent_for(QUIET).await;
    // A probe for a contact (once the roster is known) is answered, for
    // anyone else it is not.
    alice.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
    alice.element().await;
    alice.send("<presence type='probe' to='dave@example.test'/>");
    alice.send("<presence type='probe' to='bob@example.test'/>");
    alice.send("<iq type='get' id='mark'><ping xmlns='urn:xmpp:ping'/></iq>");
    let (_, before) = alice.until("iq").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].attr("from"), Some("bob@example.test/b1"));
}

#[tokio::test]
async fn own_resources_see_each_other() {
    let engine = engine();
    let mut a1 = connect(&engine, "alice", "a1").await;
    let mut a2 = connect(&engine, "alice", "a2").await;
    available(&mut a1, None).await;
    assert_eq!(available(&mut a2, None).await, vec!["alice@example.test/a1".to_owned()]);
    let p = a1.element().await;
    assert_eq!(p.attr("from"), Some("alice@example.test/a2"));
}

#[tokio::test]
async fn roster_lists_contacts_and_is_pushed_when_membership_changes() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    alice.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    let r = alice.element().await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let items: Vec<_> = r.child("query", ns::ROSTER).expect("query").elements().cloned().collect();
    let jids: Vec<_> = items.iter().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(jids, ["bob@example.test", "carol@example.test"]);
    assert!(items.iter().all(|i| i.attr("subscription") == Some("both")));
    let groups: Vec<String> = items[0].elements().map(|g| g.text()).collect();
    assert_eq!(groups, ["Apollo"], "groups are project names");
    // Alice joins p2: dave is pushed with the group.
    engine.set_project_members("p2", vec!["dave".into(), "alice".into()]).await.unwrap();
    let push = alice.element().await;
    assert_eq!(push.attr("type"), Some("set"), "{push}");
    assert_eq!(push.attr("to"), Some("alice@example.test/a1"));
    let item = push.child("query", ns::ROSTER).and_then(|q| q.elements().next()).expect("item").clone();
    assert_eq!(item.attr("jid"), Some("dave@example.test"));
    assert_eq!(item.elements().map(|g| g.text()).collect::<Vec<_>>(), ["Gemini"]);
    // Alice leaves p1: both contacts are pushed as removed.
    engine.set_project_members("p1", vec!["bob".into(), "carol".into()]).await.unwrap();
    let mut removed = Vec::new();
    for _ in 0..2 {
        let push = alice.element().await;
        let item = push.child("query", ns::ROSTER).and_then(|q| q.elements().next()).expect("item").clone();
        assert_eq!(item.attr("subscription"), Some("remove"), "{push}");
        removed.push(item.attr("jid").unwrap().to_owned());
    }
    removed.sort();
    assert_eq!(removed, ["bob@example.test", "carol@example.test"]);
    alice.silent_for(QUIET).await;
}

#[tokio::test]
async fn no_roster_push_without_a_roster_request() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    engine.set_project_members("p2", vec!["dave".into(), "alice".into()]).await.unwrap();
    alice.silent_for(QUIET).await;
}

#[tokio::test]
async fn project_jid_fans_out_to_members() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    let mut bob = connect(&engine, "bob", "b1").await;
    let mut carol = connect(&engine, "carol", "c1").await;
    let mut dave = connect(&engine, "dave", "d1").await;
    alice.send(&format!("<message to='p1@{PROJECTS}' type='groupchat' id='g1'><body>standup</body></message>"));
    for c in [&mut alice, &mut bob, &mut carol] {
        let m = c.element().await;
        assert_eq!(m.attr("from"), Some("p1@projects.example.test/alice"), "{m}");
        assert_eq!(m.attr("type"), Some("groupchat"));
        assert_eq!(body(&m), "standup");
    }
    dave.silent_for(QUIET).await;
    // A non-member may not write to the project.
    dave.send(&format!("<message to='p1@{PROJECTS}' id='g2'><body>let me in</body></message>"));
    let e = dave.element().await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert!(e.child("error", ns::CLIENT).and_then(|e| e.child("forbidden", ns::STANZAS)).is_some(), "{e}");
    bob.silent_for(QUIET).await;
}

#[tokio::test]
async fn a_new_member_receives_project_messages_after_the_roster_push() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    let mut dave = connect(&engine, "dave", "d1").await;
    dave.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
    dave.element().await;
    engine.set_project_members("p1", vec!["alice".into(), "bob".into(), "carol".into(), "dave".into()]).await.unwrap();
    // The push is sent after the session's queue was bound to the project.
    let (push, _) = dave.until("iq").await;
    assert_eq!(push.attr("type"), Some("set"));
    alice.send(&format!("<message to='p1@{PROJECTS}'><body>welcome</body></message>"));
    let (m, _) = dave.until("message").await;
    assert_eq!(body(&m), "welcome");
    assert_eq!(body(&alice.until("message").await.0), "welcome", "the sender is a member too");
    // And a removed member stops receiving them.
    engine.set_project_members("p1", vec!["alice".into(), "bob".into(), "carol".into()]).await.unwrap();
    for _ in 0..3 {
        let (push, _) = dave.until("iq").await;
        let item = push.child("query", ns::ROSTER).and_then(|q| q.elements().next()).expect("item").clone();
        assert_eq!(item.attr("subscription"), Some("remove"), "{push}");
    }
    alice.send(&format!("<message to='p1@{PROJECTS}'><body>bye</body></message>"));
    let (m, _) = alice.until("message").await;
    assert_eq!(body(&m), "bye");
    dave.silent_for(QUIET).await;
}

#[tokio::test]
async fn same_resource_replaces_the_old_session() {
    let engine = engine();
    let mut old = connect(&engine, "alice", "phone").await;
    let _new = connect(&engine, "alice", "phone").await;
    assert_eq!(old.closed().await, Some("conflict"));
    assert_eq!(engine.hub.user_sessions("alice").len(), 1);
}

#[tokio::test]
async fn engine_publish_to_a_user_reaches_their_xmpp_sessions() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    let n = engine.send_to_user("alice", vec![("subject".into(), "news".into())], "from the app".into()).unwrap();
    assert_eq!(n, 1);
    let m = alice.element().await;
    assert_eq!(m.attr("type"), Some("headline"), "{m}");
    assert_eq!(m.attr("from"), Some(DOMAIN), "no sender: from the server");
    assert_eq!(m.child("subject", ns::CLIENT).map(|s| s.text()).as_deref(), Some("news"));
    assert_eq!(body(&m), "from the app");
}

/// The client side of SCRAM-SHA-256 (RFC 5802/7677), enough to log in;
/// returns whether the server accepted and proved it knows the password.
async fn scram_sha256(c: &mut XmppClient, user: &str, password: &str) -> bool {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};
    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }
    let first_bare = format!("n={user},r=clientnonce0123456789");
    c.send(&format!(
        "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{}</auth>",
        ns::SASL,
        B64.encode(format!("n,,{first_bare}"))
    ));
    let challenge = c.element().await;
    assert!(challenge.is("challenge", ns::SASL), "{challenge}");
    let server_first = String::from_utf8(B64.decode(challenge.text().trim()).unwrap()).unwrap();
    let field =
        |k: &str| server_first.split(',').find_map(|f| f.strip_prefix(k)).expect("server-first field").to_owned();
    let (nonce, salt, iterations) =
        (field("r="), B64.decode(field("s=")).unwrap(), field("i=").parse::<u32>().unwrap());
    assert!(nonce.starts_with("clientnonce0123456789"), "the server extends the client's nonce");
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key).to_vec();
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
    let final_msg = format!("{without_proof},p={}", B64.encode(proof));
    c.send(&format!("<response xmlns='{}'>{}</response>", ns::SASL, B64.encode(final_msg)));
    let r = c.element().await;
    if !r.is("success", ns::SASL) {
        assert!(r.is("failure", ns::SASL), "{r}");
        return false;
    }
    let server_final = String::from_utf8(B64.decode(r.text().trim()).unwrap()).unwrap();
    let expected = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
    assert_eq!(server_final, format!("v={}", B64.encode(expected)), "the server's signature");
    true
}

#[tokio::test]
async fn scram_sha_256_authenticates_and_the_server_proves_itself() {
    let engine = engine();
    let (rx, tx, mut c) = xmpp_pair();
    tokio::spawn(session::serve(engine.clone(), rx, tx, peer(herald_core::transport::Transport::Local)));
    c.open(DOMAIN);
    assert!(matches!(c.next().await, XmppOut::Open { .. }));
    let f = c.element().await;
    let mechs: Vec<String> =
        f.child("mechanisms", ns::SASL).expect("mechanisms").elements().map(|m| m.text()).collect();
    assert_eq!(mechs, ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"], "config users with plain passwords offer SCRAM");
    assert!(!scram_sha256(&mut c, "alice", "wrong").await, "a wrong proof fails");
    assert!(scram_sha256(&mut c, "alice", "pw").await);
    assert_eq!(c.restarts(), 1);
}

#[tokio::test]
async fn unavailable_comes_from_the_jid_that_was_available_even_for_an_odd_uid() {
    // A uid with a `/` (an auth source may hand one out) makes a JID whose
    // resource is not the one asked for: going away must be announced from
    // the same JID as coming online, or contacts keep the resource online.
    let engine = common::link::engine(
        r#"
[xmpp]
domain = "example.test"
[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }
[[users]]
name = "alice"
password = "pw"
[[users]]
name = "org/erin"
password = "pw"
[[projects]]
id = "p1"
members = ["alice", "org/erin"]
"#,
    );
    let mut alice = connect(&engine, "alice", "a1").await;
    assert!(available(&mut alice, None).await.is_empty());
    let (rx, tx, mut erin) = xmpp_pair();
    tokio::spawn(session::serve(engine.clone(), rx, tx, peer(herald_core::transport::Transport::Local)));
    erin.login(DOMAIN, "org/erin", "pw", "e1").await;
    available(&mut erin, None).await;
    let online = alice.element().await;
    assert_eq!(online.name, "presence", "{online}");
    assert_eq!(online.attr("type"), None, "{online}");
    erin.vanish();
    let gone = alice.element().await;
    assert_eq!(gone.attr("type"), Some("unavailable"), "{gone}");
    assert_eq!(gone.attr("from"), online.attr("from"), "unavailable from another JID than available");
}

/// The condition of a stanza error reply, and its type.
fn stanza_condition(e: &herald_core::xmpp::xml::Element) -> (Option<String>, Option<String>) {
    let err = e.child("error", ns::CLIENT);
    let kind = err.and_then(|x| x.attr("type")).map(str::to_owned);
    let cond = err.and_then(|x| x.elements().find(|c| c.ns == ns::STANZAS).map(|c| c.name.clone()));
    (cond, kind)
}

#[tokio::test]
async fn iq_answers_follow_ejabberd_where_the_rfc_leaves_the_choice() {
    // The cases tests/xdiff found: ejabberd 23.01's answers Herald now gives.
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    let ask = |c: &XmppClient, xml: &str| c.send(xml);
    // No `to`: answered for the account, from its bare JID (RFC 6120 §10.3.3).
    ask(&alice, "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    let r = alice.element().await;
    assert_eq!((r.attr("type"), r.attr("from")), (Some("result"), Some("alice@example.test")), "{r}");
    // A ping to another local account's bare JID is answered by the server.
    ask(&alice, "<iq type='get' id='pb' to='bob@example.test'><ping xmlns='urn:xmpp:ping'/></iq>");
    let r = alice.element().await;
    assert_eq!((r.attr("type"), r.attr("from")), (Some("result"), Some("bob@example.test")), "{r}");
    // Another user's roster is forbidden; another domain is not reachable.
    ask(&alice, "<iq type='get' id='rb' to='bob@example.test'><query xmlns='jabber:iq:roster'/></iq>");
    let r = alice.element().await;
    assert_eq!(stanza_condition(&r), (Some("forbidden".into()), Some("auth".into())), "{r}");
    ask(&alice, "<iq type='get' id='x' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>");
    let r = alice.element().await;
    assert_eq!(stanza_condition(&r), (Some("remote-server-not-found".into()), Some("cancel".into())), "{r}");
    // A roster set is read-only, but one with two items is malformed first.
    ask(
        &alice,
        "<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='dave@example.test'/><item jid='carol@example.test'/></query></iq>",
    );
    let r = alice.element().await;
    assert_eq!(stanza_condition(&r), (Some("bad-request".into()), Some("modify".into())), "{r}");
    ask(&alice, "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='dave@example.test'/></query></iq>");
    let r = alice.element().await;
    assert_eq!(stanza_condition(&r), (Some("not-allowed".into()), Some("cancel".into())), "{r}");
    // The session IQ is answered by the server.
    ask(&alice, "<iq type='set' id='se'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    assert_eq!(alice.element().await.attr("from"), Some("example.test"));
}

#[tokio::test]
async fn a_probe_before_the_roster_is_answered_and_own_presence_comes_back() {
    let engine = engine();
    let mut alice = connect(&engine, "alice", "a1").await;
    let mut bob = connect(&engine, "bob", "b1").await;
    bob.send("<presence><show>dnd</show></presence>");
    let own = bob.element().await;
    assert_eq!((own.attr("from"), own.attr("to")), (Some("bob@example.test/b1"), Some("bob@example.test/b1")), "{own}");
    assert_eq!(own.child("show", ns::CLIENT).map(|s| s.text()).as_deref(), Some("dnd"));
    // No roster request, no initial presence: the probe still finds bob.
    alice.send("<presence type='probe' to='bob@example.test'/>");
    let p = alice.element().await;
    assert_eq!(p.attr("from"), Some("bob@example.test/b1"), "{p}");
}

#[tokio::test]
async fn sasl_abort_and_a_missing_mechanism_are_failures_not_stream_errors() {
    let engine = engine();
    let (rx, tx, mut c) = xmpp_pair();
    tokio::spawn(session::serve(engine.clone(), rx, tx, peer(herald_core::transport::Transport::Local)));
    c.open(DOMAIN);
    c.next().await;
    assert!(c.element().await.is("features", ns::STREAM));
    c.send(&format!("<abort xmlns='{}'/>", ns::SASL));
    let f = c.element().await;
    assert!(f.is("failure", ns::SASL) && f.child("aborted", ns::SASL).is_some(), "{f}");
    c.send(&format!("<auth xmlns='{}'>AGFsaWNlAHB3</auth>", ns::SASL));
    let f = c.element().await;
    assert!(f.is("failure", ns::SASL) && f.child("malformed-request", ns::SASL).is_some(), "{f}");
    use base64::Engine as _;
    let ok = base64::engine::general_purpose::STANDARD.encode("\0alice\0pw");
    c.send(&format!("<auth xmlns='{}' mechanism='PLAIN'>{ok}</auth>", ns::SASL));
    assert!(c.element().await.is("success", ns::SASL));
}
