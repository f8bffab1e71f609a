//! The orchestrator: runs one scenario against one server and protocol,
//! spawning worker processes (`herald-bench worker`) for the sessions,
//! publishing itself (or through the Node pusher), sampling the server's
//! /proc/<pid>, printing one table row and appending one JSON line.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::conn::{err, Conn};
use crate::hist::Hist;
use crate::stats::{mono_ns, payload};
use crate::stomp;
use crate::worker::{self, Proto, Target};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    S1,
    S2,
    S3,
    S4,
    /// Persistent SENDs with receipts to a durable queue (bench/src/durable.rs).
    D1,
    /// Recovery of missed messages from history (bench/src/durable.rs).
    R1,
    /// Many idle sessions spread over several nodes (and Redis): total RSS,
    /// logins/s, sessions lost over a hold.
    S5,
    /// Pushes and fan-out with the publisher on one node and the
    /// subscribers on others (`--addr` publishes, `--sub-addrs` subscribe).
    S6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Publisher {
    /// SEND frames over one STOMP/TCP connection.
    Stomp,
    /// `<message/>` stanzas over one XMPP WebSocket session.
    Xmpp,
    /// `engine.sendToUser` in the Node process given by `--spawn-server`.
    Node,
    /// `push` events over one Socket.IO connection (`io.to(room).emit()`).
    Socketio,
}

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Server name for the table (herald, rabbitmq, ejabberd).
    #[arg(long)]
    pub server: String,
    /// Label of the row when it differs from the protocol (e.g. `inproc`).
    #[arg(long)]
    pub label: Option<String>,
    /// Server process to measure (for Erlang servers: beam.smp).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Start the server ourselves: a shell command that prints a line
    /// containing `ready` on stdout (its pid is measured; `exec` it).
    #[arg(long)]
    pub spawn_server: Option<String>,
    /// S1: session counts (sessions are added, not reopened).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,18000")]
    pub ns: Vec<usize>,
    /// S1: seconds to wait after each step before reading RSS.
    #[arg(long, default_value_t = 5.0)]
    pub settle_secs: f64,
    /// S1: idle window for the CPU measurement at the largest N.
    #[arg(long, default_value_t = 30.0)]
    pub idle_secs: f64,
    /// S2/S3: subscriber sessions.
    #[arg(long, default_value_t = 10000)]
    pub subscribers: usize,
    /// S2: messages in the saturation burst.
    #[arg(long, default_value_t = 100)]
    pub burst: u64,
    /// S2: messages per second in the latency phase.
    #[arg(long, default_value_t = 5)]
    pub paced_rate: u64,
    /// S2: seconds of the latency phase.
    #[arg(long, default_value_t = 10.0)]
    pub paced_secs: f64,
    /// S3: pushes per second, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
    pub rates: Vec<u64>,
    /// S3: seconds per rate.
    #[arg(long, default_value_t = 5.0)]
    pub rate_secs: f64,
    /// S2/S3: who publishes.
    #[arg(long, value_enum, default_value = "stomp")]
    pub publisher: Publisher,
    /// S2/S3: payload bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// S4: seconds of churn.
    #[arg(long, default_value_t = 10.0)]
    pub churn_secs: f64,
    /// S4: worker processes and logins in flight per worker.
    #[arg(long, default_value_t = 2)]
    pub churn_workers: usize,
    #[arg(long, default_value_t = 32)]
    pub churn_concurrency: usize,
    /// S4: distinct users cycled through.
    #[arg(long, default_value_t = 10000)]
    pub churn_users: usize,
    /// D1: messages of the pipelined phase (split over --publishers).
    #[arg(long, default_value_t = 20000)]
    pub messages: usize,
    /// D1: messages of the serial phase (one publisher, one receipt at a time).
    #[arg(long, default_value_t = 2000)]
    pub serial_messages: usize,
    /// D1: publisher connections of the pipelined phase.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// D1: receipts outstanding per publisher in the pipelined phase.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// D1: Herald's HTTP address, to read its journal syncs from /metrics.
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// R1: messages published while the subscriber is away.
    #[arg(long, default_value_t = 100)]
    pub missed: usize,
    /// R1: rounds (disconnect, publish, resubscribe).
    #[arg(long, default_value_t = 50)]
    pub repeats: usize,
    /// Sessions per worker process (each holds one or two files per session).
    #[arg(long, default_value_t = 5000)]
    pub per_worker: usize,
    /// Logins in flight per worker while opening sessions.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// S5/S6: session workers connect to these nodes in turn (default: --addr).
    #[arg(long, value_delimiter = ',')]
    pub sub_addrs: Vec<std::net::SocketAddr>,
    /// S5/S6: every server process (node); their RSS and CPU are summed.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// S5/S6: Redis (host:port), read with `INFO` (CPU, memory) before and after.
    #[arg(long)]
    pub redis: Option<std::net::SocketAddr>,
    /// S5/S6: the redis-server process (its RSS counts in S5's total).
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// S5: sessions to open and hold.
    #[arg(long, default_value_t = 300000)]
    pub sessions: usize,
    /// S5: seconds to hold them.
    #[arg(long, default_value_t = 300.0)]
    pub hold_secs: f64,
    /// S5: after the hold, push one message to every session at this rate
    /// (from --addr's node; 0 = no such check).
    #[arg(long, default_value_t = 0)]
    pub verify_rate: u64,
    /// Source addresses are 127.0.0.<src_base + worker index>.
    #[arg(long, default_value_t = 10)]
    pub src_base: u8,
    /// Append the result as one JSON line here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Fail (exit 1) when a session failed or closed early, or a message was
    /// lost (the smoke run uses this; real runs report such numbers instead).
    #[arg(long)]
    pub strict: bool,
}

/// What `--strict` refuses in a result.
fn problems(r: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    if n(&r["fail"]) > 0 {
        p.push(format!("{} sessions failed: {}", r["fail"], r["first_err"]));
    }
    for k in ["closed_idle", "closed"] {
        if n(&r[k]) > 0 {
            p.push(format!("{} sessions closed early: {}", r[k], r["close_err"]));
        }
    }
    if n(&r["burst_expected"]) > n(&r["burst_recv"]) {
        p.push(format!("burst: {} of {} delivered", r["burst_recv"], r["burst_expected"]));
    }
    if r["scenario"] == "s2" && n(&r["paced_sent"]) * n(&r["subscribers"]) > n(&r["paced_recv"]) {
        p.push(format!("paced: {} delivered", r["paced_recv"]));
    }
    for run in r["runs"].as_array().cloned().unwrap_or_default() {
        if n(&run["lost"]) > 0 || n(&run["recv"]) == 0 {
            p.push(format!("rate {}: {} lost of {}", run["rate"], run["lost"], run["sent"]));
        }
    }
    if r["scenario"] == "s4" && n(&r["ok"]) == 0 {
        p.push("no login completed".into());
    }
    if r["scenario"] == "s6" {
        for run in r["push"].as_array().cloned().unwrap_or_default() {
            if n(&run["lost"]) > 0 || n(&run["recv"]) == 0 {
                p.push(format!("s6 push at {}/s: {} lost of {}", run["rate"], run["lost"], run["sent"]));
            }
        }
        let fo = &r["fanout"];
        if n(&fo["burst_recv"]) < n(&fo["burst_expected"])
            || n(&fo["paced_recv"]) < n(&fo["paced_sent"]) * n(&r["subscribers"])
        {
            p.push(format!("s6 fan-out: {} of {} delivered in the burst", fo["burst_recv"], fo["burst_expected"]));
        }
    }
    if r["scenario"] == "s5" && (n(&r["ok"]) < n(&r["sessions"]) || n(&r["unreached"]) > 0) {
        p.push(format!("s5: {} of {} sessions, {} unreached", r["ok"], r["sessions"], r["unreached"]));
    }
    if r["scenario"] == "s1" && n(&r["ok"]) == 0 {
        p.push("no session opened".into());
    }
    for ph in r["phases"].as_array().cloned().unwrap_or_default() {
        if n(&ph["lost"]) > 0 || n(&ph["confirmed"]) == 0 {
            p.push(format!("d1 {}: {} confirmed, {} lost", ph["phase"], ph["confirmed"], ph["lost"]));
        }
    }
    if r["scenario"] == "r1" && (n(&r["complete"]) < n(&r["repeats"]) || n(&r["out_of_order"]) > 0) {
        p.push(format!(
            "r1: {} of {} rounds complete, {} out of order",
            r["complete"], r["repeats"], r["out_of_order"]
        ));
    }
    p
}

impl RunArgs {
    fn scenario_name(&self) -> &'static str {
        match self.scenario {
            Scenario::S1 => "S1",
            Scenario::S2 => "S2",
            Scenario::S3 => "S3",
            Scenario::S4 => "S4",
            Scenario::D1 => "D1",
            Scenario::R1 => "R1",
            Scenario::S5 => "S5",
            Scenario::S6 => "S6",
        }
    }
}

// ------------------------------------------------------------------ /proc

pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// utime + stime in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub(crate) fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Least-squares slope of y over x.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

// ---------------------------------------------------------------- workers

/// A child process spoken to in lines: commands on stdin, answers on
/// stdout (its stderr goes to ours). Killed when dropped.
pub(crate) struct Piped {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Piped {
    fn spawn(cmd: &mut Command) -> io::Result<Piped> {
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(Piped { child, stdin, lines })
    }

    /// Sends one command line.
    async fn send(&mut self, c: &str) -> io::Result<()> {
        self.stdin.write_all(format!("{c}\n").as_bytes()).await?;
        self.stdin.flush().await
    }
}

/// A session worker process (`herald-bench worker`).
type Worker = Piped;

fn target_args(t: &Target) -> Vec<String> {
    let pairs = [
        ("--proto", t.proto.name().to_owned()),
        ("--addr", t.addr.to_string()),
        ("--path", t.path.clone()),
        ("--subprotocol", t.subprotocol.clone()),
        ("--vhost", t.vhost.clone()),
        ("--domain", t.domain.clone()),
        ("--prefix", t.prefix.clone()),
        ("--password", t.password.clone()),
        ("--dest", t.dest.clone()),
        ("--dest2", t.dest2.clone()),
        ("--heartbeat-ms", t.heartbeat_ms.to_string()),
        ("--bosh-wait", t.bosh_wait.to_string()),
    ];
    let mut args: Vec<String> = pairs.into_iter().flat_map(|(flag, value)| [flag.to_owned(), value]).collect();
    if let Some(secret) = &t.jwt_secret {
        args.extend(["--jwt-secret".to_owned(), secret.clone()]);
    }
    args
}

impl Worker {
    fn worker(t: &Target, extra: &[String]) -> io::Result<Worker> {
        Piped::spawn(Command::new(std::env::current_exe()?).arg("worker").args(target_args(t)).args(extra))
    }

    async fn read(&mut self) -> io::Result<Value> {
        loop {
            let line = self.lines.next_line().await?.ok_or_else(|| err("worker exited"))?;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                return Ok(v);
            }
        }
    }

    async fn cmd(&mut self, c: &str) -> io::Result<Value> {
        self.send(c).await?;
        self.read().await
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        let _ = self.stdin.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// A pool of session workers (S1 adds to it step by step).
pub(crate) struct Pool {
    workers: Vec<Worker>,
    opened: usize,
    pub(crate) ok: usize,
    pub(crate) fail: usize,
    pub(crate) first_err: Option<String>,
}

impl Pool {
    pub(crate) fn new() -> Pool {
        Pool { workers: Vec::new(), opened: 0, ok: 0, fail: 0, first_err: None }
    }

    /// Opens sessions for users `opened..n`, at most `per_worker` per process.
    pub(crate) async fn grow(&mut self, a: &RunArgs, n: usize) -> io::Result<f64> {
        let t0 = Instant::now();
        let mut fresh = Vec::new();
        while self.opened < n {
            let to = (self.opened + a.per_worker).min(n);
            let index = self.workers.len() + fresh.len();
            let src = format!("127.0.0.{}", a.src_base as usize + index);
            let mut target = a.target.clone();
            if !a.sub_addrs.is_empty() {
                target.addr = a.sub_addrs[index % a.sub_addrs.len()];
            }
            let extra: Vec<String> = vec![
                "--mode".into(),
                "sessions".into(),
                "--src".into(),
                src,
                "--from".into(),
                self.opened.to_string(),
                "--to".into(),
                to.to_string(),
                "--concurrency".into(),
                a.concurrency.to_string(),
            ];
            fresh.push(Worker::worker(&target, &extra)?);
            self.opened = to;
        }
        for w in &mut fresh {
            let v = w.read().await?;
            self.ok += v["ok"].as_u64().unwrap_or(0) as usize;
            self.fail += v["fail"].as_u64().unwrap_or(0) as usize;
            if self.first_err.is_none() {
                self.first_err = v["err"].as_str().map(str::to_owned);
            }
        }
        self.workers.extend(fresh);
        Ok(t0.elapsed().as_secs_f64())
    }

    pub(crate) async fn broadcast(&mut self, c: &str) -> io::Result<Vec<Value>> {
        let mut out = Vec::new();
        for w in &mut self.workers {
            out.push(w.cmd(c).await?);
        }
        Ok(out)
    }

    /// Sums the workers' delivery reports.
    pub(crate) async fn report(&mut self) -> io::Result<Report> {
        let mut r = Report::default();
        for v in self.broadcast("report").await? {
            r.recv += v["recv"].as_u64().unwrap_or(0);
            r.closed += v["closed"].as_u64().unwrap_or(0);
            let f = v["first_ns"].as_u64().unwrap_or(0);
            if f > 0 && (r.first_ns == 0 || f < r.first_ns) {
                r.first_ns = f;
            }
            r.last_ns = r.last_ns.max(v["last_ns"].as_u64().unwrap_or(0));
            r.hist.merge_json(&v["hist"]);
            if r.close_err.is_none() {
                r.close_err = v["close_err"].as_str().map(str::to_owned);
            }
        }
        Ok(r)
    }

    /// Waits until `expected` deliveries arrived, or nothing arrived for `stall`.
    pub(crate) async fn drain(&mut self, expected: u64, stall: Duration, limit: Duration) -> io::Result<Report> {
        let t0 = Instant::now();
        let mut last = (0u64, Instant::now());
        loop {
            let r = self.report().await?;
            if r.recv >= expected || t0.elapsed() > limit {
                return Ok(r);
            }
            if r.recv != last.0 {
                last = (r.recv, Instant::now());
            } else if last.1.elapsed() > stall {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) async fn quit(&mut self) {
        for w in self.workers.drain(..) {
            w.quit().await;
        }
    }
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) recv: u64,
    pub(crate) closed: u64,
    pub(crate) first_ns: u64,
    pub(crate) last_ns: u64,
    pub(crate) hist: Hist,
    pub(crate) close_err: Option<String>,
}

// -------------------------------------------------------------- publishers

pub(crate) enum Pub {
    Stomp(Conn),
    Sio(crate::sio::Publisher),
    Xmpp(Box<crate::xmpp::WsClient>),
    Node(Box<NodeServer>),
}

/// The server started by `--spawn-server` (the Node pusher for S3 in-process).
type NodeServer = Piped;

impl NodeServer {
    async fn server(cmd: &str) -> io::Result<NodeServer> {
        let mut p = Piped::spawn(Command::new("sh").arg("-c").arg(cmd))?;
        let lines = &mut p.lines;
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(l) = lines.next_line().await? {
                eprintln!("server: {l}");
                if l.contains("ready") {
                    return Ok(());
                }
            }
            Err(err("server exited before it was ready"))
        })
        .await
        .map_err(|_| err("server not ready within 120 s"))?;
        ready?;
        Ok(p)
    }

    async fn line(&mut self, c: &str) -> io::Result<String> {
        self.send(c).await?;
        self.lines.next_line().await?.ok_or_else(|| err("server exited"))
    }
}

impl Pub {
    pub(crate) async fn open(a: &RunArgs, node: Option<NodeServer>) -> io::Result<Pub> {
        let user = format!("{}pub", a.target.prefix);
        Ok(match a.publisher {
            Publisher::Stomp => {
                let mut t = a.target.clone();
                t.proto = Proto::StompTcp;
                t.heartbeat_ms = 0;
                let (c, _, _) = worker::stomp_open(&t, None, &user, "").await?;
                Pub::Stomp(c)
            }
            Publisher::Xmpp => {
                let mut t = a.target.clone();
                t.proto = Proto::XmppWs;
                Pub::Xmpp(Box::new(worker::xmpp_publisher(&t, &user).await?))
            }
            Publisher::Node => Pub::Node(Box::new(node.ok_or_else(|| err("--publisher node needs --spawn-server"))?)),
            Publisher::Socketio => {
                let mut t = a.target.clone();
                t.proto = Proto::Socketio;
                Pub::Sio(crate::sio::Client::open(&t, None, &user, &[]).await?.publisher())
            }
        })
    }

    /// Sends `count` messages, to `dest(i)` (STOMP destination or XMPP JID).
    pub(crate) async fn send(&mut self, msgs: &[(String, String)]) -> io::Result<()> {
        match self {
            Pub::Stomp(c) => {
                let mut all = Vec::with_capacity(msgs.len() * 200);
                for (dest, body) in msgs {
                    all.extend_from_slice(&stomp::frame("SEND", &[("destination", dest)], body));
                }
                c.send(&all).await
            }
            Pub::Xmpp(c) => {
                for (to, body) in msgs {
                    c.feed(crate::xmpp::chat(to, body)).await?;
                }
                c.flush().await
            }
            Pub::Sio(c) => c.push(msgs).await,
            Pub::Node(_) => Err(err("node publisher is driven by push commands")),
        }
    }
}

/// Publishes to random users at `rate` per second for `secs`; returns
/// (sent, seconds it took).
pub(crate) async fn paced(
    p: &mut Pub,
    a: &RunArgs,
    rate: u64,
    secs: f64,
    to: impl Fn(usize) -> String,
) -> io::Result<(u64, f64)> {
    if let Pub::Node(n) = p {
        let line = n.line(&format!("push {rate} {secs} {} {}", a.subscribers, a.payload)).await?;
        // "sent <n> <secs>"
        let mut it = line.split_whitespace().skip(1);
        let sent = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let took = it.next().and_then(|v| v.parse().ok()).unwrap_or(secs);
        return Ok((sent, took));
    }
    let total = (rate as f64 * secs) as u64;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut rng = rand::thread_rng();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if due <= sent {
            continue;
        }
        let batch: Vec<(String, String)> = (sent..due)
            .map(|seq| {
                let i = if a.subscribers > 1 { rng.gen_range(0..a.subscribers) } else { 0 };
                (to(i), payload(seq, a.payload))
            })
            .collect();
        p.send(&batch).await?;
        sent = due;
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

// -------------------------------------------------------------- scenarios

pub(crate) fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub async fn run(a: RunArgs) -> io::Result<()> {
    let mut node = None;
    let pid = match (&a.spawn_server, a.pid) {
        (Some(cmd), _) => {
            let s = NodeServer::server(cmd).await?;
            let pid = s.child.id();
            node = Some(s);
            pid
        }
        (None, p) => p,
    };
    let label = a.label.clone().unwrap_or_else(|| a.target.proto.name().to_owned());
    let load = loadavg();
    let mut result = match a.scenario {
        Scenario::S1 => s1(&a, pid).await?,
        Scenario::S2 => s2(&a, pid, node.take()).await?,
        Scenario::S3 => s3(&a, pid, node.take()).await?,
        Scenario::S4 => s4(&a, pid).await?,
        Scenario::D1 => crate::durable::d1(&a).await?,
        Scenario::R1 => crate::durable::r1(&a).await?,
        Scenario::S5 => crate::cluster::s5(&a).await?,
        Scenario::S6 => crate::cluster::s6(&a).await?,
    };
    result["server"] = json!(a.server);
    result["proto"] = json!(a.target.proto.name());
    result["label"] = json!(label);
    result["loadavg_start"] = json!(load);
    result["loadavg_end"] = json!(loadavg());
    if let Some(path) = &a.out {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(f, "{result}")?;
    }
    if a.strict {
        let p = problems(&result);
        if !p.is_empty() {
            return Err(err(format!("{} {} {}: {}", a.scenario_name(), a.server, label, p.join("; "))));
        }
    }
    Ok(())
}

pub(crate) fn row(cells: &[String]) {
    println!("| {} |", cells.join(" | "));
}

async fn s1(a: &RunArgs, pid: Option<u32>) -> io::Result<Value> {
    let settle = Duration::from_secs_f64(a.settle_secs);
    let sample = |pid: Option<u32>| async move {
        let Some(pid) = pid else { return 0 };
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(rss_kib(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        v.sort();
        v[1]
    };
    tokio::time::sleep(settle).await;
    let base = sample(pid).await;
    let mut pool = Pool::new();
    let mut points = Vec::new();
    for &n in &a.ns {
        let secs = pool.grow(a, n).await?;
        tokio::time::sleep(settle).await;
        let rss = sample(pid).await;
        eprintln!(
            "s1 {} {}: n={n} ok={} fail={} rss={rss} KiB ({secs:.1} s to open)",
            a.server,
            a.target.proto.name(),
            pool.ok,
            pool.fail
        );
        points.push(json!({"n": n, "ok": pool.ok, "fail": pool.fail, "rss_kib": rss, "open_secs": secs}));
    }
    // Idle CPU at the largest N.
    let c0 = pid.and_then(cpu_ticks);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.idle_secs)).await;
    let c1 = pid.and_then(cpu_ticks);
    let cpu_ms_per_s = match (c0, c1) {
        (Some(x), Some(y)) => (y - x) as f64 / clk_tck() * 1000.0 / t0.elapsed().as_secs_f64(),
        _ => f64::NAN,
    };
    let r = pool.report().await?;
    pool.quit().await;
    let fit: Vec<(f64, f64)> =
        points.iter().map(|p| (p["ok"].as_f64().unwrap(), p["rss_kib"].as_f64().unwrap() * 1024.0)).collect();
    let bps = slope(&fit);
    let nmax = a.ns.iter().max().copied().unwrap_or(0);
    row(&[
        "S1".into(),
        a.server.clone(),
        a.target.proto.name().into(),
        format!("{bps:.0} B/session"),
        format!("{cpu_ms_per_s:.1} ms CPU/s idle at {nmax}"),
        format!("{} ok, {} failed, {} closed while idle", pool.ok, pool.fail, r.closed),
    ]);
    Ok(json!({"scenario": "s1", "base_rss_kib": base, "points": points, "bytes_per_session": bps,
        "idle_cpu_ms_per_s": cpu_ms_per_s, "idle_secs": a.idle_secs, "n_max": nmax, "ok": pool.ok, "fail": pool.fail,
        "first_err": pool.first_err, "closed_idle": r.closed, "close_err": r.close_err}))
}

pub(crate) async fn subscribers(a: &RunArgs) -> io::Result<Pool> {
    let mut pool = Pool::new();
    let secs = pool.grow(a, a.subscribers).await?;
    eprintln!(
        "{} {}: {} subscribers ok, {} failed ({secs:.1} s) {}",
        a.server,
        a.target.proto.name(),
        pool.ok,
        pool.fail,
        pool.first_err.clone().unwrap_or_default()
    );
    if pool.ok == 0 {
        return Err(err(format!("no subscriber could connect: {}", pool.first_err.clone().unwrap_or_default())));
    }
    Ok(pool)
}

async fn s2(a: &RunArgs, _pid: Option<u32>, node: Option<NodeServer>) -> io::Result<Value> {
    let mut pool = subscribers(a).await?;
    let mut p = Pub::open(a, node).await?;
    let dest = a.target.dest.clone();
    // Saturation: a burst sent back to back; deliveries over the time to the last one.
    pool.broadcast("reset").await?;
    let t0 = mono_ns();
    let burst: Vec<(String, String)> = (0..a.burst).map(|seq| (dest.clone(), payload(seq, a.payload))).collect();
    p.send(&burst).await?;
    let expected = a.burst * pool.ok as u64;
    let r = pool.drain(expected, Duration::from_secs(5), Duration::from_secs(120)).await?;
    let burst_secs = (r.last_ns.saturating_sub(t0)) as f64 / 1e9;
    let deliveries_per_s = r.recv as f64 / burst_secs.max(1e-9);
    let burst_p99 = us_to_ms(r.hist.quantile(0.99));
    // Latency at a paced rate.
    pool.broadcast("reset").await?;
    let d = dest.clone();
    let (sent, took) = paced(&mut p, a, a.paced_rate, a.paced_secs, move |_| d.clone()).await?;
    let r2 = pool.drain(sent * pool.ok as u64, Duration::from_secs(5), Duration::from_secs(60)).await?;
    let (p50, p99) = (us_to_ms(r2.hist.quantile(0.5)), us_to_ms(r2.hist.quantile(0.99)));
    let paced_dps = r2.recv as f64 / took.max(1e-9);
    let lost_burst = expected.saturating_sub(r.recv);
    row(&[
        "S2".into(),
        a.server.clone(),
        a.target.proto.name().into(),
        format!("{deliveries_per_s:.0} deliveries/s (burst {}×{})", a.burst, pool.ok),
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms at {} msg/s ({paced_dps:.0} deliveries/s)", a.paced_rate),
        format!("{} lost in burst, {} closed", lost_burst, r2.closed),
    ]);
    pool.quit().await;
    Ok(json!({"scenario": "s2", "subscribers": pool.ok, "fail": pool.fail, "first_err": pool.first_err,
        "burst": a.burst, "burst_recv": r.recv, "burst_expected": expected, "burst_secs": burst_secs,
        "deliveries_per_s": deliveries_per_s, "burst_p99_ms": burst_p99,
        "paced_rate": a.paced_rate, "paced_sent": sent, "paced_recv": r2.recv, "paced_deliveries_per_s": paced_dps,
        "p50_ms": p50, "p99_ms": p99, "max_ms": us_to_ms(r2.hist.max()), "closed": r2.closed, "close_err": r2.close_err}))
}

async fn s3(a: &RunArgs, _pid: Option<u32>, node: Option<NodeServer>) -> io::Result<Value> {
    let mut pool = subscribers(a).await?;
    let mut p = Pub::open(a, node).await?;
    let (prefix, domain, stomp_dest) = (a.target.prefix.clone(), a.target.domain.clone(), a.target.dest.clone());
    let xmpp = matches!(a.publisher, Publisher::Xmpp);
    let mut runs = Vec::new();
    for &rate in &a.rates {
        pool.broadcast("reset").await?;
        let (pf, dm, sd) = (prefix.clone(), domain.clone(), stomp_dest.clone());
        let to = move |i: usize| {
            let uid = format!("{pf}{i}");
            if xmpp {
                format!("{uid}@{dm}")
            } else {
                sd.replace("{uid}", &uid)
            }
        };
        let (sent, took) = paced(&mut p, a, rate, a.rate_secs, to).await?;
        let r = pool.drain(sent, Duration::from_secs(3), Duration::from_secs(30)).await?;
        let (p50, p99) = (us_to_ms(r.hist.quantile(0.5)), us_to_ms(r.hist.quantile(0.99)));
        let lost = sent.saturating_sub(r.recv);
        let achieved = sent as f64 / took.max(1e-9);
        row(&[
            "S3".into(),
            a.server.clone(),
            a.label.clone().unwrap_or_else(|| a.target.proto.name().into()),
            format!("{rate}/s offered, {achieved:.0}/s sent"),
            format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.1} ms", us_to_ms(r.hist.max())),
            format!("{lost} lost of {sent}, {} closed", r.closed),
        ]);
        runs.push(json!({"rate": rate, "sent": sent, "secs": took, "achieved": achieved, "recv": r.recv, "lost": lost,
            "p50_ms": p50, "p99_ms": p99, "max_ms": us_to_ms(r.hist.max()), "closed": r.closed, "close_err": r.close_err}));
    }
    if let Pub::Node(mut n) = p {
        let _ = n.line("quit").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), n.child.wait()).await;
    }
    pool.quit().await;
    Ok(json!({"scenario": "s3", "subscribers": pool.ok, "fail": pool.fail, "first_err": pool.first_err, "runs": runs}))
}

async fn s4(a: &RunArgs, pid: Option<u32>) -> io::Result<Value> {
    let per = a.churn_users / a.churn_workers.max(1);
    let mut workers = Vec::new();
    let c0 = pid.and_then(cpu_ticks);
    let t0 = Instant::now();
    for w in 0..a.churn_workers.max(1) {
        let extra: Vec<String> = vec![
            "--mode".into(),
            "churn".into(),
            "--src".into(),
            format!("127.0.0.{}", a.src_base as usize + w),
            "--from".into(),
            (w * per).to_string(),
            "--to".into(),
            ((w + 1) * per).to_string(),
            "--concurrency".into(),
            a.churn_concurrency.to_string(),
            "--duration".into(),
            a.churn_secs.to_string(),
        ];
        workers.push(Worker::worker(&a.target, &extra)?);
    }
    let (mut ok, mut fail, mut secs, mut first) = (0u64, 0u64, 0f64, None::<String>);
    let mut hist = Hist::default();
    for w in &mut workers {
        let v = w.read().await?;
        ok += v["ok"].as_u64().unwrap_or(0);
        fail += v["fail"].as_u64().unwrap_or(0);
        secs = secs.max(v["secs"].as_f64().unwrap_or(0.0));
        hist.merge_json(&v["hist"]);
        if first.is_none() {
            first = v["err"].as_str().map(str::to_owned);
        }
    }
    let c1 = pid.and_then(cpu_ticks);
    let wall = t0.elapsed().as_secs_f64();
    for w in workers {
        w.quit().await;
    }
    let rate = ok as f64 / secs.max(1e-9);
    let cpu = match (c0, c1) {
        (Some(x), Some(y)) => (y - x) as f64 / clk_tck() / wall,
        _ => f64::NAN,
    };
    let (p50, p99) = (us_to_ms(hist.quantile(0.5)), us_to_ms(hist.quantile(0.99)));
    row(&[
        "S4".into(),
        a.server.clone(),
        a.target.proto.name().into(),
        format!("{rate:.0} logins/s"),
        format!("login p50 {p50:.1} ms, p99 {p99:.1} ms; server CPU {:.0} %", cpu * 100.0),
        format!("{ok} ok, {fail} failed {}", first.clone().unwrap_or_default()),
    ]);
    Ok(json!({"scenario": "s4", "logins_per_s": rate, "ok": ok, "fail": fail, "first_err": first, "secs": secs,
        "p50_ms": p50, "p99_ms": p99, "server_cpu": cpu, "concurrency": a.churn_concurrency * a.churn_workers}))
}
