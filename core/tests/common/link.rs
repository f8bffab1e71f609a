//! In-process link pairs, as rumqttd's `link/local.rs`: one end is what a
//! session's entry point takes (`stomp::serve`, `xmpp::session::serve`), the
//! other is the test's client, which writes frames or stanzas and reads
//! what the session sends. No sockets, no listeners: the suites drive the
//! middle (sessions, router, presence, directory) through the same calls the
//! transports make. Imports only the public link traits and the XML tree.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::transport::tcp::{StreamRx, StreamTx};
use herald_core::transport::{Peer, Transport};
use herald_core::xmpp::link::{StreamError, XmppIn, XmppRx, XmppTx};
use herald_core::xmpp::ns;
use herald_core::xmpp::xml::{parse_element, Element, Limits};
use herald_core::{Config, Engine};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a client waits for the session before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A peer as a transport would report it (no address: nothing is on a socket).
pub fn peer(transport: herald_core::transport::Transport) -> Peer {
    Peer { addr: None, transport }
}

/// The XMPP domain of the suites' configs (`[xmpp] domain`).
pub const DOMAIN: &str = "example.test";
/// How long "nothing arrives" is watched for: the sessions run on the same
/// runtime, so anything due would have arrived well within it.
pub const QUIET: Duration = Duration::from_millis(200);

/// An engine that is never started: sessions reach it only through links.
pub fn engine(config: &str) -> Engine {
    Engine::new(Config::from_toml_str(config).expect("test config")).expect("engine")
}

/// An XMPP session for `user` (password `pw`) bound to `resource`, on its own task.
pub async fn xmpp(engine: &Engine, user: &str, resource: &str) -> XmppClient {
    let (rx, tx, mut client) = xmpp_pair();
    tokio::spawn(herald_core::xmpp::session::serve(engine.clone(), rx, tx, peer(Transport::Local)));
    let jid = client.login(DOMAIN, user, "pw", resource).await;
    assert_eq!(jid, format!("{user}@{DOMAIN}/{resource}"));
    client
}

/// A connected STOMP session for `user` (password `pw`), on its own task.
pub async fn stomp(engine: &Engine, user: &str) -> StompClient {
    let (rx, tx, mut client) = stomp_pair();
    tokio::spawn(herald_core::stomp::serve(engine.clone(), rx, tx, peer(Transport::Local)));
    client.connect(user, "pw").await;
    client
}

// ---------------------------------------------------------------------------
// XMPP
// ---------------------------------------------------------------------------

/// What the session wrote, as the client sees it.
#[derive(Debug)]
pub enum XmppOut {
    /// The server's stream header.
    Open {
        id: String,
        from: String,
    },
    Stanza(Element),
    /// The stream close, with the stream error if there was one.
    Close(Option<StreamError>),
}

/// The session's reading half: events the client sent.
pub struct LocalXmppRx {
    rx: mpsc::UnboundedReceiver<XmppIn>,
    restarts: Arc<AtomicUsize>,
}

/// The session's writing half: what it sends goes to the client end.
pub struct LocalXmppTx {
    tx: mpsc::UnboundedSender<XmppOut>,
}

/// The test's end of an XMPP link.
pub struct XmppClient {
    tx: Option<mpsc::UnboundedSender<XmppIn>>,
    rx: mpsc::UnboundedReceiver<XmppOut>,
    restarts: Arc<AtomicUsize>,
}

/// A connected pair: give the halves to `xmpp::session::serve`, keep the client.
pub fn xmpp_pair() -> (LocalXmppRx, LocalXmppTx, XmppClient) {
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let restarts = Arc::new(AtomicUsize::new(0));
    (
        LocalXmppRx { rx: in_rx, restarts: restarts.clone() },
        LocalXmppTx { tx: out_tx },
        XmppClient { tx: Some(in_tx), rx: out_rx, restarts },
    )
}

impl XmppRx for LocalXmppRx {
    /// `mpsc::UnboundedReceiver::recv` is cancel-safe, as the trait asks.
    async fn recv(&mut self) -> Result<Option<XmppIn>, StreamError> {
        Ok(self.rx.recv().await)
    }

    fn restart(&mut self) {
        self.restarts.fetch_add(1, Ordering::SeqCst);
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "test client gone")
}

impl XmppTx for LocalXmppTx {
    async fn open(&mut self, id: &str, from: &str) -> io::Result<()> {
        self.tx.send(XmppOut::Open { id: id.to_owned(), from: from.to_owned() }).map_err(|_| gone())
    }

    async fn send(&mut self, element: Bytes) -> io::Result<()> {
        // Every element the session sends declares its namespace: it must
        // parse on its own, as a WebSocket frame or BOSH body child would.
        let e = parse_element(&element, &Limits::default())
            .unwrap_or_else(|e| panic!("session sent unparsable XML ({e}): {}", String::from_utf8_lossy(&element)));
        self.tx.send(XmppOut::Stanza(e)).map_err(|_| gone())
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn close(&mut self, error: Option<StreamError>) {
        let _ = self.tx.send(XmppOut::Close(error));
    }
}

/// Parses `xml` as children of a `jabber:client` element, as a stanza in a
/// client stream: `<message to='a@d'/>` needs no `xmlns`.
pub fn stanza(xml: &str) -> Element {
    let wrapped = format!("<x xmlns='{}'>{xml}</x>", ns::CLIENT);
    let x = parse_element(wrapped.as_bytes(), &Limits::default()).expect("test stanza parses");
    let first = x.elements().next().expect("one element").clone();
    first
}

impl XmppClient {
    /// Sends a stream header to `domain`.
    pub fn open(&self, domain: &str) {
        self.event(XmppIn::Open { to: Some(domain.to_owned()), lang: None, version: Some("1.0".into()) });
    }

    /// Sends one stanza or negotiation element (see [`stanza`]; SASL elements
    /// carry their own `xmlns`).
    pub fn send(&self, xml: &str) {
        self.event(XmppIn::Stanza(stanza(xml)));
    }

    /// Closes the stream (`</stream:stream>`).
    pub fn close(&self) {
        self.event(XmppIn::Close);
    }

    /// Drops the client's sending side: the connection is gone without a close.
    pub fn vanish(&mut self) {
        self.tx = None;
    }

    fn event(&self, e: XmppIn) {
        self.tx.as_ref().expect("client still connected").send(e).expect("session still reading");
    }

    /// Times the session called `XmppRx::restart` (after SASL success).
    pub fn restarts(&self) -> usize {
        self.restarts.load(Ordering::SeqCst)
    }

    /// The next thing the session wrote; fails the test after [`WAIT`].
    pub async fn next(&mut self) -> XmppOut {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Some(out)) => out,
            Ok(None) => panic!("session ended without a stream close"),
            Err(_) => panic!("nothing from the session within {WAIT:?}"),
        }
    }

    /// The next element; fails on a header or close.
    pub async fn element(&mut self) -> Element {
        match self.next().await {
            XmppOut::Stanza(e) => e,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// The next element named `name` (in any namespace), skipping others; the
    /// skipped ones are returned too, in order.
    pub async fn until(&mut self, name: &str) -> (Element, Vec<Element>) {
        let mut skipped = Vec::new();
        loop {
            let e = self.element().await;
            if e.name == name {
                return (e, skipped);
            }
            skipped.push(e);
        }
    }

    /// Asserts the session sends nothing for `quiet`.
    pub async fn silent_for(&mut self, quiet: Duration) {
        if let Ok(Some(out)) = timeout(quiet, self.rx.recv()).await {
            panic!("expected silence, the session sent {out:?}");
        }
    }

    /// Waits for the stream close; returns its stream error condition.
    pub async fn closed(&mut self) -> Option<&'static str> {
        loop {
            if let XmppOut::Close(error) = self.next().await {
                return error.map(|e| e.condition);
            }
        }
    }

    /// Expects the server's stream header and `<stream:features/>`.
    async fn header_and_features(&mut self) -> Element {
        match self.next().await {
            XmppOut::Open { .. } => {}
            other => panic!("expected the stream header, got {other:?}"),
        }
        let f = self.element().await;
        assert!(f.is("features", ns::STREAM), "{f}");
        f
    }

    /// Opens the stream and authenticates with SASL PLAIN up to the restarted
    /// stream's features (which offer `bind`).
    pub async fn authenticate(&mut self, domain: &str, user: &str, password: &str) {
        self.open(domain);
        let f = self.header_and_features().await;
        let mechs = f.child("mechanisms", ns::SASL).expect("SASL mechanisms offered");
        assert!(mechs.elements().any(|m| m.text() == "PLAIN"), "{f}");
        use base64::Engine as _;
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!("<auth xmlns='{}' mechanism='PLAIN'>{creds}</auth>", ns::SASL));
        let r = self.element().await;
        assert!(r.is("success", ns::SASL), "SASL PLAIN as {user}: {r}");
        self.open(domain);
        let f = self.header_and_features().await;
        assert!(f.child("bind", ns::BIND).is_some(), "{f}");
    }

    /// [`XmppClient::authenticate`], then binds `resource`; returns the full JID.
    pub async fn login(&mut self, domain: &str, user: &str, password: &str, resource: &str) -> String {
        self.authenticate(domain, user, password).await;
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='{}'><resource>{resource}</resource></bind></iq>",
            ns::BIND
        ));
        let r = self.element().await;
        assert_eq!(r.attr("type"), Some("result"), "bind: {r}");
        assert_eq!(r.attr("id"), Some("bind1"));
        r.child("bind", ns::BIND).and_then(|b| b.child("jid", ns::BIND)).expect("bound JID").text()
    }
}

// ---------------------------------------------------------------------------
// STOMP
// ---------------------------------------------------------------------------

/// The session's halves of an in-memory byte stream (`tokio::io::duplex`),
/// over the same generic links TLS uses.
pub type StompRx = StreamRx<ReadHalf<DuplexStream>>;
pub type StompTx = StreamTx<WriteHalf<DuplexStream>>;

/// The test's end of a STOMP link: writes raw frames, reads whole frames.
pub struct StompClient {
    io: DuplexStream,
    pending: Vec<u8>,
}

/// A connected pair: give the halves to `stomp::serve`, keep the client.
pub fn stomp_pair() -> (StompRx, StompTx, StompClient) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (r, w) = tokio::io::split(server);
    (StreamRx(r), StreamTx::new(w), StompClient { io: client, pending: Vec::new() })
}

impl StompClient {
    pub async fn send(&mut self, frame: &str) {
        self.io.write_all(frame.as_bytes()).await.expect("session still reading");
    }

    /// The next frame (heart-beat EOLs skipped), or "" once the session closed.
    pub async fn frame(&mut self) -> String {
        loop {
            while self.pending.first().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                self.pending.remove(0);
            }
            if let Some(i) = self.pending.iter().position(|b| *b == 0) {
                let f: Vec<u8> = self.pending.drain(..=i).collect();
                return String::from_utf8_lossy(&f[..f.len() - 1]).into_owned();
            }
            let mut buf = [0u8; 16384];
            let n = timeout(WAIT, self.io.read(&mut buf)).await.expect("a frame within 5 s").unwrap_or(0);
            if n == 0 {
                return String::new();
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// CONNECTs as `login` and expects CONNECTED.
    pub async fn connect(&mut self, login: &str, passcode: &str) {
        self.send(&format!("CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\npasscode:{passcode}\n\n\0")).await;
        let f = self.frame().await;
        assert!(f.starts_with("CONNECTED\n"), "CONNECT as {login}: {f}");
    }

    /// SUBSCRIBEs with a receipt and waits for it.
    pub async fn subscribe(&mut self, id: &str, destination: &str) {
        self.send(&format!("SUBSCRIBE\nid:{id}\ndestination:{destination}\nreceipt:sub-{id}\n\n\0")).await;
        let f = self.frame().await;
        assert!(f.starts_with("RECEIPT\n"), "SUBSCRIBE {destination}: {f}");
    }

    /// Asserts no frame arrives for `quiet`.
    pub async fn silent_for(&mut self, quiet: Duration) {
        let mut buf = [0u8; 4096];
        loop {
            match timeout(quiet, self.io.read(&mut buf)).await {
                Err(_) => return,
                Ok(Ok(n)) if n > 0 && buf[..n].iter().all(|b| *b == b'\n' || *b == b'\r') => continue,
                Ok(r) => {
                    panic!("expected silence, got {:?}", r.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned()))
                }
            }
        }
    }
}
