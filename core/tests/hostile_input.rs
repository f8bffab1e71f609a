//! Hostile protocol input on the wire (issue 19, finding 6): forbidden bytes
//! in STOMP headers, wrong XMPP stream namespaces, BOSH rids past 2^53 and
//! inbound rate limits (`[shaper]`). Raw bytes against a real engine on
//! port 0; each test fails on the code before its fix (docs/security.md).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_core::{Config, Engine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMsg;

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
[[users]]
name = "alice"
password = "secret"
[[users]]
name = "bob"
password = "secret"
[[projects]]
id = "p1"
members = ["alice", "bob"]
"#;

async fn start(extra: &str) -> (Engine, Vec<(&'static str, SocketAddr)>) {
    let config = Config::from_toml_str(&format!("{USERS}\n{extra}")).expect("test config");
    let engine = Engine::new(config).expect("engine");
    let listeners = engine.start().await.expect("start");
    let addrs = listeners.iter().map(|l| (l.name, l.addr)).collect();
    (engine, addrs)
}

fn addr_of(addrs: &[(&'static str, SocketAddr)], name: &str) -> SocketAddr {
    addrs.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no {name} listener")).1
}

fn xmpp(starttls: &str) -> String {
    format!("[xmpp]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nstarttls = \"{starttls}\"\n")
}

// ---- STOMP: forbidden bytes in headers -------------------------------------

#[tokio::test]
async fn nul_in_a_send_header_never_reaches_a_subscriber_as_a_forged_frame() {
    let (engine, addrs) = start("").await;
    let addr = addr_of(&addrs, "stomp-tcp");
    let mut sub = Raw::connected(addr, "").await;
    sub.send("SUBSCRIBE\nid:0\ndestination:/queue/t\nreceipt:r\n\n\0").await;
    assert!(sub.frame().await.starts_with("RECEIPT"));

    // What stomp.py (and this raw reader) would split into two MESSAGE
    // frames, the second one entirely the publisher's. The receipt makes the
    // code before the fix answer too (RECEIPT), so the order below holds.
    let mut evil = Raw::connected(addr, "").await;
    evil.send(
        "SEND\ndestination:/queue/t\nreceipt:e\nx:evil\0MESSAGE\ndestination:/queue/t\nforged:yes\n\nforged body\0",
    )
    .await;
    let answer = evil.frame().await;

    let mut good = Raw::connected(addr, "").await;
    good.send("SEND\ndestination:/queue/t\n\nlegit\0").await;
    let m = sub.frame().await;
    assert!(m.starts_with("MESSAGE\n") && m.ends_with("\n\nlegit"), "the subscriber saw {m:?}");
    assert_eq!(header(&m, "forged"), None);

    assert!(answer.starts_with("ERROR\n"), "{answer}");
    // STOMP 1.2 escapes the message's colon as `\c`.
    assert_eq!(
        header(&answer, "message"),
        Some(r#"NUL byte in header "x"\c STOMP headers cannot carry NUL"#),
        "{answer}"
    );
    assert_eq!(header(&answer, "code"), Some("4000"), "{answer}");
    assert!(evil.closed_within(Duration::from_secs(2)).await);
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn escaped_newline_from_a_1_2_publisher_does_not_forge_headers_for_a_1_0_subscriber() {
    let (engine, addrs) = start("").await;
    let addr = addr_of(&addrs, "stomp-tcp");
    // No accept-version: STOMP 1.0, which has no escaping.
    let mut sub = Raw::open(addr).await;
    sub.send("CONNECT\nlogin:guest\npasscode:guest\n\n\0").await;
    let c = sub.frame().await;
    assert_eq!(header(&c, "version"), Some("1.0"), "{c}");
    sub.send("SUBSCRIBE\ndestination:/queue/t10\nreceipt:r\n\n\0").await;
    assert!(sub.frame().await.starts_with("RECEIPT"));

    let mut publisher = Raw::connected(addr, "").await;
    publisher.send("SEND\ndestination:/queue/t10\nx:a\\nmessage-id:forged\\n\\nforged body\nkeep:1\n\nhi\0").await;
    let m = sub.frame().await;
    assert!(m.starts_with("MESSAGE\n") && m.ends_with("\n\nhi"), "{m:?}");
    assert_eq!(header(&m, "keep"), Some("1"), "{m:?}");
    assert_eq!(header(&m, "x"), None, "a header 1.0 cannot carry is left out: {m:?}");
    assert!(!m.contains("forged"), "{m:?}");
    engine.stop(Duration::from_secs(1)).await;
}

// ---- XMPP: stream namespaces ------------------------------------------------

/// Sends `opening` on a fresh c2s connection and reads until the server closes.
async fn c2s_answer(addr: SocketAddr, opening: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(opening.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server must close the stream; got {:?}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

const WRONG_HEADERS: [&str; 3] = [
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='wrong' to='localhost' version='1.0'>",
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
    "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
];

#[tokio::test]
async fn wrong_stream_namespace_on_tcp_is_invalid_namespace() {
    // Both the session's stream (STARTTLS off) and the pre-TLS stream.
    for starttls in ["off", "required"] {
        let (engine, addrs) = start(&xmpp(starttls)).await;
        let addr = addr_of(&addrs, "xmpp-c2s");
        for opening in WRONG_HEADERS {
            let answer = c2s_answer(addr, opening).await;
            assert!(
                answer.contains("<invalid-namespace xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
                "{starttls}: {opening}\n{answer}"
            );
            assert!(answer.ends_with("</stream:stream>"), "{answer}");
            assert!(!answer.contains("<stream:features"), "{answer}");
        }
        // An undeclared `stream` prefix is a bad prefix, not a bad namespace.
        let answer =
            c2s_answer(addr, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' to='localhost' version='1.0'>")
                .await;
        assert!(answer.contains("<bad-namespace-prefix "), "{starttls}: {answer}");
        engine.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn before_starttls_auth_is_encryption_required_and_a_close_is_no_error() {
    // ejabberd 23.01's answers (tests/xdiff tls-*): SASL before TLS is a SASL
    // failure, not a stream error, a few times; the client's own close is not
    // a violation.
    let (engine, addrs) = start(&xmpp("required")).await;
    let addr = addr_of(&addrs, "xmpp-c2s");
    let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
    let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>";
    let answer = c2s_answer(addr, &format!("{header}{}", auth.repeat(4))).await;
    assert_eq!(answer.matches("<encryption-required/>").count(), 3, "{answer}");
    assert!(answer.contains("<policy-violation "), "the 4th attempt closes the stream: {answer}");
    assert!(!answer.contains("<success"), "{answer}");
    let answer = c2s_answer(addr, &format!("{header}</stream:stream>")).await;
    assert!(answer.ends_with("</stream:stream>") && !answer.contains("<stream:error"), "{answer}");
    engine.stop(Duration::from_secs(1)).await;
}

async fn ws_answer(addr: SocketAddr, open: &str) -> Vec<String> {
    let mut req = format!("ws://{addr}/xmpp-websocket").into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "xmpp".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(WsMsg::text(open)).await.unwrap();
    let mut got = Vec::new();
    loop {
        match timeout(Duration::from_secs(5), ws.next()).await.expect("the server must close the stream") {
            Some(Ok(WsMsg::Text(t))) => got.push(t.to_string()),
            Some(Ok(WsMsg::Close(_))) | None | Some(Err(_)) => return got,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn wrong_framing_namespace_on_websocket_is_invalid_namespace() {
    let (engine, addrs) = start(&xmpp("off")).await;
    let addr = addr_of(&addrs, "xmpp-http");
    for open in [
        "<open xmlns='wrong' to='localhost' version='1.0'/>",
        "<open xmlns='jabber:client' to='localhost' version='1.0'/>",
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'/>",
    ] {
        let got = ws_answer(addr, open).await;
        let error = got.iter().find(|m| m.contains("<stream:error")).unwrap_or_else(|| panic!("{open}: {got:?}"));
        assert!(error.contains("<invalid-namespace xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{open}: {got:?}");
        assert!(got.last().is_some_and(|m| m.starts_with("<close ")), "{got:?}");
        assert!(!got.iter().any(|m| m.contains("<stream:features")), "{got:?}");
    }
    // The right namespace still opens a stream.
    let mut req = format!("ws://{addr}/xmpp-websocket").into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "xmpp".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(WsMsg::text("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"))
        .await
        .unwrap();
    let first = timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(first.to_text().unwrap().starts_with("<open "), "{first:?}");
    engine.stop(Duration::from_secs(1)).await;
}

// ---- BOSH: rid bounds ------------------------------------------------------

/// One HTTP/1.1 POST; returns the status and the body.
async fn post(addr: SocketAddr, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("answer").unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn bosh_rid_beyond_2_pow_53_is_refused() {
    let (engine, addrs) = start(&xmpp("off")).await;
    let addr = addr_of(&addrs, "xmpp-http");
    let creation = |rid: u64| {
        format!("<body rid='{rid}' xmlns='http://jabber.org/protocol/httpbind' to='localhost' xml:lang='en' wait='1' hold='1' ver='1.6' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>")
    };
    for rid in [1u64 << 53, 1 << 62, u64::MAX] {
        let (status, body) = post(addr, &creation(rid)).await;
        assert_eq!(status, 400, "rid {rid}: {body}");
        assert!(body.contains("type='terminate'") && body.contains("condition='bad-request'"), "rid {rid}: {body}");
    }
    // The largest rid XEP-0124 allows still opens a session.
    let (status, body) = post(addr, &creation((1 << 53) - 1)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sid='"), "{body}");
    engine.stop(Duration::from_secs(1)).await;
}

// ---- Inbound rate limits ([shaper]) and presence floods ----------------------

/// A raw c2s client (STARTTLS off): SASL PLAIN, bind, then raw stanzas.
struct Xmpp {
    s: TcpStream,
    /// Everything read and not yet consumed.
    text: String,
}

impl Xmpp {
    async fn login(addr: SocketAddr, user: &str, resource: &str) -> Xmpp {
        use base64::Engine as _;
        let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
        let mut c = Xmpp { s: TcpStream::connect(addr).await.unwrap(), text: String::new() };
        c.send(header).await;
        c.until("</stream:features>").await;
        let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0secret"));
        c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")).await;
        c.until("<success").await;
        c.send(header).await;
        c.until("</stream:features>").await;
        c.send(&format!("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")).await;
        c.until("</iq>").await;
        c.text.clear();
        c
    }

    async fn send(&mut self, s: &str) {
        self.s.write_all(s.as_bytes()).await.unwrap();
    }

    /// Reads until `marker` has been seen; everything up to it is consumed.
    async fn until(&mut self, marker: &str) -> String {
        loop {
            if let Some(i) = self.text.find(marker) {
                let rest = self.text.split_off(i + marker.len());
                return std::mem::replace(&mut self.text, rest);
            }
            let mut buf = [0u8; 65536];
            let n = timeout(Duration::from_secs(5), self.s.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {marker:?} within 5 s; have {:?}", self.text))
                .unwrap();
            assert!(n > 0, "closed while waiting for {marker:?}: {:?}", self.text);
            self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Reads whatever comes until `deadline`; returns all unconsumed text.
    async fn read_until(&mut self, deadline: tokio::time::Instant) -> &str {
        let mut buf = [0u8; 65536];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        &self.text
    }
}

fn presences_from(text: &str, from: &str) -> usize {
    text.matches(&format!("<presence xmlns='jabber:client' from='{from}'")).count()
}

#[tokio::test]
async fn a_presence_burst_is_shaped_to_the_stanza_rate_and_nothing_is_dropped() {
    const RATE: f64 = 20.0;
    const BURST: usize = 5;
    const N: usize = 40;
    let (engine, addrs) =
        start(&format!("{}[shaper]\nframes_per_sec = {RATE}\nframes_burst = {BURST}\n", xmpp("off"))).await;
    let addr = addr_of(&addrs, "xmpp-c2s");
    let mut bob = Xmpp::login(addr, "bob", "b").await;
    bob.send("<presence/>").await;
    let mut alice = Xmpp::login(addr, "alice", "a").await;
    alice.send("<presence/>").await;
    bob.until("<presence xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost/b'/>").await;
    bob.text.clear();

    // N presences, each a change (so none is deduplicated), in one write.
    let burst: String = (0..N).map(|i| format!("<presence><status>s{i}</status></presence>")).collect();
    let sent = tokio::time::Instant::now();
    alice.send(&burst).await;
    let window = Duration::from_millis(500);
    let seen = presences_from(bob.read_until(sent + window).await, "alice@localhost/a");
    // The initial presence took one token; the window is measured from the
    // write, so the bound holds on any machine (a slow one sees fewer).
    let bound = (RATE * window.as_secs_f64()) as usize + BURST;
    eprintln!("shaped: {seen} within {window:?} (bound {bound})");
    assert!(seen <= bound, "{seen} presences broadcast within {window:?}; at most {bound} allowed");
    assert!(seen >= 1, "the shaper throttles, it does not stop the session");

    // Throttled, not dropped: every one of them arrives, the last one last.
    let last = format!("<status>s{}</status>", N - 1);
    bob.until(&last).await;
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_repeated_presence_is_not_broadcast_again() {
    let (engine, addrs) = start(&xmpp("off")).await;
    let addr = addr_of(&addrs, "xmpp-c2s");
    let mut bob = Xmpp::login(addr, "bob", "b").await;
    bob.send("<presence/>").await;
    let mut alice = Xmpp::login(addr, "alice", "a").await;
    alice.send("<presence><status>here</status></presence>").await;
    bob.until("<status>here</status>").await;
    bob.text.clear();
    // 200 copies of the same presence, then one change.
    alice.send(&"<presence><status>here</status></presence>".repeat(200)).await;
    alice.send("<presence><status>gone fishing</status></presence>").await;
    let got = bob.until("<status>gone fishing</status>").await;
    assert_eq!(presences_from(&got, "alice@localhost/a"), 1, "only the change reaches the contact: {got}");
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn stomp_frames_are_shaped_to_the_frame_rate() {
    const RATE: f64 = 20.0;
    const BURST: usize = 5;
    const N: usize = 40;
    let (engine, addrs) = start(&format!("[shaper]\nframes_per_sec = {RATE}\nframes_burst = {BURST}\n")).await;
    let addr = addr_of(&addrs, "stomp-tcp");
    let mut sub = Raw::connected(addr, "").await;
    sub.send("SUBSCRIBE\nid:0\ndestination:/queue/shaped\nreceipt:r\n\n\0").await;
    assert!(sub.frame().await.starts_with("RECEIPT"));
    let mut publisher = Raw::connected(addr, "").await;
    let flood: String = (0..N).map(|i| format!("SEND\ndestination:/queue/shaped\n\nm{i}\0")).collect();
    let sent = tokio::time::Instant::now();
    publisher.send(&flood).await;
    let window = Duration::from_millis(500);
    let mut seen = 0;
    while tokio::time::timeout_at(sent + window, sub.frame()).await.is_ok() {
        seen += 1;
    }
    let bound = (RATE * window.as_secs_f64()) as usize + BURST;
    eprintln!("shaped: {seen} within {window:?} (bound {bound})");
    assert!(seen <= bound, "{seen} messages within {window:?}; at most {bound} allowed");
    assert!(seen >= 1);
    // Nothing dropped: the rest arrives, in order, the last one last.
    let mut last = String::new();
    for _ in seen..N {
        last = sub.frame().await;
    }
    assert!(last.ends_with(&format!("\n\nm{}", N - 1)), "{last:?}");
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn stomp_bytes_are_shaped_to_the_byte_rate() {
    const RATE: f64 = 8192.0;
    const BURST: f64 = 4096.0;
    /// One read takes what fits in the read buffer: 4 KiB reserved, up to
    /// twice that when a partial frame is already in it.
    const READ: f64 = 8192.0;
    let (engine, addrs) = start(&format!("[shaper]\nbytes_per_sec = {RATE}\nbytes_burst = {BURST}\n")).await;
    let addr = addr_of(&addrs, "stomp-tcp");
    let mut sub = Raw::connected(addr, "").await;
    sub.send("SUBSCRIBE\nid:0\ndestination:/queue/bytes\nreceipt:r\n\n\0").await;
    assert!(sub.frame().await.starts_with("RECEIPT"));
    let mut publisher = Raw::connected(addr, "").await;
    let n = 30;
    let frames: Vec<String> =
        (0..n).map(|i| format!("SEND\ndestination:/queue/bytes\n\n{i:03}{}\0", "x".repeat(1000))).collect();
    let frame_len = frames[0].len() as f64;
    let sent = tokio::time::Instant::now();
    publisher.send(&frames.concat()).await;
    let window = Duration::from_millis(500);
    let mut seen = 0;
    while tokio::time::timeout_at(sent + window, sub.frame()).await.is_ok() {
        seen += 1;
    }
    // Read by then: the burst, the rate over the window, and the read that
    // went over (a read is charged after it happened, as in ejabberd).
    let bound = ((BURST + RATE * window.as_secs_f64() + READ) / frame_len) as usize;
    eprintln!("shaped: {seen} within {window:?} (bound {bound})");
    assert!(seen <= bound, "{seen} frames of {frame_len} B within {window:?}; at most {bound} allowed");
    assert!(seen >= 1);
    // Throttled, not dropped: the rest arrives, the last one last.
    let mut last = String::new();
    for _ in seen..n {
        last = sub.frame().await;
    }
    assert!(last.contains(&format!("\n\n{:03}x", n - 1)), "{last:?}");
    engine.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn xmpp_bytes_are_shaped_to_the_byte_rate() {
    const RATE: f64 = 8000.0;
    const BURST: f64 = 4000.0;
    /// One read: 4 KiB reserved, up to twice that with a partial stanza buffered.
    const READ: f64 = 8192.0;
    const N: usize = 60;
    let (engine, addrs) =
        start(&format!("{}[shaper]\nbytes_per_sec = {RATE}\nbytes_burst = {BURST}\n", xmpp("off"))).await;
    let addr = addr_of(&addrs, "xmpp-c2s");
    let mut bob = Xmpp::login(addr, "bob", "b").await;
    let mut alice = Xmpp::login(addr, "alice", "a").await;
    let pad = "x".repeat(500);
    // To bob's full JID: his resource sent no presence, so a chat to his
    // bare JID would wait in offline storage (XEP-0160) instead.
    let chats: Vec<String> = (0..N)
        .map(|i| format!("<message to='bob@localhost/b' type='chat'><body>{i:03}{pad}</body></message>"))
        .collect();
    let stanza_len = chats[0].len() as f64;
    let sent = tokio::time::Instant::now();
    alice.send(&chats.concat()).await;
    let window = Duration::from_millis(500);
    let seen = bob.read_until(sent + window).await.matches("<body>").count();
    let bound = ((BURST + RATE * window.as_secs_f64() + READ) / stanza_len) as usize;
    eprintln!("shaped: {seen} within {window:?} (bound {bound})");
    assert!(seen <= bound, "{seen} messages of {stanza_len} B within {window:?}; at most {bound} allowed");
    assert!(seen >= 1);
    // Throttled, not dropped.
    bob.until(&format!("<body>{:03}", N - 1)).await;
    engine.stop(Duration::from_secs(1)).await;
}
