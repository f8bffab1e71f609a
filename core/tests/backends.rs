//! The Redis presence store and the MongoDB directory against real servers.
//!
//! Each test starts its own `redis-server` or `secantusd-py` (SecantusDB, a
//! MongoDB-wire server) as a child process on a free loopback port, with its
//! data in a fresh temporary directory, and kills it when done. A missing
//! server binary fails the test (never skips it): install both with
//! `sudo bash tests/services/install.sh` from the repository root.
//!
//! Binaries are looked up as: `$REDIS_SERVER` / `$SECANTUSD` (a path), then
//! `PATH`, then the venv `/var/tmp/herald-venv/bin/` (where the installer
//! puts SecantusDB).

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_core::directory::mongo::{MongoDirectory, MongoMapping};
use herald_core::directory::{self, Directory, DirectoryError, Project};
use herald_core::presence::redis::{RedisPresence, DEFAULT_PREFIX};
use herald_core::presence::{self, Availability, PresenceError, PresenceStore, UserPresence};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};

const VENV_BIN: &str = "/var/tmp/herald-venv/bin";
const INSTALL_HINT: &str = "install the test services with `sudo bash tests/services/install.sh` (from the repository root): \
     it runs `apt-get install redis-server` and `python3 -m venv /var/tmp/herald-venv && /var/tmp/herald-venv/bin/pip install --pre secantusdb`";

// ---------------------------------------------------------------------------
// Child servers

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name unique in this machine's recent history: pid, sequence, time.
fn unique(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() % 1_000_000_000;
    format!("{tag}-{}-{n}-{t}", std::process::id())
}

fn find_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "${env} is set to {} but there is no such file; {INSTALL_HINT}", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from(VENV_BIN)]) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not on PATH, in {VENV_BIN}/, nor named by ${env}: this test needs a real server; {INSTALL_HINT}"
    );
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A server child process, killed (and its data directory removed) on drop.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Starts `bin args(port, dir)` in a fresh directory and waits until the
    /// port accepts connections. Retries on another port if the first was
    /// taken in between.
    fn start(
        name: &'static str,
        bin: &Path,
        args: impl Fn(u16, &Path) -> Vec<String>,
        ready_within: Duration,
    ) -> Server {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let dir = std::env::temp_dir().join(unique(&format!("herald-{name}")));
            std::fs::create_dir_all(&dir).unwrap();
            match Self::start_on(name, bin, port, dir, &args, ready_within) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    fn start_on(
        name: &'static str,
        bin: &Path,
        port: u16,
        dir: PathBuf,
        args: &dyn Fn(u16, &Path) -> Vec<String>,
        ready_within: Duration,
    ) -> Result<Server, String> {
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(bin)
            .args(args(port, &dir))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL_HINT}", bin.display()));
        let mut server = Server { name, child, port, dir };
        let deadline = Instant::now() + ready_within;
        loop {
            if TcpStream::connect_timeout(&server.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                return Err(format!(
                    "{name} ({}) exited with {status} before accepting connections:\n{}",
                    bin.display(),
                    server.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} did not accept connections on port {} within {ready_within:?}:\n{}",
                    server.port,
                    server.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process now (SIGKILL) and waits for it; the port is free after.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} log ({}):\n{}", self.name, self.dir.display(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    .map(String::from)
    .to_vec()
}

fn start_redis() -> Server {
    let bin = find_binary("redis-server", "REDIS_SERVER");
    Server::start("redis-server", &bin, redis_args, Duration::from_secs(10))
}

/// Restarts redis on the same port (after `kill`).
fn restart_redis(old: &Server) -> Server {
    let bin = find_binary("redis-server", "REDIS_SERVER");
    let dir = std::env::temp_dir().join(unique("herald-redis-server"));
    std::fs::create_dir_all(&dir).unwrap();
    Server::start_on("redis-server", &bin, old.port, dir, &redis_args, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn start_secantus() -> Server {
    let bin = find_binary("secantusd-py", "SECANTUSD");
    Server::start(
        "secantusd-py",
        &bin,
        |port, dir| {
            vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--storage-path".into(),
                dir.join("data").display().to_string(),
                "--cache-size".into(),
                "64M".into(),
                "--log-level".into(),
                "WARNING".into(),
            ]
        },
        Duration::from_secs(60),
    )
}

fn redis_url(s: &Server) -> String {
    format!("redis://127.0.0.1:{}/", s.port)
}

fn mongo_uri(s: &Server) -> String {
    format!("mongodb://127.0.0.1:{}/", s.port)
}

/// A plain connection, to look at the keys as another service would.
async fn raw_redis(s: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url(s)).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn raw<T: redis::FromRedisValue>(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(conn).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn up(a: Availability, status: &str, node: &str, t: u64) -> UserPresence {
    UserPresence { availability: a, status: status.into(), node: node.into(), updated_ms: t }
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

/// Runs `f`, asserting it ends with `Unavailable` within `limit`.
async fn assert_unavailable_within<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, PresenceError>>,
) {
    let t0 = Instant::now();
    let r = tokio::time::timeout(limit * 3, f).await.unwrap_or_else(|_| panic!("{what} hung for {:?}", limit * 3));
    let took = t0.elapsed();
    assert!(matches!(r, Err(PresenceError::Unavailable(_))), "{what}: expected Unavailable, got {r:?}");
    assert!(took <= limit, "{what}: Unavailable after {took:?}, more than {limit:?}");
}

// ---------------------------------------------------------------------------
// Redis presence

#[tokio::test]
async fn redis_presence_conforms() {
    let server = start_redis();
    let prefix = format!("{}:", unique("conf"));
    let store = RedisPresence::connect(&redis_url(&server), &prefix).await.unwrap();
    presence::conformance(&store).await;

    // Another prefix on the same server sees none of it.
    let other = RedisPresence::connect(&redis_url(&server), &format!("{}:", unique("other"))).await.unwrap();
    assert_eq!(other.get_user("bob").await.unwrap(), None);
    assert!(other.online("p2").await.unwrap().is_empty());
    assert_eq!(store.online("p2").await.unwrap(), ["bob"]);
    // And the default prefix is the one the README documents.
    assert_eq!(DEFAULT_PREFIX, "herald:");
}

#[tokio::test]
async fn redis_key_layout_on_the_wire() {
    let server = start_redis();
    let store = RedisPresence::connect(&redis_url(&server), DEFAULT_PREFIX).await.unwrap();
    let mut conn = raw_redis(&server).await;

    store.set_user("alice", &up(Availability::Dnd, "in a meeting: 2pm", "node-a", 1_767_225_600_123)).await.unwrap();
    assert_eq!(raw::<String>(&mut conn, &["TYPE", "herald:presence:alice"]).await, "hash");
    let h: HashMap<String, String> = raw(&mut conn, &["HGETALL", "herald:presence:alice"]).await;
    let want: HashMap<String, String> =
        [("state", "dnd"), ("status", "in a meeting: 2pm"), ("node", "node-a"), ("updated", "1767225600123")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(h, want, "presence hash fields and values");

    for a in [Availability::Online, Availability::Away, Availability::Xa, Availability::Chat, Availability::Offline] {
        store.set_user("alice", &up(a, "", "node-a", 5)).await.unwrap();
        assert_eq!(raw::<String>(&mut conn, &["HGET", "herald:presence:alice", "state"]).await, a.as_str());
    }

    store.add_online("p1", "alice").await.unwrap();
    store.add_online("p1", "bob").await.unwrap();
    store.add_online("p-2", "bob").await.unwrap();
    assert_eq!(raw::<String>(&mut conn, &["TYPE", "herald:online:p1"]).await, "set");
    let members: BTreeSet<String> = raw(&mut conn, &["SMEMBERS", "herald:online:p1"]).await;
    assert_eq!(members, ["alice", "bob"].map(String::from).into());
    let keys: BTreeSet<String> = raw(&mut conn, &["KEYS", "*"]).await;
    assert_eq!(
        keys,
        ["herald:presence:alice", "herald:online:p1", "herald:online:p-2"].map(String::from).into(),
        "no other keys"
    );

    // What other services write, Herald reads.
    raw::<()>(
        &mut conn,
        &["HSET", "herald:presence:zed", "state", "busy", "status", "x", "node", "legacy", "updated", "7"],
    )
    .await;
    raw::<()>(&mut conn, &["SADD", "herald:online:p1", "zed"]).await;
    assert_eq!(store.get_user("zed").await.unwrap(), Some(up(Availability::Dnd, "x", "legacy", 7)));
    let mut on = store.online("p1").await.unwrap();
    on.sort();
    assert_eq!(on, ["alice", "bob", "zed"]);
    raw::<()>(&mut conn, &["HSET", "herald:presence:bad", "state", "sleepy"]).await;
    assert!(matches!(store.get_user("bad").await, Err(PresenceError::Unavailable(_))), "unparseable state is reported");

    store.clear_user("alice").await.unwrap();
    assert_eq!(raw::<i64>(&mut conn, &["EXISTS", "herald:presence:alice"]).await, 0, "clear_user deletes the key");
    for uid in ["alice", "bob", "zed"] {
        store.remove_online("p1", uid).await.unwrap();
    }
    assert_eq!(raw::<i64>(&mut conn, &["EXISTS", "herald:online:p1"]).await, 0, "an empty set is no key");

    // A custom prefix is used verbatim.
    let custom = RedisPresence::connect(&redis_url(&server), "acme/").await.unwrap();
    custom.set_user("u1", &up(Availability::Online, "", "n", 1)).await.unwrap();
    custom.add_online("p9", "u1").await.unwrap();
    assert_eq!(raw::<i64>(&mut conn, &["EXISTS", "acme/presence:u1", "acme/online:p9"]).await, 2);
}

#[tokio::test]
async fn redis_heartbeat_sets_node_key_with_ttl() {
    let server = start_redis();
    let prefix = format!("{}:", unique("hb"));
    let store = RedisPresence::connect(&redis_url(&server), &prefix).await.unwrap();
    let mut conn = raw_redis(&server).await;
    let key = format!("{prefix}node:node-1");
    assert_eq!(store.node_key("node-1"), key);

    let before = now_ms();
    store.heartbeat("node-1", Duration::from_secs(30)).await.unwrap();
    let after = now_ms();
    let v: u64 = raw::<String>(&mut conn, &["GET", &key]).await.parse().expect("heartbeat value is ms since the epoch");
    assert!((before..=after).contains(&v), "{before} <= {v} <= {after}");
    let ttl: i64 = raw(&mut conn, &["PTTL", &key]).await;
    assert!(ttl > 25_000 && ttl <= 30_000, "ttl {ttl} ms");

    // A beat renews the TTL; a short one expires.
    store.heartbeat("node-1", Duration::from_millis(300)).await.unwrap();
    let ttl: i64 = raw(&mut conn, &["PTTL", &key]).await;
    assert!(ttl > 0 && ttl <= 300, "ttl {ttl} ms");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(raw::<i64>(&mut conn, &["EXISTS", &key]).await, 0, "node key expired");

    // A zero TTL is clamped, not a Redis error.
    store.heartbeat("node-2", Duration::ZERO).await.unwrap();
}

#[tokio::test]
async fn redis_stopped_is_unavailable_within_timeout_then_recovers() {
    let mut server = start_redis();
    let timeout = Duration::from_millis(500);
    let limit = timeout + Duration::from_millis(500);
    let prefix = format!("{}:", unique("stop"));
    let store = RedisPresence::connect_with_timeout(&redis_url(&server), &prefix, timeout).await.unwrap();
    store.set_user("alice", &up(Availability::Online, "", "n1", 1)).await.unwrap();

    server.kill();
    assert_unavailable_within("get_user", limit, store.get_user("alice")).await;
    assert_unavailable_within("set_user", limit, store.set_user("alice", &up(Availability::Away, "", "n1", 2))).await;
    assert_unavailable_within("add_online", limit, store.add_online("p1", "alice")).await;
    assert_unavailable_within("online", limit, store.online("p1")).await;
    assert_unavailable_within("heartbeat", limit, store.heartbeat("n1", Duration::from_secs(5))).await;

    // Redis comes back on the same address: the same store reconnects by itself.
    let _server = restart_redis(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.set_user("alice", &up(Availability::Chat, "back", "n1", 3)).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reconnect within 10 s: {e}"),
        }
    }
    assert_eq!(store.get_user("alice").await.unwrap(), Some(up(Availability::Chat, "back", "n1", 3)));
}

#[tokio::test]
async fn redis_unreachable_or_stuck_cannot_hang() {
    let timeout = Duration::from_millis(500);
    let limit = timeout + Duration::from_millis(500);

    // Nothing listens.
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    assert_unavailable_within(
        "connect to a closed port",
        limit,
        RedisPresence::connect_with_timeout(&url, "x:", timeout),
    )
    .await;

    // Something accepts connections and never answers.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", stuck.local_addr().unwrap());
    let t0 = Instant::now();
    match tokio::time::timeout(limit * 3, RedisPresence::connect_with_timeout(&url, "x:", timeout))
        .await
        .expect("connect hung")
    {
        Err(PresenceError::Unavailable(_)) => assert!(t0.elapsed() <= limit, "connect took {:?}", t0.elapsed()),
        Ok(store) => assert_unavailable_within("get_user on a stuck server", limit, store.get_user("alice")).await,
    }
    drop(stuck);
}

// ---------------------------------------------------------------------------
// MongoDB directory (SecantusDB speaks the MongoDB wire protocol)

async fn seed(server: &Server, db: &str, coll: &str, docs: Vec<Document>) -> mongodb::Collection<Document> {
    let client = mongodb::Client::with_uri_str(mongo_uri(server)).await.unwrap();
    let c = client.database(db).collection::<Document>(coll);
    if !docs.is_empty() {
        c.insert_many(docs).await.unwrap();
    }
    c
}

fn ids(ps: &[Project]) -> Vec<&str> {
    ps.iter().map(|p| p.id.as_str()).collect()
}

#[tokio::test]
async fn mongo_directory_conforms() {
    let server = start_secantus();
    let db = unique("conf");
    let dir = MongoDirectory::connect(&mongo_uri(&server), &db, MongoMapping::default()).await.unwrap();
    directory::conformance(&dir).await;

    // The documents are what the team's services expect.
    let coll = seed(&server, &db, "projects", vec![]).await;
    let p1 = coll.find_one(doc! { "_id": "p1" }).await.unwrap().expect("p1 stored with a string _id");
    assert_eq!(p1, doc! { "_id": "p1", "members": ["bob"], "name": "p1" });
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);

    // A name set by the team's app survives set_members.
    coll.update_one(doc! { "_id": "p2" }, doc! { "$set": { "name": "Project Two" } }).await.unwrap();
    dir.set_members("p2", &strings(&["carol"])).await.unwrap();
    assert_eq!(
        dir.project("p2").await.unwrap(),
        Some(Project { id: "p2".into(), name: "Project Two".into(), members: strings(&["carol"]) })
    );
}

#[tokio::test]
async fn mongo_custom_mapping_reads_seeded_documents() {
    let server = start_secantus();
    let db = unique("custom");
    let mapping: MongoMapping = serde_json::from_str(
        r#"{"collection":"teams","id_field":"teamId","name_field":"title","members_field":"users"}"#,
    )
    .unwrap();
    seed(
        &server,
        &db,
        "teams",
        vec![
            doc! { "teamId": "t2", "title": "Team Two", "users": ["alice", "bob"], "createdBy": "admin" },
            doc! { "teamId": "t1", "title": "Team One", "users": ["carol", "alice"] },
            doc! { "teamId": "t3", "users": ["bob"] },
            doc! { "teamId": "t4", "title": "Mixed", "users": ["alice", 42, Bson::Null] },
            doc! { "title": "No id", "users": ["alice"] },
        ],
    )
    .await;
    // Same field names in the default collection must not leak in.
    seed(&server, &db, "projects", vec![doc! { "_id": "p1", "name": "P", "members": ["alice"] }]).await;

    let dir = MongoDirectory::connect(&mongo_uri(&server), &db, mapping.clone()).await.unwrap();
    let alice = dir.projects_of("alice").await.unwrap();
    assert_eq!(ids(&alice), ["t1", "t2", "t4"], "sorted by id; documents without an id skipped");
    assert_eq!(alice[0], Project { id: "t1".into(), name: "Team One".into(), members: strings(&["carol", "alice"]) });
    assert_eq!(alice[2].members, ["alice"], "non-string members skipped");
    assert_eq!(dir.project("t3").await.unwrap().unwrap().name, "t3", "no title: named by id");
    assert_eq!(dir.project("p1").await.unwrap(), None);

    dir.set_members("t1", &strings(&["dave"])).await.unwrap();
    dir.set_members("t9", &strings(&["erin", "dave"])).await.unwrap();
    assert_eq!(ids(&dir.projects_of("dave").await.unwrap()), ["t1", "t9"]);
    assert!(ids(&dir.projects_of("alice").await.unwrap()) == ["t2", "t4"]);

    let teams = seed(&server, &db, "teams", vec![]).await;
    let t1 = teams.find_one(doc! { "teamId": "t1" }).await.unwrap().unwrap();
    assert_eq!(
        (t1.get_str("title").unwrap(), t1.get_array("users").unwrap().clone()),
        ("Team One", vec![Bson::from("dave")])
    );
    let t9 = teams.find_one(doc! { "teamId": "t9" }).await.unwrap().expect("t9 upserted");
    assert_eq!(t9.get_str("title").unwrap(), "t9");
    assert_eq!(t9.get_array("users").unwrap(), &vec![Bson::from("erin"), Bson::from("dave")]);
    assert!(t9.get_object_id("_id").is_ok(), "the server gives the upserted document its own _id");

    // The suite passes with this mapping too (on a fresh database).
    let dir2 = MongoDirectory::connect(&mongo_uri(&server), &unique("custom2"), mapping).await.unwrap();
    directory::conformance(&dir2).await;
}

#[tokio::test]
async fn mongo_objectid_ids() {
    let server = start_secantus();
    let db = unique("oid");
    let oid = ObjectId::new();
    let hex = oid.to_hex();
    let coll = seed(
        &server,
        &db,
        "projects",
        vec![
            doc! { "_id": oid, "name": "By ObjectId", "members": ["alice", "bob"] },
            doc! { "_id": "zz-string", "name": "By string", "members": ["alice"] },
            doc! { "_id": "0-string", "members": ["alice"] },
        ],
    )
    .await;
    let dir = MongoDirectory::connect(&mongo_uri(&server), &db, MongoMapping::default()).await.unwrap();

    let alice = dir.projects_of("alice").await.unwrap();
    let mut want = vec!["0-string", hex.as_str(), "zz-string"];
    want.sort();
    assert_eq!(ids(&alice), want, "ObjectIds as hex, sorted with the strings");
    assert_eq!(
        dir.project(&hex).await.unwrap(),
        Some(Project { id: hex.clone(), name: "By ObjectId".into(), members: strings(&["alice", "bob"]) })
    );
    assert_eq!(dir.project(&hex.to_uppercase()).await.unwrap(), None, "ids are exact strings");

    dir.set_members(&hex, &strings(&["carol"])).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 3, "updated in place, not duplicated");
    let stored = coll.find_one(doc! { "_id": oid }).await.unwrap().unwrap();
    assert_eq!(stored, doc! { "_id": oid, "name": "By ObjectId", "members": ["carol"] });
    assert_eq!(ids(&dir.projects_of("carol").await.unwrap()), [hex.as_str()]);

    // A new id of ObjectId form, with no document yet, is stored as a string.
    let fresh = ObjectId::new().to_hex();
    dir.set_members(&fresh, &strings(&["dave"])).await.unwrap();
    assert!(coll.find_one(doc! { "_id": &fresh }).await.unwrap().is_some());
    assert_eq!(dir.project(&fresh).await.unwrap().unwrap().members, ["dave"]);
}

#[tokio::test]
async fn mongo_unreachable_is_unavailable_within_timeout() {
    let limit = Duration::from_secs(4);

    // Nothing listens: server selection gives up after ~2 s.
    let uri = format!("mongodb://127.0.0.1:{}/", free_port());
    let t0 = Instant::now();
    let r = tokio::time::timeout(limit * 3, MongoDirectory::connect(&uri, "x", MongoMapping::default()))
        .await
        .expect("connect hung");
    assert!(matches!(r, Err(DirectoryError::Unavailable(_))), "{r:?}");
    assert!(t0.elapsed() <= limit, "took {:?}", t0.elapsed());

    // The server goes away after connecting.
    let mut server = start_secantus();
    let dir = MongoDirectory::connect(&mongo_uri(&server), &unique("gone"), MongoMapping::default()).await.unwrap();
    dir.set_members("p1", &strings(&["alice"])).await.unwrap();
    server.kill();
    for (what, fut) in [
        ("projects_of", Box::pin(async { dir.projects_of("alice").await.map(|_| ()) }) as directory::BoxFuture<'_, _>),
        ("project", Box::pin(async { dir.project("p1").await.map(|_| ()) })),
        ("set_members", Box::pin(dir.set_members("p1", &[]))),
    ] {
        let t0 = Instant::now();
        let r = tokio::time::timeout(limit * 3, fut).await.unwrap_or_else(|_| panic!("{what} hung"));
        assert!(matches!(r, Err(DirectoryError::Unavailable(_))), "{what}: {r:?}");
        assert!(t0.elapsed() <= limit, "{what} took {:?}", t0.elapsed());
    }

    // Something accepts connections and never answers.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("mongodb://{}/", stuck.local_addr().unwrap());
    let t0 = Instant::now();
    let r = tokio::time::timeout(limit * 3, MongoDirectory::connect(&uri, "x", MongoMapping::default()))
        .await
        .expect("connect hung");
    assert!(matches!(r, Err(DirectoryError::Unavailable(_))), "{r:?}");
    assert!(t0.elapsed() <= limit, "took {:?}", t0.elapsed());
}
