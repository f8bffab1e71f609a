//! Offline storage in the data directory: one fjall keyspace, `offline`.
//!
//! Key: the uid's length (u16, big-endian), the uid, then the message's seq
//! (u64, big-endian), so one user's messages are one key prefix and sort in
//! arrival order. Value: the stamp (u64 BE), the sender's length (u32 BE),
//! the sender, then the stanza.
//!
//! Counts, bytes and the next seq per user are kept in memory, rebuilt by one
//! scan at open (bounded by the caps times the users with messages waiting):
//! the cap check and the seq are decided under one lock, without reading the
//! disk.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use fjall::Keyspace;
use parking_lot::Mutex;

use super::offline::{over_cap, OfflineError, OfflineLimits, OfflineMessage, OfflineStore};
use super::{Disk, Durable, StoreError};

const KEYSPACE: &str = "offline";

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    count: usize,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Tallies {
    users: HashMap<String, Tally>,
    /// Bytes held across all users (`max_total_bytes`).
    total: usize,
    /// The last seq given, over all users (the largest on disk at open): a
    /// seq is never given twice, so a `remove_through` of a delivery that
    /// listed an emptied box cannot reach a message kept after it.
    last_seq: u64,
}

pub struct DiskOffline {
    limits: OfflineLimits,
    disk: Arc<Disk>,
    ks: Keyspace,
    tallies: Mutex<Tallies>,
}

impl std::fmt::Debug for DiskOffline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskOffline").field("limits", &self.limits).finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Store(super::io(e))
}

/// The key prefix of one user's messages. A uid longer than u16 cannot
/// occur (uids are JID local parts, at most 1023 bytes), but is cut, not trusted.
fn prefix(uid: &str) -> Vec<u8> {
    let uid = &uid.as_bytes()[..uid.len().min(u16::MAX as usize)];
    let mut k = Vec::with_capacity(2 + uid.len() + 8);
    k.extend_from_slice(&(uid.len() as u16).to_be_bytes());
    k.extend_from_slice(uid);
    k
}

fn key(uid: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(uid);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `(uid, seq)` of a key, `None` for a key this module did not write.
fn parse_key(k: &[u8]) -> Option<(String, u64)> {
    let len = u16::from_be_bytes(k.get(..2)?.try_into().ok()?) as usize;
    let uid = std::str::from_utf8(k.get(2..2 + len)?).ok()?;
    let seq = u64::from_be_bytes(k.get(2 + len..)?.try_into().ok()?);
    Some((uid.to_owned(), seq))
}

fn encode(stamp_ms: u64, from: &str, stanza: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + from.len() + stanza.len());
    v.extend_from_slice(&stamp_ms.to_be_bytes());
    v.extend_from_slice(&(from.len() as u32).to_be_bytes());
    v.extend_from_slice(from.as_bytes());
    v.extend_from_slice(stanza);
    v
}

fn decode(seq: u64, v: &[u8]) -> Option<OfflineMessage> {
    let stamp_ms = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let flen = u32::from_be_bytes(v.get(8..12)?.try_into().ok()?) as usize;
    let from = std::str::from_utf8(v.get(12..12 + flen)?).ok()?.to_owned();
    let stanza = Bytes::copy_from_slice(v.get(12 + flen..)?);
    Some(OfflineMessage { seq, stamp_ms, from, stanza })
}

impl DiskOffline {
    /// Opens the `offline` keyspace and counts what is waiting in it.
    pub fn open(disk: Arc<Disk>, limits: OfflineLimits) -> Result<DiskOffline, StoreError> {
        let ks = disk.keyspace(KEYSPACE)?;
        let mut users: HashMap<String, Tally> = HashMap::new();
        let mut last_seq = 0;
        for item in ks.iter() {
            let (k, v) = item.into_inner().map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let Some((uid, seq)) = parse_key(&k) else { continue };
            let Some(m) = decode(seq, &v) else {
                tracing::warn!(uid, seq, "unreadable offline message skipped");
                continue;
            };
            let t = users.entry(uid).or_default();
            t.count += 1;
            t.bytes += m.held_bytes();
            last_seq = last_seq.max(seq);
        }
        let total = users.values().map(|t| t.bytes).sum();
        if !users.is_empty() {
            let n: usize = users.values().map(|t| t.count).sum();
            tracing::info!(
                users = users.len(),
                messages = n,
                bytes = total,
                "offline messages waiting in the data directory"
            );
        }
        Ok(DiskOffline { limits, disk, ks, tallies: Mutex::new(Tallies { users, total, last_seq }) })
    }
}

impl OfflineStore for DiskOffline {
    fn push(&self, uid: &str, stamp_ms: u64, from: &str, stanza: Bytes) -> Result<Durable, OfflineError> {
        let size = stanza.len() + from.len();
        {
            let mut tallies = self.tallies.lock();
            let Tallies { users, total, last_seq } = &mut *tallies;
            let t = users.get(uid).copied().unwrap_or_default();
            if let Some(limit) = over_cap(&self.limits, t.count, t.bytes, *total, size) {
                return Err(OfflineError::Full(limit));
            }
            let seq = *last_seq + 1;
            // Written under the lock: seqs reach the keyspace in order, and
            // the tally never counts a message the disk refused.
            self.ks.insert(key(uid, seq), encode(stamp_ms, from, &stanza)).map_err(io)?;
            users.insert(uid.to_owned(), Tally { count: t.count + 1, bytes: t.bytes + size });
            *last_seq = seq;
            *total += size;
        }
        // Asked even when nobody waits: the ticket makes the syncer run, so
        // the message reaches the disk promptly (survives kill -9).
        Ok(self.disk.durable())
    }

    fn list(&self, uid: &str) -> Result<Vec<OfflineMessage>, OfflineError> {
        let p = prefix(uid);
        let mut out = Vec::new();
        for item in self.ks.prefix(&p) {
            let (k, v) = item.into_inner().map_err(io)?;
            let Some((_, seq)) = parse_key(&k).filter(|(u, _)| u == uid) else { continue };
            if let Some(m) = decode(seq, &v) {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn remove_through(&self, uid: &str, seq: u64) -> Result<(), OfflineError> {
        let mut tallies = self.tallies.lock();
        let Tallies { users, total, .. } = &mut *tallies;
        let Some(mut t) = users.get(uid).copied() else { return Ok(()) };
        let mut batch = self.disk.database().batch();
        let (mut n, mut bytes) = (0, 0);
        for item in self.ks.range(prefix(uid)..=key(uid, seq)) {
            let (k, v) = item.into_inner().map_err(io)?;
            if let Some(m) = parse_key(&k).filter(|(u, _)| u == uid).and_then(|(_, s)| decode(s, &v)) {
                n += 1;
                bytes += m.held_bytes();
            }
            batch.remove(&self.ks, k);
        }
        // Not waited for: a removal lost to a crash only means the message
        // is delivered again (at least once), and the next sync carries it.
        batch.commit().map_err(io)?;
        t.count = t.count.saturating_sub(n);
        t.bytes = t.bytes.saturating_sub(bytes);
        *total = total.saturating_sub(bytes);
        if t.count == 0 {
            users.remove(uid);
        } else {
            users.insert(uid.to_owned(), t);
        }
        Ok(())
    }

    fn count(&self, uid: &str) -> Result<usize, OfflineError> {
        Ok(self.tallies.lock().users.get(uid).map_or(0, |t| t.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DiskOptions;

    #[tokio::test]
    async fn disk_offline_conforms() {
        let dirs = Mutex::new(Vec::new());
        super::super::offline::conformance(|limits| {
            let tmp = tempfile::tempdir().unwrap();
            let disk = Disk::open(tmp.path(), DiskOptions { fsync: false }).unwrap();
            dirs.lock().push(tmp);
            DiskOffline::open(disk, limits).unwrap()
        })
        .await;
    }

    #[test]
    fn keys_sort_per_user_and_do_not_mix_users() {
        assert!(key("bob", 2) < key("bob", 10));
        assert!(key("bob", u64::MAX) < key("bobby", 0), "a longer uid is another prefix");
        assert_eq!(parse_key(&key("bob", 7)), Some(("bob".into(), 7)));
        assert_eq!(parse_key(b"\x00\x05ab"), None);
        let m = decode(3, &encode(9, "a@h/r", b"<message/>")).unwrap();
        assert_eq!((m.seq, m.stamp_ms, m.from.as_str(), &m.stanza[..]), (3, 9, "a@h/r", &b"<message/>"[..]));
        assert!(decode(1, b"short").is_none());
    }

    #[tokio::test]
    async fn messages_and_counts_survive_a_reopen_without_a_clean_close() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = OfflineLimits { max_messages_per_user: 3, max_bytes_per_user: 10_000, max_total_bytes: 1 << 20 };
        {
            let disk = Disk::open(tmp.path(), DiskOptions::default()).unwrap();
            let s = DiskOffline::open(disk.clone(), limits).unwrap();
            for i in 0..3 {
                s.push("bob", i, "alice@h/r", Bytes::from(format!("<message>{i}</message>")))
                    .unwrap()
                    .wait()
                    .await
                    .unwrap();
            }
            s.remove_through("bob", 1).unwrap();
            s.push("carol", 1, "a", Bytes::from_static(b"c")).unwrap().wait().await.unwrap();
            // What kill -9 leaves: no close, no clean mark.
            std::mem::forget(s);
            std::mem::forget(disk);
        }
        // fjall's directory lock is per process: a forgotten handle keeps it,
        // so the reopen is a copy of the directory, as a restarted process sees it.
        let copy = tempfile::tempdir().unwrap();
        copy_dir(tmp.path(), copy.path());
        let disk = Disk::open(copy.path(), DiskOptions::default()).unwrap();
        assert!(disk.was_unclean());
        let s = DiskOffline::open(disk, limits).unwrap();
        let bob = s.list("bob").unwrap();
        assert_eq!(bob.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(&bob[0].stanza[..], b"<message>1</message>");
        assert_eq!(s.count("bob").unwrap(), 2);
        assert_eq!(s.count("carol").unwrap(), 1);
        // The seq goes on after the largest one kept (carol's 4: seqs are
        // the store's, not the user's); the cap counts what was there.
        let next = s.push("bob", 5, "a", Bytes::from_static(b"x")).unwrap();
        next.wait().await.unwrap();
        assert_eq!(s.list("bob").unwrap().last().unwrap().seq, 5);
        assert!(matches!(s.push("bob", 5, "a", Bytes::from_static(b"y")), Err(OfflineError::Full(_))));
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&target).unwrap();
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
}
