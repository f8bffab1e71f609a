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

/// Where one complete frame lies at the front of a buffer, found without
/// allocating: a session receiving a fan-out parses every MESSAGE, and the
/// generator shares the machine with the servers it measures.
struct Span {
    /// The command line and the header block (after any leading EOLs).
    head: std::ops::Range<usize>,
    body: std::ops::Range<usize>,
}

impl Span {
    /// Bytes the frame takes, leading EOLs and the trailing NUL included.
    fn len(&self) -> usize {
        self.body.end + 1
    }
}

/// Finds the frame at the front of `buf`; `None` when it is incomplete
/// (or `buf` holds only heart-beats).
fn scan(buf: &[u8]) -> io::Result<Option<Span>> {
    let skip = buf.iter().take_while(|b| **b == b'\n' || **b == b'\r').count();
    let f = &buf[skip..];
    if f.is_empty() {
        return Ok(None);
    }
    // The blank line ends the headers: an EOL (LF or CR LF) right after one.
    let blank = line_feeds(f).find_map(|i| match f.get(i + 1..) {
        Some([b'\n', ..]) => Some((i, i + 2)),
        Some([b'\r', b'\n', ..]) => Some((i, i + 3)),
        _ => None,
    });
    let Some((head_end, body_start)) = blank else {
        if f.len() > 64 * 1024 {
            return Err(err("STOMP header block too long"));
        }
        return Ok(None);
    };
    let len = f[..head_end]
        .split(|b| *b == b'\n')
        .skip(1)
        .find_map(|l| l.strip_prefix(b"content-length:"))
        .and_then(|v| std::str::from_utf8(v).ok()?.trim_end_matches('\r').parse::<usize>().ok());
    let body_end = match len {
        Some(n) if n >= 64 * 1024 * 1024 => return Err(err("STOMP content-length too large")),
        Some(n) if f.len() < body_start + n + 1 => return Ok(None),
        Some(n) => body_start + n,
        None => match f[body_start..].iter().position(|b| *b == 0) {
            Some(p) => body_start + p,
            None => return Ok(None),
        },
    };
    Ok(Some(Span { head: skip..skip + head_end, body: skip + body_start..skip + body_end }))
}

/// Positions of the LFs in `f`.
fn line_feeds(f: &[u8]) -> impl Iterator<Item = usize> + '_ {
    f.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i)
}

/// The command of a scanned frame (its first line).
fn command<'a>(buf: &'a [u8], span: &Span) -> &'a [u8] {
    let head = &buf[span.head.clone()];
    let line = head.split(|b| *b == b'\n').next().unwrap_or(b"");
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Takes one frame off the front of `buf`; `None` when it is incomplete.
/// Leading EOLs (heart-beats) are skipped.
pub fn parse(buf: &mut BytesMut) -> io::Result<Option<Frame>> {
    let Some(span) = scan(buf)? else {
        let skip = buf.iter().take_while(|b| **b == b'\n' || **b == b'\r').count();
        buf.advance(skip);
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[span.head.clone()]).into_owned();
    let mut lines = head.lines();
    let command = lines.next().unwrap_or("").trim().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_owned(), v.trim_end_matches('\r').to_owned())))
        .collect();
    let mut frame = buf.split_to(span.len());
    frame.truncate(span.body.end);
    let body = frame.split_off(span.body.start);
    Ok(Some(Frame { command, headers, body }))
}

/// What a subscribed session makes of the frames at the front of `buf`.
enum Seen {
    /// A MESSAGE: its body is handed to the callback.
    Message,
    Error,
    Other,
}

/// Consumes one frame from the front of `buf` without allocating, giving a
/// MESSAGE's body to `on_message`; `None` when no complete frame is there.
fn take(buf: &mut BytesMut, on_message: impl FnOnce(&[u8])) -> io::Result<Option<Seen>> {
    let Some(span) = scan(buf)? else {
        let skip = buf.iter().take_while(|b| **b == b'\n' || **b == b'\r').count();
        buf.advance(skip);
        return Ok(None);
    };
    let seen = match command(buf, &span) {
        b"MESSAGE" => {
            on_message(&buf[span.body.clone()]);
            Seen::Message
        }
        b"ERROR" => Seen::Error,
        _ => Seen::Other,
    };
    buf.advance(span.len());
    Ok(Some(seen))
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
                    match take(&mut buf, |body| stats.borrow_mut().delivered(body)) {
                        Ok(Some(Seen::Message | Seen::Other)) => {}
                        Ok(Some(Seen::Error)) | Ok(None) => break,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_reads_messages_without_copying_and_keeps_partial_frames() {
        let msg = frame("MESSAGE", &[("destination", "/topic/a"), ("subscription", "0")], "a\0b");
        let mut buf = BytesMut::from(&b"\n\r\n"[..]);
        buf.extend_from_slice(&msg);
        buf.extend_from_slice(&frame("RECEIPT", &[("receipt-id", "r")], ""));
        buf.extend_from_slice(&msg[..msg.len() - 3]);
        let mut bodies = Vec::new();
        let mut seen = Vec::new();
        while let Some(s) = take(&mut buf, |b| bodies.push(b.to_vec())).unwrap() {
            seen.push(matches!(s, Seen::Message));
        }
        // content-length lets the body hold a NUL; the cut-off third frame waits.
        assert_eq!(bodies, vec![b"a\0b".to_vec()]);
        assert_eq!(seen, vec![true, false]);
        assert_eq!(&buf[..], &msg[..msg.len() - 3]);
        buf.extend_from_slice(&msg[msg.len() - 3..]);
        assert!(matches!(take(&mut buf, |_| {}).unwrap(), Some(Seen::Message)));
        assert!(buf.is_empty());
    }

    #[test]
    fn parse_and_take_agree_on_frames_without_content_length() {
        let raw = b"ERROR\r\nmessage:bad\r\n\r\noops\0MESSAGE\nx:y\n\nbody\0";
        let mut a = BytesMut::from(&raw[..]);
        let e = parse(&mut a).unwrap().unwrap();
        assert_eq!((e.command.as_str(), e.header("message"), &e.body[..]), ("ERROR", Some("bad"), &b"oops"[..]));
        let m = parse(&mut a).unwrap().unwrap();
        assert_eq!((m.command.as_str(), &m.body[..]), ("MESSAGE", &b"body"[..]));
        let mut b = BytesMut::from(&raw[..]);
        assert!(matches!(take(&mut b, |_| panic!("not a MESSAGE")).unwrap(), Some(Seen::Error)));
        let mut body = Vec::new();
        assert!(matches!(take(&mut b, |x| body = x.to_vec()).unwrap(), Some(Seen::Message)));
        assert_eq!(body, b"body");
        assert!(a.is_empty() && b.is_empty());
    }
}
