//! A minimal XMPP client over WebSocket (RFC 7395) and BOSH (XEP-0124/0206):
//! SASL PLAIN, resource binding, roster get, initial presence, messages.
//! Stanzas are matched as text (ids and namespaces are unique here), which
//! is all a load generator needs. The same code talks to Herald and ejabberd.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, err, Ws};
use crate::stats::SharedStats;

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const BIND_NS: &str = "urn:ietf:params:xml:ns:xmpp-bind";

pub fn plain(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

fn check_stream_error(s: &str) -> io::Result<()> {
    if s.contains("<failure")
        || s.contains("stream:error")
        || s.contains("<stream-error")
        || s.contains("type='error'")
        || s.contains("type=\"error\"")
    {
        return Err(err(format!("xmpp error: {}", &s[..s.len().min(300)])));
    }
    Ok(())
}

/// Everything a client needs to log in.
#[derive(Clone)]
pub struct Login {
    pub domain: String,
    pub user: String,
    pub pass: String,
    pub resource: String,
}

fn bind_iq(resource: &str) -> String {
    format!("<iq type='set' id='bind1' xmlns='jabber:client'><bind xmlns='{BIND_NS}'><resource>{resource}</resource></bind></iq>")
}
const ROSTER_IQ: &str = "<iq type='get' id='roster1' xmlns='jabber:client'><query xmlns='jabber:iq:roster'/></iq>";
const PRESENCE: &str = "<presence xmlns='jabber:client'/>";

pub fn chat(to: &str, body: &str) -> String {
    format!("<message xmlns='jabber:client' to='{to}' type='chat'><body>{body}</body></message>")
}

// ---------------------------------------------------------------- WebSocket

pub struct WsClient {
    ws: Ws,
}

impl WsClient {
    pub async fn connect(addr: SocketAddr, src: Option<IpAddr>, host: &str, path: &str) -> io::Result<WsClient> {
        Ok(WsClient { ws: conn::ws(addr, src, host, path, Some("xmpp")).await? })
    }

    pub async fn send(&mut self, s: &str) -> io::Result<()> {
        self.ws.send(Message::text(s.to_owned())).await.map_err(io::Error::other)
    }

    pub async fn feed(&mut self, s: String) -> io::Result<()> {
        self.ws.feed(Message::text(s)).await.map_err(io::Error::other)
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.ws.flush().await.map_err(io::Error::other)
    }

    /// Next text message (one element).
    pub async fn recv(&mut self) -> io::Result<String> {
        loop {
            match self.ws.next().await {
                None => return Err(err("closed by server")),
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
                Some(Ok(Message::Close(_))) => return Err(err("closed by server")),
                Some(Ok(_)) => continue,
            }
        }
    }

    async fn until(&mut self, what: &str) -> io::Result<String> {
        loop {
            let s = self.recv().await?;
            if s.contains(what) {
                return Ok(s);
            }
            check_stream_error(&s)?;
        }
    }

    fn open(domain: &str) -> String {
        format!("<open xmlns='{FRAMING}' to='{domain}' version='1.0'/>")
    }

    /// Stream open, SASL PLAIN, restart, bind; with `roster_presence`, also
    /// the roster fetch and initial presence (what a chat client does).
    pub async fn login(&mut self, l: &Login, roster_presence: bool) -> io::Result<()> {
        self.send(&Self::open(&l.domain)).await?;
        self.until("mechanisms").await?;
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain(&l.user, &l.pass)
        ))
        .await?;
        self.until("<success").await?;
        self.send(&Self::open(&l.domain)).await?;
        self.until(BIND_NS).await?;
        self.send(&bind_iq(&l.resource)).await?;
        self.until("<jid>").await?;
        if roster_presence {
            self.send(ROSTER_IQ).await?;
            self.until("roster1").await?;
            self.send(PRESENCE).await?;
        }
        Ok(())
    }

    /// In-band registration (XEP-0077) on a fresh stream, for ejabberd's users.
    pub async fn register(&mut self, l: &Login) -> io::Result<bool> {
        self.send(&Self::open(&l.domain)).await?;
        self.until("mechanisms").await?;
        self.send(&format!(
            "<iq type='set' id='reg1' xmlns='jabber:client'><query xmlns='jabber:iq:register'><username>{}</username><password>{}</password></query></iq>",
            l.user, l.pass
        ))
        .await?;
        let r = self.until("reg1").await?;
        let ok = r.contains("type='result'") || r.contains("type=\"result\"") || r.contains("conflict");
        if !ok {
            return Err(err(format!("register {}: {}", l.user, &r[..r.len().min(300)])));
        }
        let _ = self.send(&format!("<close xmlns='{FRAMING}'/>")).await;
        Ok(true)
    }

    pub async fn close(mut self) {
        let _ = self.send(&format!("<close xmlns='{FRAMING}'/>")).await;
        let _ = self.ws.close(None).await;
    }

    /// Counts `<message` stanzas until the server closes the stream.
    pub async fn run(mut self, stats: SharedStats) {
        let why = loop {
            match self.recv().await {
                Ok(s) => {
                    if s.starts_with("<message") {
                        stats.borrow_mut().delivered(s.as_bytes());
                    }
                }
                Err(e) => break e.to_string(),
            }
        };
        stats.borrow_mut().session_closed(why);
    }
}

// --------------------------------------------------------------------- BOSH

/// One BOSH session over one keep-alive HTTP/1.1 connection, used
/// sequentially (one request outstanding, as strophe.js with hold=1 does
/// when idle).
pub struct BoshClient {
    stream: TcpStream,
    host: String,
    path: String,
    rid: u64,
    sid: String,
    buf: Vec<u8>,
    wait: u64,
}

fn attr(s: &str, name: &str) -> Option<String> {
    for q in ['"', '\''] {
        let pat = format!(" {name}={q}");
        if let Some(p) = s.find(&pat) {
            let rest = &s[p + pat.len()..];
            return rest.find(q).map(|e| rest[..e].to_owned());
        }
    }
    None
}

impl BoshClient {
    pub async fn connect(
        addr: SocketAddr,
        src: Option<IpAddr>,
        host: &str,
        path: &str,
        wait: u64,
    ) -> io::Result<BoshClient> {
        Ok(BoshClient {
            stream: conn::tcp(addr, src).await?,
            host: host.to_owned(),
            path: path.to_owned(),
            rid: 1_000_000 + rand::random::<u32>() as u64,
            sid: String::new(),
            buf: Vec::new(),
            wait,
        })
    }

    async fn post(&mut self, body: &str) -> io::Result<()> {
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n{}",
            self.path,
            self.host,
            body.len(),
            body
        );
        self.stream.write_all(req.as_bytes()).await
    }

    /// Reads one HTTP response; returns its body.
    async fn response(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                if let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                {
                    if self.buf.len() >= end + 4 + len {
                        let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                        self.buf.drain(..end + 4 + len);
                        if status != "200" {
                            return Err(err(format!("HTTP {status}: {body}")));
                        }
                        return Ok(body);
                    }
                } else if head.contains("transfer-encoding: chunked") {
                    if let Some(body) = self.dechunk(end + 4) {
                        return Ok(body);
                    }
                } else {
                    return Err(err(format!("HTTP response without length: {head}")));
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(err("closed by server"));
            }
        }
    }

    fn dechunk(&mut self, start: usize) -> Option<String> {
        let mut pos = start;
        let mut body = Vec::new();
        loop {
            let line_end = self.buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size = usize::from_str_radix(String::from_utf8_lossy(&self.buf[pos..line_end]).trim(), 16).ok()?;
            let data = line_end + 2;
            if self.buf.len() < data + size + 2 {
                return None;
            }
            if size == 0 {
                let end = data + 2;
                self.buf.drain(..end);
                return Some(String::from_utf8_lossy(&body).into_owned());
            }
            body.extend_from_slice(&self.buf[data..data + size]);
            pos = data + size + 2;
        }
    }

    fn next_rid(&mut self) -> u64 {
        self.rid += 1;
        self.rid
    }

    fn wrap(&mut self, payload: &str) -> String {
        let rid = self.next_rid();
        if payload.is_empty() {
            format!("<body rid='{rid}' sid='{}' xmlns='http://jabber.org/protocol/httpbind'/>", self.sid)
        } else {
            format!("<body rid='{rid}' sid='{}' xmlns='http://jabber.org/protocol/httpbind'>{payload}</body>", self.sid)
        }
    }

    /// Sends `payload` and keeps polling until a response contains `what`.
    async fn exchange(&mut self, payload: &str, what: &str) -> io::Result<String> {
        let body = self.wrap(payload);
        self.post(&body).await?;
        loop {
            let r = self.response().await?;
            if r.contains("type='terminate'") || r.contains("type=\"terminate\"") {
                return Err(err(format!("BOSH terminate: {}", &r[..r.len().min(300)])));
            }
            if r.contains(what) {
                return Ok(r);
            }
            check_stream_error(&r)?;
            let poll = self.wrap("");
            self.post(&poll).await?;
        }
    }

    /// Session creation, SASL PLAIN, restart, bind, roster, presence. The
    /// request carrying the presence stays open (held by the server) when
    /// this returns, as with a real idle client.
    pub async fn login(&mut self, l: &Login) -> io::Result<()> {
        let rid = self.next_rid();
        let create = format!(
            "<body content='text/xml; charset=utf-8' hold='1' rid='{rid}' to='{}' ver='1.6' wait='{}' xml:lang='en' xmpp:version='1.0' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>",
            l.domain, self.wait
        );
        self.post(&create).await?;
        let mut r = self.response().await?;
        self.sid = attr(&r, "sid").ok_or_else(|| err(format!("no sid in {}", &r[..r.len().min(300)])))?;
        if !r.contains("mechanisms") {
            r = self.exchange("", "mechanisms").await?;
        }
        let _ = r;
        self.exchange(
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                plain(&l.user, &l.pass)
            ),
            "<success",
        )
        .await?;
        let rid = self.next_rid();
        let restart = format!(
            "<body rid='{rid}' sid='{}' to='{}' xml:lang='en' xmpp:restart='true' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>",
            self.sid, l.domain
        );
        self.post(&restart).await?;
        loop {
            let r = self.response().await?;
            if r.contains(BIND_NS) {
                break;
            }
            check_stream_error(&r)?;
            let poll = self.wrap("");
            self.post(&poll).await?;
        }
        self.exchange(&bind_iq(&l.resource), "<jid>").await?;
        self.exchange(ROSTER_IQ, "roster1").await?;
        let body = self.wrap(PRESENCE);
        self.post(&body).await
    }

    /// Idle long-polling: read the held response, send the next poll.
    pub async fn run(mut self, stats: SharedStats) {
        let limit = Duration::from_secs(self.wait + 30);
        let why = loop {
            match tokio::time::timeout(limit, self.response()).await {
                Err(_) => break "no BOSH response within wait + 30 s".to_owned(),
                Ok(Err(e)) => break e.to_string(),
                Ok(Ok(r)) => {
                    if r.contains("type='terminate'") || r.contains("type=\"terminate\"") {
                        break format!("terminated: {}", &r[..r.len().min(200)]);
                    }
                    let mut rest = r.as_str();
                    while let Some(p) = rest.find("<message") {
                        let end = rest[p..].find("</message>").map(|e| p + e).unwrap_or(rest.len());
                        stats.borrow_mut().delivered(&rest.as_bytes()[p..end]);
                        rest = &rest[end..];
                    }
                    if self.buf.is_empty() && self.buf.capacity() > 16 * 1024 {
                        self.buf = Vec::new();
                    }
                    let poll = self.wrap("");
                    if let Err(e) = self.post(&poll).await {
                        break e.to_string();
                    }
                }
            }
        };
        stats.borrow_mut().session_closed(why);
    }
}
