//! The SockJS endpoint over real sockets: every transport as
//! sockjs-client speaks it.
//!
//! May import: anything (tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use std::time::Instant;

use super::http::{HTML, JS, NO_CACHE, TEXT};
use super::*;
use crate::transport::{LinkRx, LinkTx, Peer};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMsg;

const WAIT: Duration = Duration::from_secs(10);

/// Echoes every client message back as one message, flushing each.
fn echo() -> OnSession {
    Arc::new(|mut rx: SockJsRx, mut tx: SockJsTx, _peer: Peer| {
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            while let Ok(n) = rx.recv(&mut buf).await {
                if n == 0 {
                    break;
                }
                let unit = buf.split().freeze();
                if tx.feed(unit).await.is_err() || tx.flush().await.is_err() {
                    break;
                }
            }
            tx.close().await;
        });
    })
}

/// Closes every session at once.
fn closer() -> OnSession {
    Arc::new(|_rx: SockJsRx, mut tx: SockJsTx, _peer: Peer| {
        tokio::spawn(async move { tx.close().await });
    })
}

async fn serve(config: SockJsConfig, on_session: OnSession) -> SocketAddr {
    let app = Router::new().nest("/stomp", router(config, on_session));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    addr
}

async fn serve_echo() -> SocketAddr {
    serve(SockJsConfig::default(), echo()).await
}

fn sid() -> String {
    format!("s{:016x}", rand::random::<u64>())
}

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
}

/// A raw HTTP/1.1 client connection, one request per connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    status: u16,
    headers: Vec<(String, String)>,
    chunked: bool,
}

impl Conn {
    async fn send_request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        stream
    }

    async fn open(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Conn {
        let stream = Self::send_request(addr, method, path, headers, body).await;
        let mut conn = Conn { stream, buf: Vec::new(), status: 0, headers: Vec::new(), chunked: false };
        let head = conn.read_until(b"\r\n\r\n").await.expect("response head");
        let head = String::from_utf8(head).unwrap();
        let mut lines = head.split("\r\n");
        conn.status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        for line in lines.filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':').unwrap();
            conn.headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        conn.chunked = conn
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
        conn
    }

    /// Reads more bytes; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut tmp)).await.expect("read timed out").unwrap_or(0);
        self.buf.extend_from_slice(&tmp[..n]);
        n > 0
    }

    async fn read_until(&mut self, pat: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.windows(pat.len()).position(|w| w == pat) {
                let rest = self.buf.split_off(pos + pat.len());
                return Some(std::mem::replace(&mut self.buf, rest));
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        let rest = self.buf.split_off(n);
        Some(std::mem::replace(&mut self.buf, rest))
    }

    /// The next chunk of a chunked body; `None` at its end.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        assert!(self.chunked, "response is not chunked");
        let line = self.read_until(b"\r\n").await?;
        let size = usize::from_str_radix(std::str::from_utf8(&line).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return None;
        }
        let data = self.read_exact(size + 2).await?;
        Some(data[..size].to_vec())
    }

    async fn chunk_text(&mut self) -> Option<String> {
        self.chunk().await.map(|c| String::from_utf8(c).unwrap())
    }

    async fn finish(mut self) -> Resp {
        let mut body = Vec::new();
        if self.chunked {
            while let Some(c) = self.chunk().await {
                body.extend_from_slice(&c);
            }
        } else {
            while self.fill().await {}
            body = std::mem::take(&mut self.buf);
        }
        Resp { status: self.status, headers: self.headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    Conn::open(addr, method, path, headers, body).await.finish().await
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Resp {
    request(addr, "POST", path, &[], body.as_bytes()).await
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"").await
}

fn assert_no_cache(r: &Resp) {
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));
}

/// The default CORS answer: any origin, never credentials.
fn assert_cors(r: &Resp, origin: &str) {
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(r.header("access-control-allow-credentials"), None);
}

#[tokio::test]
async fn greeting_info_and_iframe() {
    let addr = serve_echo().await;
    let r = get(addr, "/stomp").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Welcome to SockJS!\n");
    assert_eq!(r.header("content-type"), Some(TEXT));
    assert!(r.header("set-cookie").is_none());

    let r = get(addr, "/stomp/info").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json; charset=UTF-8"));
    assert_no_cache(&r);
    assert_cors(&r, "*");
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(info["websocket"], true);
    assert_eq!(info["cookie_needed"], false);
    assert_eq!(info["origins"], serde_json::json!(["*:*"]));
    let e1 = info["entropy"].as_u64().unwrap();
    let r = get(addr, "/stomp/info").await;
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_ne!(info["entropy"].as_u64().unwrap(), e1);

    let r = get(addr, "/stomp/iframe.html").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(HTML));
    assert!(r.text().contains("SockJS.bootstrap_iframe()"));
    assert!(r.header("cache-control").unwrap().contains("max-age=31536000"));
    assert!(r.header("expires").unwrap().ends_with(" GMT"));
    let etag = r.header("etag").unwrap().to_owned();
    let r = request(addr, "GET", "/stomp/iframe.html", &[("If-None-Match", &etag)], b"").await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert!(r.header("content-type").is_none());
    for ok in ["/stomp/iframe-a.html", "/stomp/iframe-.html", "/stomp/iframe-0.1.2abc-dirty.2144.html?t=1"] {
        assert_eq!(get(addr, ok).await.status, 200, "{ok}");
    }
    for bad in ["/stomp/iframe.htm", "/stomp/IFRAME.HTML", "/stomp/iframe-/.html", "/stomp/a", "/stomp/a/a"] {
        assert_eq!(get(addr, bad).await.status, 404, "{bad}");
    }
}

#[tokio::test]
async fn info_reports_disabled_websocket() {
    let config = SockJsConfig { websocket: false, ..Default::default() };
    let addr = serve(config, echo()).await;
    let info: serde_json::Value = serde_json::from_slice(&get(addr, "/stomp/info").await.body).unwrap();
    assert_eq!(info["websocket"], false);
    assert_eq!(get(addr, "/stomp/000/abc/websocket").await.status, 404);
}

#[tokio::test]
async fn xhr_polling_echo() {
    let addr = serve_echo().await;
    let s = sid();
    let r = post(addr, &format!("/stomp/000/{s}/xhr"), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "o\n");
    assert_eq!(r.header("content-type"), Some(JS));
    assert_no_cache(&r);
    assert_cors(&r, "*");

    let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a"]"#).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), Some(TEXT));
    assert_no_cache(&r);
    // The server id is ignored.
    let r = post(addr, &format!("/stomp/999/{s}/xhr"), "").await;
    assert_eq!(r.text(), "a[\"a\"]\n");

    // A poll that waits gets the echo when it arrives.
    let path = format!("/stomp/000/{s}/xhr");
    let waiting = tokio::spawn(async move { post(addr, &path, "").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x\u2028y\"z"]"#).await;
    assert_eq!(r.status, 204);
    assert_eq!(waiting.await.unwrap().text(), "a[\"x\\u2028y\\\"z\"]\n");
}

#[tokio::test]
async fn invalid_session_paths() {
    let addr = serve_echo().await;
    for p in ["/stomp/a./a/xhr", "/stomp/a/a./xhr", "/stomp/./././xhr"] {
        assert_eq!(post(addr, p, "").await.status, 404, "{p}");
    }
    for p in ["/stomp/_/_/xhr", "/stomp/1/1/xhr", "/stomp/abcdefgh_i-j%20/abcdefg_i-j%20/xhr"] {
        let r = post(addr, p, "").await;
        assert_eq!((r.status, r.text().as_str()), (200, "o\n"), "{p}");
    }
}

#[tokio::test]
async fn xhr_send_errors() {
    let config = SockJsConfig { max_inbound_bytes: 1024, ..Default::default() };
    let addr = serve(config, echo()).await;
    let r = post(addr, "/stomp/000/bad_session/xhr_send", r#"["a"]"#).await;
    assert_eq!(r.status, 404);

    let s = sid();
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
    let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x"#).await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("Broken JSON encoding."));
    let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), "").await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("Payload expected."));
    let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"{"a":1}"#).await;
    assert_eq!(r.status, 500);

    // Oversize body: rejected, whether announced or not.
    let big = format!("[\"{}\"]", "x".repeat(2000));
    let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), &big).await;
    assert_eq!(r.status, 413);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /stomp/000/{s}/xhr_send HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 413"));

    let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a"]"#).await;
    assert_eq!(r.status, 204);
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "a[\"a\"]\n");
}

#[tokio::test]
async fn xhr_streaming_frames_and_limit() {
    let config = SockJsConfig { response_limit: 4096, ..Default::default() };
    let addr = serve(config, echo()).await;
    let s = sid();
    let mut c = Conn::open(addr, "POST", &format!("/stomp/000/{s}/xhr_streaming"), &[], b"").await;
    assert_eq!(c.status, 200);
    assert_eq!(c.header("content-type"), Some(JS));
    assert_eq!(c.header("cache-control"), Some(NO_CACHE));
    assert_eq!(c.header("access-control-allow-origin"), Some("*"));
    assert_eq!(c.chunk_text().await.unwrap(), format!("{}\n", "h".repeat(2048)));
    assert_eq!(c.chunk_text().await.unwrap(), "o\n");

    let msg = format!("\"{}\"", "x".repeat(128));
    for _ in 0..31 {
        let r = post(addr, &format!("/stomp/000/{s}/xhr_send"), &format!("[{msg}]")).await;
        assert_eq!(r.status, 204);
        assert_eq!(c.chunk_text().await.unwrap(), format!("a[{msg}]\n"));
    }
    // 4 KiB of frames delivered: the response ends.
    assert_eq!(c.chunk_text().await, None);

    // The session lives on: the next request continues it.
    let mut c = Conn::open(addr, "POST", &format!("/stomp/000/{s}/xhr_streaming"), &[], b"").await;
    c.chunk().await.unwrap();
    post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["again"]"#).await;
    assert_eq!(c.chunk_text().await.unwrap(), "a[\"again\"]\n");
}

#[tokio::test]
async fn eventsource_framing() {
    let addr = serve_echo().await;
    let s = sid();
    let mut c = Conn::open(addr, "GET", &format!("/stomp/000/{s}/eventsource"), &[], b"").await;
    assert_eq!(c.status, 200);
    assert_eq!(c.header("content-type"), Some("text/event-stream; charset=UTF-8"));
    assert_eq!(c.header("cache-control"), Some(NO_CACHE));
    assert_eq!(c.chunk_text().await.unwrap(), "\r\n");
    assert_eq!(c.chunk_text().await.unwrap(), "data: o\r\n\r\n");
    post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x"]"#).await;
    assert_eq!(c.chunk_text().await.unwrap(), "data: a[\"x\"]\r\n\r\n");
    post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["  \u0000\n\r "]"#).await;
    assert_eq!(c.chunk_text().await.unwrap(), "data: a[\"  \\u0000\\n\\r \"]\r\n\r\n");
}

#[tokio::test]
async fn htmlfile_and_jsonp() {
    let addr = serve_echo().await;
    let s = sid();
    let mut c = Conn::open(addr, "GET", &format!("/stomp/000/{s}/htmlfile?c=%63allback"), &[], b"").await;
    assert_eq!(c.status, 200);
    assert_eq!(c.header("content-type"), Some(HTML));
    let prelude = c.chunk_text().await.unwrap();
    assert!(prelude.len() > 1024);
    assert!(prelude.contains("var c = parent.callback;"));
    assert_eq!(c.chunk_text().await.unwrap(), "<script>\np(\"o\");\n</script>\r\n");
    post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x"]"#).await;
    assert_eq!(c.chunk_text().await.unwrap(), "<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n");
    let r = get(addr, "/stomp/a/a/htmlfile").await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("\"callback\" parameter required"));
    assert_eq!(get(addr, "/stomp/a/a/htmlfile?c=a(b)").await.status, 500);

    let s = sid();
    let r = get(addr, &format!("/stomp/000/{s}/jsonp?c=%63allback")).await;
    assert_eq!(r.header("content-type"), Some(JS));
    assert_no_cache(&r);
    assert_eq!(r.text(), "callback(\"o\");\r\n");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = request(addr, "POST", &format!("/stomp/000/{s}/jsonp_send"), &form, b"d=%5B%22x%22%5D").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    for bad in ["", "d=", "p=p"] {
        let r = request(addr, "POST", &format!("/stomp/000/{s}/jsonp_send"), &form, bad.as_bytes()).await;
        assert_eq!(r.status, 500);
        assert!(r.text().contains("Payload expected."));
    }
    let r = request(
        addr,
        "POST",
        &format!("/stomp/000/{s}/jsonp_send"),
        &[("Content-Type", "text/plain")],
        br#"["%61bc"]"#,
    )
    .await;
    assert_eq!(r.text(), "ok");
    let mut got = String::new();
    while !got.contains("%61bc") {
        got.push_str(&get(addr, &format!("/stomp/000/{s}/jsonp?c=x")).await.text());
    }
    assert!(got.starts_with("x(\"a[\\\"x\\\""), "{got}");
    assert!(got.ends_with("\\\"%61bc\\\"]\");\r\n"), "{got}");
}

#[tokio::test]
async fn second_receiver_gets_2010() {
    let addr = serve_echo().await;
    let s = sid();
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
    let path = format!("/stomp/000/{s}/xhr");
    let first = tokio::spawn(async move { post(addr, &path, "").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = post(addr, &format!("/stomp/000/{s}/xhr"), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "c[2010,\"Another connection still open\"]\n");
    // Streaming transports: prelude, then the close frame, then the end.
    let body = post(addr, &format!("/stomp/000/{s}/xhr_streaming"), "").await.text();
    assert_eq!(body, format!("{}\nc[2010,\"Another connection still open\"]\n", "h".repeat(2048)));
    // The first poll is unaffected.
    post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["x"]"#).await;
    assert_eq!(first.await.unwrap().text(), "a[\"x\"]\n");
}

#[tokio::test]
async fn app_close_sends_go_away() {
    let addr = serve(SockJsConfig::default(), closer()).await;
    let s = sid();
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
    for _ in 0..2 {
        assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "c[3000,\"Go away!\"]\n");
    }
    let s = sid();
    let mut c = Conn::open(addr, "POST", &format!("/stomp/000/{s}/xhr_streaming"), &[], b"").await;
    c.chunk().await.unwrap();
    assert_eq!(c.chunk_text().await.unwrap(), "o\n");
    assert_eq!(c.chunk_text().await.unwrap(), "c[3000,\"Go away!\"]\n");
    assert_eq!(c.chunk().await, None);

    let url = format!("ws://{addr}/stomp/000/{s}/websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("o"));
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("c[3000,\"Go away!\"]"));
    assert!(matches!(ws.next().await, Some(Ok(WsMsg::Close(_))) | None | Some(Err(_))));
}

#[tokio::test]
async fn session_times_out() {
    let config = SockJsConfig { disconnect_delay: Duration::from_millis(200), ..Default::default() };
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let on_session: OnSession = Arc::new(move |mut rx: SockJsRx, tx: SockJsTx, peer: Peer| {
        let ended_tx = ended_tx.clone();
        tokio::spawn(async move {
            let _tx = tx;
            let mut buf = BytesMut::new();
            while rx.recv(&mut buf).await.unwrap() > 0 {}
            ended_tx.send((buf, peer)).unwrap();
        });
    });
    let addr = serve(config, on_session).await;
    let s = sid();
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a","","b"]"#).await.status, 204);
    let start = Instant::now();
    let (got, peer) = tokio::time::timeout(WAIT, ended.recv()).await.unwrap().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(&got[..], b"ab");
    assert_eq!(peer.transport, crate::transport::Transport::SockJs);
    assert_eq!(peer.addr.unwrap().ip(), std::net::Ipv4Addr::LOCALHOST);
    // Gone: sends are refused and a poll opens a fresh session.
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a"]"#).await.status, 404);
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
}

#[tokio::test]
async fn waiting_poll_keeps_session_and_heartbeats() {
    let config = SockJsConfig {
        disconnect_delay: Duration::from_millis(100),
        heartbeat: Duration::from_millis(300),
        ..Default::default()
    };
    let addr = serve(config, echo()).await;
    let s = sid();
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
    // The poll outlives disconnect_delay, so the session stays; it ends with `h`.
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "h\n");
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr_send"), r#"["a"]"#).await.status, 204);
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "a[\"a\"]\n");
}

#[tokio::test]
async fn aborted_request_interrupts_session() {
    let config = SockJsConfig { heartbeat: Duration::from_millis(100), ..Default::default() };
    let addr = serve(config, echo()).await;
    let s = sid();
    let mut c = Conn::open(addr, "POST", &format!("/stomp/000/{s}/xhr_streaming"), &[], b"").await;
    c.chunk().await.unwrap();
    assert_eq!(c.chunk_text().await.unwrap(), "o\n");
    drop(c);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = post(addr, &format!("/stomp/000/{s}/xhr"), "").await;
        if r.text() == "c[1002,\"Connection interrupted\"]\n" {
            break;
        }
        assert_eq!(r.text(), "c[2010,\"Another connection still open\"]\n");
        assert!(Instant::now() < deadline, "abort not noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn overflow_closes_session() {
    let config = SockJsConfig { max_pending_messages: 4, ..Default::default() };
    let (res_tx, mut res_rx) = mpsc::unbounded_channel();
    let on_session: OnSession = Arc::new(move |rx: SockJsRx, mut tx: SockJsTx, _peer: Peer| {
        let res_tx = res_tx.clone();
        tokio::spawn(async move {
            let _rx = rx;
            let mut results = Vec::new();
            for i in 0..6 {
                let fed = tx.feed(Bytes::from(format!("m{i}"))).await;
                results.push(fed.and(tx.flush().await).is_ok());
            }
            res_tx.send(results).unwrap();
        });
    });
    let addr = serve(config, on_session).await;
    let s = sid();
    assert_eq!(post(addr, &format!("/stomp/000/{s}/xhr"), "").await.text(), "o\n");
    let results = tokio::time::timeout(WAIT, res_rx.recv()).await.unwrap().unwrap();
    assert_eq!(results, [true, true, true, true, false, false]);
    let r = post(addr, &format!("/stomp/000/{s}/xhr"), "").await;
    assert_eq!(r.text(), "c[3001,\"Too many pending messages\"]\n");
}

#[tokio::test]
async fn cors_preflight() {
    let addr = serve_echo().await;
    for path in ["/stomp/abc/abc/xhr", "/stomp/abc/abc/xhr_send", "/stomp/abc/abc/xhr_streaming", "/stomp/info"] {
        for origin in [None, Some("http://example.com"), Some("null")] {
            let mut h = vec![("Access-Control-Request-Headers", "content-type, x-a")];
            if let Some(o) = origin {
                h.push(("Origin", o));
            }
            let r = request(addr, "OPTIONS", path, &h, b"").await;
            assert_eq!(r.status, 204, "{path}");
            assert!(r.body.is_empty());
            assert_cors(&r, "*");
            assert_eq!(r.header("access-control-allow-headers"), Some("content-type, x-a"));
            let methods = if path.ends_with("info") { "OPTIONS, GET" } else { "OPTIONS, POST" };
            assert_eq!(r.header("access-control-allow-methods"), Some(methods));
            assert!(r.header("cache-control").unwrap().contains("public"));
            assert!(r.header("cache-control").unwrap().contains("max-age=31536000"));
            assert!(r.header("expires").is_some());
            assert!(r.header("access-control-max-age").unwrap().parse::<u64>().unwrap() > 1_000_000);
        }
    }
    let s = sid();
    let r = request(addr, "POST", &format!("/stomp/000/{s}/xhr"), &[("Origin", "http://a.example")], b"").await;
    assert_cors(&r, "*");
    assert!(r.header("access-control-allow-headers").is_none());
}

#[tokio::test]
async fn cors_allow_list_with_credentials() {
    let cors = Cors::new(&["http://a.example".into()], true);
    let addr = serve(SockJsConfig { cors, ..SockJsConfig::default() }, echo()).await;
    let r = request(addr, "OPTIONS", "/stomp/info", &[("Origin", "http://a.example")], b"").await;
    assert_eq!(r.header("access-control-allow-origin"), Some("http://a.example"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r =
        request(addr, "POST", &format!("/stomp/000/{}/xhr", sid()), &[("Origin", "http://evil.example")], b"").await;
    assert_eq!(r.status, 403, "an origin not listed is refused");
    let r = request(addr, "POST", &format!("/stomp/000/{}/xhr", sid()), &[], b"").await;
    assert_eq!(r.status, 200, "no Origin: not a browser, allowed");
}

#[tokio::test]
async fn websocket_framed_echo() {
    let addr = serve_echo().await;
    let url = format!("ws://{addr}/stomp/000/{}/websocket", sid());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("o"));
    ws.send(WsMsg::text("")).await.unwrap();
    ws.send(WsMsg::text(r#"["a"]"#)).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text(r#"a["a"]"#));
    ws.send(WsMsg::text(r#""b""#)).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text(r#"a["b"]"#));
    ws.send(WsMsg::text("[\"\u{2028}\u{1F600}\\ufff0\"]")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text(r#"a["\u2028\ud83d\ude00\ufff0"]"#));
    // A session id may be reused over websockets.
    let (mut ws2, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(ws2.next().await.unwrap().unwrap(), WsMsg::text("o"));
    ws2.send(WsMsg::text(r#"["c"]"#)).await.unwrap();
    assert_eq!(ws2.next().await.unwrap().unwrap(), WsMsg::text(r#"a["c"]"#));
    // Broken JSON: the connection is dropped.
    ws.send(WsMsg::text(r#"["a"#)).await.unwrap();
    assert!(matches!(ws.next().await, None | Some(Err(_))));

    let r = get(addr, "/stomp/0/0/websocket").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Can \"Upgrade\" only to \"WebSocket\"."));
    assert_eq!(post(addr, "/stomp/0/0/websocket", "").await.status, 405);
}

#[tokio::test]
async fn websocket_heartbeat_and_size_limit() {
    let config = SockJsConfig { heartbeat: Duration::from_millis(100), max_inbound_bytes: 1024, ..Default::default() };
    let addr = serve(config, echo()).await;
    let url = format!("ws://{addr}/stomp/000/{}/websocket", sid());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("o"));
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("h"));
    let big = format!("[\"{}\"]", "x".repeat(2000));
    ws.send(WsMsg::text(big)).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(WsMsg::Text(t))) => assert_eq!(t.as_str(), "h"),
            Some(Ok(WsMsg::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_raw_echo() {
    let addr = serve_echo().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/stomp/websocket")).await.unwrap();
    ws.send(WsMsg::text("Hello world!\u{ffff}")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("Hello world!\u{ffff}"));
    ws.send(WsMsg::text("[\"not parsed\"]")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), WsMsg::text("[\"not parsed\"]"));
    ws.close(None).await.unwrap();

    let addr = serve(SockJsConfig::default(), closer()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/stomp/websocket")).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(WsMsg::Close(_))) | None | Some(Err(_))));
}

/// An idle SockJS session is this struct behind one `Arc`: it must not
/// grow. 192 bytes (its state 104) before and after the module was split.
#[test]
fn idle_session_does_not_grow() {
    use std::mem::size_of;
    eprintln!(
        "SIZE sockjs Session={} SessionState={} SockJsRx={} SockJsTx={}",
        size_of::<session::Session>(),
        size_of::<session::SessionState>(),
        size_of::<SockJsRx>(),
        size_of::<SockJsTx>()
    );
    assert!(size_of::<session::Session>() <= 192);
    assert!(size_of::<SockJsRx>() <= 48 && size_of::<SockJsTx>() <= 32);
}
