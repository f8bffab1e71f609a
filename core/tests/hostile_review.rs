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
    let (engine, addrs) = start_with("").await;
    (engine, addrs[0])
}

/// The engine with `extra` config; the STOMP listener first, then the XMPP c2s one if any.
async fn start_with(extra: &str) -> (Engine, Vec<SocketAddr>) {
    let engine =
        Engine::new(Config::from_toml_str(&format!("{CONFIG}\n{extra}")).expect("test config")).expect("engine");
    let listeners = engine.start().await.expect("start");
    let mut addrs = vec![listeners.iter().find(|l| l.name == "stomp-tcp").expect("stomp listener").addr];
    addrs.extend(listeners.iter().filter(|l| l.name == "xmpp-c2s").map(|l| l.addr));
    (engine, addrs)
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
    let a = ask(&mut carol, "SUBSCRIBE\nid:0\ndestination:/exchange/amq.fanout\ndurable:true\nx-queue-name:carol-jobs")
        .await;
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
    alice
        .send("BEGIN\ntransaction:tx\n\n\0SEND\ndestination:/queue/t\ntransaction:tx\nuser-id:bob\n\nfrom bob?\0")
        .await;
    let a = ask(&mut alice, "COMMIT\ntransaction:tx").await;
    assert!(a.starts_with("ERROR\n") && header(&a, "message") == Some("precondition_failed"), "in a transaction: {a}");

    let mut alice = login(addr, "alice").await;
    let a = ask(&mut alice, "SEND\ndestination:/queue/t\nuser-id:alice\n\nfrom alice").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let m = next(&mut guest).await;
    assert!(m.ends_with("\n\nfrom alice"), "the forged ones never arrived: {m:?}");
    assert_eq!(header(&m, "user-id"), Some("alice"));
}

/// A raw XMPP c2s client (STARTTLS off).
struct Xmpp {
    s: tokio::net::TcpStream,
    text: String,
}

impl Xmpp {
    /// Logs in with SASL PLAIN and asks to bind `resource`; returns the client and the bind answer.
    async fn login(addr: SocketAddr, user: &str, resource: &str) -> (Xmpp, String) {
        use base64::Engine as _;
        let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
        let mut c = Xmpp { s: tokio::net::TcpStream::connect(addr).await.unwrap(), text: String::new() };
        c.send(header).await;
        Box::pin(c.until("</stream:features>")).await;
        let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0secret"));
        c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")).await;
        Box::pin(c.until("<success")).await;
        c.send(header).await;
        Box::pin(c.until("</stream:features>")).await;
        c.send(&format!("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")).await;
        let answer = Box::pin(c.until("</iq>")).await;
        (c, answer)
    }

    async fn send(&mut self, s: &str) {
        use tokio::io::AsyncWriteExt;
        self.s.write_all(s.as_bytes()).await.unwrap();
    }

    async fn until(&mut self, marker: &str) -> String {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(i) = self.text.find(marker) {
                let rest = self.text.split_off(i + marker.len());
                return std::mem::replace(&mut self.text, rest);
            }
            let mut buf = vec![0u8; 65536];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), self.s.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {marker:?} within 5 s; have {:?}", self.text))
                .unwrap();
            assert!(n > 0, "closed while waiting for {marker:?}: {:?}", self.text);
            self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Everything that arrives within `limit`.
    async fn within(&mut self, limit: std::time::Duration) -> &str {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        &self.text
    }
}

#[tokio::test]
async fn an_xmpp_user_named_with_a_wildcard_does_not_read_every_feed() {
    // A uid is whatever the auth source says (a JWT `sub`, a name an HTTP
    // backend accepts); '#' as a topic pattern matches every key.
    let xmpp = "[xmpp]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\nhttp_listen = \"off\"\nstarttls = \"off\"\n\
                [[users]]\nname = \"#\"\npassword = \"secret\"\n[[users]]\nname = \"x.*\"\npassword = \"secret\"\n";
    let long = "l".repeat(300);
    let xmpp = format!("{xmpp}[[users]]\nname = \"{long}\"\npassword = \"secret\"\n");
    let (engine, addrs) = start_with(&xmpp).await;
    let (stomp, c2s) = (addrs[0], addrs[1]);
    let queues = || engine.router.vhost("/").unwrap().queue_count();
    let before = queues();
    let (mut hash, bound) = Xmpp::login(c2s, "#", "r").await;
    assert!(bound.contains("type='error'") && bound.contains("not-allowed"), "'#' bound: {bound}");
    let (mut star, bound) = Xmpp::login(c2s, "x.*", "r").await;
    assert!(bound.contains("type='error'") && bound.contains("not-allowed"), "'x.*' bound: {bound}");
    // A uid over routing.max_key_bytes cannot be bound either.
    let (_long, bound) = Xmpp::login(c2s, &long, "r").await;
    assert!(bound.contains("type='error'"), "a 300-byte uid bound: {bound}");
    assert_eq!(queues(), before, "a refused bind leaves no session queue behind");

    let mut alice = login(stomp, "alice").await;
    let a = ask(&mut alice, "SEND\ndestination:/exchange/feed/bob\n\nfor bob only").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    engine.publish("/", "feed", "x.y", vec![], bytes::Bytes::from_static(b"for x.y only")).unwrap();
    let seen = hash.within(std::time::Duration::from_millis(300)).await;
    assert!(!seen.contains("for bob only"), "'#' read bob's feed: {seen}");
    let seen = star.within(std::time::Duration::from_millis(300)).await;
    assert!(!seen.contains("for x.y only"), "'x.*' read x.y's feed: {seen}");
}

#[tokio::test]
async fn xmpp_asks_the_authorizer_for_the_vhost_as_stomp_does() {
    // 'ops' has permissions on vhost 'other' only: a STOMP CONNECT to '/' is
    // refused, and so must an XMPP session be (XMPP lives in the default vhost).
    let extra = "[xmpp]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\nhttp_listen = \"off\"\nstarttls = \"off\"\n\
                 [[vhosts]]\nname = \"/\"\n[[vhosts]]\nname = \"other\"\n\
                 [[users]]\nname = \"ops\"\npassword = \"secret\"\npermissions = { \"other\" = { configure = \".*\", write = \".*\", read = \".*\" } }\n";
    let (_engine, addrs) = start_with(extra).await;
    let (stomp, c2s) = (addrs[0], addrs[1]);
    let (_c, answer) = Box::pin(Raw::login(stomp, "ops", "secret")).await;
    assert!(answer.starts_with("ERROR\n"), "STOMP: {answer}");
    let (_x, bound) = Xmpp::login(c2s, "ops", "r").await;
    assert!(bound.contains("type='error'") && bound.contains("forbidden"), "XMPP bound: {bound}");
    let (_x, bound) = Xmpp::login(c2s, "alice", "r").await;
    assert!(bound.contains("type='result'"), "alice (default permissions on '/'): {bound}");
}

#[tokio::test]
async fn a_member_removed_from_a_project_stops_reading_it() {
    let (engine, addr) = start().await;
    // While a member of p1, alice taps it two ways: a live subscription and
    // a durable one (a queue that outlives her session).
    let mut live = login(addr, "alice").await;
    let a = ask(&mut live, "SUBSCRIBE\nid:0\ndestination:/exchange/project/p1").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let mut tap = login(addr, "alice").await;
    let a = ask(&mut tap, "SUBSCRIBE\nid:s1\ndestination:/exchange/project/p1\ndurable:true").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let a = ask(&mut tap, "SUBSCRIBE\nid:s2\ndestination:/exchange/presence/p1.*\ndurable:true").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    let a = ask(&mut tap, "DISCONNECT").await;
    assert!(a.starts_with("RECEIPT"), "{a}");

    engine.set_project_members("p1", vec!["bob".into()]).await.unwrap();
    engine.publish("/", "project", "p1", vec![], bytes::Bytes::from_static(b"after removal")).unwrap();
    let mut bob = login(addr, "bob").await;
    let a = ask(&mut bob, "SEND\ndestination:/exchange/project/p1\n\nbob after removal").await;
    assert!(a.starts_with("RECEIPT"), "{a}");

    // Neither tap delivers what p1 said after alice left it.
    let mut back = login(addr, "alice").await;
    let a = ask(&mut back, "SUBSCRIBE\nid:0\ndestination:/amq/queue/stomp-subscription-alice-s1").await;
    assert!(a.starts_with("RECEIPT"), "{a}");
    for (who, c) in [("durable", &mut back), ("live", &mut live)] {
        let got = tokio::time::timeout(std::time::Duration::from_millis(300), Box::pin(c.frame())).await;
        assert!(got.is_err(), "alice's {who} subscription still reads p1: {got:?}");
    }
}
