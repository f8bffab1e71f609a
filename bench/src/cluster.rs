//! The cluster scenarios of issue 17: S5 (many idle sessions spread over
//! several nodes, plus Redis) and S6 (pushes and fan-out with the publisher
//! on one node and the subscribers on the others, against Herald or
//! Socket.IO with its Redis adapter). Both reuse the worker pool of
//! `orch.rs`; what is new is spreading workers over nodes (`--sub-addrs`),
//! summing several server processes, and reading Redis's own CPU and memory
//! with `INFO`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::err;
use crate::orch::{self, cpu_ticks, paced, row, rss_kib, subscribers, us_to_ms, Pool, Pub, Publisher, RunArgs};
use crate::stats::payload;
use crate::worker::Proto;

// ------------------------------------------------------------------ Redis

/// `INFO <section>` as key → value (an inline command, read as one bulk reply).
pub async fn redis_info(addr: SocketAddr, section: &str) -> io::Result<HashMap<String, String>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("INFO {section}\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    let body = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(err("redis closed the connection"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
                let head = std::str::from_utf8(&buf[..eol]).map_err(io::Error::other)?;
                let len: usize =
                    head.strip_prefix('$').and_then(|l| l.parse().ok()).ok_or_else(|| err(format!("INFO: {head}")))?;
                if buf.len() >= eol + 2 + len {
                    return Ok(String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]).into_owned());
                }
            }
        }
    })
    .await
    .map_err(|_| err("INFO timed out"))??;
    Ok(body.lines().filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_owned(), v.trim().to_owned()))).collect())
}

/// Redis's CPU time so far (user + system, seconds).
async fn redis_cpu_secs(addr: Option<SocketAddr>) -> Option<f64> {
    let info = redis_info(addr?, "cpu").await.ok()?;
    let get = |k: &str| info.get(k).and_then(|v| v.parse::<f64>().ok());
    Some(get("used_cpu_user")? + get("used_cpu_sys")?)
}

// ------------------------------------------------------------- processes

fn clk_tck() -> f64 {
    orch::clk_tck()
}

/// CPU seconds of the servers and of Redis, read together.
#[derive(Clone, Copy)]
struct Cpu {
    servers: f64,
    redis: Option<f64>,
    at: Instant,
}

impl Cpu {
    async fn now(a: &RunArgs) -> Cpu {
        let servers = a.pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>() as f64 / clk_tck();
        Cpu { servers, redis: redis_cpu_secs(a.redis).await, at: Instant::now() }
    }

    /// CPU spent since `before`: µs per delivery (servers, Redis) and the
    /// share of one core each used over the window.
    fn per_delivery(self, before: Cpu, deliveries: u64) -> Value {
        let d = deliveries.max(1) as f64;
        let wall = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let servers = self.servers - before.servers;
        let redis = match (self.redis, before.redis) {
            (Some(x), Some(y)) => Some(x - y),
            _ => None,
        };
        json!({
            "servers_cpu_us_per_delivery": servers * 1e6 / d,
            "servers_cpu_share": servers / wall,
            "redis_cpu_us_per_delivery": redis.map(|r| r * 1e6 / d),
            "redis_cpu_share": redis.map(|r| r / wall),
        })
    }
}

/// Summed VmRSS of the nodes (KiB), median of three samples half a second apart.
async fn nodes_rss_kib(pids: &[u32]) -> u64 {
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(pids.iter().filter_map(|p| rss_kib(*p)).sum::<u64>());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    v.sort();
    v[1]
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

fn fmt_us(v: &Value) -> String {
    v.as_f64().map(|x| format!("{x:.2} µs")).unwrap_or_else(|| "n/a".into())
}

// -------------------------------------------------------------------- S6

/// Cross-node pushes (to random users, at each of `--rates`) then fan-out
/// (a burst of `--burst` to the room/topic `--dest2` every session joined,
/// then `--paced-rate` for `--paced-secs` for latency). The subscribers sit
/// on `--sub-addrs`, the publisher on `--addr`.
pub async fn s6(a: &RunArgs) -> io::Result<Value> {
    let sio = matches!(a.publisher, Publisher::Socketio);
    if a.target.dest2.is_empty() {
        return Err(err("S6 needs --dest2 (the fan-out topic or room)"));
    }
    let mut pool = subscribers(a).await?;
    let mut p = Pub::open(a, None).await?;
    let nodes = a.pids.len().max(1);
    // (the publisher's address may be another port of the same node: count nodes)
    let cross = nodes > 1 && !a.sub_addrs.contains(&a.target.addr);
    let label = a.label.clone().unwrap_or_else(|| a.target.proto.name().into());
    let where_ = if cross { format!("{nodes} nodes, cross-node") } else { format!("{nodes} node(s), same node") };

    // Pushes to single users.
    let mut runs = Vec::new();
    for &rate in &a.rates {
        pool.broadcast("reset").await?;
        let (pf, sd) = (a.target.prefix.clone(), a.target.dest.clone());
        let to = move |i: usize| {
            let uid = format!("{pf}{i}");
            if sio {
                uid
            } else {
                sd.replace("{uid}", &uid)
            }
        };
        let c0 = Cpu::now(a).await;
        let (sent, took) = paced(&mut p, a, rate, a.rate_secs, to).await?;
        let r = pool.drain(sent, Duration::from_secs(3), Duration::from_secs(60)).await?;
        let cost = Cpu::now(a).await.per_delivery(c0, r.recv);
        let (p50, p99) = (us_to_ms(r.hist.quantile(0.5)), us_to_ms(r.hist.quantile(0.99)));
        let lost = sent.saturating_sub(r.recv);
        let achieved = sent as f64 / took.max(1e-9);
        row(&[
            "S6 push".into(),
            a.server.clone(),
            label.clone(),
            where_.clone(),
            format!("{rate}/s offered, {achieved:.0}/s sent"),
            format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.1} ms", us_to_ms(r.hist.max())),
            format!("Redis {} / delivery", fmt_us(&cost["redis_cpu_us_per_delivery"])),
            format!("{lost} lost of {sent}, {} closed", r.closed),
        ]);
        let mut run = json!({"rate": rate, "sent": sent, "secs": took, "achieved": achieved, "recv": r.recv,
            "lost": lost, "p50_ms": p50, "p99_ms": p99, "max_ms": us_to_ms(r.hist.max()), "closed": r.closed,
            "close_err": r.close_err});
        merge(&mut run, cost);
        runs.push(run);
    }

    // Fan-out: a burst back to back; deliveries over the time to the last one.
    let room = a.target.dest2.clone();
    pool.broadcast("reset").await?;
    let c0 = Cpu::now(a).await;
    let t0 = crate::stats::mono_ns();
    let burst: Vec<(String, String)> = (0..a.burst).map(|seq| (room.clone(), payload(seq, a.payload))).collect();
    p.send(&burst).await?;
    let expected = a.burst * pool.ok as u64;
    let r = pool.drain(expected, Duration::from_secs(5), Duration::from_secs(300)).await?;
    let burst_secs = r.last_ns.saturating_sub(t0) as f64 / 1e9;
    let deliveries_per_s = r.recv as f64 / burst_secs.max(1e-9);
    let mut fanout = json!({"burst": a.burst, "burst_recv": r.recv, "burst_expected": expected,
        "burst_secs": burst_secs, "deliveries_per_s": deliveries_per_s,
        "burst_p50_ms": us_to_ms(r.hist.quantile(0.5)), "burst_p99_ms": us_to_ms(r.hist.quantile(0.99))});
    merge(&mut fanout, Cpu::now(a).await.per_delivery(c0, r.recv));
    // Latency at a paced rate.
    pool.broadcast("reset").await?;
    let rm = room.clone();
    let (sent, took) = paced(&mut p, a, a.paced_rate, a.paced_secs, move |_| rm.clone()).await?;
    let r2 = pool.drain(sent * pool.ok as u64, Duration::from_secs(5), Duration::from_secs(120)).await?;
    let (p50, p99) = (us_to_ms(r2.hist.quantile(0.5)), us_to_ms(r2.hist.quantile(0.99)));
    merge(
        &mut fanout,
        json!({"paced_rate": a.paced_rate, "paced_sent": sent, "paced_recv": r2.recv,
            "paced_deliveries_per_s": r2.recv as f64 / took.max(1e-9), "p50_ms": p50, "p99_ms": p99,
            "max_ms": us_to_ms(r2.hist.max()), "closed": r2.closed, "close_err": r2.close_err}),
    );
    row(&[
        "S6 fan-out".into(),
        a.server.clone(),
        label.clone(),
        where_,
        format!("{deliveries_per_s:.0} deliveries/s (burst {}×{})", a.burst, pool.ok),
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms at {} msg/s", a.paced_rate),
        format!("Redis {} / delivery", fmt_us(&fanout["redis_cpu_us_per_delivery"])),
        format!("{} lost in burst, {} closed", expected.saturating_sub(r.recv), r2.closed),
    ]);
    if let Pub::Sio(c) = p {
        drop(c);
    }
    pool.quit().await;
    Ok(json!({"scenario": "s6", "nodes": nodes, "cross": cross, "subscribers": pool.ok, "fail": pool.fail,
        "first_err": pool.first_err, "push": runs, "fanout": fanout, "publisher": format!("{:?}", a.publisher)}))
}

// -------------------------------------------------------------------- S5

/// Opens `--sessions` idle sessions over the nodes of `--sub-addrs`, one
/// worker per node at a time (so every node holds the same number, below the
/// per-process file cap), measuring logins/s and the summed RSS of the nodes
/// and Redis after each step; holds them `--hold-secs`, sampling; counts the
/// sessions that closed; optionally pushes one message to every user.
pub async fn s5(a: &RunArgs) -> io::Result<Value> {
    let nodes = a.sub_addrs.len().max(1);
    let settle = Duration::from_secs_f64(a.settle_secs);
    let per_node = a.sessions.div_ceil(nodes);
    let workers_per_node = per_node.div_ceil(a.per_worker.max(1));
    let per_worker = per_node.div_ceil(workers_per_node.max(1));
    let mut args = a.clone();
    args.per_worker = per_worker;
    let redis_rss = |pid: Option<u32>| pid.and_then(rss_kib).unwrap_or(0);

    tokio::time::sleep(settle).await;
    let base_nodes = nodes_rss_kib(&a.pids).await;
    let base_redis = redis_rss(a.redis_pid);
    eprintln!(
        "s5: {nodes} nodes, {workers_per_node} workers of {per_worker} sessions per node; base RSS nodes {} MiB, redis {} MiB",
        base_nodes / 1024,
        base_redis / 1024
    );
    let mut pool = Pool::new();
    let mut points = Vec::new();
    let (mut login_secs, t_open) = (0.0, Instant::now());
    for step in 1..=workers_per_node {
        let n = (step * nodes * per_worker).min(a.sessions);
        let before = pool.ok;
        let secs = pool.grow(&args, n).await?;
        login_secs += secs;
        tokio::time::sleep(settle).await;
        let rss_nodes = nodes_rss_kib(&a.pids).await;
        let rss_redis = redis_rss(a.redis_pid);
        let redis_mem = match a.redis {
            Some(r) => redis_info(r, "memory").await.ok().and_then(|m| m.get("used_memory")?.parse::<u64>().ok()),
            None => None,
        };
        let rate = (pool.ok - before) as f64 / secs.max(1e-9);
        eprintln!(
            "s5: {} sessions ok, {} failed; {rate:.0} logins/s; RSS nodes {} MiB + redis {} MiB (load {})",
            pool.ok,
            pool.fail,
            rss_nodes / 1024,
            rss_redis / 1024,
            orch::loadavg()
        );
        points.push(json!({"n": n, "ok": pool.ok, "fail": pool.fail, "open_secs": secs, "logins_per_s": rate,
            "rss_nodes_kib": rss_nodes, "rss_redis_kib": rss_redis, "redis_used_memory": redis_mem}));
    }
    let open_wall = t_open.elapsed().as_secs_f64();
    let logins_per_s = pool.ok as f64 / login_secs.max(1e-9);

    // The hold: every tenth of it, how many sessions closed and the RSS.
    let mut hold = Vec::new();
    let t0 = Instant::now();
    let c0 = a.pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>();
    let r0 = redis_cpu_secs(a.redis).await;
    let tick = Duration::from_secs_f64((a.hold_secs / 10.0).max(0.5));
    while t0.elapsed().as_secs_f64() < a.hold_secs {
        tokio::time::sleep(tick.min(Duration::from_secs_f64((a.hold_secs - t0.elapsed().as_secs_f64()).max(0.0))))
            .await;
        let r = pool.report().await?;
        let rss_nodes = nodes_rss_kib(&a.pids).await;
        hold.push(json!({"t": t0.elapsed().as_secs_f64(), "closed": r.closed, "rss_nodes_kib": rss_nodes,
            "rss_redis_kib": redis_rss(a.redis_pid)}));
        eprintln!(
            "s5: hold {:.0} s: {} closed, RSS nodes {} MiB",
            t0.elapsed().as_secs_f64(),
            r.closed,
            rss_nodes / 1024
        );
    }
    let hold_wall = t0.elapsed().as_secs_f64();
    let idle_cpu = (a.pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>() - c0) as f64 / clk_tck() / hold_wall;
    let redis_idle_cpu = match (redis_cpu_secs(a.redis).await, r0) {
        (Some(x), Some(y)) => Some((x - y) / hold_wall),
        _ => None,
    };
    let r = pool.report().await?;
    let rss_nodes = nodes_rss_kib(&a.pids).await;
    let rss_redis = redis_rss(a.redis_pid);
    let total_kib = rss_nodes + rss_redis;

    // Still reachable: one push to every user, from the first node.
    let mut verify = Value::Null;
    if a.verify_rate > 0 && pool.ok > 0 {
        pool.broadcast("reset").await?;
        let mut v = a.clone();
        v.publisher = Publisher::Stomp;
        v.target.proto = Proto::StompTcp;
        let mut p = Pub::open(&v, None).await?;
        let (sent, took) = every_user(&mut p, a, pool.ok.min(a.sessions)).await?;
        let rv = pool.drain(sent, Duration::from_secs(5), Duration::from_secs(120)).await?;
        verify = json!({"sent": sent, "secs": took, "recv": rv.recv, "p50_ms": us_to_ms(rv.hist.quantile(0.5)),
            "p99_ms": us_to_ms(rv.hist.quantile(0.99))});
        eprintln!("s5: verify: {} of {sent} pushes delivered", rv.recv);
    }
    let unreached = verify["sent"].as_u64().map(|s| s.saturating_sub(verify["recv"].as_u64().unwrap_or(0)));
    pool.quit().await;
    let per_session = total_kib as f64 * 1024.0 / pool.ok.max(1) as f64;
    let fit: Vec<(f64, f64)> = points
        .iter()
        .map(|p| {
            let kib = p["rss_nodes_kib"].as_f64().unwrap_or(0.0) + p["rss_redis_kib"].as_f64().unwrap_or(0.0);
            (p["ok"].as_f64().unwrap_or(0.0), kib * 1024.0)
        })
        .collect();
    let slope = orch::slope(&fit);
    row(&[
        "S5".into(),
        a.server.clone(),
        a.target.proto.name().into(),
        format!("{} sessions on {nodes} nodes", pool.ok),
        format!("{:.0} MiB total RSS ({:.0} B/session)", total_kib as f64 / 1024.0, per_session),
        format!("{logins_per_s:.0} logins/s"),
        format!(
            "{} closed over {:.0} s{}",
            r.closed,
            hold_wall,
            unreached.map(|u| format!(", {u} unreached")).unwrap_or_default()
        ),
    ]);
    Ok(json!({"scenario": "s5", "nodes": nodes, "sessions": a.sessions, "ok": pool.ok, "fail": pool.fail,
        "first_err": pool.first_err, "per_worker": per_worker, "workers": nodes * workers_per_node,
        "base_rss_nodes_kib": base_nodes, "base_rss_redis_kib": base_redis, "points": points,
        "open_wall_secs": open_wall, "logins_per_s": logins_per_s, "hold_secs": hold_wall, "hold": hold,
        "closed": r.closed, "close_err": r.close_err, "rss_nodes_kib": rss_nodes, "rss_redis_kib": rss_redis,
        "total_rss_kib": total_kib, "bytes_per_session": per_session, "bytes_per_session_slope": slope,
        "idle_cpu_share": idle_cpu, "redis_idle_cpu_share": redis_idle_cpu, "verify": verify,
        "unreached": unreached}))
}

/// One push to each of users 0..n in order, at `--verify-rate`.
async fn every_user(p: &mut Pub, a: &RunArgs, n: usize) -> io::Result<(u64, f64)> {
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < n {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * a.verify_rate as f64) as usize).min(n);
        if due <= sent {
            continue;
        }
        let batch: Vec<(String, String)> = (sent..due)
            .map(|i| (a.target.dest.replace("{uid}", &format!("{}{i}", a.target.prefix)), payload(i as u64, a.payload)))
            .collect();
        p.send(&batch).await?;
        sent = due;
    }
    Ok((sent as u64, start.elapsed().as_secs_f64()))
}
