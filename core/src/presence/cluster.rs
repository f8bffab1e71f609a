//! Presence shared by the nodes of a cluster, in the cluster's Redis
//! ([`SharedPresence`]); also the cluster's [`PresenceStore`] (the same
//! `presence:` and `online:` keys as [`super::redis`], whatever `[presence]`
//! says).
//!
//! # Keys (`<prefix>` is `[cluster] prefix`)
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `<prefix>res:{<uid>}` | hash | field `<node>/<session id>` → JSON `{"r": resource, "a": rank 0–5, "s": status, "p": priority}` for every resource of the user on every node; field `v`: a version, incremented at every change of the aggregate. The braces are a hash tag: on a Redis Cluster every key of one user's script is in one slot. |
//! | `<prefix>presence:<uid>` | hash | the aggregate, as [`super::redis`] documents it (`node` is the node of the winning resource) |
//! | `<prefix>online:<project>` | set | uids whose aggregate is not offline |
//! | `<prefix>sessions:<node>` | set | uids with a resource on the node (for the survivor that reaps a dead node) |
//! | `<prefix>jid:<uid>/<resource>` | string | `<node>/<session id>` holding the full JID (conflicts across nodes) |
//!
//! # Atomicity
//!
//! One Lua script per change reads the user's resources, applies the
//! change, recomputes the aggregate and returns it before and after: Redis
//! runs scripts one at a time, so each change of the aggregate is seen by
//! exactly one caller, whichever node it runs on. On a standalone Redis the
//! same script also writes the presence hash, the online sets and
//! `sessions:<node>`, so they are exact at every moment. On a Redis Cluster
//! those keys live in other slots: the caller writes them after the script
//! from the aggregate it returned, then re-reads the version and, if
//! another change came in between, writes the newer aggregate again (the
//! last writer always checks after writing, so the sets converge to the
//! exact state once changes stop). `sessions:<node>` there only grows
//! (a member without resources is harmless to the reaper) until the node's
//! leftovers are reaped.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cut;
use super::{
    Availability, BoxFuture, PresenceError, PresenceStore, SharedChange, SharedPresence, SharedResource, UserPresence,
};
use crate::bus::redis::RedisConn;
use crate::bus::BusError;

/// Limits on what one user may hold in the shared hash, and on what a
/// value read back from Redis may be (anyone with access to Redis can write it).
#[derive(Debug, Clone, Copy)]
pub struct SharedLimits {
    /// Resources of one user on all nodes together; a new one beyond it is refused.
    pub max_resources: usize,
    /// Bytes of a status text kept (longer is cut at a character boundary).
    pub max_status_bytes: usize,
}

impl Default for SharedLimits {
    fn default() -> Self {
        SharedLimits { max_resources: 64, max_status_bytes: 1024 }
    }
}

/// Longest resource name kept (RFC 7622 resourcepart).
const MAX_RESOURCE_BYTES: usize = 1023;
/// Retries of the cluster convergence loop before leaving it to the next change.
const CONVERGE_TRIES: usize = 8;

/// KEYS: 1 res hash; on standalone also 2 presence hash, 3 sessions:<node>, 4.. online sets.
/// ARGV: 1 field or node prefix, 2 mode (set|del|node|replace|get), 3 value JSON
/// (replace: a JSON object field → value, this node's resources), 4 uid,
/// 5 now ms, 6 max resources, 7 this node's field prefix ("<node>/").
/// Returns {before rank, before status, after rank, after status, after node,
/// version, mine, removed field, removed value, ...}.
const UPDATE: &str = r#"
local function agg(all)
  local rank, prio, status, node, mine = 0, -1000, '', '', 0
  for i = 1, #all, 2 do
    local f = all[i]
    local n = string.match(f, '^(.*)/%d+$')
    if n then
      if string.sub(f, 1, #ARGV[7]) == ARGV[7] then mine = mine + 1 end
      local ok, r = pcall(cjson.decode, all[i + 1])
      if ok and type(r) == 'table' and type(r.a) == 'number' and type(r.p) == 'number'
          and r.a >= 1 and r.a <= 5 then
        if r.a > rank or (r.a == rank and r.p > prio) then
          rank = r.a; prio = r.p; node = n
          status = (type(r.s) == 'string') and r.s or ''
        end
      end
    end
  end
  if rank == 0 then status = ''; node = '' end
  return rank, status, node, mine
end
local mode = ARGV[2]
local all = redis.call('HGETALL', KEYS[1])
local br, bs = agg(all)
local removed = {}
if mode == 'set' then
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) > tonumber(ARGV[6]) then
    return redis.error_reply('HERALD too many resources')
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
elseif mode == 'del' then
  redis.call('HDEL', KEYS[1], ARGV[1])
elseif mode == 'node' or mode == 'replace' then
  local keep = {}
  if mode == 'replace' then keep = cjson.decode(ARGV[3]) end
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, #ARGV[1]) == ARGV[1] and string.match(string.sub(f, #ARGV[1] + 1), '^%d+$')
        and keep[f] == nil then
      redis.call('HDEL', KEYS[1], f)
      removed[#removed + 1] = f
      removed[#removed + 1] = all[i + 1]
    end
  end
  for f, v in pairs(keep) do redis.call('HSET', KEYS[1], f, v) end
end
local ar, as, an, mine = br, bs, '', 0
if mode ~= 'get' then all = redis.call('HGETALL', KEYS[1]) end
ar, as, an, mine = agg(all)
local v
if ar ~= br or as ~= bs then
  v = redis.call('HINCRBY', KEYS[1], 'v', 1)
else
  v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
end
if mode ~= 'get' then
  if redis.call('HLEN', KEYS[1]) <= 1 and ar == 0 then
    -- Nothing left but the version. Standalone needs no version: gone.
    -- On a cluster the convergence loop compares it: kept a while.
    if #KEYS >= 3 then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], 3600000) end
  else
    redis.call('PERSIST', KEYS[1])
  end
end
if #KEYS >= 3 and mode ~= 'get' then
  if ar ~= br or as ~= bs then
    if ar > 0 then
      local names = {'offline', 'xa', 'away', 'dnd', 'online', 'chat'}
      redis.call('HSET', KEYS[2], 'state', names[ar + 1], 'status', as, 'node', an, 'updated', ARGV[5])
    else
      redis.call('DEL', KEYS[2])
    end
  end
  for i = 4, #KEYS do
    if ar > 0 then redis.call('SADD', KEYS[i], ARGV[4]) else redis.call('SREM', KEYS[i], ARGV[4]) end
  end
  if mode ~= 'node' then
    if mine > 0 then redis.call('SADD', KEYS[3], ARGV[4]) else redis.call('SREM', KEYS[3], ARGV[4]) end
  end
end
local out = {br, bs, ar, as, an, v, mine}
for i = 1, #removed do out[#out + 1] = removed[i] end
return out
"#;

/// Deletes KEYS[1] only if it still holds ARGV[1].
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A Lua script run by EVALSHA (its SHA-1 computed here), EVAL when
/// Redis does not know it yet.
#[derive(Clone)]
struct Script {
    code: &'static str,
    sha: String,
}

impl Script {
    fn new(code: &'static str) -> Script {
        use sha1::{Digest, Sha1};
        let sha = Sha1::digest(code.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        Script { code, sha }
    }
}

/// [`SharedPresence`] and [`PresenceStore`] in the cluster's Redis.
#[derive(Clone)]
pub struct RedisSharedPresence {
    conn: RedisConn,
    timeout: Duration,
    prefix: String,
    node: String,
    limits: SharedLimits,
    update: Script,
    release: Script,
    stale: Arc<AtomicBool>,
    /// Updates sent to Redis at once ([`UPDATES_IN_FLIGHT`]); the rest wait
    /// here, outside the command timeout.
    updating: Arc<tokio::sync::Semaphore>,
}

/// Presence updates a node has in flight at once. When thousands of
/// sessions log in or out together (a load balancer dropping every
/// connection, a restart), they queue on the node and reach Redis at its
/// pace, instead of all waiting in Redis and timing out together (S5's
/// mass disconnect, docs/benchmarks.md); their notices to other nodes,
/// sent after each update, are paced with them. A turn is waited for at
/// most ten command timeouts, and not at all once an update has failed
/// (the view is stale until the next beat re-asserts it).
pub const UPDATES_IN_FLIGHT: usize = 128;

impl fmt::Debug for RedisSharedPresence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSharedPresence").field("prefix", &self.prefix).field("node", &self.node).finish()
    }
}

fn unavailable(e: BusError) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

fn rank(a: Availability) -> u8 {
    a as u8
}

fn from_rank(r: i64) -> Availability {
    match r {
        1 => Availability::Xa,
        2 => Availability::Away,
        3 => Availability::Dnd,
        4 => Availability::Online,
        5 => Availability::Chat,
        _ => Availability::Offline,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    r: String,
    a: u8,
    s: String,
    p: i8,
}

/// A field and value of the shared hash, as written by a node; `None` for
/// anything else (hostile or foreign).
fn parse_resource(field: &str, value: &str) -> Option<SharedResource> {
    let (node, session) = field.rsplit_once('/')?;
    let session: u64 = session.parse().ok()?;
    let v: Stored = serde_json::from_str(value).ok()?;
    if node.is_empty() || v.r.len() > MAX_RESOURCE_BYTES || !(1..=5).contains(&v.a) {
        return None;
    }
    Some(SharedResource {
        node: node.to_owned(),
        session,
        resource: v.r,
        availability: from_rank(i64::from(v.a)),
        status: v.s,
        priority: v.p,
    })
}

/// What the update script returned.
struct Outcome {
    change: SharedChange,
    node: String,
    version: i64,
    removed: Vec<SharedResource>,
}

fn parse_outcome(v: redis::Value) -> Result<Outcome, PresenceError> {
    let bad = || PresenceError::Unavailable("redis: unexpected reply from the presence script".into());
    let items: Vec<redis::Value> = redis::from_redis_value(v).map_err(|_| bad())?;
    if items.len() < 7 {
        return Err(bad());
    }
    let int = |i: usize| -> Result<i64, PresenceError> { redis::from_redis_value(items[i].clone()).map_err(|_| bad()) };
    let text =
        |i: usize| -> Result<String, PresenceError> { redis::from_redis_value(items[i].clone()).map_err(|_| bad()) };
    let mut removed = Vec::new();
    let mut i = 7;
    while i + 1 < items.len() {
        if let Some(r) = parse_resource(&text(i)?, &text(i + 1)?) {
            removed.push(r);
        }
        i += 2;
    }
    Ok(Outcome {
        change: SharedChange { before: (from_rank(int(0)?), text(1)?), after: (from_rank(int(2)?), text(3)?) },
        node: text(4)?,
        version: int(5)?,
        removed,
    })
}

impl RedisSharedPresence {
    pub fn new(conn: RedisConn, timeout: Duration, prefix: &str, node: &str, limits: SharedLimits) -> Self {
        RedisSharedPresence {
            conn,
            timeout,
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            limits,
            update: Script::new(UPDATE),
            release: Script::new(RELEASE),
            stale: Arc::default(),
            updating: Arc::new(tokio::sync::Semaphore::new(UPDATES_IN_FLIGHT)),
        }
    }

    pub fn resources_key(&self, uid: &str) -> String {
        format!("{}res:{{{uid}}}", self.prefix)
    }

    pub fn user_key(&self, uid: &str) -> String {
        format!("{}presence:{uid}", self.prefix)
    }

    pub fn online_key(&self, project: &str) -> String {
        format!("{}online:{project}", self.prefix)
    }

    pub fn sessions_key(&self, node: &str) -> String {
        format!("{}sessions:{node}", self.prefix)
    }

    pub fn jid_key(&self, uid: &str, resource: &str) -> String {
        format!("{}jid:{uid}/{resource}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, PresenceError> {
        self.conn.query(cmd, self.timeout).await.map_err(unavailable)
    }

    /// EVALSHA, loading the script on NOSCRIPT (a restarted Redis forgot it).
    async fn script(&self, script: &Script, keys: &[String], args: &[String]) -> Result<redis::Value, PresenceError> {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&script.sha).arg(keys.len()).arg(keys).arg(args);
        match self.conn.query::<redis::Value>(&evalsha, self.timeout).await {
            Err(BusError::Unavailable(e)) if e.contains("NOSCRIPT") || e.contains("NoScript") => {
                let mut eval = redis::cmd("EVAL");
                eval.arg(script.code).arg(keys.len()).arg(keys).arg(args);
                self.run(&eval).await
            }
            r => r.map_err(unavailable),
        }
    }

    async fn run_update(
        &self,
        uid: &str,
        mode: &str,
        field: &str,
        value: &str,
        projects: &[String],
        sessions_of: &str,
    ) -> Result<Outcome, PresenceError> {
        let mut keys = vec![self.resources_key(uid)];
        let sharded = self.conn.sharded();
        if !sharded {
            keys.push(self.user_key(uid));
            keys.push(self.sessions_key(sessions_of));
            keys.extend(projects.iter().map(|p| self.online_key(p)));
        }
        let args = [
            field.to_owned(),
            mode.to_owned(),
            value.to_owned(),
            uid.to_owned(),
            crate::store::now_ms().to_string(),
            self.limits.max_resources.to_string(),
            format!("{}/", self.node),
        ];
        let out = parse_outcome(self.script(&self.update, &keys, &args).await?)?;
        if sharded {
            self.converge(uid, projects, &out).await?;
        }
        Ok(out)
    }

    /// The user's aggregate and version, changing nothing.
    async fn current(&self, uid: &str) -> Result<Outcome, PresenceError> {
        let keys = [self.resources_key(uid)];
        let args = ["", "get", "", uid, "0", "0", ""].map(String::from);
        parse_outcome(self.script(&self.update, &keys, &args).await?)
    }

    /// Redis Cluster: writes the keys of other slots from the aggregate the
    /// script returned, until the version read back is the one written.
    async fn converge(&self, uid: &str, projects: &[String], first: &Outcome) -> Result<(), PresenceError> {
        let (mut after, mut node, mut version) = (first.change.after.clone(), first.node.clone(), first.version);
        if !first.change.changed() {
            return Ok(());
        }
        for _ in 0..CONVERGE_TRIES {
            self.write_aggregate(uid, projects, &after, &node).await?;
            let now = self.current(uid).await?;
            if now.version == version {
                return Ok(());
            }
            (after, node, version) = (now.change.after, now.node, now.version);
        }
        tracing::warn!(uid, "cluster presence: online sets still moving after {CONVERGE_TRIES} writes");
        Ok(())
    }

    async fn write_aggregate(
        &self,
        uid: &str,
        projects: &[String],
        after: &(Availability, String),
        node: &str,
    ) -> Result<(), PresenceError> {
        if after.0 == Availability::Offline {
            self.run::<()>(redis::cmd("DEL").arg(self.user_key(uid))).await?;
        } else {
            let p = UserPresence {
                availability: after.0,
                status: after.1.clone(),
                node: node.to_owned(),
                updated_ms: crate::store::now_ms(),
            };
            self.set_user(uid, &p).await?;
        }
        for p in projects {
            let op = if after.0 == Availability::Offline { "SREM" } else { "SADD" };
            self.run::<()>(redis::cmd(op).arg(self.online_key(p)).arg(uid)).await?;
        }
        Ok(())
    }
}

impl SharedPresence for RedisSharedPresence {
    fn node(&self) -> &str {
        &self.node
    }

    fn mark_stale(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::SeqCst)
    }

    fn update<'a>(
        &'a self,
        uid: &'a str,
        session: u64,
        state: Option<&'a SharedResource>,
        projects: &'a [String],
    ) -> BoxFuture<'a, Result<SharedChange, PresenceError>> {
        Box::pin(async move {
            // A turn within ten command timeouts. Once an update has failed
            // (Redis out of reach) the queued ones fail at once: the node's
            // next beat replaces its resources in Redis with its own view,
            // so nothing waits minutes behind a Redis that does not answer.
            let turn = tokio::time::timeout(self.timeout * 10, self.updating.acquire()).await;
            let Ok(Ok(_turn)) = turn else {
                self.mark_stale();
                return Err(PresenceError::Unavailable("presence updates queued on this node past their turn".into()));
            };
            if self.stale.load(Ordering::SeqCst) {
                return Err(PresenceError::Unavailable(
                    "an earlier update failed: this node's presence is asserted again at its next beat".into(),
                ));
            }
            let field = format!("{}/{session}", self.node);
            let (mode, value) = match state.filter(|s| s.availability != Availability::Offline) {
                Some(s) => {
                    let v = Stored {
                        r: cut(&s.resource, MAX_RESOURCE_BYTES).to_owned(),
                        a: rank(s.availability),
                        s: cut(&s.status, self.limits.max_status_bytes).to_owned(),
                        p: s.priority,
                    };
                    ("set", serde_json::to_string(&v).expect("serializes"))
                }
                None => ("del", String::new()),
            };
            if self.conn.sharded() && mode == "set" {
                // Before the resource exists, so a survivor reaping this node finds it.
                self.run::<()>(redis::cmd("SADD").arg(self.sessions_key(&self.node)).arg(uid)).await?;
            }
            let out = self.run_update(uid, mode, &field, &value, projects, &self.node).await?;
            Ok(out.change)
        })
    }

    fn resources<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Vec<SharedResource>, PresenceError>> {
        Box::pin(async move {
            let all: Vec<(String, String)> = self.run(redis::cmd("HGETALL").arg(self.resources_key(uid))).await?;
            let mut out: Vec<SharedResource> =
                all.iter().filter_map(|(f, v)| parse_resource(f, v)).take(self.limits.max_resources).collect();
            out.sort_by(|a, b| (&a.node, a.session).cmp(&(&b.node, b.session)));
            Ok(out)
        })
    }

    fn users_on<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<String>, PresenceError>> {
        Box::pin(async move {
            let key = self.sessions_key(node);
            let mut cursor = 0u64;
            let mut out = Vec::new();
            loop {
                let (next, batch): (u64, Vec<String>) =
                    self.run(redis::cmd("SSCAN").arg(&key).arg(cursor).arg("COUNT").arg(1000)).await?;
                out.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            out.sort_unstable();
            out.dedup();
            Ok(out)
        })
    }

    fn remove_node<'a>(
        &'a self,
        uid: &'a str,
        node: &'a str,
        projects: &'a [String],
    ) -> BoxFuture<'a, Result<(Vec<SharedResource>, SharedChange), PresenceError>> {
        Box::pin(async move {
            let out = self.run_update(uid, "node", &format!("{node}/"), "", projects, node).await?;
            Ok((out.removed, out.change))
        })
    }

    fn replace_mine<'a>(
        &'a self,
        uid: &'a str,
        resources: &'a [SharedResource],
        projects: &'a [String],
    ) -> BoxFuture<'a, Result<SharedChange, PresenceError>> {
        Box::pin(async move {
            let mut keep = serde_json::Map::new();
            for r in
                resources.iter().filter(|r| r.availability != Availability::Offline).take(self.limits.max_resources)
            {
                let v = Stored {
                    r: cut(&r.resource, MAX_RESOURCE_BYTES).to_owned(),
                    a: rank(r.availability),
                    s: cut(&r.status, self.limits.max_status_bytes).to_owned(),
                    p: r.priority,
                };
                let v = serde_json::to_string(&v).expect("serializes");
                keep.insert(format!("{}/{}", self.node, r.session), serde_json::Value::String(v));
            }
            if self.conn.sharded() && !keep.is_empty() {
                self.run::<()>(redis::cmd("SADD").arg(self.sessions_key(&self.node)).arg(uid)).await?;
            }
            // An empty Lua table decodes from `{}` as well: nothing kept.
            let keep = serde_json::Value::Object(keep).to_string();
            let node = format!("{}/", self.node);
            let out = self.run_update(uid, "replace", &node, &keep, projects, &self.node).await?;
            Ok(out.change)
        })
    }

    fn forget_node<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move { self.run::<()>(redis::cmd("DEL").arg(self.sessions_key(node))).await })
    }

    fn claim<'a>(
        &'a self,
        uid: &'a str,
        resource: &'a str,
        session: u64,
    ) -> BoxFuture<'a, Result<Option<(String, u64)>, PresenceError>> {
        Box::pin(async move {
            let mut set = redis::cmd("SET");
            set.arg(self.jid_key(uid, resource)).arg(format!("{}/{session}", self.node)).arg("GET");
            let old: Option<String> = self.run(&set).await?;
            Ok(old.and_then(|o| {
                let (node, s) = o.rsplit_once('/')?;
                Some((node.to_owned(), s.parse().ok()?))
            }))
        })
    }

    fn release_of<'a>(
        &'a self,
        uid: &'a str,
        resource: &'a str,
        node: &'a str,
        session: u64,
    ) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move {
            let keys = [self.jid_key(uid, resource)];
            self.script(&self.release, &keys, &[format!("{node}/{session}")]).await.map(drop)
        })
    }
}

impl PresenceStore for RedisSharedPresence {
    fn set_user<'a>(&'a self, uid: &'a str, presence: &'a UserPresence) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(self.user_key(uid))
                .arg("state")
                .arg(presence.availability.as_str())
                .arg("status")
                .arg(&presence.status)
                .arg("node")
                .arg(&presence.node)
                .arg("updated")
                .arg(presence.updated_ms);
            self.run::<()>(&cmd).await
        })
    }

    fn get_user<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Option<UserPresence>, PresenceError>> {
        Box::pin(async move {
            let key = self.user_key(uid);
            let h: std::collections::HashMap<String, String> = self.run(redis::cmd("HGETALL").arg(&key)).await?;
            super::redis::parse_user(&key, h)
        })
    }

    fn clear_user<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move { self.run::<()>(redis::cmd("DEL").arg(self.user_key(uid))).await })
    }

    fn add_online<'a>(&'a self, project: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move { self.run::<()>(redis::cmd("SADD").arg(self.online_key(project)).arg(uid)).await })
    }

    fn remove_online<'a>(&'a self, project: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move { self.run::<()>(redis::cmd("SREM").arg(self.online_key(project)).arg(uid)).await })
    }

    fn online<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<String>, PresenceError>> {
        Box::pin(async move { self.run(redis::cmd("SMEMBERS").arg(self.online_key(project))).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_fields_and_values_are_skipped() {
        let ok = r#"{"r":"phone","a":4,"s":"hi","p":-1}"#;
        let r = parse_resource("n1/7", ok).unwrap();
        assert_eq!((r.node.as_str(), r.session, r.availability, r.priority), ("n1", 7, Availability::Online, -1));
        assert_eq!(parse_resource("a/b/9", ok).unwrap().node, "a/b", "the session is after the last slash");
        for (f, v) in [
            ("v", "3"),
            ("n1/x", ok),
            ("/7", ok),
            ("n1/7", "{"),
            ("n1/7", r#"{"r":"x","a":9,"s":"","p":0}"#),
            ("n1/7", r#"{"r":"x","a":0,"s":"","p":0}"#),
            ("n1/7", r#"{"r":"x","a":4,"s":"","p":300}"#),
        ] {
            assert!(parse_resource(f, v).is_none(), "{f} {v}");
        }
        assert_eq!(cut("héllo", 2), "h", "cut at a character boundary");
    }
}
