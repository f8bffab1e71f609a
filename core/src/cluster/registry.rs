//! The node registry in Redis: which nodes exist, where other nodes reach
//! them (forwarded BOSH and SockJS requests) and whether they are alive.
//!
//! Keys (`<prefix>` is `[cluster] prefix`, `herald:` by default):
//! - `<prefix>nodes`: a hash, node name → JSON [`NodeInfo`] (address, start
//!   time, last beat). Entries stay after a node dies, until the survivor
//!   that cleans up after it removes them, so the console can show a dead
//!   node until then.
//! - `<prefix>alive:<node>`: the node's last beat (ms since the epoch),
//!   expiring after `ttl_ms`. A node is alive while this key exists: Redis'
//!   expiry decides, not a protocol of ours.
//!
//! Each beat is two single-key commands, so the scheme works unchanged on a
//! Redis Cluster (no multi-key command across slots).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bus::BusError;
use crate::engine::{Engine, EngineError};
use crate::router::Totals;
use crate::store::now_ms;

/// Most registry entries read (a registry holding more is hostile or
/// misconfigured; the rest are not shown).
pub const MAX_NODES: usize = 256;
/// Largest entry read; a node's own entry is a few hundred bytes.
pub const MAX_INFO_BYTES: usize = 4096;
/// Node names are bounded like `node.name` (config.rs).
const MAX_NAME_BYTES: usize = 255;
const MAX_ADDRESS_BYTES: usize = 512;
const MAX_VERSION_BYTES: usize = 64;

/// What a node says about itself in `<prefix>nodes`, rewritten every beat.
/// Fields added after the first version default when absent, so a node of
/// an older version still shows up.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub name: String,
    /// `[cluster] address`: where other nodes reach this one's HTTP
    /// listener for forwarded requests; `None` when not configured.
    pub address: Option<String>,
    pub started_ms: u64,
    pub beat_ms: u64,
    /// Users with at least one session on the node.
    #[serde(default)]
    pub users: u64,
    /// Messages published per second on the node between its last two beats.
    #[serde(default)]
    pub publish_rate: f64,
    /// Deliveries to consumers per second, likewise.
    #[serde(default)]
    pub deliver_rate: f64,
    /// Resident set size of the process, bytes (None where unreadable).
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    /// The node's Herald version.
    #[serde(default)]
    pub version: String,
    /// Sessions on the node at its last beat.
    pub sessions: u64,
    /// Where other nodes send forwarded BOSH requests (`xmpp.http_listen`
    /// as reached at `address`' host); none before the listeners bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bosh: Option<String>,
    /// The same for SockJS (`http.listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockjs: Option<String>,
}

/// A node as the registry shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Whether its `alive:` key still exists.
    pub alive: bool,
}

impl NodeInfo {
    /// An entry read from Redis, checked: anyone with access to Redis can
    /// write there, so an entry must be small, parse, name the hash field
    /// it is stored under and hold bounded strings and finite, non-negative
    /// rates; anything else is `None` (not shown), never a panic.
    pub fn parse(field: &str, json: &str) -> Option<NodeInfo> {
        if json.len() > MAX_INFO_BYTES || field.len() > MAX_NAME_BYTES {
            return None;
        }
        let mut info: NodeInfo = serde_json::from_str(json).ok()?;
        if info.name != field || info.address.as_ref().is_some_and(|a| a.len() > MAX_ADDRESS_BYTES) {
            return None;
        }
        if info.version.len() > MAX_VERSION_BYTES {
            return None;
        }
        for r in [&mut info.publish_rate, &mut info.deliver_rate] {
            if !r.is_finite() || *r < 0.0 {
                *r = 0.0;
            }
        }
        Some(info)
    }
}

fn prefix(engine: &Engine) -> &str {
    engine.config.cluster.as_ref().map_or("herald:", |c| c.prefix.as_str())
}

pub fn nodes_key(engine: &Engine) -> String {
    format!("{}nodes", prefix(engine))
}

pub fn alive_key(engine: &Engine, node: &str) -> String {
    format!("{}alive:{node}", prefix(engine))
}

fn redis(engine: &Engine) -> Result<&(crate::bus::redis::RedisConn, Duration), BusError> {
    engine.cluster_redis().ok_or_else(|| BusError::Unavailable("not in a cluster".into()))
}

/// Writes this node's beat: its entry in `<prefix>nodes` and its `alive:` key.
pub async fn beat(engine: &Engine, started_ms: u64) -> Result<(), BusError> {
    beat_found(engine, started_ms).await.map(drop)
}

/// [`beat`], saying whether the previous beat was still there: `false`
/// when Redis lost it (restarted without persistence) or it expired (this
/// node was silent for a TTL and may have been reaped), so what this node
/// holds must be asserted again.
async fn beat_found(engine: &Engine, started_ms: u64) -> Result<bool, BusError> {
    let (conn, timeout) = redis(engine)?;
    let cfg = engine.config.cluster.as_ref().expect("in a cluster");
    let now = now_ms();
    let (publish_rate, deliver_rate) = rates(engine);
    let info = NodeInfo {
        name: engine.node().to_owned(),
        address: cfg.address.clone(),
        started_ms,
        beat_ms: now,
        users: engine.hub.user_count() as u64,
        publish_rate,
        deliver_rate,
        rss_bytes: crate::engine::process_rss_bytes(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        sessions: engine.hub.session_count() as u64,
        bosh: forward_target(engine, cfg, "xmpp-http"),
        sockjs: forward_target(engine, cfg, "http"),
    };
    let json = serde_json::to_string(&info).expect("node info serializes");
    let mut hset = redis::cmd("HSET");
    hset.arg(nodes_key(engine)).arg(engine.node()).arg(json);
    conn.query::<()>(&hset, *timeout).await?;
    let mut set = redis::cmd("SET");
    set.arg(alive_key(engine, engine.node())).arg(now).arg("PX").arg(cfg.ttl_ms).arg("GET");
    conn.query::<Option<String>>(&set, *timeout).await.map(|previous| previous.is_some())
}

/// The listener `name` as other nodes reach it: at the host of `[cluster]
/// address` when set (a listener bound to `0.0.0.0` names no host), else
/// at its bound address.
fn forward_target(engine: &Engine, cfg: &crate::config::ClusterConfig, name: &str) -> Option<String> {
    let bound = engine.listeners.lock().iter().find(|l| l.name == name)?.addr;
    let host = match cfg.address.as_deref().and_then(|a| a.parse::<std::net::SocketAddr>().ok()) {
        Some(a) => a.ip(),
        None if bound.ip().is_unspecified() => return None,
        None => bound.ip(),
    };
    Some(std::net::SocketAddr::new(host, bound.port()).to_string())
}

/// Every node in the registry, alive or not, sorted by name.
/// At most [`MAX_NODES`]; entries that do not pass [`NodeInfo::parse`] are skipped.
pub async fn nodes(engine: &Engine) -> Result<Vec<NodeView>, BusError> {
    let (conn, timeout) = redis(engine)?;
    let mut eval = redis::cmd("EVAL");
    eval.arg(READ_NODES).arg(1).arg(nodes_key(engine)).arg(MAX_NODES).arg(MAX_INFO_BYTES);
    let flat: Vec<String> = conn.query(&eval, *timeout).await?;
    let mut out = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks_exact(2).take(MAX_NODES) {
        let (name, json) = (&pair[0], &pair[1]);
        let Some(info) = NodeInfo::parse(name, json) else {
            tracing::warn!(node = name, "cluster: unreadable entry in the node registry");
            continue;
        };
        let mut exists = redis::cmd("EXISTS");
        exists.arg(alive_key(engine, name));
        let alive: bool = conn.query(&exists, *timeout).await?;
        out.push(NodeView { info, alive });
    }
    out.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    Ok(out)
}

/// Beats once (a node that cannot write its first beat does not start),
/// then every `heartbeat_ms` in the node's tasks. A failed beat is logged
/// once per outage; the node keeps serving its local sessions.
pub(super) async fn start(engine: &Engine) -> Result<(), EngineError> {
    let started_ms = now_ms();
    beat(engine, started_ms).await.map_err(|e| EngineError::Cluster(format!("first heartbeat: {e}")))?;
    let every = Duration::from_millis(engine.config.cluster.as_ref().expect("in a cluster").heartbeat_ms);
    let engine = engine.clone();
    let tasks = engine.tasks.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let reaping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            tokio::select! {
                _ = engine.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let beaten = beat_found(&engine, started_ms).await;
            if beaten.is_ok() {
                super::reap::tick(&engine, &reaping);
            }
            let stale = beaten.is_ok() && engine.shared_presence().is_some_and(|s| s.take_stale());
            if matches!(beaten, Ok(false)) || (failing && beaten.is_ok()) || stale {
                tracing::info!(
                    "cluster: Redis lost this node's beat or was out of reach; asserting this node's presence again"
                );
                let again = engine.clone();
                engine.tasks.spawn(async move {
                    match super::reap::reassert(&again).await {
                        Ok(users) => tracing::info!(users, "cluster: presence asserted again"),
                        Err(e) => tracing::warn!("cluster: presence not asserted again: {e}"),
                    }
                });
            }
            match beaten {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("cluster: heartbeat written again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("cluster: heartbeat failed, other nodes may declare this node dead: {e}");
                }
                Err(_) => {}
            }
        }
    });
    Ok(())
}

/// Counters at each engine's previous beat, to turn them into rates: kept
/// here so that `beat` stays a function of the engine and the start time.
/// One small entry per engine of the process (tests run several).
static LAST: Mutex<BTreeMap<(String, Instant), (Instant, Totals)>> = Mutex::new(BTreeMap::new());

/// Messages published and deliveries per second since this engine's
/// previous call (0 at the first).
pub fn rates(engine: &Engine) -> (f64, f64) {
    let mut totals = Totals::default();
    for v in engine.router.vhosts() {
        totals.merge(&v.totals());
    }
    let now = Instant::now();
    let previous = {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        last.insert((engine.node().to_owned(), engine.started_at), (now, totals))
    };
    match previous {
        Some((t, prev)) => {
            let secs = (now - t).as_secs_f64().max(1e-3);
            let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
            (rate(prev.published_messages, totals.published_messages), rate(prev.delivered, totals.delivered))
        }
        None => (0.0, 0.0),
    }
}

/// Reads at most `ARGV[1]` fields of the hash, skipping values longer than
/// `ARGV[2]` bytes, so a hostile entry costs Redis, not this node. One key:
/// fine on a Redis Cluster.
const READ_NODES: &str = r#"
local max, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2])
local out, cursor = {}, "0"
repeat
  local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 100)
  cursor = r[1]
  for i = 1, #r[2], 2 do
    if #out >= 2 * max then return out end
    if #r[2][i] <= 255 and #r[2][i + 1] <= maxlen then
      out[#out + 1] = r[2][i]
      out[#out + 1] = r[2][i + 1]
    end
  end
until cursor == "0"
return out
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            address: Some("127.0.0.1:15674".into()),
            started_ms: 1,
            beat_ms: 2,
            sessions: 3,
            users: 2,
            publish_rate: 1.5,
            deliver_rate: 0.0,
            rss_bytes: Some(1 << 20),
            version: "0.1.0".into(),
            ..NodeInfo::default()
        }
    }

    #[test]
    fn entries_round_trip_and_older_entries_default() {
        let json = serde_json::to_string(&info("n1")).unwrap();
        assert_eq!(NodeInfo::parse("n1", &json), Some(info("n1")));
        let old = r#"{"name":"n1","address":null,"startedMs":1,"beatMs":2,"sessions":3}"#;
        let parsed = NodeInfo::parse("n1", old).expect("an entry of the first version");
        assert_eq!((parsed.users, parsed.rss_bytes, parsed.version.as_str()), (0, None, ""));
    }

    #[test]
    fn hostile_entries_are_refused() {
        let good = serde_json::to_string(&info("n1")).unwrap();
        assert_eq!(NodeInfo::parse("n2", &good), None, "an entry names the field it is stored under");
        for bad in
            ["", "null", "[]", "{", r#"{"name":"n1"}"#, r#"{"name":"n1","startedMs":-1,"beatMs":2,"sessions":3}"#]
        {
            assert_eq!(NodeInfo::parse("n1", bad), None, "{bad}");
        }
        let mut long = info("n1");
        long.version = "v".repeat(65);
        assert_eq!(NodeInfo::parse("n1", &serde_json::to_string(&long).unwrap()), None);
        let mut far = info("n1");
        far.address = Some("a".repeat(513));
        assert_eq!(NodeInfo::parse("n1", &serde_json::to_string(&far).unwrap()), None);
        let padded = format!("{}{}", " ".repeat(MAX_INFO_BYTES), good);
        assert_eq!(NodeInfo::parse("n1", &padded), None, "bounded in bytes before parsing");
        let negative = good.replace("\"publishRate\":1.5", "\"publishRate\":-4");
        assert_eq!(NodeInfo::parse("n1", &negative).unwrap().publish_rate, 0.0);
    }

    #[tokio::test]
    async fn rates_are_per_second_since_the_previous_beat() {
        let engine = Engine::new(crate::config::Config::default()).unwrap();
        assert_eq!(rates(&engine), (0.0, 0.0), "nothing to compare the first beat with");
        for _ in 0..5 {
            engine.publish("/", "amq.topic", "nobody", vec![], bytes::Bytes::from_static(b"x")).unwrap();
        }
        let (publish, deliver) = rates(&engine);
        assert!(publish > 0.0 && deliver == 0.0, "{publish} {deliver}");
        assert_eq!(rates(&engine).0, 0.0, "nothing published since");
    }
}
