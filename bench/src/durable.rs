//! The durability scenarios of issue 15, over one STOMP/TCP client for
//! Herald and RabbitMQ alike:
//!
//! - **D1**: persistent SENDs (`persistent:true`) with a receipt to a durable
//!   queue (`/queue/<name>`, which both servers declare durable). A receipt
//!   is the server's word that the message is stored: RabbitMQ answers it
//!   from a publisher confirm (after its fsync), Herald after the message's
//!   `Durable` ticket. Two phases: one publisher waiting for each receipt
//!   (latency), then several publishers keeping a window of receipts
//!   outstanding (throughput). Then a consumer drains the queues and counts,
//!   so a receipt for a message that is not there shows up as lost.
//! - **R1**: recovery of missed messages from history. A subscriber notes the
//!   last `x-stream-offset`, goes away, `--missed` messages are published, and
//!   it comes back with `x-stream-offset: <last+1>`; the time from that
//!   SUBSCRIBE to the last replayed MESSAGE, repeated. Herald: its feed
//!   history (`/exchange/feed/<uid>`, `x-stream-epoch`, RECEIPT
//!   `x-recovered`). RabbitMQ: a stream queue (`x-queue-type: stream`),
//!   consumed from an offset.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::{json, Value};

use crate::conn::{err, Conn};
use crate::hist::Hist;
use crate::orch::RunArgs;
use crate::stats::{mono_ns, payload};
use crate::stomp::{self, Frame};
use crate::worker::{self, Proto, Target};

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn row(cells: &[String]) {
    println!("| {} |", cells.join(" | "));
}

/// A publisher's STOMP/TCP connection without heart-beats (runs are short).
async fn open(t: &Target, user: &str) -> io::Result<(Conn, BytesMut)> {
    let mut t = t.clone();
    t.proto = Proto::StompTcp;
    t.heartbeat_ms = 0;
    let (c, buf, _) = worker::stomp_open(&t, None, user, "").await?;
    Ok((c, buf))
}

/// Reads the next frame; ERROR fails with its message.
async fn next(c: &mut Conn, buf: &mut BytesMut, limit: Duration) -> io::Result<Frame> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(f) = stomp::parse(buf)? {
            if f.command == "ERROR" {
                let m = f.header("message").unwrap_or("").to_owned();
                return Err(err(format!("ERROR {m}: {}", String::from_utf8_lossy(&f.body).trim())));
            }
            return Ok(f);
        }
        tokio::time::timeout_at(deadline, c.recv(buf)).await.map_err(|_| err("timed out waiting for a frame"))??;
    }
}

fn persistent_send(dest: &str, receipt: &str, body: &str) -> Vec<u8> {
    stomp::frame("SEND", &[("destination", dest), ("persistent", "true"), ("receipt", receipt)], body)
}

/// Receipt ids are `<publisher>-<seq>`.
fn receipt_seq(f: &Frame) -> Option<usize> {
    f.header("receipt-id")?.rsplit('-').next()?.parse().ok()
}

// ---------------------------------------------------------------- D1

/// One publisher, `n` messages, at most `window` receipts outstanding;
/// records send → receipt latency of each. Returns the receipts seen.
/// One publisher's share of a phase.
struct Job {
    dest: String,
    id: usize,
    n: usize,
    window: usize,
    size: usize,
}

async fn publish(t: &Target, user: &str, job: Job, hist: &mut Hist) -> io::Result<usize> {
    let Job { dest, id, n, window, size } = job;
    let dest = dest.as_str();
    let (mut c, mut buf) = open(t, user).await?;
    let mut sent_at = vec![0u64; n];
    let (mut sent, mut confirmed) = (0usize, 0usize);
    while confirmed < n {
        let mut batch = Vec::new();
        while sent < n && sent - confirmed < window.max(1) {
            sent_at[sent] = mono_ns();
            batch.extend_from_slice(&persistent_send(dest, &format!("{id}-{sent}"), &payload(sent as u64, size)));
            sent += 1;
        }
        if !batch.is_empty() {
            c.send(&batch).await?;
        }
        // At least one receipt, then whatever else is already here.
        let f = next(&mut c, &mut buf, Duration::from_secs(60)).await?;
        let mut frames = vec![f];
        while let Some(f) = stomp::parse(&mut buf)? {
            frames.push(f);
        }
        let now = mono_ns();
        for f in frames {
            match (f.command.as_str(), receipt_seq(&f)) {
                ("RECEIPT", Some(s)) if s < n => {
                    hist.record(now.saturating_sub(sent_at[s]) / 1000);
                    confirmed += 1;
                }
                ("ERROR", _) => return Err(err(format!("ERROR {}", f.header("message").unwrap_or("")))),
                _ => {}
            }
        }
    }
    c.close().await;
    Ok(confirmed)
}

struct Phase {
    confirmed: usize,
    secs: f64,
    hist: Hist,
    /// Journal syncs and tickets during the phase (Herald's /metrics).
    syncs: Option<(u64, u64)>,
}

/// `herald_disk_syncs_total` and `herald_disk_tickets_total` from Herald's
/// `/metrics` at `addr`; `None` when there is no such endpoint (RabbitMQ).
async fn disk_counters(addr: Option<std::net::SocketAddr>) -> Option<(u64, u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr?).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    // `name value` or, with the `node` label every series carries, `name{node="…"} value`.
    let value = |name: &str| {
        body.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(name)?;
                let rest = if rest.starts_with('{') { rest.split_once('}')?.1 } else { rest };
                rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
            })
            .map(|v| v as u64)
    };
    Some((value("herald_disk_syncs_total")?, value("herald_disk_tickets_total")?))
}

/// `publishers` connections of `per` messages each, `window` outstanding each.
async fn phase(a: &RunArgs, dest: &str, publishers: usize, per: usize, window: usize) -> io::Result<Phase> {
    let user = format!("{}pub", a.target.prefix);
    let before = disk_counters(a.metrics).await;
    let t0 = Instant::now();
    let jobs = (0..publishers).map(|id| {
        let (t, user) = (a.target.clone(), user.clone());
        let job = Job { dest: dest.to_owned(), id, n: per, window, size: a.payload };
        async move {
            let mut h = Hist::default();
            let r = publish(&t, &user, job, &mut h).await;
            r.map(|n| (n, h))
        }
    });
    let results = futures_util::future::join_all(jobs).await;
    let secs = t0.elapsed().as_secs_f64();
    let syncs = match (before, disk_counters(a.metrics).await) {
        (Some(b), Some(e)) => Some((e.0 - b.0, e.1 - b.1)),
        _ => None,
    };
    let mut p = Phase { confirmed: 0, secs, hist: Hist::default(), syncs };
    for r in results {
        let (n, h) = r?;
        p.confirmed += n;
        p.hist.merge_json(&h.to_json());
    }
    Ok(p)
}

/// Subscribes to `dest` and counts MESSAGEs until `expected` or 3 s of silence.
/// Client acks with a prefetch: an `ack:auto` consumer of a deep queue is
/// handed the whole backlog at once, which Herald refuses as a slow consumer.
async fn drain(t: &Target, user: &str, dest: &str, expected: usize) -> io::Result<usize> {
    let (mut c, mut buf) = open(t, user).await?;
    c.send(&stomp::frame(
        "SUBSCRIBE",
        &[("id", "drain"), ("destination", dest), ("ack", "client"), ("prefetch-count", "1000"), ("receipt", "drain")],
        "",
    ))
    .await?;
    let mut got = 0;
    while got < expected {
        match next(&mut c, &mut buf, Duration::from_secs(3)).await {
            Ok(f) if f.command == "MESSAGE" => {
                got += 1;
                if got % 250 == 0 || got == expected {
                    // Cumulative: acks this one and every one before it.
                    if let Some(id) = f.header("ack") {
                        c.send(&stomp::frame("ACK", &[("id", id)], "")).await?;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if got < expected {
                    eprintln!("d1 drain {dest}: {got} of {expected}: {e}");
                }
                break;
            }
        }
    }
    c.close().await;
    Ok(got)
}

pub async fn d1(a: &RunArgs) -> io::Result<Value> {
    let stamp = mono_ns() % 1_000_000_000;
    let serial_q = format!("/queue/bench-d1-serial-{stamp}");
    let piped_q = format!("/queue/bench-d1-piped-{stamp}");
    let user = format!("{}pub", a.target.prefix);
    let per = a.messages / a.publishers.max(1);

    let serial = phase(a, &serial_q, 1, a.serial_messages, 1).await?;
    let piped = phase(a, &piped_q, a.publishers.max(1), per, a.window).await?;
    let stored_serial = drain(&a.target, &user, &serial_q, serial.confirmed).await?;
    let stored_piped = drain(&a.target, &user, &piped_q, piped.confirmed).await?;

    let mut phases = Vec::new();
    for (name, p, stored, pubs, window) in
        [("serial", &serial, stored_serial, 1, 1), ("pipelined", &piped, stored_piped, a.publishers.max(1), a.window)]
    {
        let rate = p.confirmed as f64 / p.secs.max(1e-9);
        let (p50, p99) = (ms(p.hist.quantile(0.5)), ms(p.hist.quantile(0.99)));
        let syncs = match p.syncs {
            Some((s, t)) => format!(", {s} journal syncs for {t} tickets"),
            None => String::new(),
        };
        row(&[
            "D1".into(),
            a.server.clone(),
            format!("{name} ({pubs} publisher(s), window {window})"),
            format!("{rate:.0} confirmed msgs/s"),
            format!("receipt p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.1} ms", ms(p.hist.max())),
            format!("{} confirmed, {stored} stored, {} lost{syncs}", p.confirmed, p.confirmed.saturating_sub(stored)),
        ]);
        phases.push(json!({"phase": name, "publishers": pubs, "window": window, "confirmed": p.confirmed,
            "secs": p.secs, "msgs_per_s": rate, "p50_ms": p50, "p99_ms": p99, "max_ms": ms(p.hist.max()),
            "stored": stored, "lost": p.confirmed.saturating_sub(stored),
            "syncs": p.syncs.map(|s| s.0), "tickets": p.syncs.map(|s| s.1)}));
    }
    Ok(json!({"scenario": "d1", "payload": a.payload, "phases": phases}))
}

// ---------------------------------------------------------------- R1

/// How the server keeps and replays a per-user stream.
enum Stream {
    /// Herald: the history of `/exchange/feed/<uid>`.
    HeraldFeed { dest: String },
    /// RabbitMQ: a stream queue; published through the default exchange.
    RabbitStream { queue: String },
}

impl Stream {
    fn publish_dest(&self) -> String {
        match self {
            Stream::HeraldFeed { dest } => dest.clone(),
            Stream::RabbitStream { queue } => format!("/amq/queue/{queue}"),
        }
    }

    /// The SUBSCRIBE frame starting at `offset` (`next`, `first` or a number).
    fn subscribe(&self, id: &str, offset: &str, epoch: Option<&str>, receipt: &str) -> Vec<u8> {
        match self {
            Stream::HeraldFeed { dest } => {
                let mut h = vec![("id", id), ("destination", dest.as_str()), ("ack", "auto"), ("receipt", receipt)];
                h.push(("x-stream-offset", offset));
                if let Some(e) = epoch {
                    h.push(("x-stream-epoch", e));
                }
                stomp::frame("SUBSCRIBE", &h, "")
            }
            // A stream consumer must ack (client) and set a prefetch; the
            // first SUBSCRIBE declares the stream.
            Stream::RabbitStream { queue } => {
                let d = format!("/queue/{queue}");
                // RabbitMQ's STOMP plugin takes a numeric offset as `offset=<n>`
                // (a bare number reads as an unknown spec and means `next`).
                let numeric = offset.bytes().all(|b| b.is_ascii_digit());
                let offset = if numeric { format!("offset={offset}") } else { offset.to_owned() };
                let offset = offset.as_str();
                stomp::frame(
                    "SUBSCRIBE",
                    &[
                        ("id", id),
                        ("destination", &d),
                        ("ack", "client"),
                        ("prefetch-count", "1000"),
                        ("durable", "true"),
                        ("auto-delete", "false"),
                        ("x-queue-type", "stream"),
                        ("x-stream-offset", offset),
                        ("receipt", receipt),
                    ],
                    "",
                )
            }
        }
    }
}

/// Publishes `n` messages on `dest` (persistent, the last with a receipt,
/// which STOMP answers after every SEND before it on the connection).
async fn publish_missed(c: &mut Conn, buf: &mut BytesMut, dest: &str, n: usize, size: usize) -> io::Result<()> {
    let mut all = Vec::new();
    for i in 0..n {
        let body = payload(i as u64, size);
        if i + 1 == n {
            all.extend_from_slice(&persistent_send(dest, "missed-last", &body));
        } else {
            all.extend_from_slice(&stomp::frame("SEND", &[("destination", dest), ("persistent", "true")], &body));
        }
    }
    c.send(&all).await?;
    loop {
        let f = next(c, buf, Duration::from_secs(30)).await?;
        if f.command == "RECEIPT" {
            return Ok(());
        }
    }
}

struct Recovery {
    us: u64,
    got: usize,
    in_order: bool,
    recovered: Option<String>,
    last: Option<(u64, Option<String>)>,
}

/// SUBSCRIBE from `offset` on a fresh connection; waits for `n` MESSAGEs.
async fn resubscribe(
    t: &Target,
    user: &str,
    s: &Stream,
    offset: &str,
    epoch: Option<&str>,
    n: usize,
) -> io::Result<Recovery> {
    let (mut c, mut buf) = open(t, user).await?;
    let t0 = Instant::now();
    c.send(&s.subscribe("r1", offset, epoch, "r1")).await?;
    let mut r = Recovery { us: 0, got: 0, in_order: true, recovered: None, last: None };
    let mut acked = None;
    let expect_first: Option<u64> = offset.parse().ok();
    while r.got < n {
        let f = match next(&mut c, &mut buf, Duration::from_secs(2)).await {
            Ok(f) => f,
            Err(_) => break,
        };
        if std::env::var_os("R1_DEBUG").is_some() {
            eprintln!("r1: {} {:?}", f.command, f.headers);
        }
        match f.command.as_str() {
            "RECEIPT" => r.recovered = f.header("x-recovered").map(str::to_owned),
            "MESSAGE" => {
                let off = f.header("x-stream-offset").and_then(|v| v.parse::<u64>().ok());
                if let (Some(first), Some(o)) = (expect_first, off) {
                    r.in_order &= o == first + r.got as u64;
                }
                r.got += 1;
                acked = f.header("ack").map(str::to_owned);
                r.last = off.map(|o| (o, f.header("x-stream-epoch").map(str::to_owned)));
                if r.got == n {
                    r.us = t0.elapsed().as_micros() as u64;
                }
            }
            _ => {}
        }
    }
    if let Some(id) = acked {
        // RabbitMQ's stream consumer (ack:client): a cumulative ack before leaving.
        let _ = c.send(&stomp::frame("ACK", &[("id", &id)], "")).await;
    }
    c.close().await;
    Ok(r)
}

pub async fn r1(a: &RunArgs) -> io::Result<Value> {
    let user = format!("{}0", a.target.prefix);
    let publisher = format!("{}pub", a.target.prefix);
    let stamp = mono_ns() % 1_000_000_000;
    let s = if a.server == "rabbitmq" {
        Stream::RabbitStream { queue: format!("bench-r1-{stamp}") }
    } else {
        Stream::HeraldFeed { dest: a.target.dest.replace("{uid}", &user) }
    };
    let pub_dest = s.publish_dest();
    let (mut pc, mut pbuf) = open(&a.target, &publisher).await?;

    // Where the stream is now: subscribe from `next`, publish one, note its offset.
    let (mut c, mut buf) = open(&a.target, &user).await?;
    c.send(&s.subscribe("r0", "next", None, "r0")).await?;
    loop {
        if next(&mut c, &mut buf, Duration::from_secs(10)).await?.command == "RECEIPT" {
            break;
        }
    }
    publish_missed(&mut pc, &mut pbuf, &pub_dest, 1, a.payload).await?;
    let mut last: Option<(u64, Option<String>)> = loop {
        let f = next(&mut c, &mut buf, Duration::from_secs(10)).await?;
        if f.command == "MESSAGE" {
            if let Some(id) = f.header("ack") {
                c.send(&stomp::frame("ACK", &[("id", id)], "")).await?;
            }
            break f.header("x-stream-offset").and_then(|v| v.parse().ok()).map(|o| {
                let e = f.header("x-stream-epoch").map(str::to_owned);
                (o, e)
            });
        }
    };
    c.close().await;

    let mut hist = Hist::default();
    let (mut complete, mut gaps, mut partial) = (0usize, 0usize, Vec::new());
    let mut recovered: HashMap<String, usize> = HashMap::new();
    for i in 0..a.repeats {
        let Some((off, epoch)) = last.clone() else {
            return Err(err("the server sent no x-stream-offset header: no history to recover from"));
        };
        publish_missed(&mut pc, &mut pbuf, &pub_dest, a.missed, a.payload).await?;
        let from = (off + 1).to_string();
        let r = resubscribe(&a.target, &user, &s, &from, epoch.as_deref(), a.missed).await?;
        *recovered.entry(r.recovered.clone().unwrap_or_else(|| "-".into())).or_default() += 1;
        if r.got == a.missed {
            complete += 1;
            hist.record(r.us);
            last = r.last.clone();
        } else {
            partial.push(r.got);
            // Catch up on where the stream is, so the next round starts clean.
            last = r.last.clone().or(last);
            if r.got == 0 {
                last = last.map(|(o, e)| (o + a.missed as u64, e));
            }
        }
        if !r.in_order {
            gaps += 1;
        }
        if i == 0 {
            eprintln!("r1 {}: first round {} of {} in {:.2} ms", a.server, r.got, a.missed, ms(r.us));
        }
    }
    pc.close().await;
    let (p50, p99) = (ms(hist.quantile(0.5)), ms(hist.quantile(0.99)));
    row(&[
        "R1".into(),
        a.server.clone(),
        match s {
            Stream::HeraldFeed { .. } => "feed history".into(),
            Stream::RabbitStream { .. } => "stream queue".into(),
        },
        format!("{} missed: p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms", a.missed, ms(hist.max())),
        format!("{complete} of {} rounds complete, {gaps} out of order, x-recovered {recovered:?}", a.repeats),
    ]);
    Ok(json!({"scenario": "r1", "missed": a.missed, "repeats": a.repeats, "complete": complete,
        "partial": partial, "out_of_order": gaps, "recovered": recovered,
        "p50_ms": p50, "p99_ms": p99, "max_ms": ms(hist.max()) }))
}
