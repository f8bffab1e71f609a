//! The BOSH endpoint over real sockets: requests as strophe.js sends them,
//! through the front server of `transport/http1.rs`, against a tiny XMPP
//! app. (The rid-window rules alone are tested in `machine.rs`.)
//!
//! May import: anything (tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::body::{NS_CLIENT, NS_STREAM, XML};
use bytes::Bytes;

use super::http::{MAX_RID, TEXT};
use super::*;
use crate::xmpp::link::{StreamError, XmppIn, XmppRx, XmppTx};
use crate::xmpp::xml::{parse_element, Element, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";

#[derive(Debug)]
enum Ev {
    Start(Peer),
    In(XmppIn),
    Ended,
}

fn features(opens: u32) -> Element {
    let f = Element::new("features", NS_STREAM);
    if opens == 1 {
        f.with_child(Element::new("mechanisms", SASL).with_child(Element::new("mechanism", SASL).with_text("PLAIN")))
    } else {
        f.with_child(Element::new("bind", BIND))
    }
}

/// A tiny XMPP server: answers a stream header with `open` and features
/// (mechanisms first, bind after a restart), `<auth/>` with `<success/>`,
/// a `type='kick'` stanza with a `conflict` stream error, a
/// `type='later'` one with its echo after a second, and echoes everything
/// else; closes on close. Reports what it has handled.
fn fake_server() -> (OnSession, mpsc::UnboundedReceiver<Ev>) {
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let on_session: OnSession = Arc::new(move |mut rx: BoshRx, mut tx: BoshTx, peer: Peer| {
        let ev = ev_tx.clone();
        let _ = ev.send(Ev::Start(peer));
        tokio::spawn(async move {
            let mut opens = 0;
            while let Ok(Some(input)) = rx.recv().await {
                let seen = input.clone();
                match input {
                    XmppIn::Open { .. } => {
                        opens += 1;
                        tx.open(&format!("stream-{opens}"), "example.com").await.unwrap();
                        tx.send(features(opens).to_bytes()).await.unwrap();
                        tx.flush().await.unwrap();
                    }
                    XmppIn::Stanza(s) if s.is("auth", SASL) => {
                        tx.send(Element::new("success", SASL).to_bytes()).await.unwrap();
                        tx.flush().await.unwrap();
                        rx.restart();
                    }
                    XmppIn::Stanza(s) if s.attr("type") == Some("kick") => {
                        tx.close(Some(StreamError::new("conflict", "Replaced by new connection"))).await;
                    }
                    XmppIn::Stanza(s) => {
                        if s.attr("type") == Some("later") {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        let _ = tx.send(s.to_bytes()).await;
                        let _ = tx.flush().await;
                    }
                    XmppIn::Close => tx.close(None).await,
                }
                // Reported once handled: the response is on its way.
                let _ = ev.send(Ev::In(seen));
            }
            let _ = ev.send(Ev::Ended);
        });
    });
    (on_session, ev_rx)
}

async fn serve(config: BoshConfig, on_session: OnSession) -> SocketAddr {
    let (app, direct) = mount(config, on_session, &["/http-bind", "/bosh"]);
    let front = crate::transport::http1::Front { direct: Arc::from([direct]), ..Default::default() };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Served as in production: the front server of transport/http1.rs.
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let limits = crate::transport::http1::Http1Limits::default();
            tokio::spawn(crate::transport::http1::serve_connection(
                stream,
                peer,
                app.clone(),
                front.clone(),
                limits,
                Default::default(),
            ));
        }
    });
    addr
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The response `<body/>`, checked for what every BOSH response has.
    fn xml(&self) -> Element {
        assert_eq!(self.status, 200, "{}", self.text());
        assert_eq!(self.header("content-type"), Some(XML));
        let b = parse_element(&self.body, &Limits::default()).unwrap_or_else(|e| panic!("{e}: {}", self.text()));
        assert!(b.is("body", NS_HTTPBIND), "{}", self.text());
        b
    }
}

/// Sends one request on a fresh connection and reads the whole response.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut stream = send_request(addr, method, path, headers, body).await;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.expect("response timed out").unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    assert!(!chunked, "responses have a length");
    Resp { status, headers, body: raw[split + 4..].to_vec() }
}

async fn send_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Resp {
    request(addr, "POST", path, &[("Content-Type", XML)], body.as_bytes()).await
}

/// A session creation request as strophe.js sends it.
fn creation(rid: u64, hold: u32) -> String {
    format!(
        "<body rid='{rid}' xmlns='{NS_HTTPBIND}' to='example.com' xml:lang='en' wait='60' hold='{hold}' \
         content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
    )
}

struct Client {
    addr: SocketAddr,
    sid: String,
    /// Last rid used.
    rid: u64,
}

impl Client {
    /// Creates a session; returns the client and the creation response.
    async fn connect(addr: SocketAddr, hold: u32) -> (Client, Element) {
        let rid = 1_000_000 + u64::from(rand::random::<u16>());
        let b = post(addr, "/http-bind", &creation(rid, hold)).await.xml();
        let sid = b.attr("sid").expect("sid").to_owned();
        (Client { addr, sid, rid }, b)
    }

    fn body(&self, rid: u64, attrs: &str, payload: &str) -> String {
        format!("<body rid='{rid}' sid='{}' xmlns='{NS_HTTPBIND}'{attrs}>{payload}</body>", self.sid)
    }

    fn next(&mut self) -> u64 {
        self.rid += 1;
        self.rid
    }

    async fn send_rid(&self, rid: u64, attrs: &str, payload: &str) -> Resp {
        post(self.addr, "/http-bind", &self.body(rid, attrs, payload)).await
    }

    /// The next request, in a task (for requests that are held).
    fn spawn(&mut self, attrs: &str, payload: &str) -> tokio::task::JoinHandle<Resp> {
        let rid = self.next();
        let (addr, body) = (self.addr, self.body(rid, attrs, payload));
        tokio::spawn(async move { post(addr, "/http-bind", &body).await })
    }

    async fn send(&mut self, attrs: &str, payload: &str) -> Resp {
        let rid = self.next();
        self.send_rid(rid, attrs, payload).await
    }
}

async fn next_ev(ev: &mut mpsc::UnboundedReceiver<Ev>) -> Ev {
    tokio::time::timeout(WAIT, ev.recv()).await.expect("no event").expect("channel closed")
}

/// The next client event the app saw (skipping session starts).
async fn next_in(ev: &mut mpsc::UnboundedReceiver<Ev>) -> Option<XmppIn> {
    loop {
        match next_ev(ev).await {
            Ev::Start(_) => continue,
            Ev::In(x) => return Some(x),
            Ev::Ended => return None,
        }
    }
}

async fn next_stanza(ev: &mut mpsc::UnboundedReceiver<Ev>) -> Element {
    match next_in(ev).await {
        Some(XmppIn::Stanza(s)) => s,
        other => panic!("expected a stanza, got {other:?}"),
    }
}

fn message(body: &str) -> String {
    format!("<message xmlns='jabber:client' to='a@example.com'><body>{body}</body></message>")
}

/// The message bodies in a response, in order.
fn bodies(b: &Element) -> Vec<String> {
    b.elements()
        .filter(|e| e.is("message", NS_CLIENT))
        .map(|m| m.child("body", NS_CLIENT).map(Element::text).unwrap_or_default())
        .collect()
}

fn assert_terminate(b: &Element, condition: Option<&str>) {
    assert_eq!(b.attr("type"), Some("terminate"), "{b}");
    assert_eq!(b.attr("condition"), condition, "{b}");
}

#[tokio::test]
async fn creation_response_has_session_attributes_and_features() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let r = post(addr, "/http-bind", &creation(4_000_000, 1)).await;
    let raw = r.text();
    let b = r.xml();
    assert_eq!(b.attr("sid").unwrap().len(), 32);
    for (name, value) in [
        ("wait", "60"),
        ("requests", "2"),
        ("hold", "1"),
        ("inactivity", "60"),
        ("polling", "2"),
        ("ver", "1.6"),
        ("from", "example.com"),
        ("authid", "stream-1"),
        ("xmpp:version", "1.0"),
        ("xmpp:restartlogic", "true"),
    ] {
        assert_eq!(b.attr(name), Some(value), "{name} in {raw}");
    }
    assert!(raw.contains("xmlns:xmpp='urn:xmpp:xbosh'"), "{raw}");
    assert!(raw.contains("xmlns:stream='http://etherx.jabber.org/streams'"), "{raw}");
    let features = b.child("features", NS_STREAM).expect("features");
    assert!(features.child("mechanisms", SASL).is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    match next_ev(&mut ev).await {
        Ev::Start(peer) => {
            assert_eq!(peer.transport, crate::transport::Transport::Bosh);
            assert_eq!(peer.addr.unwrap().ip(), std::net::Ipv4Addr::LOCALHOST);
        }
        other => panic!("{other:?}"),
    }
    let open = XmppIn::Open { to: Some("example.com".into()), lang: Some("en".into()), version: Some("1.0".into()) };
    assert_eq!(next_in(&mut ev).await, Some(open));

    // The client's wait, hold and ver are capped; /bosh serves the same.
    let asked = format!("<body rid='7' xmlns='{NS_HTTPBIND}' to='example.com' wait='300' hold='4' ver='1.11'/>");
    let b = post(addr, "/bosh", &asked).await.xml();
    assert_eq!(
        (b.attr("wait"), b.attr("hold"), b.attr("requests"), b.attr("ver")),
        (Some("60"), Some("1"), Some("2"), Some("1.6"))
    );
    let asked = format!("<body rid='7' xmlns='{NS_HTTPBIND}' wait='5' hold='0' ver='1.5'/>");
    let b = post(addr, "/bosh", &asked).await.xml();
    assert_eq!(
        (b.attr("wait"), b.attr("hold"), b.attr("requests"), b.attr("ver")),
        (Some("5"), Some("0"), Some("2"), Some("1.5"))
    );
    // Without xmpp:version, the features still come (the session decides).
    assert!(b.child("features", NS_STREAM).is_some());
}

#[tokio::test]
async fn stanza_round_trip_through_held_request() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let held = c.spawn("", "");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!held.is_finished(), "an empty request is held");
    // A new request releases the held one; its own payload's echo comes back on it.
    let r = c.send("", &message("hi")).await.xml();
    let released = held.await.unwrap().xml();
    assert_eq!(released.elements().count(), 0, "{released}");
    assert_eq!(bodies(&r), ["hi"]);
    assert!(next_in(&mut ev).await.is_some_and(|x| matches!(x, XmppIn::Open { .. })));
    let s = next_stanza(&mut ev).await;
    assert!(s.is("message", NS_CLIENT));

    // Stanzas without a namespace of their own are jabber:client.
    let r = c.send("", "<message to='b@example.com'><body>plain</body></message>").await.xml();
    assert_eq!(bodies(&r), ["plain"]);
    let s = next_stanza(&mut ev).await;
    assert!(s.is("message", NS_CLIENT) && s.child("body", NS_CLIENT).is_some(), "{s}");
}

#[tokio::test]
async fn out_of_order_requests_are_processed_and_answered_in_rid_order() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (c, _) = Client::connect(addr, 1).await;
    assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
    let (first, second) = (c.rid + 1, c.rid + 2);
    let (addr2, body2) = (c.addr, c.body(second, "", &message("B")));
    let later = tokio::spawn(async move { post(addr2, "/http-bind", &body2).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!later.is_finished(), "waits for the earlier rid");
    assert!(ev.try_recv().is_err(), "nothing delivered out of order");
    let r1 = c.send_rid(first, "", &message("A")).await.xml();
    assert_eq!(r1.elements().count(), 0, "released by the later request: {r1}");
    let r2 = later.await.unwrap().xml();
    assert_eq!(bodies(&r2), ["A"]);
    assert_eq!(next_stanza(&mut ev).await.child("body", NS_CLIENT).unwrap().text(), "A");
    assert_eq!(next_stanza(&mut ev).await.child("body", NS_CLIENT).unwrap().text(), "B");
    // B's echo waited for the next request.
    let r3 = c.send_rid(second + 1, "", "").await.xml();
    assert_eq!(bodies(&r3), ["B"]);
}

#[tokio::test]
async fn retransmitted_rid_gets_identical_response() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let rid = c.next();
    let first = c.send_rid(rid, "", &message("once")).await;
    assert_eq!(bodies(&first.xml()), ["once"]);
    let again = c.send_rid(rid, "", &message("once")).await;
    assert_eq!(again.body, first.body);
    next_in(&mut ev).await;
    next_stanza(&mut ev).await;
    // Processed once.
    let r = c.send("", &message("twice")).await.xml();
    assert_eq!(bodies(&r), ["twice"]);
    assert_eq!(next_stanza(&mut ev).await.child("body", NS_CLIENT).unwrap().text(), "twice");
    // Only the last `window` (2) responses are kept.
    c.send("", &message("3")).await.xml();
    let r = c.send_rid(rid, "", "").await.xml();
    assert_terminate(&r, Some("item-not-found"));
    assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
}

#[tokio::test]
async fn rid_outside_window_ends_session() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (c, _) = Client::connect(addr, 1).await;
    assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
    let r = c.send_rid(c.rid + 3, "", &message("far")).await.xml();
    assert_terminate(&r, Some("item-not-found"));
    assert!(next_in(&mut ev).await.is_none(), "the app sees the end");
    assert_terminate(&c.send_rid(c.rid + 1, "", "").await.xml(), Some("item-not-found"));
}

#[tokio::test]
async fn unknown_sid_is_item_not_found() {
    let (on_session, _ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let r = post(addr, "/http-bind", &format!("<body rid='5' sid='nope' xmlns='{NS_HTTPBIND}'/>")).await;
    assert_eq!(r.text(), format!("<body xmlns='{NS_HTTPBIND}' type='terminate' condition='item-not-found'/>"));
    assert_terminate(&r.xml(), Some("item-not-found"));
}

#[tokio::test]
async fn restart_gets_new_features() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let r = c.send("", &format!("<auth xmlns='{SASL}' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")).await.xml();
    assert!(r.child("success", SASL).is_some(), "{r}");
    let restart = " to='example.com' xml:lang='en' xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh'";
    let r = c.send(restart, "").await.xml();
    let features = r.child("features", NS_STREAM).expect("new features");
    assert!(features.child("bind", BIND).is_some(), "{r}");
    assert_eq!(r.attr("sid"), None, "session attributes only on creation");
    assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
    assert!(next_stanza(&mut ev).await.is("auth", SASL));
    // The restart inherits what it leaves out (xmpp:version).
    let open = XmppIn::Open { to: Some("example.com".into()), lang: Some("en".into()), version: Some("1.0".into()) };
    assert_eq!(next_in(&mut ev).await, Some(open));
}

#[tokio::test]
async fn client_terminate() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let held = c.spawn("", "");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = c.send(" type='terminate'", "<presence xmlns='jabber:client' type='unavailable'/>").await;
    assert_eq!(r.text(), format!("<body xmlns='{NS_HTTPBIND}' type='terminate'/>"));
    let released = held.await.unwrap().xml();
    assert_eq!(released.attr("type"), None, "{released}");
    assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
    assert!(next_stanza(&mut ev).await.is("presence", NS_CLIENT));
    assert_eq!(next_in(&mut ev).await, Some(XmppIn::Close));
    assert_eq!(next_in(&mut ev).await, None);
    assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
}

#[tokio::test]
async fn server_close_with_stream_error() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let r = c.send("", "<message xmlns='jabber:client' type='kick'/>").await;
    let b = r.xml();
    assert_terminate(&b, Some("remote-stream-error"));
    assert!(r.text().contains("xmlns:stream='http://etherx.jabber.org/streams'"), "{}", r.text());
    let error = b.child("error", NS_STREAM).expect("stream error");
    assert!(error.child("conflict", STREAMS_ERR).is_some(), "{b}");
    assert_eq!(error.child("text", STREAMS_ERR).unwrap().text(), "Replaced by new connection");
    next_in(&mut ev).await;
    next_stanza(&mut ev).await;
    assert_eq!(next_in(&mut ev).await, None);
    assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
}

#[tokio::test]
async fn server_close_reaches_the_next_request() {
    // Sends features, then closes at once: nothing is held at that point.
    let on_session: OnSession = Arc::new(|mut rx: BoshRx, mut tx: BoshTx, _peer: Peer| {
        tokio::spawn(async move {
            assert!(matches!(rx.recv().await, Ok(Some(XmppIn::Open { .. }))));
            tx.open("s1", "example.com").await.unwrap();
            tx.send(features(1).to_bytes()).await.unwrap();
            tx.flush().await.unwrap();
            tx.send(Bytes::from_static(b"<message xmlns='jabber:client'><body>bye</body></message>")).await.unwrap();
            tx.close(Some(StreamError::new("system-shutdown", ""))).await;
            assert!(tx.send(Bytes::from_static(b"<x/>")).await.is_err());
            assert_eq!(rx.recv().await, Ok(None));
        });
    });
    let addr = serve(BoshConfig::default(), on_session).await;
    let (mut c, b) = Client::connect(addr, 1).await;
    assert!(b.child("features", NS_STREAM).is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = c.send("", "").await.xml();
    assert_terminate(&b, Some("remote-stream-error"));
    assert_eq!(bodies(&b), ["bye"], "queued stanzas come first");
    assert!(b.child("error", NS_STREAM).unwrap().child("system-shutdown", STREAMS_ERR).is_some());
    assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
}

#[tokio::test]
async fn refused_session_gets_the_error_on_creation() {
    let on_session: OnSession = Arc::new(|rx: BoshRx, mut tx: BoshTx, _peer: Peer| {
        tokio::spawn(async move {
            tx.close(Some(StreamError::new("resource-constraint", "connection limit reached"))).await;
            drop(rx);
        });
    });
    let addr = serve(BoshConfig::default(), on_session).await;
    let b = post(addr, "/http-bind", &creation(9, 1)).await.xml();
    assert_terminate(&b, Some("remote-stream-error"));
    assert!(b.child("error", NS_STREAM).unwrap().child("resource-constraint", STREAMS_ERR).is_some());
}

#[tokio::test]
async fn outbound_overflow_ends_session() {
    let (res_tx, mut res_rx) = mpsc::unbounded_channel();
    let on_session: OnSession = Arc::new(move |mut rx: BoshRx, mut tx: BoshTx, _peer: Peer| {
        let res_tx = res_tx.clone();
        tokio::spawn(async move {
            assert!(matches!(rx.recv().await, Ok(Some(XmppIn::Open { .. }))));
            tx.open("s1", "example.com").await.unwrap();
            tx.flush().await.unwrap();
            // Nothing is held now: stanzas queue up.
            let mut results = Vec::new();
            for i in 0..5 {
                let sent =
                    tx.send(Bytes::from(format!("<message xmlns='jabber:client'><body>{i}</body></message>"))).await;
                results.push(sent.and(tx.flush().await).is_ok());
            }
            res_tx.send(results).unwrap();
            assert_eq!(rx.recv().await, Ok(None));
        });
    });
    let config = BoshConfig { max_pending_stanzas: 3, ..Default::default() };
    let addr = serve(config, on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let results = tokio::time::timeout(WAIT, res_rx.recv()).await.unwrap().unwrap();
    assert_eq!(results, [true, true, true, false, false]);
    assert_terminate(&c.send("", "").await.xml(), Some("policy-violation"));
    assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
}

#[tokio::test]
async fn inactivity_ends_session() {
    let config = BoshConfig {
        max_inactivity: Duration::from_millis(300),
        max_wait: Duration::from_millis(600),
        ..Default::default()
    };
    let (on_session, mut ev) = fake_server();
    let addr = serve(config, on_session).await;
    let (mut c, b) = Client::connect(addr, 1).await;
    assert_eq!(b.attr("inactivity"), Some("1"));
    assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
    // A held request keeps the session alive past `inactivity`.
    let r = c.send("", "").await.xml();
    assert_eq!(r.attr("type"), None, "{r}");
    let idle = Instant::now();
    assert_eq!(next_in(&mut ev).await, None);
    assert!(idle.elapsed() >= Duration::from_millis(250), "{:?}", idle.elapsed());
    assert_terminate(&c.send("", "").await.xml(), Some("item-not-found"));
}

#[tokio::test]
async fn wait_expiry_returns_empty_body() {
    let config = BoshConfig { max_wait: Duration::from_millis(300), ..Default::default() };
    let (on_session, _ev) = fake_server();
    let addr = serve(config, on_session).await;
    let (mut c, b) = Client::connect(addr, 1).await;
    assert_eq!(b.attr("wait"), Some("1"));
    let start = Instant::now();
    let r = c.send("", "").await;
    assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
    assert_eq!(r.text(), format!("<body xmlns='{NS_HTTPBIND}'/>"));
    r.xml();
    // The session goes on.
    assert_eq!(bodies(&c.send("", &message("still")).await.xml()), ["still"]);
}

#[tokio::test]
async fn cors() {
    let (on_session, _ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let h = [
        ("Origin", "http://a.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type, x-b"),
    ];
    let r = request(addr, "OPTIONS", "/http-bind", &h, b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://a.example"));
    assert_eq!(r.header("access-control-allow-methods"), Some("POST, GET, OPTIONS"));
    assert_eq!(r.header("access-control-allow-headers"), Some("content-type, x-b"));
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    let r = request(addr, "OPTIONS", "/bosh", &[], b"").await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-headers"), Some("Content-Type"));
    let r = request(addr, "POST", "/http-bind", &[("Origin", "http://a.example")], creation(1, 1).as_bytes()).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("http://a.example"));
    r.xml();

    let config = BoshConfig { allowed_origins: Some(vec!["https://ok.example".into()]), ..Default::default() };
    let (on_session, _ev) = fake_server();
    let addr = serve(config, on_session).await;
    let r = request(addr, "OPTIONS", "/http-bind", &[("Origin", "https://evil.example")], b"").await;
    assert_eq!(r.status, 403);
    let r = request(addr, "POST", "/http-bind", &[("Origin", "https://evil.example")], creation(1, 1).as_bytes()).await;
    assert_eq!(r.status, 403);
    let r = request(addr, "OPTIONS", "/http-bind", &[("Origin", "https://ok.example")], b"").await;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, Some("https://ok.example")));
    let r = request(addr, "POST", "/http-bind", &[("Origin", "https://ok.example")], creation(1, 1).as_bytes()).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("https://ok.example"));
    r.xml();
    // Non-browser clients send no Origin.
    post(addr, "/http-bind", &creation(1, 1)).await.xml();
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let config = BoshConfig { max_body_bytes: 1024, ..Default::default() };
    let (on_session, _ev) = fake_server();
    let addr = serve(config, on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let r = c.send("", &message(&"x".repeat(2000))).await;
    assert_eq!(r.status, 413);
    let b = parse_element(&r.body, &Limits::default()).unwrap();
    assert_terminate(&b, Some("policy-violation"));
}

#[tokio::test]
async fn malformed_requests_are_400_and_leave_the_session_alone() {
    let (on_session, _ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let rid = c.rid + 1;
    for bad in [
        format!("<body rid='{rid}' sid='{}' xmlns='{NS_HTTPBIND}'><message>", c.sid),
        format!("<body rid='{rid}' sid='{}' xmlns='jabber:client'/>", c.sid),
        "not xml at all".to_owned(),
        String::new(),
    ] {
        let r = post(addr, "/http-bind", &bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.header("content-type"), Some(TEXT));
        assert!(r.text().starts_with("bad request: "), "{}", r.text());
    }
    assert_eq!(bodies(&c.send("", &message("fine")).await.xml()), ["fine"]);
}

#[tokio::test]
async fn request_bodies_over_the_byte_rate_are_held_not_refused() {
    let (on_session, _ev) = fake_server();
    let shaper = ShaperConfig { bytes_per_sec: 4000.0, bytes_burst: 4000, ..ShaperConfig::default() };
    let addr = serve(BoshConfig { shaper, ..BoshConfig::default() }, on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    // Goes through at once (the bucket was not in debt), and leaves the
    // session owing about 4 KiB: a second's worth at 4,000 B/s.
    let big = "x".repeat(8000);
    assert_eq!(bodies(&c.send("", &message(&big)).await.xml()), [big]);
    let t0 = Instant::now();
    assert_eq!(bodies(&c.send("", &message("after")).await.xml()), ["after"], "held, then handled");
    let held = t0.elapsed();
    assert!(held >= Duration::from_millis(800), "the next request waited only {held:?}");
}

#[tokio::test]
async fn rids_beyond_2_pow_53_are_refused() {
    let (on_session, _ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (c, _) = Client::connect(addr, 1).await;
    let too_big = MAX_RID + 1;
    for bad in [
        c.body(too_big, "", ""),
        c.body(u64::MAX, "", ""),
        format!("<body sid='{}' xmlns='{NS_HTTPBIND}'/>", c.sid),
        c.body(0, "", "").replace("rid='0'", "rid='-1'"),
        creation(too_big, 1),
        creation(1 << 62, 1),
    ] {
        let r = post(addr, "/http-bind", &bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.header("content-type"), Some(XML));
        let b = parse_element(&r.body, &Limits::default()).unwrap();
        assert_terminate(&b, Some("bad-request"));
    }
    // The largest legal rid opens a session.
    let b = post(addr, "/http-bind", &creation(MAX_RID, 1)).await;
    assert_eq!(b.status, 200);
    assert!(b.xml().attr("sid").is_some());
}

#[tokio::test]
async fn too_many_simultaneous_requests() {
    // Reads the stream header, then nothing: client stanzas pile up.
    let on_session: OnSession = Arc::new(|mut rx: BoshRx, mut tx: BoshTx, _peer: Peer| {
        tokio::spawn(async move {
            assert!(matches!(rx.recv().await, Ok(Some(XmppIn::Open { .. }))));
            tx.open("s1", "example.com").await.unwrap();
            tx.flush().await.unwrap();
            tokio::time::sleep(WAIT).await;
        });
    });
    let config = BoshConfig { max_body_bytes: 600, ..Default::default() };
    let addr = serve(config, on_session).await;
    let (mut c, b) = Client::connect(addr, 1).await;
    assert_eq!(b.attr("authid"), Some("s1"));
    let payload = message(&"p".repeat(300));
    let r1 = c.spawn("", &payload); // processed and held
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r2 = c.spawn("", &payload); // waits: the inbox is full
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!r1.is_finished() && !r2.is_finished());
    let r3 = c.send("", "").await.xml();
    assert_terminate(&r3, Some("policy-violation"));
    assert_terminate(&r1.await.unwrap().xml(), Some("policy-violation"));
    assert_terminate(&r2.await.unwrap().xml(), Some("policy-violation"));
}

#[tokio::test]
async fn polling_too_fast() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (mut c, b) = Client::connect(addr, 0).await;
    assert_eq!((b.attr("hold"), b.attr("polling")), (Some("0"), Some("2")));
    assert!(b.child("features", NS_STREAM).is_some(), "the creation response still waits for features");
    // Nothing is held: every request is answered at once.
    let r = c.send("", &message("a")).await.xml();
    assert_eq!(r.elements().count(), 0, "{r}");
    assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
    next_stanza(&mut ev).await; // echoed: queued for the next request
                                // A poll may follow a poll that brought something, ...
    assert_eq!(bodies(&c.send("", "").await.xml()), ["a"]);
    let r = c.send("", "").await.xml();
    assert_eq!((r.attr("type"), r.elements().count()), (None, 0));
    // ... but not one that brought nothing, within `polling`.
    let r = c.send("", "").await.xml();
    assert_terminate(&r, Some("policy-violation"));
}

#[tokio::test]
async fn aborted_request_does_not_swallow_stanzas() {
    let (on_session, mut ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let rid = c.next();
    // The echo comes a second later; the client gives up on the request before.
    let stream = send_request(
        addr,
        "POST",
        "/http-bind",
        &[],
        c.body(rid, "", "<message xmlns='jabber:client' type='later'/>").as_bytes(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
    assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
    assert_eq!(next_stanza(&mut ev).await.attr("type"), Some("later"));
    let r = c.send("", "").await.xml();
    assert_eq!(r.elements().filter(|e| e.is("message", NS_CLIENT)).count(), 1, "{r}");
    // A retransmission of the abandoned request gets what it got: nothing.
    assert_eq!(c.send_rid(rid, "", "").await.xml().elements().count(), 0);
}

#[tokio::test]
async fn a_page_reload_is_not_taken_for_polling_too_fast() {
    // A reload aborts the held (empty) request; a stanza for the client
    // arrives meanwhile; the reloaded page's next empty request comes at
    // once. The abandoned answer was never seen by the client, so it is
    // no "poll" (XEP-0124 §12), and the stanza must reach the page.
    let (on_session, mut ev) = fake_server();
    let cfg = BoshConfig { max_wait: Duration::from_secs(5), ..BoshConfig::default() };
    let addr = serve(cfg, on_session).await;
    let (mut c, _) = Client::connect(addr, 1).await;
    let a = c.next();
    let with_stanza = c.body(a, "", "<message xmlns='jabber:client' type='later'/>");
    let first = send_request(addr, "POST", "/http-bind", &[], with_stanza.as_bytes()).await;
    assert!(matches!(next_in(&mut ev).await, Some(XmppIn::Open { .. })));
    let b = c.next();
    let held = send_request(addr, "POST", "/http-bind", &[], c.body(b, "", "").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held); // the page reloads
    drop(first);
    // The echo of 'later' comes a second after it was sent.
    assert_eq!(next_stanza(&mut ev).await.attr("type"), Some("later"));
    let r = c.send("", "").await.xml();
    assert_ne!(r.attr("type"), Some("terminate"), "{r}");
    assert_eq!(r.elements().filter(|e| e.is("message", NS_CLIENT)).count(), 1, "the stanza is not lost: {r}");
}

#[tokio::test]
async fn info_page_and_other_methods() {
    let (on_session, _ev) = fake_server();
    let addr = serve(BoshConfig::default(), on_session).await;
    let r = request(addr, "GET", "/http-bind", &[], b"").await;
    assert_eq!((r.status, r.header("content-type")), (200, Some(TEXT)));
    assert!(r.text().contains("BOSH"));
    assert_eq!(request(addr, "PUT", "/bosh", &[], b"").await.status, 405);
    // Mounted with `nest_service`, a trailing slash works too.
    post(addr, "/http-bind/", &creation(3, 1)).await.xml();
    post(addr, "/bosh/", &creation(3, 1)).await.xml();
    assert_eq!(post(addr, "/http-bind/x", &creation(3, 1)).await.status, 404);
}

/// An idle BOSH session is this struct behind one `Arc` (plus its heap
/// parts): it must not grow. 608 bytes (the machine 312, `Params` 248) when
/// the module was split; before the split, the same.
#[test]
fn idle_session_does_not_grow() {
    use std::mem::size_of;
    eprintln!(
        "SIZE bosh Session={} Machine={} Params={} BoshRx={} BoshTx={}",
        size_of::<session::Session>(),
        size_of::<machine::Machine<session::Responder>>(),
        size_of::<machine::Params>(),
        size_of::<BoshRx>(),
        size_of::<BoshTx>()
    );
    assert!(size_of::<session::Session>() <= 608);
    assert!(size_of::<BoshRx>() <= 8 && size_of::<BoshTx>() <= 32);
}
