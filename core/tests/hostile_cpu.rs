//! Issue 19, findings 1, 5 (hashing) and 6 (login attempts): a client must
//! not be able to freeze the node with CPU work it shapes. Each test runs the
//! `herald` binary as its own process (`HERALD_BIN`, or the one cargo built
//! next to this test: package herald-server, which `cargo build --workspace`
//! and `cargo nextest run --workspace` build), so
//! the same test can be pointed at an older binary and the server's RSS can
//! be read from /proc; the configs use only keys the old binary knows.
//!
//! `HERALD_HOSTILE_FULL=1` runs the flood at the size (1,000
//! simultaneous logins instead of 300).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;

mod common;
use common::{header, Raw};

/// The server under test, killed when dropped (an old binary may be stuck).
struct Server {
    child: Child,
    stomp: SocketAddr,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/herald`: this test runs from `target/<profile>/deps/`.
/// The binary lives in herald-server, so `CARGO_BIN_EXE_herald` is not set here.
fn built_herald() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("herald");
    assert!(bin.exists(), "no herald binary at {}: cargo build -p herald-server, or set HERALD_BIN", bin.display());
    bin
}

impl Server {
    fn start(name: &str, users: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("herald-hostile-cpu-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "[node]\ndata_dir = {data:?}\n[stomp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[auth]\ndefault_permissions = {{ \"/\" = {{ configure = \".*\", write = \".*\", read = \".*\" }} }}\n{users}",
            data = dir.join("data").display().to_string(),
        );
        let path = dir.join("herald.toml");
        std::fs::write(&path, config).unwrap();
        let bin = std::env::var("HERALD_BIN").map(std::path::PathBuf::from).unwrap_or_else(|_| built_herald());
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald binary");
        // Read stdout to its end on a thread: a closed pipe would fail the
        // server's later prints.
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("herald: listening stomp-tcp ") {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let stomp = rx.recv_timeout(Duration::from_secs(10)).expect("stomp listener announced");
        Server { child, stomp, _dir: TempDir(dir) }
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// Samples the server's RSS every 20 ms from another thread; past
    /// `kill_above_kib` of growth it kills the server (an old binary would
    /// otherwise take gigabytes from the machine the tests share).
    fn watch_rss(&self, kill_above_kib: u64) -> RssWatch {
        let pid = self.child.id();
        let before = rss_kib(pid);
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, st) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let now = rss_kib(pid);
                p.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                if now.saturating_sub(before) > kill_above_kib {
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { before, peak, stop }
    }
}

struct RssWatch {
    before: u64,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RssWatch {
    fn growth_kib(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(self.before)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn users(list: &[(&str, &str)]) -> String {
    list.iter().map(|(name, secret)| format!("[[users]]\nname = \"{name}\"\n{secret}\n")).collect()
}

/// CONNECT from a chosen loopback address (Linux routes all of 127/8 to lo),
/// so tests can tell an attacker's address from a user's.
async fn login_from(from: &str, addr: SocketAddr, login: &str, passcode: &str) -> (Raw, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0)).unwrap();
    let s = socket.connect(addr).await.unwrap();
    let mut c = Raw::from_stream(s);
    c.send(&format!("CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\npasscode:{passcode}\n\n\0")).await;
    let f = c.frame().await;
    (c, f)
}

/// The answer to a CONNECT that may wait (a flood login queued for hashing).
async fn answer_from(from: &str, addr: SocketAddr, login: &str, passcode: &str, within: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0)).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(format!("CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\npasscode:{passcode}\n\n\0").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        while !got.contains(&0) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).trim_end_matches('\0').to_owned()
}

/// Finding 1: `a.#.#.#.#.#.#.#.#` (8 `#`, within the default limits) and one
/// SEND with a 40-word key: the old matcher expanded every `#` over every
/// remaining word (~C(47, 8) = 3e8 steps) under the exchange's lock, and
/// another client's SUBSCRIBE (a bind: the write lock) and publish waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_topic_pattern_does_not_freeze_other_clients() {
    let server = Server::start("topic", &users(&[("guest", "password = \"guest\""), ("bob", "password = \"pw\"")]));
    let addr = server.stomp;
    let (mut hostile, f) = Raw::login(addr, "guest", "guest").await;
    assert!(f.starts_with("CONNECTED"), "{f}");
    hostile.send("SUBSCRIBE\nid:h\ndestination:/topic/a.#.#.#.#.#.#.#.#\nreceipt:bound\n\n\0").await;
    assert!(hostile.frame().await.starts_with("RECEIPT"));
    let key = std::iter::once("a").chain(std::iter::repeat_n("w", 39)).collect::<Vec<_>>().join(".");
    hostile.send(&format!("SEND\ndestination:/topic/{key}\nreceipt:sent\n\nboom\0")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Meanwhile another client logs in, binds and publishes on the same exchange.
    let started = Instant::now();
    let other = tokio::time::timeout(Duration::from_secs(3), async {
        let (mut bob, f) = Raw::login(addr, "bob", "pw").await;
        assert!(f.starts_with("CONNECTED"), "{f}");
        bob.send("SUBSCRIBE\nid:b\ndestination:/topic/news.today\n\n\0").await;
        bob.send("SEND\ndestination:/topic/news.today\n\nhello\0").await;
        bob.frame().await
    })
    .await;
    let Ok(message) = other else {
        panic!("another client's login, bind and publish did not finish within 3 s of the hostile SEND");
    };
    assert!(message.starts_with("MESSAGE") && message.ends_with("hello"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The hostile publish itself was routed (to the hostile binding) promptly.
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(hostile.frame().await);
    }
    assert!(got.iter().any(|f| f.starts_with("RECEIPT") && header(f, "receipt-id") == Some("sent")), "{got:?}");
    assert!(got.iter().any(|f| f.starts_with("MESSAGE") && f.ends_with("boom")), "{got:?}");
}

/// Keys and patterns beyond `[routing]` are refused with an ERROR naming the limit.
#[tokio::test]
async fn routing_limits_are_refused_naming_the_limit() {
    let server = Server::start("limits", &users(&[("guest", "password = \"guest\"")]));
    let (mut c, _) = Raw::login(server.stomp, "guest", "guest").await;
    c.send("SUBSCRIBE\nid:h\ndestination:/topic/a.#.#.#.#.#.#.#.#.#\nreceipt:r\n\n\0").await;
    let f = c.frame().await;
    assert!(f.starts_with("ERROR"), "{f}");
    assert!(header(&f, "message").is_some_and(|m| m.contains("routing.max_pattern_hashes")), "{f}");
    let (mut c, _) = Raw::login(server.stomp, "guest", "guest").await;
    let key = vec!["w"; 65].join(".");
    c.send(&format!("SEND\ndestination:/topic/{key}\nreceipt:r\n\nx\0")).await;
    let f = c.frame().await;
    assert!(f.starts_with("ERROR"), "{f}");
    assert!(header(&f, "message").is_some_and(|m| m.contains("routing.max_key_words")), "{f}");
    let (mut c, _) = Raw::login(server.stomp, "guest", "guest").await;
    c.send(&format!("SEND\ndestination:/exchange/amq.direct/{}\nreceipt:r\n\nx\0", "k".repeat(256))).await;
    let f = c.frame().await;
    assert!(header(&f, "message").is_some_and(|m| m.contains("routing.max_key_bytes")), "{f}");
}

/// Finding 5: simultaneous wrong-password CONNECTs for an argon2 user (19 MiB
/// of working memory per verification). Before, each ran on tokio's blocking
/// pool (up to 512 threads): 200 took RSS from 25 MB to 4.1 GB. Now at most
/// `[login] hash_threads` run; the rest wait in a short queue or are told
/// "server busy". Legitimate users meanwhile: a plain-password user, and an
/// argon2 user who logged in before (its verified password is cached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argon2_login_flood_stays_bounded_and_users_get_in() {
    let n: usize = if std::env::var("HERALD_HOSTILE_FULL").is_ok_and(|v| v == "1") { 1000 } else { 300 };
    let hash = herald_core::auth::config_users::hash_password("right").unwrap();
    let list = users(&[
        ("victim", &format!("password_hash = \"{hash}\"")),
        ("alice", &format!("password_hash = \"{hash}\"")),
        ("plain", "password = \"pw\""),
    ]);
    let server = Server::start("argon2", &list);
    let addr = server.stomp;
    // alice logs in once before the flood (from her own address).
    let (_, f) = login_from("127.0.0.2", addr, "alice", "right").await;
    assert!(f.starts_with("CONNECTED"), "{f}");
    let rss = server.watch_rss(400 * 1024);

    let flood: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(async move {
                answer_from("127.0.0.1", addr, "victim", &format!("wrong-{i}"), Duration::from_secs(30)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Legitimate logins from another address while the flood is on.
    let mut legit = Vec::new();
    for (user, pw) in [("plain", "pw"), ("alice", "right"), ("plain", "pw")] {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(3), login_from("127.0.0.2", addr, user, pw)).await;
        let ok = r.as_ref().is_ok_and(|(_, f)| f.starts_with("CONNECTED"));
        legit.push((user, ok, t.elapsed()));
    }

    // Until every flood login has an answer, memory stays bounded.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answers = Vec::new();
    let mut pending = flood;
    while !pending.is_empty() {
        assert!(
            rss.growth_kib() < 200 * 1024,
            "server RSS grew {} MiB during the flood (limit 200)",
            rss.growth_kib() / 1024
        );
        assert!(Instant::now() < deadline, "{} flood logins still unanswered after 60 s", pending.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (done, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|h| h.is_finished());
        for h in done {
            answers.push(h.await.unwrap());
        }
        pending = rest;
    }
    eprintln!("flood of {n}: RSS grew {} KiB (now {} KiB); legit {legit:?}", rss.growth_kib(), server.rss_kib());
    assert!(rss.growth_kib() < 200 * 1024, "server RSS grew {} MiB (limit 200)", rss.growth_kib() / 1024);
    for (user, ok, took) in &legit {
        assert!(*ok && *took < Duration::from_secs(1), "{user}'s login during the flood: ok={ok} in {took:?}");
    }
    let unanswered = answers.iter().filter(|f| !f.starts_with("ERROR")).count();
    assert_eq!(unanswered, 0, "every wrong password refused within 30 s");
    let busy = answers.iter().filter(|f| header(f, "message").is_some_and(|m| m.starts_with("server busy"))).count();
    assert!(busy > 0, "excess logins fail fast as busy");
}

/// Finding 6: 7,371 wrong passwords/s against one account. After
/// `max_failures_per_user` (10) failures the account is backed off for
/// strangers, without the password being checked (the right one is refused
/// too) — but not from the address its owner logged in from.
#[tokio::test]
async fn failed_logins_are_backed_off_without_locking_out_the_owner() {
    let server = Server::start("throttle", &users(&[("alice", "password = \"secret\""), ("bob", "password = \"pw\"")]));
    let addr = server.stomp;
    let (_home, f) = login_from("127.0.0.2", addr, "alice", "secret").await;
    assert!(f.starts_with("CONNECTED"), "{f}");
    let mut refused_at = None;
    for i in 0..30 {
        let (_, f) = login_from("127.0.0.9", addr, "alice", &format!("guess-{i}")).await;
        assert!(f.starts_with("ERROR"), "{f}");
        if header(&f, "message").is_some_and(|m| m.starts_with("too many failed logins; retry in ")) {
            refused_at = Some(i);
            break;
        }
    }
    assert_eq!(refused_at, Some(10), "the 11th attempt is backed off");
    let (_, f) = login_from("127.0.0.9", addr, "alice", "secret").await;
    assert!(
        f.starts_with("ERROR") && f.contains("too many failed logins"),
        "the right password is not even checked: {f}"
    );
    let (_, f) = login_from("127.0.0.2", addr, "alice", "secret").await;
    assert!(f.starts_with("CONNECTED"), "alice still gets in from where she logged in before: {f}");
    let (_, f) = login_from("127.0.0.9", addr, "bob", "pw").await;
    assert!(f.starts_with("CONNECTED"), "other users from that address are not affected yet: {f}");
}
