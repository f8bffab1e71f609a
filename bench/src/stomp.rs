//! A minimal STOMP 1.2 client: just what the scenarios need (CONNECT,
//! SUBSCRIBE with a receipt, SEND, heart-beats, DISCONNECT), over TCP or
//! WebSocket. The same code talks to Herald and RabbitMQ.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};

use crate::conn::{err, Conn};
use crate::stats::SharedStats;

pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: BytesMut,
}

impl Frame {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Takes one frame off the front of `buf`; `None` when it is incomplete.
/// Leading EOLs (heart-beats) are skipped.
pub fn parse(buf: &mut BytesMut) -> io::Result<Option<Frame>> {
    let skip = buf.iter().take_while(|b| **b == b'\n' || **b == b'\r').count();
    buf.advance(skip);
    if buf.is_empty() {
        return Ok(None);
    }
    let Some(head_end) = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2))
        .or_else(|| buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p, p + 4)))
    else {
        if buf.len() > 64 * 1024 {
            return Err(err("STOMP header block too long"));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end.0]).into_owned();
    let mut lines = head.lines();
    let command = lines.next().unwrap_or("").trim().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_owned(), v.trim_end_matches('\r').to_owned())))
        .collect();
    let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    let body_start = head_end.1;
    let body_end = match len {
        Some(n) => {
            if buf.len() < body_start + n + 1 {
                return Ok(None);
            }
            body_start + n
        }
        None => match buf[body_start..].iter().position(|b| *b == 0) {
            Some(p) => body_start + p,
            None => return Ok(None),
        },
    };
    let mut frame = buf.split_to(body_end + 1);
    frame.truncate(body_end);
    let body = frame.split_off(body_start);
    Ok(Some(Frame { command, headers, body }))
}

pub fn frame(command: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut f = String::with_capacity(64 + body.len());
    f.push_str(command);
    f.push('\n');
    for (k, v) in headers {
        f.push_str(k);
        f.push(':');
        f.push_str(v);
        f.push('\n');
    }
    if !body.is_empty() {
        f.push_str(&format!("content-length:{}\n", body.len()));
    }
    f.push('\n');
    f.push_str(body);
    f.push('\0');
    f.into_bytes()
}

/// Reads frames until one with `command` arrives; ERROR fails.
pub async fn expect(conn: &mut Conn, buf: &mut BytesMut, command: &str) -> io::Result<Frame> {
    loop {
        while let Some(f) = parse(buf)? {
            if f.command == command {
                return Ok(f);
            }
            if f.command == "ERROR" {
                let msg = f.header("message").unwrap_or("").to_owned();
                return Err(err(format!("ERROR {msg}: {}", String::from_utf8_lossy(&f.body).trim())));
            }
        }
        conn.recv(buf).await?;
    }
}

/// CONNECT and wait for CONNECTED; returns the interval (ms) at which the
/// client must send heart-beats (0 = none).
pub async fn login(
    conn: &mut Conn,
    buf: &mut BytesMut,
    vhost: &str,
    user: &str,
    pass: &str,
    hb_ms: u64,
) -> io::Result<u64> {
    let hb = format!("{hb_ms},{hb_ms}");
    conn.send(&frame(
        "CONNECT",
        &[("accept-version", "1.2"), ("host", vhost), ("login", user), ("passcode", pass), ("heart-beat", &hb)],
        "",
    ))
    .await?;
    let f = expect(conn, buf, "CONNECTED").await?;
    // The server's heart-beat header is "sx,sy": sy is how often it wants to hear from us.
    let sy = f
        .header("heart-beat")
        .and_then(|h| h.split(',').nth(1))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(if hb_ms == 0 || sy == 0 { 0 } else { hb_ms.max(sy) })
}

/// SUBSCRIBE with a receipt, so the binding exists when this returns.
pub async fn subscribe(conn: &mut Conn, buf: &mut BytesMut, dest: &str) -> io::Result<()> {
    subscribe_id(conn, buf, dest, "0").await
}

/// SUBSCRIBE with subscription id `id` and a receipt.
pub async fn subscribe_id(conn: &mut Conn, buf: &mut BytesMut, dest: &str, id: &str) -> io::Result<()> {
    let receipt = format!("sub-{id}");
    conn.send(&frame("SUBSCRIBE", &[("id", id), ("destination", dest), ("ack", "auto"), ("receipt", &receipt)], ""))
        .await?;
    expect(conn, buf, "RECEIPT").await.map(|_| ())
}

/// A logged-in, subscribed session: counts MESSAGE frames until the server
/// closes it; sends heart-beats.
pub async fn run(mut conn: Conn, mut buf: BytesMut, hb_ms: u64, stats: SharedStats) {
    let mut ticker = tokio::time::interval(Duration::from_millis(hb_ms.max(1)));
    ticker.tick().await;
    let why = loop {
        tokio::select! {
            r = conn.recv(&mut buf) => {
                if let Err(e) = r { break e.to_string(); }
                loop {
                    match parse(&mut buf) {
                        Ok(Some(f)) if f.command == "MESSAGE" => stats.borrow_mut().delivered(&f.body),
                        Ok(Some(f)) if f.command == "ERROR" => {
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => { stats.borrow_mut().session_closed(e.to_string()); return; }
                    }
                }
                // Release the read buffer's memory once drained (idle sessions stay small).
                if buf.is_empty() && buf.capacity() > 16 * 1024 { buf = BytesMut::new(); }
            }
            _ = ticker.tick(), if hb_ms > 0 => {
                if let Err(e) = conn.send(b"\n").await { break e.to_string(); }
            }
        }
    };
    stats.borrow_mut().session_closed(why);
}
