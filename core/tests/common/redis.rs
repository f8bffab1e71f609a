//! A real `redis-server` (and a 3-master Redis Cluster) for the tests that
//! need one: started on a fixed port, killed (and its directory removed) on
//! drop. A missing `redis-server` or `redis-cli` fails the test loudly.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HINT: &str = "install it with `sudo bash tests/services/install.sh` (apt-get install redis-server)";

pub fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH: this test needs a real Redis; {HINT}"))
}

/// A redis-server child, killed (and its directory removed) on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Redis {
    pub fn start(port: u16, extra: &[&str]) -> Redis {
        let dir = std::env::temp_dir().join(format!("herald-test-redis-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> =
            ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .map(String::from)
                .to_vec();
        args.push("--dir".into());
        args.push(dir.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        Redis::spawn(port, dir, args)
    }

    fn spawn(port: u16, dir: PathBuf, args: Vec<String>) -> Redis {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
        let child = Command::new(binary("redis-server"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}; {HINT}"));
        let mut r = Redis { child, port, dir, args };
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = r.child.try_wait().unwrap() {
                panic!("redis-server on {port} exited with {status}:\n{}", r.log());
            }
            assert!(Instant::now() < deadline, "redis-server on {port} not up in 10 s:\n{}", r.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// kill -9, then the same server again: same port, directory, arguments
    /// (a cluster node keeps its identity and slots in nodes.conf).
    pub fn restart(&mut self) {
        self.kill();
        let (dir, args) = (self.dir.clone(), std::mem::take(&mut self.args));
        let fresh = Redis::spawn(self.port, dir, args);
        // The old value's process is gone and its directory is the new
        // one's: forgetting it skips the Drop that would remove that.
        let old = std::mem::replace(self, fresh);
        std::mem::forget(old);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `redis-cli -p PORT ARGS...`, its output trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary("redis-cli"))
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}; {HINT}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// [`Redis::cli`], its non-empty output lines.
    pub fn cli_lines(&self, args: &[&str]) -> Vec<String> {
        self.cli(args).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
    }

    /// Subscribers of a (classic) pub/sub channel.
    pub fn numsub(&self, channel: &str) -> usize {
        let out = self.cli_lines(&["PUBSUB", "NUMSUB", channel]);
        out.get(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("NUMSUB answer {out:?}"))
    }

    /// SIGSTOP (`stop = true`) or SIGCONT: a Redis that stalls.
    pub fn pause(&self, stop: bool) {
        let sig = if stop { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- redis {} log:\n{}", self.port, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters with `cluster-enabled yes`, joined by `redis-cli --cluster create`.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start(ports: [u16; 3]) -> Cluster {
        let nodes: Vec<Redis> = ports
            .iter()
            .map(|&p| {
                let bus_port = (p + 10).to_string();
                Redis::start(
                    p,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "3000",
                        "--cluster-port",
                        &bus_port,
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(binary("redis-cli"))
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}; {HINT}"));
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Cluster { nodes };
        cluster.wait_ok();
        cluster
    }

    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for p in self.nodes.iter().map(|r| r.port) {
            loop {
                let out =
                    Command::new(binary("redis-cli")).args(["-p", &p.to_string(), "cluster", "info"]).output().unwrap();
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok on {p} within 20 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }
}
