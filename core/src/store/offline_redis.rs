//! Offline storage in Redis, for a cluster: a message kept for a user on
//! one node is there for whichever node the user's next session reaches.
//!
//! Keys (`{…}` is a hash tag: a user's two keys share one slot on a Redis
//! Cluster, so one Lua script may touch both):
//! - `<prefix>off:{<uid>}`: a stream, one entry per message, entry id
//!   `<seq>-1`, fields `t` (stamp, ms), `f` (sender), `s` (stanza).
//! - `<prefix>off:{<uid>}:n`: a hash, `seq` (the last given) and `bytes`
//!   (held). Kept for a day after the box empties, so a seq is not given
//!   again while a delivery that listed the box may still remove through it.
//! - `<prefix>off:total`: bytes held for all users (`max_total_bytes`),
//!   reserved with `INCRBY` before the push and given back if refused.
//!
//! The per-user caps are checked and the message written in one script, so
//! concurrent pushes on several nodes cannot pass a cap together.
//!
//! [`OfflineStore`] is synchronous (the engine decides under a per-user
//! gate): each call is one blocking round trip on a connection of its own,
//! bounded by the configured timeout, run with `block_in_place` on a
//! multi-threaded runtime so the worker's other tasks move elsewhere. The
//! store says it [`blocks`](OfflineStore::blocks): the engine waits for the
//! gate inside `block_in_place` too.

use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use redis::streams::StreamRangeReply;
use redis::{ConnectionLike, Value};

use super::offline::{OfflineError, OfflineLimits, OfflineMessage, OfflineStore};
use super::{Durable, StoreError};

const PUSH: &str = "local n = redis.call('XLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then return {0, 'count'} end
local b = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
if b + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return {0, 'bytes'} end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('HINCRBY', KEYS[2], 'bytes', ARGV[3])
redis.call('PERSIST', KEYS[2])
redis.call('XADD', KEYS[1], seq .. '-1', 't', ARGV[4], 'f', ARGV[5], 's', ARGV[6])
return {1, seq}";

const REMOVE_THROUGH: &str = "local es = redis.call('XRANGE', KEYS[1], '-', ARGV[1] .. '-1')
local freed = 0
for _, e in ipairs(es) do
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'f' or f[i] == 's' then freed = freed + #f[i + 1] end
  end
  redis.call('XDEL', KEYS[1], e[1])
end
if #es > 0 then
  local left = redis.call('HINCRBY', KEYS[2], 'bytes', -freed)
  if redis.call('XLEN', KEYS[1]) == 0 or left < 0 then
    redis.call('DEL', KEYS[1])
    redis.call('HDEL', KEYS[2], 'bytes')
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return freed";

/// How long a user's `seq` outlives their last message.
const SEQ_KEPT_MS: u64 = 24 * 3600 * 1000;

/// Where the Redis is.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    Standalone(String),
    Cluster(Vec<String>),
}

enum Conn {
    Standalone(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let v = match self {
            Conn::Standalone(c) => c.req_command(cmd)?,
            Conn::Cluster(c) => c.req_command(cmd)?,
        };
        Ok(redis::from_redis_value(v)?)
    }
}

pub struct RedisOffline {
    limits: OfflineLimits,
    target: RedisTarget,
    prefix: String,
    timeout: Duration,
    /// One connection, made again after an error.
    conn: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for RedisOffline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOffline").field("prefix", &self.prefix).field("limits", &self.limits).finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Store(StoreError::Unavailable(format!("offline storage in redis: {e}")))
}

/// The hash tag of a user's keys: the uid, or its hex when braces in it
/// would cut the tag short.
fn tag(uid: &str) -> String {
    if uid.contains(['{', '}']) || uid.is_empty() {
        uid.bytes().map(|b| format!("{b:02x}")).collect::<String>() + "~"
    } else {
        uid.to_owned()
    }
}

impl RedisOffline {
    /// Connects (blocking: call before listeners accept, off the runtime's workers).
    pub fn connect(
        target: RedisTarget,
        prefix: &str,
        limits: OfflineLimits,
        timeout: Duration,
    ) -> Result<RedisOffline, OfflineError> {
        let s = RedisOffline { limits, target, prefix: prefix.to_owned(), timeout, conn: Mutex::new(None) };
        let c = s.open()?;
        *s.conn.lock() = Some(c);
        Ok(s)
    }

    fn open(&self) -> Result<Conn, OfflineError> {
        match &self.target {
            RedisTarget::Standalone(url) => {
                let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
                let c = client.get_connection_with_timeout(self.timeout).map_err(unavailable)?;
                c.set_read_timeout(Some(self.timeout)).map_err(unavailable)?;
                c.set_write_timeout(Some(self.timeout)).map_err(unavailable)?;
                Ok(Conn::Standalone(c))
            }
            RedisTarget::Cluster(seeds) => {
                let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .build()
                    .map_err(unavailable)?;
                Ok(Conn::Cluster(Box::new(client.get_connection().map_err(unavailable)?)))
            }
        }
    }

    fn keys(&self, uid: &str) -> (String, String) {
        let box_key = format!("{}off:{{{}}}", self.prefix, tag(uid));
        let meta = format!("{box_key}:n");
        (box_key, meta)
    }

    fn total_key(&self) -> String {
        format!("{}off:total", self.prefix)
    }

    /// One command, blocking, bounded by the timeout; a failed connection
    /// is dropped and made again by the next call.
    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, OfflineError> {
        let run = || {
            let mut guard = self.conn.lock();
            if guard.is_none() {
                *guard = Some(self.open()?);
            }
            let conn = guard.as_mut().expect("just made");
            match conn.query(cmd) {
                Ok(v) => Ok(v),
                Err(e) => {
                    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                        *guard = None;
                    }
                    Err(unavailable(e))
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }

    fn total(&self, delta: i64) -> Result<i64, OfflineError> {
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(self.total_key()).arg(delta);
        self.query(&cmd)
    }
}

impl OfflineStore for RedisOffline {
    fn blocks(&self) -> bool {
        true
    }

    fn push(&self, uid: &str, stamp_ms: u64, from: &str, stanza: Bytes) -> Result<Durable, OfflineError> {
        let size = stanza.len() + from.len();
        if size > self.limits.max_bytes_per_user {
            return Err(OfflineError::Full(format!("{} bytes", self.limits.max_bytes_per_user)));
        }
        // The total first: reserved, and given back when the user's caps refuse.
        let total = self.total(size as i64)?;
        if total > self.limits.max_total_bytes as i64 {
            self.total(-(size as i64))?;
            return Err(OfflineError::Full(format!("{} bytes for all users", self.limits.max_total_bytes)));
        }
        let (k, meta) = self.keys(uid);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUSH)
            .arg(2)
            .arg(&k)
            .arg(&meta)
            .arg(self.limits.max_messages_per_user)
            .arg(self.limits.max_bytes_per_user)
            .arg(size)
            .arg(stamp_ms)
            .arg(from)
            .arg(stanza.as_ref());
        let r: Result<(i64, Value), OfflineError> = self.query(&cmd);
        match r {
            Ok((1, _)) => Ok(Durable::ready(Ok(()))),
            Ok((_, why)) => {
                self.total(-(size as i64))?;
                let why: String = redis::from_redis_value(why).unwrap_or_default();
                Err(OfflineError::Full(if why == "count" {
                    format!("{} messages", self.limits.max_messages_per_user)
                } else {
                    format!("{} bytes", self.limits.max_bytes_per_user)
                }))
            }
            Err(e) => {
                // Whether the script ran is unknown; the reservation is given back.
                let _ = self.total(-(size as i64));
                Err(e)
            }
        }
    }

    fn list(&self, uid: &str) -> Result<Vec<OfflineMessage>, OfflineError> {
        let (k, _) = self.keys(uid);
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&k).arg("-").arg("+").arg("COUNT").arg(self.limits.max_messages_per_user);
        let reply: StreamRangeReply = self.query(&cmd)?;
        // Hostile input (anyone with access to Redis writes these keys):
        // an entry that does not parse is skipped, and sizes are capped.
        let mut out = Vec::with_capacity(reply.ids.len());
        let mut bytes = 0usize;
        for e in reply.ids {
            let Some(seq) = e.id.strip_suffix("-1").and_then(|s| s.parse::<u64>().ok()) else { continue };
            let (Some(stamp_ms), Some(from), Some(stanza)) =
                (e.get::<u64>("t"), e.get::<String>("f"), e.get::<Vec<u8>>("s"))
            else {
                continue;
            };
            bytes = bytes.saturating_add(from.len() + stanza.len());
            if bytes > self.limits.max_bytes_per_user {
                break;
            }
            out.push(OfflineMessage { seq, stamp_ms, from, stanza: Bytes::from(stanza) });
        }
        Ok(out)
    }

    fn remove_through(&self, uid: &str, seq: u64) -> Result<(), OfflineError> {
        let (k, meta) = self.keys(uid);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REMOVE_THROUGH).arg(2).arg(&k).arg(&meta).arg(seq).arg(SEQ_KEPT_MS);
        let freed: i64 = self.query(&cmd)?;
        if freed > 0 {
            self.total(-freed)?;
        }
        Ok(())
    }

    fn count(&self, uid: &str) -> Result<usize, OfflineError> {
        let (k, _) = self.keys(uid);
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(&k);
        self.query(&cmd)
    }
}
