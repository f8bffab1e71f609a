//! A worker process: opens sessions for a range of users from one loopback
//! source address, then obeys one-line commands on stdin (`report`,
//! `reset`, `quit`) and answers with one JSON line on stdout. A process may
//! hold at most 20,000 files here, so the orchestrator spreads sessions over
//! several workers.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::{Args, ValueEnum};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;
use tokio::task::LocalSet;

use crate::conn::{self, Conn};
use crate::stats::{SharedStats, Stats};
use crate::stomp;
use crate::xmpp::{BoshClient, Login, WsClient};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    StompTcp,
    StompWs,
    XmppWs,
    Bosh,
    /// Socket.IO 4 over WebSocket (bench/socketio/server.js, S6's peer).
    Socketio,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::StompTcp => "stomp-tcp",
            Proto::StompWs => "stomp-ws",
            Proto::XmppWs => "xmpp-ws",
            Proto::Bosh => "bosh",
            Proto::Socketio => "socketio",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Open sessions and keep them (S1, subscribers of S2/S3).
    Sessions,
    /// Log in and out in a loop for `--duration` seconds (S4).
    Churn,
    /// In-band registration of the users (ejabberd setup).
    Register,
}

/// Where and how to connect; shared by the orchestrator and its workers.
#[derive(Args, Clone, Debug)]
pub struct Target {
    #[arg(long, value_enum)]
    pub proto: Proto,
    /// Server address (host:port).
    #[arg(long)]
    pub addr: SocketAddr,
    /// HTTP path: WebSocket endpoint or BOSH endpoint.
    #[arg(long, default_value = "/ws")]
    pub path: String,
    /// WebSocket subprotocol for STOMP (`v12.stomp`); XMPP always asks `xmpp`.
    #[arg(long, default_value = "v12.stomp")]
    pub subprotocol: String,
    /// STOMP vhost (`host` header).
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// XMPP domain.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Users are `<prefix><i>`.
    #[arg(long, default_value = "u")]
    pub prefix: String,
    #[arg(long, default_value = "pw")]
    pub password: String,
    /// STOMP destination to subscribe; `{uid}` is replaced by the user id.
    #[arg(long, default_value = "/exchange/feed/{uid}")]
    pub dest: String,
    /// A second STOMP destination every session subscribes to (S6: the
    /// fan-out topic); for Socket.IO, a room joined. Empty: none.
    #[arg(long, default_value = "")]
    pub dest2: String,
    /// Log in with an HS256 JWT (`sub` = the user) signed with this secret
    /// instead of the password (S5: no per-user state on the nodes).
    #[arg(long)]
    pub jwt_secret: Option<String>,
    /// STOMP heart-beat asked by the client (ms, both ways; stomp.js uses 10000).
    #[arg(long, default_value_t = 10000)]
    pub heartbeat_ms: u64,
    /// BOSH `wait` (seconds; strophe.js uses 60).
    #[arg(long, default_value_t = 60)]
    pub bosh_wait: u64,
}

#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum, default_value = "sessions")]
    pub mode: Mode,
    /// Source address for this worker's connections (127.0.0.x).
    #[arg(long)]
    pub src: Option<IpAddr>,
    /// First user index.
    #[arg(long, default_value_t = 0)]
    pub from: usize,
    /// One past the last user index.
    #[arg(long)]
    pub to: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Churn: seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Give up on one login after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub login_timeout: u64,
}

fn out(v: serde_json::Value) {
    println!("{v}");
}

pub fn main(args: WorkerArgs) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        match args.mode {
            Mode::Sessions => sessions(args).await,
            Mode::Churn => churn(args).await,
            Mode::Register => register(args).await,
        }
    })
}

fn login_for(t: &Target, i: usize, resource: &str) -> Login {
    Login {
        domain: t.domain.clone(),
        user: format!("{}{i}", t.prefix),
        pass: t.password.clone(),
        resource: resource.to_owned(),
    }
}

fn host_header(t: &Target) -> String {
    format!("localhost:{}", t.addr.port())
}

/// The password `user` logs in with: the configured one, or a JWT.
pub fn password_for(t: &Target, user: &str) -> String {
    match &t.jwt_secret {
        Some(secret) => crate::stats::jwt_hs256(secret, user),
        None => t.password.clone(),
    }
}

/// One STOMP connection: connect, log in, subscribe (to `dest` and `t.dest2`).
pub async fn stomp_open(t: &Target, src: Option<IpAddr>, user: &str, dest: &str) -> io::Result<(Conn, BytesMut, u64)> {
    let mut c = match t.proto {
        Proto::StompTcp => Conn::Tcp(conn::tcp(t.addr, src).await?),
        _ => Conn::Ws(Box::new(conn::ws(t.addr, src, &host_header(t), &t.path, Some(&t.subprotocol)).await?)),
    };
    let mut buf = BytesMut::with_capacity(1024);
    let hb = stomp::login(&mut c, &mut buf, &t.vhost, user, &password_for(t, user), t.heartbeat_ms).await?;
    if !dest.is_empty() {
        stomp::subscribe(&mut c, &mut buf, dest).await?;
        if !t.dest2.is_empty() {
            stomp::subscribe_id(&mut c, &mut buf, &t.dest2, "1").await?;
        }
    }
    Ok((c, buf, hb))
}

/// Opens the session of user `i` and spawns its idle/receive loop.
async fn open_one(t: &Target, src: Option<IpAddr>, i: usize, stats: SharedStats) -> io::Result<()> {
    let uid = format!("{}{i}", t.prefix);
    match t.proto {
        Proto::StompTcp | Proto::StompWs => {
            let dest = t.dest.replace("{uid}", &uid);
            let (c, buf, hb) = stomp_open(t, src, &uid, &dest).await?;
            tokio::task::spawn_local(stomp::run(c, buf, hb, stats));
        }
        Proto::XmppWs => {
            let mut c = WsClient::connect(t.addr, src, &host_header(t), &t.path).await?;
            c.login(&login_for(t, i, "bench"), true).await?;
            tokio::task::spawn_local(c.run(stats));
        }
        Proto::Bosh => {
            let mut c = BoshClient::connect(t.addr, src, &host_header(t), &t.path, t.bosh_wait).await?;
            c.login(&login_for(t, i, "bench")).await?;
            tokio::task::spawn_local(c.run(stats));
        }
        Proto::Socketio => {
            let c = crate::sio::Client::open(t, src, &uid, &[&t.dest2]).await?;
            tokio::task::spawn_local(c.run(stats));
        }
    }
    Ok(())
}

async fn sessions(args: WorkerArgs) -> io::Result<()> {
    let stats: SharedStats = Rc::new(RefCell::new(Stats::default()));
    let sem = std::sync::Arc::new(Semaphore::new(args.concurrency.max(1)));
    let ok = Rc::new(RefCell::new(0usize));
    let fail = Rc::new(RefCell::new((0usize, None::<String>)));
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in args.from..args.to {
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let (t, stats, ok, fail) = (args.target.clone(), stats.clone(), ok.clone(), fail.clone());
        let (src, limit) = (args.src, Duration::from_secs(args.login_timeout));
        handles.push(tokio::task::spawn_local(async move {
            let r = tokio::time::timeout(limit, open_one(&t, src, i, stats))
                .await
                .unwrap_or_else(|_| Err(conn::err("login timed out")));
            match r {
                Ok(()) => *ok.borrow_mut() += 1,
                Err(e) => {
                    let mut f = fail.borrow_mut();
                    f.0 += 1;
                    f.1.get_or_insert_with(|| format!("{}{i}: {e}", t.prefix));
                }
            }
            drop(permit);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let (nfail, first) = fail.borrow().clone();
    out(
        json!({"ev": "ready", "ok": *ok.borrow(), "fail": nfail, "err": first, "secs": started.elapsed().as_secs_f64()}),
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "report" => {
                let s = stats.borrow();
                out(json!({"ev": "report", "recv": s.recv, "first_ns": s.first_ns, "last_ns": s.last_ns,
                    "closed": s.closed, "close_err": s.first_close, "hist": s.hist.to_json()}));
            }
            "reset" => {
                stats.borrow_mut().reset();
                out(json!({"ev": "reset"}));
            }
            "quit" => break,
            _ => out(json!({"ev": "error", "err": format!("unknown command {line:?}")})),
        }
    }
    Ok(())
}

/// One full login cycle: connect, authenticate, subscribe (STOMP) or
/// bind + roster + presence (XMPP), disconnect.
async fn cycle(t: &Target, src: Option<IpAddr>, i: usize, n: u64) -> io::Result<()> {
    let uid = format!("{}{i}", t.prefix);
    match t.proto {
        Proto::StompTcp | Proto::StompWs => {
            let dest = t.dest.replace("{uid}", &uid);
            let (mut c, mut buf, _) = stomp_open(t, src, &uid, &dest).await?;
            c.send(&stomp::frame("DISCONNECT", &[("receipt", "bye")], "")).await?;
            let _ = tokio::time::timeout(Duration::from_secs(5), stomp::expect(&mut c, &mut buf, "RECEIPT")).await;
            c.close().await;
        }
        Proto::XmppWs => {
            let mut c = WsClient::connect(t.addr, src, &host_header(t), &t.path).await?;
            c.login(&login_for(t, i, &format!("c{n}")), true).await?;
            c.close().await;
        }
        Proto::Bosh => {
            let mut c = BoshClient::connect(t.addr, src, &host_header(t), &t.path, t.bosh_wait).await?;
            c.login(&login_for(t, i, &format!("c{n}"))).await?;
        }
        Proto::Socketio => {
            let c = crate::sio::Client::open(t, src, &uid, &[]).await?;
            drop(c);
        }
    }
    Ok(())
}

async fn churn(args: WorkerArgs) -> io::Result<()> {
    let users: Vec<usize> = (args.from..args.to).collect();
    let slots = args.concurrency.max(1).min(users.len().max(1));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let result = Rc::new(RefCell::new((0u64, 0u64, None::<String>, crate::hist::Hist::default())));
    let mut handles = Vec::new();
    for slot in 0..slots {
        let (t, users, result) = (args.target.clone(), users.clone(), result.clone());
        let src = args.src;
        handles.push(tokio::task::spawn_local(async move {
            // Each slot cycles over its own users, so no user logs in twice at once.
            let mine: Vec<usize> = users.iter().copied().skip(slot).step_by(slots).collect();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let i = mine[(n as usize) % mine.len()];
                n += 1;
                let t0 = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(10), cycle(&t, src, i, n))
                    .await
                    .unwrap_or_else(|_| Err(conn::err("login timed out")));
                let failed = {
                    let mut res = result.borrow_mut();
                    match r {
                        Ok(()) => {
                            res.0 += 1;
                            res.3.record(t0.elapsed().as_micros() as u64);
                            false
                        }
                        Err(e) => {
                            res.1 += 1;
                            res.2.get_or_insert_with(|| e.to_string());
                            true
                        }
                    }
                };
                if failed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let r = result.borrow();
    out(
        json!({"ev": "churn", "ok": r.0, "fail": r.1, "err": r.2, "secs": started.elapsed().as_secs_f64(), "hist": r.3.to_json()}),
    );
    Ok(())
}

async fn register(args: WorkerArgs) -> io::Result<()> {
    let sem = std::sync::Arc::new(Semaphore::new(args.concurrency.max(1)));
    let result = Rc::new(RefCell::new((0usize, 0usize, None::<String>)));
    let mut handles = Vec::new();
    let mut all: Vec<String> = (args.from..args.to).map(|i| format!("{}{i}", args.target.prefix)).collect();
    if args.from == 0 {
        all.push(format!("{}pub", args.target.prefix));
    }
    for user in all {
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let (t, result, src) = (args.target.clone(), result.clone(), args.src);
        handles.push(tokio::task::spawn_local(async move {
            let l = Login { domain: t.domain.clone(), user, pass: t.password.clone(), resource: "r".into() };
            // Up to three tries: a busy server may drop or stall one; a retry
            // after a registration that did go through answers `conflict`, which counts.
            let mut r = Err(conn::err("not tried"));
            for _ in 0..3 {
                let once = async {
                    let mut c = WsClient::connect(t.addr, src, &host_header(&t), &t.path).await?;
                    c.register(&l).await
                };
                r = tokio::time::timeout(Duration::from_secs(20), once)
                    .await
                    .unwrap_or_else(|_| Err(conn::err("timed out")));
                if r.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            match r {
                Ok(_) => result.borrow_mut().0 += 1,
                Err(e) => {
                    let mut r = result.borrow_mut();
                    r.1 += 1;
                    r.2.get_or_insert(e.to_string());
                }
            }
            drop(permit);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let r = result.borrow();
    out(json!({"ev": "registered", "ok": r.0, "fail": r.1, "err": r.2}));
    Ok(())
}

/// Logs in one user and returns its connection, for publishers.
pub async fn xmpp_publisher(t: &Target, user: &str) -> io::Result<WsClient> {
    let mut c = WsClient::connect(t.addr, None, &host_header(t), &t.path).await?;
    let l = Login { domain: t.domain.clone(), user: user.to_owned(), pass: t.password.clone(), resource: "pub".into() };
    c.login(&l, true).await?;
    Ok(c)
}
