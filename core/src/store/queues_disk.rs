//! Durable queues in the data directory: their declarations, bindings and
//! persistent messages, in three fjall keyspaces of the node's [`Disk`].
//!
//! Keys start with the queue's prefix, `len(vhost) vhost len(queue) queue`
//! (lengths as 4-byte big-endian), so a queue's rows are one prefix range
//! and no name can run into another's:
//! - `queues`: prefix → the queue's meta (options, limits, owner);
//! - `queue_bindings`: prefix + the encoded binding → empty;
//! - `queue_messages`: prefix + id (8 bytes, big-endian: append order is
//!   key order, ids only grow) → the message; prefix + id + `d` → empty, the
//!   delivery mark (written without a ticket when a consumer gets it).
//!
//! An append writes to the journal's buffer and asks the group commit for a
//! ticket; nothing else waits for the disk. A queue delete is one atomic
//! batch over the three keyspaces.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use fjall::Keyspace;

use super::{
    io, Disk, Durable, QueueMeta, QueueStore, StoreError, StoredBinding, StoredLimits, StoredMessage, StoredQueue,
};
use crate::message::Message;

const FORMAT: u8 = 1;
const MARK: u8 = b'd';

pub struct DiskQueues {
    disk: Arc<Disk>,
    queues: Keyspace,
    bindings: Keyspace,
    messages: Keyspace,
    /// The last run was killed: recovered messages may have been delivered
    /// without their mark reaching the disk, so every one is flagged.
    unclean: bool,
}

impl std::fmt::Debug for DiskQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskQueues").field("disk", &self.disk).finish_non_exhaustive()
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "corrupt queue store ({what}): the data directory was written by something else or damaged; \
         move it away to start empty"
    ))
}

impl DiskQueues {
    pub fn open(disk: Arc<Disk>) -> Result<DiskQueues, StoreError> {
        Ok(DiskQueues {
            queues: disk.keyspace("queues")?,
            bindings: disk.keyspace("queue_bindings")?,
            messages: disk.keyspace("queue_messages")?,
            unclean: disk.was_unclean(),
            disk,
        })
    }

    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn prefix(vhost: &str, queue: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + vhost.len() + queue.len() + 9);
    put_str(&mut p, vhost);
    put_str(&mut p, queue);
    p
}

fn message_key(vhost: &str, queue: &str, id: u64) -> Vec<u8> {
    let mut k = prefix(vhost, queue);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn mark_key(vhost: &str, queue: &str, id: u64) -> Vec<u8> {
    let mut k = message_key(vhost, queue, id);
    k.push(MARK);
    k
}

/// Reads what `put_str` and friends wrote; any shortfall is corruption.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(corrupt(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn str(&mut self) -> Result<String, StoreError> {
        let n = self.u32()? as usize;
        let what = self.what;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| corrupt(what))
    }

    fn pairs(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let n = self.u32()? as usize;
        // Bounded by what is there, not by what the count claims.
        let mut v = Vec::with_capacity(n.min(self.buf.len() / 8));
        for _ in 0..n {
            v.push((self.str()?, self.str()?));
        }
        Ok(v)
    }

    fn end(&self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(corrupt(self.what))
        }
    }
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (k, v) in pairs {
        put_str(out, k);
        put_str(out, v);
    }
}

fn encode_message(m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + m.held_bytes() + m.exchange.len() + 8 * m.headers.len() + 8);
    out.push(FORMAT);
    put_str(&mut out, &m.exchange);
    put_str(&mut out, &m.routing_key);
    put_pairs(&mut out, &m.headers);
    out.extend_from_slice(&m.body);
    out
}

fn decode_message(id: u64, value: &[u8]) -> Result<StoredMessage, StoreError> {
    let mut r = Reader { buf: value, what: "a message" };
    if r.u8()? != FORMAT {
        return Err(corrupt("a message's format"));
    }
    Ok(StoredMessage {
        id,
        exchange: r.str()?,
        routing_key: r.str()?,
        headers: r.pairs()?,
        body: Bytes::copy_from_slice(r.buf),
        redelivered: false,
    })
}

fn encode_meta(meta: &QueueMeta) -> Vec<u8> {
    let mut out = vec![FORMAT];
    let flags = u8::from(meta.auto_delete)
        | u8::from(meta.owner.is_some()) << 1
        | u8::from(meta.limits.is_some()) << 2
        | u8::from(meta.limits.is_some_and(|l| l.reject_publish)) << 3;
    out.push(flags);
    if let Some(o) = &meta.owner {
        put_str(&mut out, o);
    }
    if let Some(l) = &meta.limits {
        out.extend_from_slice(&l.max_len.to_be_bytes());
        out.extend_from_slice(&l.max_bytes.to_be_bytes());
    }
    out
}

fn decode_meta(value: &[u8]) -> Result<QueueMeta, StoreError> {
    let mut r = Reader { buf: value, what: "a queue's declaration" };
    if r.u8()? != FORMAT {
        return Err(corrupt("a queue's format"));
    }
    let flags = r.u8()?;
    let owner = if flags & 2 != 0 { Some(r.str()?) } else { None };
    let limits = if flags & 4 != 0 {
        Some(StoredLimits { max_len: r.u64()?, max_bytes: r.u64()?, reject_publish: flags & 8 != 0 })
    } else {
        None
    };
    r.end()?;
    Ok(QueueMeta { auto_delete: flags & 1 != 0, owner, limits })
}

fn encode_binding(b: &StoredBinding) -> Vec<u8> {
    let mut out = vec![FORMAT];
    put_str(&mut out, &b.exchange);
    put_str(&mut out, &b.key);
    match &b.headers {
        None => out.push(0),
        Some((all, args)) => {
            out.push(if *all { 2 } else { 1 });
            put_pairs(&mut out, args);
        }
    }
    out
}

fn decode_binding(r: &mut Reader<'_>) -> Result<StoredBinding, StoreError> {
    if r.u8()? != FORMAT {
        return Err(corrupt("a binding's format"));
    }
    let exchange = r.str()?;
    let key = r.str()?;
    let headers = match r.u8()? {
        0 => None,
        kind @ (1 | 2) => Some((kind == 2, r.pairs()?)),
        _ => return Err(corrupt("a binding")),
    };
    r.end()?;
    Ok(StoredBinding { exchange, key, headers })
}

/// Splits a key into its queue's (vhost, name) and the rest.
fn split_prefix(key: &[u8]) -> Result<((String, String), &[u8]), StoreError> {
    let mut r = Reader { buf: key, what: "a key" };
    let names = (r.str()?, r.str()?);
    Ok((names, r.buf))
}

impl DiskQueues {
    fn queue_entry(map: &mut BTreeMap<(String, String), StoredQueue>, names: (String, String)) -> &mut StoredQueue {
        map.entry(names.clone()).or_insert_with(|| StoredQueue {
            vhost: names.0,
            name: names.1,
            meta: QueueMeta::default(),
            bindings: Vec::new(),
            messages: Vec::new(),
        })
    }
}

impl QueueStore for DiskQueues {
    fn declare(&self, vhost: &str, queue: &str, meta: &QueueMeta) -> Result<(), StoreError> {
        self.queues.insert(prefix(vhost, queue), encode_meta(meta)).map_err(io)
    }

    fn bind(&self, vhost: &str, queue: &str, binding: &StoredBinding) -> Result<(), StoreError> {
        let mut key = prefix(vhost, queue);
        key.extend_from_slice(&encode_binding(binding));
        self.bindings.insert(key, []).map_err(io)
    }

    fn delete(&self, vhost: &str, queue: &str) -> Result<(), StoreError> {
        let p = prefix(vhost, queue);
        let mut batch = self.disk.database().batch();
        batch.remove(&self.queues, p.clone());
        for ks in [&self.bindings, &self.messages] {
            for kv in ks.prefix(&p) {
                batch.remove(ks, kv.key().map_err(io)?);
            }
        }
        batch.commit().map_err(io)
    }

    fn append(&self, vhost: &str, queue: &str, message: &Message) -> Result<Durable, StoreError> {
        self.messages.insert(message_key(vhost, queue, message.id), encode_message(message)).map_err(io)?;
        Ok(self.disk.durable())
    }

    fn delivered(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError> {
        self.messages.insert(mark_key(vhost, queue, id), []).map_err(io)
    }

    fn remove(&self, vhost: &str, queue: &str, id: u64) -> Result<(), StoreError> {
        let mut batch = self.disk.database().batch();
        batch.remove(&self.messages, message_key(vhost, queue, id));
        batch.remove(&self.messages, mark_key(vhost, queue, id));
        batch.commit().map_err(io)
    }

    fn durable(&self) -> Durable {
        self.disk.durable()
    }

    fn load(&self) -> Result<Vec<StoredQueue>, StoreError> {
        let mut map: BTreeMap<(String, String), StoredQueue> = BTreeMap::new();
        for kv in self.queues.iter() {
            let (key, value) = kv.into_inner().map_err(io)?;
            let (names, rest) = split_prefix(&key)?;
            if !rest.is_empty() {
                return Err(corrupt("a queue's key"));
            }
            Self::queue_entry(&mut map, names).meta = decode_meta(&value)?;
        }
        for kv in self.bindings.iter() {
            let key = kv.key().map_err(io)?;
            let (names, rest) = split_prefix(&key)?;
            let binding = decode_binding(&mut Reader { buf: rest, what: "a binding" })?;
            Self::queue_entry(&mut map, names).bindings.push(binding);
        }
        // After a crash every message counts as delivered; those without a
        // mark get one, so the flag outlives a later clean restart.
        let mut unmarked: Option<Vec<u8>> = None;
        let mut marks = self.disk.database().batch();
        for kv in self.messages.iter() {
            let (key, value) = kv.into_inner().map_err(io)?;
            let (names, rest) = split_prefix(&key)?;
            let q = Self::queue_entry(&mut map, names);
            let id = u64::from_be_bytes(rest.get(..8).ok_or_else(|| corrupt("a message key"))?.try_into().expect("8"));
            match rest.len() {
                8 => {
                    let mut m = decode_message(id, &value)?;
                    m.redelivered = self.unclean;
                    q.messages.push(m);
                    if let Some(k) = unmarked.replace(key.to_vec()).filter(|_| self.unclean) {
                        marks.insert(&self.messages, [k.as_slice(), &[MARK]].concat(), []);
                    }
                }
                // A mark sorts right after its message; a mark without one
                // (acked, removed in the same batch) cannot be, but is harmless.
                9 if rest[8] == MARK => {
                    if let Some(m) = q.messages.last_mut().filter(|m| m.id == id) {
                        m.redelivered = true;
                        unmarked = None;
                    }
                }
                _ => return Err(corrupt("a message key")),
            }
        }
        if let Some(k) = unmarked.filter(|_| self.unclean) {
            marks.insert(&self.messages, [k.as_slice(), &[MARK]].concat(), []);
        }
        if !marks.is_empty() {
            marks.commit().map_err(io)?;
        }
        Ok(map.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DiskOptions;

    #[tokio::test]
    async fn disk_store_conforms() {
        let dirs = parking_lot::Mutex::new(Vec::new());
        super::super::conformance(|| {
            let tmp = tempfile::tempdir().unwrap();
            let disk = Disk::open(tmp.path(), DiskOptions::default()).unwrap();
            dirs.lock().push(tmp);
            // A fresh directory has no clean mark: close and reopen so the
            // marks (not the unclean start) decide `redelivered`.
            disk.close().unwrap();
            drop(disk);
            let disk = Disk::open(dirs.lock().last().unwrap().path(), DiskOptions::default()).unwrap();
            DiskQueues::open(disk).unwrap()
        })
        .await;
    }

    fn persistent(id: u64, body: &'static str) -> Message {
        let mut m = Message::new("amq.topic", "a.b", vec![("persistent".into(), "true".into())], Bytes::from(body));
        m.id = id;
        m
    }

    #[tokio::test]
    async fn what_a_restart_brings_back_clean_and_killed() {
        let tmp = tempfile::tempdir().unwrap();
        let open = || DiskQueues::open(Disk::open(tmp.path(), DiskOptions::default()).unwrap()).unwrap();
        let s = open();
        s.declare("/", "d", &QueueMeta::default()).unwrap();
        s.bind("/", "d", &StoredBinding { exchange: "amq.topic".into(), key: "a.*".into(), headers: None }).unwrap();
        for id in 1..=3 {
            s.append("/", "d", &persistent(id, "m")).unwrap().wait().await.unwrap();
        }
        s.delivered("/", "d", 2).unwrap();
        s.remove("/", "d", 3).unwrap();
        s.disk().close().unwrap();
        drop(s);

        // Clean stop: only the marked one is flagged.
        let s = open();
        let q = s.load().unwrap();
        assert_eq!(q[0].bindings.len(), 1);
        let flags: Vec<_> = q[0].messages.iter().map(|m| (m.id, m.redelivered)).collect();
        assert_eq!(flags, [(1, false), (2, true)]);
        assert_eq!(q[0].messages[0].exchange, "amq.topic");
        s.append("/", "d", &persistent(4, "after")).unwrap().wait().await.unwrap();
        s.disk().close().unwrap();
        drop(s);
        // As if killed: no clean mark. Every recovered message may have been
        // delivered without its mark reaching the disk.
        std::fs::remove_file(tmp.path().join("CLEAN_SHUTDOWN")).unwrap();
        let s = open();
        let flags: Vec<_> = s.load().unwrap()[0].messages.iter().map(|m| (m.id, m.redelivered)).collect();
        assert_eq!(flags, [(1, true), (2, true), (4, true)]);
        s.disk().close().unwrap();
        drop(s);
        let s = open();
        let flags: Vec<_> = s.load().unwrap()[0].messages.iter().map(|m| (m.id, m.redelivered)).collect();
        assert_eq!(flags, [(1, true), (2, true), (4, true)], "the crash's flags outlive a clean restart");
        s.delete("/", "d").unwrap();
        assert!(s.load().unwrap().is_empty(), "delete takes the meta, bindings and messages");
    }

    #[test]
    fn garbage_is_refused_loudly() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = Disk::open(tmp.path(), DiskOptions::default()).unwrap();
        let s = DiskQueues::open(disk).unwrap();
        s.messages
            .insert(b"\x00\x00\x00\x01/\x00\x00\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x01".to_vec(), [9u8, 9])
            .unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("corrupt queue store"), "{e}");
        s.messages.clear().unwrap();
        s.queues.insert(b"\xff\xff".to_vec(), [FORMAT, 0]).unwrap();
        assert!(s.load().unwrap_err().to_string().contains("corrupt queue store"));
    }
}
