//! Stream history of the `feed` and `project` exchanges (Centrifugo's
//! history and recovery, with RabbitMQ streams' header names): per routing
//! key, every message gets the next offset (1, 2, 3…) and the last
//! `history.size` messages are kept for at most `history.ttl_ms`, so a
//! client that lost its connection resubscribes from the offset it last saw
//! and gets what it missed (stomp/session.rs, `x-stream-offset`).
//!
//! Each key's history has an **epoch**, a random string that changes
//! whenever the history may have lost something: a new key (first publish or
//! read), a key evicted to keep the byte budget and made again, every start
//! without a data directory (memory), and with one, a start after an unclean
//! shutdown (the journal's unsynced tail, offsets included, may be gone). A
//! client that names an epoch other than the current one is told it could
//! not recover (`x-recovered: false`) and reloads from the application.
//!
//! Backends: [`MemoryHistory`] (the default), [`DiskHistory`] (the data
//! directory: the memory one plus a copy written behind to fjall, reloaded at
//! start) and, for a cluster, Redis: per key a stream (`XADD` with `MAXLEN`)
//! and a meta hash (`epoch`, `top`), appended by one Lua script that
//! increments `top` and returns it with the epoch, as Centrifugo's broker
//! does. The trait is narrow and synchronous for that reason.
//!
//! Offsets are assigned here; the order in which publishes of one key reach
//! subscribers is the router's job (router/mod.rs, `Vhost::publish` holds the
//! key's lock across append and fan-out).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::{Condvar, Mutex};

use super::{Disk, StoreError};
use crate::message::{Message, StreamPosition};

/// Whose history: one routing key of one exchange of one vhost.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub vhost: String,
    pub exchange: String,
    pub key: String,
}

impl StreamKey {
    pub fn new(vhost: &str, exchange: &str, key: &str) -> StreamKey {
        StreamKey { vhost: vhost.to_owned(), exchange: exchange.to_owned(), key: key.to_owned() }
    }

    fn cost(&self) -> usize {
        self.vhost.len() + self.exchange.len() + self.key.len() + KEY_OVERHEAD
    }
}

/// What a key costs against the byte budget besides its messages (its
/// epoch, counters, map entries): a publisher making many keys pays for each.
const KEY_OVERHEAD: usize = 128;
/// What a retained message costs besides its headers and body.
const ENTRY_OVERHEAD: usize = 64;

/// `[history]`: how much is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per key; 0 turns history off (no offsets either).
    pub size: usize,
    /// How long a message is kept, milliseconds; 0 turns history off.
    pub ttl_ms: u64,
    /// All keys together, bytes (headers, bodies, keys): beyond it whole
    /// keys go, least recently published first (their epoch changes).
    pub max_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits::from_config(&crate::config::HistoryConfig::default())
    }
}

impl HistoryLimits {
    pub fn from_config(c: &crate::config::HistoryConfig) -> HistoryLimits {
        HistoryLimits { size: c.size, ttl_ms: c.ttl_ms, max_bytes: c.max_bytes }
    }

    pub fn enabled(&self) -> bool {
        self.size > 0 && self.ttl_ms > 0
    }
}

/// A key's history as read: its epoch, the last offset it assigned and the
/// retained messages asked for (each with [`Message::stream`] set), oldest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub epoch: Arc<str>,
    /// The offset of the last message appended in this epoch; 0 = none yet.
    pub top: u64,
    /// The oldest retained offset; `top + 1` when nothing is retained.
    pub first: u64,
    pub messages: Vec<Arc<Message>>,
}

/// Guarantees every implementation gives (checked by [`conformance`]):
/// - `append` gives a key's messages offsets 1, 2, 3… in call order within
///   one epoch, sets [`Message::stream`] on the message it returns (the one
///   retained: queues share it) and keeps at most `size` messages per key,
///   none older than `ttl_ms`. Concurrent appends to one key are ordered by
///   the caller (the router holds the key's lock); the store must be safe to
///   call from many threads for different keys.
/// - `read(key, since, limit)` returns the retained messages with offset ≥
///   `since`, oldest first, at most `limit`, and makes the key (a fresh
///   epoch, top 0) when it has none, so a reader that subscribes before the
///   first publish keeps a valid position.
/// - Above `max_bytes` the least recently appended keys are dropped whole;
///   a dropped key's next append or read starts a new epoch at offset 1.
/// - Epochs are random: a new epoch never equals an earlier one of the key.
/// - A disk backend keeps epochs, offsets and messages over a clean restart
///   and changes every epoch after an unclean one.
pub trait HistoryStore: Send + Sync + Debug + 'static {
    fn append(&self, key: &StreamKey, message: Message, now_ms: u64) -> Result<Arc<Message>, StoreError>;
    fn read(&self, key: &StreamKey, since: u64, limit: usize, now_ms: u64) -> Result<HistoryPage, StoreError>;
    fn limits(&self) -> HistoryLimits;
}

/// Milliseconds since the Unix epoch: retention outlives a restart on disk.
pub use super::now_ms;

fn new_epoch() -> Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

#[derive(Debug)]
struct Entry {
    at_ms: u64,
    message: Arc<Message>,
}

impl Entry {
    fn cost(&self) -> usize {
        self.message.held_bytes() + ENTRY_OVERHEAD
    }
}

#[derive(Debug)]
struct Stream {
    epoch: Arc<str>,
    top: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Position in [`Streams::lru`].
    touched: u64,
}

/// What one call removed, for a backend that mirrors the streams elsewhere.
#[derive(Debug, Default)]
struct Dropped {
    /// Offsets trimmed from a key that stays.
    entries: Vec<(StreamKey, u64)>,
    /// Keys gone whole, with the offsets they held.
    keys: Vec<(StreamKey, Vec<u64>)>,
}

/// The streams in memory; [`MemoryHistory`] and [`DiskHistory`] both keep one.
#[derive(Debug, Default)]
struct Streams {
    map: HashMap<StreamKey, Stream>,
    /// Keys by last append (or creation), oldest first: eviction order.
    lru: BTreeMap<u64, StreamKey>,
    clock: u64,
    bytes: usize,
}

impl Streams {
    fn touch(&mut self, key: &StreamKey) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(s) = self.map.get_mut(key) {
            self.lru.remove(&s.touched);
            s.touched = clock;
            self.lru.insert(clock, key.clone());
        }
    }

    /// The key's stream, made with a fresh epoch when missing; `bool` = made.
    fn ensure(&mut self, key: &StreamKey, epoch: Option<Arc<str>>, top: u64) -> bool {
        if self.map.contains_key(key) {
            return false;
        }
        self.bytes += key.cost();
        self.map.insert(
            key.clone(),
            Stream { epoch: epoch.unwrap_or_else(new_epoch), top, entries: VecDeque::new(), bytes: 0, touched: 0 },
        );
        self.touch(key);
        true
    }

    /// Drops what is too old or beyond `size` from one key.
    fn trim(&mut self, key: &StreamKey, limits: &HistoryLimits, now_ms: u64, dropped: &mut Dropped) {
        let Some(s) = self.map.get_mut(key) else { return };
        while let Some(e) = s.entries.front() {
            if s.entries.len() <= limits.size && e.at_ms.saturating_add(limits.ttl_ms) > now_ms {
                break;
            }
            let e = s.entries.pop_front().expect("front exists");
            let cost = e.cost();
            s.bytes -= cost;
            self.bytes -= cost;
            dropped.entries.push((key.clone(), e.message.stream.as_ref().map_or(0, |p| p.offset)));
        }
    }

    fn remove_key(&mut self, key: &StreamKey, dropped: &mut Dropped) {
        if let Some(s) = self.map.remove(key) {
            self.lru.remove(&s.touched);
            self.bytes -= s.bytes + key.cost();
            let offsets = s.entries.iter().filter_map(|e| e.message.stream.as_ref().map(|p| p.offset)).collect();
            dropped.keys.push((key.clone(), offsets));
        }
    }

    /// Evicts least recently appended keys while over the budget, never `keep`.
    fn evict(&mut self, limits: &HistoryLimits, keep: &StreamKey, dropped: &mut Dropped) {
        while self.bytes > limits.max_bytes {
            let Some(victim) = self.lru.values().find(|k| *k != keep).cloned() else { break };
            self.remove_key(&victim, dropped);
        }
    }

    fn append(
        &mut self,
        limits: &HistoryLimits,
        key: &StreamKey,
        mut message: Message,
        now_ms: u64,
        dropped: &mut Dropped,
    ) -> (Arc<Message>, bool) {
        let made = self.ensure(key, None, 0);
        let s = self.map.get_mut(key).expect("ensured");
        s.top += 1;
        message.stream = Some(StreamPosition { offset: s.top, epoch: s.epoch.clone() });
        let entry = Entry { at_ms: now_ms, message: Arc::new(message) };
        let cost = entry.cost();
        let shared = entry.message.clone();
        s.bytes += cost;
        s.entries.push_back(entry);
        self.bytes += cost;
        self.touch(key);
        self.trim(key, limits, now_ms, dropped);
        self.evict(limits, key, dropped);
        (shared, made)
    }

    fn read(
        &mut self,
        limits: &HistoryLimits,
        key: &StreamKey,
        since: u64,
        limit: usize,
        now_ms: u64,
        dropped: &mut Dropped,
    ) -> (HistoryPage, bool) {
        let made = self.ensure(key, None, 0);
        self.trim(key, limits, now_ms, dropped);
        if made {
            self.evict(limits, key, dropped);
        }
        let s = &self.map[key];
        let first = s.entries.front().and_then(|e| e.message.stream.as_ref()).map_or(s.top + 1, |p| p.offset);
        let skip = since.saturating_sub(first).min(s.entries.len() as u64) as usize;
        let messages = s.entries.iter().skip(skip).take(limit).map(|e| e.message.clone()).collect();
        (HistoryPage { epoch: s.epoch.clone(), top: s.top, first, messages }, made)
    }
}

/// History in memory: lost (new epochs) at every restart.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    limits: HistoryLimits,
    streams: Mutex<Streams>,
}

impl MemoryHistory {
    pub fn new(limits: HistoryLimits) -> MemoryHistory {
        MemoryHistory { limits, streams: Mutex::default() }
    }
}

impl HistoryStore for MemoryHistory {
    fn append(&self, key: &StreamKey, message: Message, now_ms: u64) -> Result<Arc<Message>, StoreError> {
        Ok(self.streams.lock().append(&self.limits, key, message, now_ms, &mut Dropped::default()).0)
    }

    fn read(&self, key: &StreamKey, since: u64, limit: usize, now_ms: u64) -> Result<HistoryPage, StoreError> {
        Ok(self.streams.lock().read(&self.limits, key, since, limit, now_ms, &mut Dropped::default()).0)
    }

    fn limits(&self) -> HistoryLimits {
        self.limits
    }
}

// ---- on disk ---------------------------------------------------------------

/// History in the data directory: the streams are kept in memory (replays
/// share the `Arc<Message>` with queues) and written through to two fjall
/// keyspaces, `history` (key ‖ offset → message) and `history_meta`
/// (key → epoch, top), reloaded at start. Writes are not waited for (no
/// ticket): history is a convenience, not a promise, and an unclean start
/// changes every epoch so a client never trusts offsets that may have been
/// reassigned after the journal's tail was lost. So they leave the publish
/// path: changes are queued in the memory's order for one writer thread
/// ([`Writer`]), flushed before the clean-shutdown mark ([`Disk::on_close`])
/// and when the history is dropped.
pub struct DiskHistory {
    limits: HistoryLimits,
    streams: Mutex<Streams>,
    writer: Arc<Writer>,
}

impl Debug for DiskHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskHistory").field("limits", &self.limits).finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("history: {e}"))
}

fn put_str(out: &mut impl BufMut, s: &str) {
    out.put_u32(s.len() as u32);
    out.put_slice(s.as_bytes());
}

fn get_bytes(buf: &mut &[u8]) -> Option<Vec<u8>> {
    if buf.remaining() < 4 {
        return None;
    }
    let n = buf.get_u32() as usize;
    if buf.remaining() < n {
        return None;
    }
    let v = buf[..n].to_vec();
    buf.advance(n);
    Some(v)
}

fn get_str(buf: &mut &[u8]) -> Option<String> {
    String::from_utf8(get_bytes(buf)?).ok()
}

fn key_bytes(key: &StreamKey) -> BytesMut {
    let mut out = BytesMut::with_capacity(key.cost());
    for part in [&key.vhost, &key.exchange, &key.key] {
        put_str(&mut out, part);
    }
    out
}

fn entry_key(key: &StreamKey, offset: u64) -> Vec<u8> {
    let mut out = key_bytes(key);
    out.put_u64(offset);
    out.to_vec()
}

fn parse_key(buf: &mut &[u8]) -> Option<StreamKey> {
    Some(StreamKey { vhost: get_str(buf)?, exchange: get_str(buf)?, key: get_str(buf)? })
}

fn encode_meta(epoch: &str, top: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(epoch.len() + 12);
    put_str(&mut out, epoch);
    out.put_u64(top);
    out
}

/// The entry's value, written straight into fjall's buffer from the
/// message's: the body is copied once (the encoding used to copy it into a
/// `BytesMut`, then into a `Vec`, then into fjall's slice).
fn encode_entry(at_ms: u64, m: &Message) -> fjall::Slice {
    let mut head = Vec::with_capacity(64);
    head.put_u64(at_ms);
    head.put_u64(m.id);
    head.put_u8(m.sender.is_some() as u8);
    put_str(&mut head, m.sender.as_deref().unwrap_or(""));
    head.put_u32(m.headers.len() as u32);
    for (k, v) in &m.headers {
        put_str(&mut head, k);
        put_str(&mut head, v);
    }
    head.put_u32(m.body.len() as u32);
    let len = head.len() + m.body.len();
    fjall::Slice::from_reader(&mut std::io::Read::chain(&head[..], &m.body[..]), len)
        .expect("reading from memory cannot fail")
}

fn decode_entry(key: &StreamKey, mut buf: &[u8]) -> Option<(u64, Message)> {
    let b = &mut buf;
    if b.remaining() < 17 {
        return None;
    }
    let at_ms = b.get_u64();
    let id = b.get_u64();
    let has_sender = b.get_u8() == 1;
    let sender = get_str(b)?;
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    let mut headers = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        headers.push((get_str(b)?, get_str(b)?));
    }
    let body = Bytes::from(get_bytes(b)?);
    let mut m = Message::new(key.exchange.clone(), key.key.clone(), headers, body);
    m.id = id;
    m.sender = has_sender.then_some(sender);
    Some((at_ms, m))
}

impl DiskHistory {
    /// Loads the history kept in `disk`, trimmed to `limits`; after an
    /// unclean shutdown every key gets a new epoch (its messages stay).
    pub fn open(disk: Arc<Disk>, limits: HistoryLimits, now_ms: u64) -> Result<DiskHistory, StoreError> {
        let entries = disk.keyspace("history")?;
        let meta = disk.keyspace("history_meta")?;
        let unclean = disk.was_unclean();
        let mut streams = Streams::default();
        let mut stale: Vec<Vec<u8>> = Vec::new();
        for item in meta.iter() {
            let (k, v) = item.into_inner().map_err(io)?;
            let (mut kb, mut vb) = (&k[..], &v[..]);
            let parsed = parse_key(&mut kb).zip(get_str(&mut vb)).filter(|_| vb.remaining() == 8);
            match parsed {
                Some((key, epoch)) => {
                    let epoch = if unclean { new_epoch() } else { Arc::from(epoch) };
                    streams.ensure(&key, Some(epoch), vb.get_u64());
                }
                None => stale.push(k.to_vec()),
            }
        }
        let mut max_id = 0;
        let mut orphans: Vec<Vec<u8>> = Vec::new();
        for item in entries.iter() {
            let (k, v) = item.into_inner().map_err(io)?;
            let mut kb = &k[..];
            let key = parse_key(&mut kb).filter(|_| kb.remaining() == 8);
            let Some(key) = key else {
                orphans.push(k.to_vec());
                continue;
            };
            let offset = kb.get_u64();
            let Some(s) = streams.map.get_mut(&key) else {
                orphans.push(k.to_vec());
                continue;
            };
            let Some((at_ms, mut m)) = decode_entry(&key, &v) else {
                orphans.push(k.to_vec());
                continue;
            };
            max_id = max_id.max(m.id);
            m.stream = Some(StreamPosition { offset, epoch: s.epoch.clone() });
            let e = Entry { at_ms, message: Arc::new(m) };
            s.bytes += e.cost();
            streams.bytes += e.cost();
            s.entries.push_back(e);
        }
        crate::message::reserve_ids_through(max_id);
        // Oldest appends first in the eviction order, as before the restart.
        let mut order: Vec<(u64, StreamKey)> =
            streams.map.iter().map(|(k, s)| (s.entries.back().map_or(0, |e| e.at_ms), k.clone())).collect();
        order.sort();
        for (_, k) in &order {
            streams.touch(k);
        }
        let mut dropped = Dropped::default();
        for (_, k) in &order {
            streams.trim(k, &limits, now_ms, &mut dropped);
        }
        if let Some((_, newest)) = order.last() {
            streams.evict(&limits, newest, &mut dropped);
        }
        // Synchronous, before the writer exists: the cleanup of what the
        // last run left is done before the first publish.
        let mut ops: Vec<Op> = stale.into_iter().map(|k| Op::Remove(Space::Meta, k)).collect();
        ops.extend(orphans.into_iter().map(|k| Op::Remove(Space::Entries, k)));
        if unclean {
            for (k, s) in &streams.map {
                ops.push(Op::Meta { key: key_bytes(k).to_vec(), epoch: s.epoch.clone(), top: s.top });
            }
        }
        push_dropped(&mut ops, &dropped);
        write_batch(disk.database(), &entries, &meta, ops).map_err(io)?;
        let writer = Writer::start(&disk, entries, meta)?;
        Ok(DiskHistory { limits, streams: Mutex::new(streams), writer })
    }
}

impl Drop for DiskHistory {
    fn drop(&mut self) {
        self.writer.stop();
    }
}

fn push_dropped(ops: &mut Vec<Op>, dropped: &Dropped) {
    for (k, offset) in &dropped.entries {
        ops.push(Op::Remove(Space::Entries, entry_key(k, *offset)));
    }
    for (k, offsets) in &dropped.keys {
        for o in offsets {
            ops.push(Op::Remove(Space::Entries, entry_key(k, *o)));
        }
        ops.push(Op::Remove(Space::Meta, key_bytes(k).to_vec()));
    }
}

fn meta_op(key: &StreamKey, s: &Stream) -> Op {
    Op::Meta { key: key_bytes(key).to_vec(), epoch: s.epoch.clone(), top: s.top }
}

impl HistoryStore for DiskHistory {
    fn append(&self, key: &StreamKey, message: Message, now_ms: u64) -> Result<Arc<Message>, StoreError> {
        let mut st = self.streams.lock();
        let mut dropped = Dropped::default();
        let (m, _) = st.append(&self.limits, key, message, now_ms, &mut dropped);
        let offset = m.stream.as_ref().map_or(0, |p| p.offset);
        let mut ops = Vec::with_capacity(2 + dropped.entries.len());
        // Trimmed at once (size 1, or a zero-length ttl) needs no entry.
        if !dropped.entries.iter().any(|(k, o)| k == key && *o == offset) {
            ops.push(Op::Entry { key: entry_key(key, offset), at_ms: now_ms, message: m.clone() });
        }
        ops.push(meta_op(key, &st.map[key]));
        push_dropped(&mut ops, &dropped);
        // Under the streams' lock so the disk sees changes in the memory's order.
        self.writer.push(ops);
        Ok(m)
    }

    fn read(&self, key: &StreamKey, since: u64, limit: usize, now_ms: u64) -> Result<HistoryPage, StoreError> {
        let mut st = self.streams.lock();
        let mut dropped = Dropped::default();
        let (page, made) = st.read(&self.limits, key, since, limit, now_ms, &mut dropped);
        let mut ops = Vec::new();
        if made {
            ops.push(meta_op(key, &st.map[key]));
        }
        push_dropped(&mut ops, &dropped);
        if !ops.is_empty() {
            self.writer.push(ops);
        }
        Ok(page)
    }

    fn limits(&self) -> HistoryLimits {
        self.limits
    }
}

// ---- write-behind ----------------------------------------------------------

/// Bytes of changes queued for the writer (messages counted whole, though
/// the memory history shares most of them): beyond this a publish waits for
/// the writer (backpressure) instead of queueing more, so a disk slower
/// than the publishers slows them down rather than growing the queue. With
/// the batch being written, at most twice this is held for the disk.
const PENDING_MAX_BYTES: usize = 16 << 20;
/// Queue bookkeeping per change, for the budget.
const OP_OVERHEAD: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Space {
    Entries,
    Meta,
}

/// One change to the disk copy; values are encoded by the writer.
#[derive(Debug)]
enum Op {
    Entry { key: Vec<u8>, at_ms: u64, message: Arc<Message> },
    Meta { key: Vec<u8>, epoch: Arc<str>, top: u64 },
    Remove(Space, Vec<u8>),
}

impl Op {
    fn target(&self) -> (Space, &[u8]) {
        match self {
            Op::Entry { key, .. } => (Space::Entries, key),
            Op::Meta { key, .. } => (Space::Meta, key),
            Op::Remove(space, key) => (*space, key),
        }
    }

    fn cost(&self) -> usize {
        let body = match self {
            Op::Entry { message, .. } => message.held_bytes(),
            _ => 0,
        };
        OP_OVERHEAD + self.target().1.len() + body
    }
}

/// Writes `ops` as one atomic batch, only the last change of each key (a
/// batch gives all its writes one sequence number, so two writes of a key in
/// one batch must not both go in; and a key's later meta must win).
fn write_batch(
    db: &fjall::Database,
    entries: &fjall::Keyspace,
    meta: &fjall::Keyspace,
    ops: Vec<Op>,
) -> Result<(), fjall::Error> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut last: HashMap<(Space, &[u8]), usize> = HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        last.insert(op.target(), i);
    }
    let mut batch = db.batch();
    for (i, op) in ops.iter().enumerate() {
        if last[&op.target()] != i {
            continue;
        }
        match op {
            Op::Entry { key, at_ms, message } => batch.insert(entries, key.as_slice(), encode_entry(*at_ms, message)),
            Op::Meta { key, epoch, top } => batch.insert(meta, key.as_slice(), encode_meta(epoch, *top)),
            Op::Remove(Space::Entries, key) => batch.remove(entries, key.as_slice()),
            Op::Remove(Space::Meta, key) => batch.remove(meta, key.as_slice()),
        }
    }
    drop(last);
    batch.commit()
}

#[derive(Debug, Default)]
struct Queue {
    ops: Vec<Op>,
    bytes: usize,
    stopped: bool,
}

/// The history's disk writer: one thread that swaps the queued changes out
/// and commits them as one batch, so a batch carries every change queued
/// while the previous one was written.
#[derive(Debug)]
struct Writer {
    queue: Mutex<Queue>,
    /// The thread waits here for changes.
    wake: Condvar,
    /// Publishers (room in the queue) and [`Writer::stop`] wait here.
    drained: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    fn start(disk: &Arc<Disk>, entries: fjall::Keyspace, meta: fjall::Keyspace) -> Result<Arc<Writer>, StoreError> {
        let writer = Arc::new(Writer {
            queue: Mutex::default(),
            wake: Condvar::new(),
            drained: Condvar::new(),
            thread: Mutex::new(None),
        });
        let db = disk.database().clone();
        let w = writer.clone();
        let thread = std::thread::Builder::new()
            .name("herald-history".into())
            .spawn(move || w.run(&db, &entries, &meta))
            .map_err(io)?;
        *writer.thread.lock() = Some(thread);
        // Weak: the hook must not keep a dropped history's writer alive.
        let weak = Arc::downgrade(&writer);
        disk.on_close(move || {
            if let Some(w) = weak.upgrade() {
                w.stop();
            }
        });
        Ok(writer)
    }

    /// Queues `ops`, waiting while the queue is over its budget. After
    /// [`Writer::stop`] (the data directory closed) they are dropped: the
    /// memory stays right, and the disk promises nothing past a close.
    fn push(&self, ops: Vec<Op>) {
        let cost: usize = ops.iter().map(Op::cost).sum();
        let mut q = self.queue.lock();
        while !q.stopped && !q.ops.is_empty() && q.bytes + cost > PENDING_MAX_BYTES {
            self.drained.wait(&mut q);
        }
        if q.stopped {
            return;
        }
        let was_empty = q.ops.is_empty();
        q.ops.extend(ops);
        q.bytes += cost;
        if was_empty {
            self.wake.notify_one();
        }
    }

    fn run(&self, db: &fjall::Database, entries: &fjall::Keyspace, meta: &fjall::Keyspace) {
        loop {
            let ops = {
                let mut q = self.queue.lock();
                while q.ops.is_empty() && !q.stopped {
                    self.wake.wait(&mut q);
                }
                if q.ops.is_empty() {
                    return;
                }
                q.bytes = 0;
                // Room again: at most one batch queued and one being written.
                self.drained.notify_all();
                std::mem::take(&mut q.ops)
            };
            if let Err(e) = write_batch(db, entries, meta, ops) {
                tracing::warn!(error = %e, "writing history to the data directory failed");
            }
        }
    }

    /// Writes what is queued and ends the thread; later pushes are dropped.
    fn stop(&self) {
        self.queue.lock().stopped = true;
        self.wake.notify_one();
        self.drained.notify_all();
        let thread = self.thread.lock().take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

// ---- recovery --------------------------------------------------------------

/// Where a subscriber asks to start (`x-stream-offset`, RabbitMQ streams'
/// values): `first` retained, `last` retained, `next` (only new ones), or a
/// numeric offset, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    First,
    Last,
    Next,
    Offset(u64),
}

impl Since {
    /// Parses an `x-stream-offset` value; the error is the client's message.
    pub fn parse(s: &str) -> Result<Since, String> {
        match s.trim() {
            "first" => Ok(Since::First),
            "last" => Ok(Since::Last),
            "next" => Ok(Since::Next),
            n => n.parse::<u64>().map(Since::Offset).map_err(|_| {
                format!(
                    "invalid x-stream-offset {s:?}: expected first, last, next or an offset (a whole number from 0)"
                )
            }),
        }
    }
}

/// What a recovery decides from a page (read with `since` = 1, the whole
/// retained history): the messages to replay and whether nothing was missed.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub epoch: Arc<str>,
    pub top: u64,
    pub replay: Vec<Arc<Message>>,
    /// `x-recovered`: the client's position was in this epoch and the
    /// history still reached back to it (or it named no position).
    pub recovered: bool,
}

/// Decides a recovery as Centrifugo does: when the position cannot be
/// recovered (another epoch, or offsets gone from the history), everything
/// retained is still replayed and `recovered` is false: the page should
/// reload its state from the application and may use what it got.
pub fn recover(page: HistoryPage, since: Since, epoch: Option<&str>) -> Recovery {
    let same_epoch = epoch.is_none_or(|e| e == &*page.epoch);
    let all = page.messages;
    let (replay, recovered) = match since {
        Since::Next => (Vec::new(), same_epoch),
        Since::First => (all, same_epoch),
        Since::Last => (all.last().cloned().into_iter().collect(), same_epoch),
        Since::Offset(n) if !same_epoch => {
            let _ = n;
            (all, false)
        }
        Since::Offset(n) => {
            let n = n.max(1);
            if n > page.top + 1 {
                // A position this epoch never reached: not ours to trust.
                (all, false)
            } else if n < page.first {
                (all, false)
            } else {
                (all.into_iter().filter(|m| m.stream.as_ref().is_some_and(|p| p.offset >= n)).collect(), true)
            }
        }
    };
    Recovery { epoch: page.epoch, top: page.top, replay, recovered }
}

// ---- conformance -----------------------------------------------------------

fn msg(body: &str) -> Message {
    Message::new("feed", "k", vec![("h".into(), "v".into())], Bytes::copy_from_slice(body.as_bytes()))
}

fn offsets(p: &HistoryPage) -> Vec<u64> {
    p.messages.iter().map(|m| m.stream.as_ref().expect("stamped").offset).collect()
}

/// The suite every [`HistoryStore`] passes; `make(limits)` returns a fresh,
/// empty store with those limits.
pub fn conformance<S: HistoryStore>(make: impl Fn(HistoryLimits) -> S) {
    let limits = HistoryLimits { size: 3, ttl_ms: 1_000, max_bytes: 1 << 20 };
    let k = StreamKey::new("/", "feed", "alice");
    let other = StreamKey::new("/", "feed", "bob");
    let s = make(limits);
    assert_eq!(s.limits(), limits);

    // A read makes the key: an epoch, nothing retained.
    let p = s.read(&k, 1, 100, 0).unwrap();
    assert_eq!((p.top, p.first, p.messages.len()), (0, 1, 0));
    let epoch = p.epoch.clone();
    assert!(!epoch.is_empty());

    // Offsets 1, 2, 3… per key, in the read's epoch; the message is stamped.
    for i in 1..=4u64 {
        let m = s.append(&k, msg(&format!("m{i}")), 10 * i).unwrap();
        let pos = m.stream.clone().expect("append stamps the position");
        assert_eq!((pos.offset, &*pos.epoch), (i, &*epoch));
    }
    let m = s.append(&other, msg("b1"), 50).unwrap();
    assert_eq!(m.stream.as_ref().unwrap().offset, 1, "keys count apart");
    assert_ne!(m.stream.as_ref().unwrap().epoch, epoch, "each key has its own epoch");

    // At most `size` kept: 2, 3, 4; `since` and `limit` select.
    let p = s.read(&k, 1, 100, 60).unwrap();
    assert_eq!((p.top, p.first, &*p.epoch), (4, 2, &*epoch));
    assert_eq!(offsets(&p), [2, 3, 4]);
    assert_eq!(p.messages[0].body, Bytes::from_static(b"m2"));
    assert_eq!(p.messages[0].header("h"), Some("v"));
    assert_eq!(offsets(&s.read(&k, 3, 100, 60).unwrap()), [3, 4]);
    assert_eq!(offsets(&s.read(&k, 2, 1, 60).unwrap()), [2]);
    assert!(s.read(&k, 5, 100, 60).unwrap().messages.is_empty());

    // Older than the ttl: gone, offsets and epoch stay.
    let p = s.read(&k, 1, 100, 1_035).unwrap();
    assert_eq!(offsets(&p), [4], "appended at 20 and 30 expired at 1035");
    let p = s.read(&k, 1, 100, 5_000).unwrap();
    assert_eq!((p.top, p.first, p.messages.len(), &*p.epoch), (4, 5, 0, &*epoch));
    assert_eq!(s.append(&k, msg("m5"), 5_000).unwrap().stream.as_ref().unwrap().offset, 5);

    // The byte budget drops whole keys, least recently appended first; a
    // dropped key starts again at 1 in a new epoch.
    let small = HistoryLimits { size: 100, ttl_ms: 1_000_000, max_bytes: 3 * (KEY_OVERHEAD + 400) };
    let s = make(small);
    let keys: Vec<StreamKey> = (0..4).map(|i| StreamKey::new("/", "project", &format!("p{i}"))).collect();
    let mut epochs = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let m = s.append(key, msg(&"x".repeat(200)), i as u64).unwrap();
        epochs.push(m.stream.clone().unwrap().epoch);
    }
    let p0 = s.read(&keys[0], 1, 100, 10).unwrap();
    assert_eq!((p0.top, p0.messages.len()), (0, 0), "the oldest key was evicted");
    assert_ne!(p0.epoch, epochs[0], "and its epoch changed");
    let p3 = s.read(&keys[3], 1, 100, 10).unwrap();
    assert_eq!((p3.top, &*p3.epoch), (1, &*epochs[3]), "the newest stays");
    // One key larger than the whole budget keeps its own last message.
    let big = s.append(&keys[3], msg(&"y".repeat(5_000)), 20).unwrap();
    assert_eq!(big.stream.as_ref().unwrap().offset, 2);
    assert_eq!(offsets(&s.read(&keys[3], 1, 100, 20).unwrap()).last(), Some(&2));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_history_conforms() {
        conformance(MemoryHistory::new);
    }

    #[test]
    fn disk_history_conforms() {
        let dirs = Mutex::new(Vec::new());
        conformance(|limits| {
            let dir = tempfile::tempdir().unwrap();
            let disk = Disk::open(dir.path(), Default::default()).unwrap();
            dirs.lock().push(dir);
            DiskHistory::open(disk, limits, 0).unwrap()
        });
    }

    #[test]
    fn disk_history_survives_a_clean_restart_and_not_an_unclean_one() {
        let dir = tempfile::tempdir().unwrap();
        let limits = HistoryLimits { size: 2, ttl_ms: 1_000_000, max_bytes: 1 << 20 };
        let k = StreamKey::new("/", "feed", "alice");
        let epoch = {
            let disk = Disk::open(dir.path(), Default::default()).unwrap();
            let h = DiskHistory::open(disk.clone(), limits, 0).unwrap();
            for i in 0..3 {
                let mut m = msg(&format!("m{i}"));
                m.sender = Some("bob".into());
                h.append(&k, m, 1).unwrap();
            }
            let e = h.read(&k, 1, 10, 1).unwrap().epoch;
            disk.close().unwrap();
            e
        };
        let disk = Disk::open(dir.path(), Default::default()).unwrap();
        assert!(!disk.was_unclean());
        let h = DiskHistory::open(disk.clone(), limits, 2).unwrap();
        let p = h.read(&k, 1, 10, 2).unwrap();
        assert_eq!((&*p.epoch, p.top, offsets(&p)), (&*epoch, 3, vec![2, 3]));
        assert_eq!(p.messages[1].body, Bytes::from_static(b"m2"));
        assert_eq!(p.messages[1].sender.as_deref(), Some("bob"));
        assert_eq!(p.messages[1].routing_key, "alice");
        assert_eq!(h.append(&k, msg("m3"), 3).unwrap().stream.as_ref().unwrap().offset, 4);
        drop(h);
        disk.close().unwrap();
        drop(disk);
        // As if killed: no clean-shutdown mark.
        std::fs::remove_file(dir.path().join("CLEAN_SHUTDOWN")).unwrap();
        let disk = Disk::open(dir.path(), Default::default()).unwrap();
        assert!(disk.was_unclean());
        let h = DiskHistory::open(disk, limits, 4).unwrap();
        let p = h.read(&k, 1, 10, 4).unwrap();
        assert_ne!(&*p.epoch, &*epoch, "an unclean start changes the epoch");
        assert_eq!(p.top, 4, "offsets go on");
    }

    #[test]
    fn disk_history_writes_behind_in_order_and_flushes_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let limits = HistoryLimits { size: 5, ttl_ms: 1_000_000, max_bytes: 1 << 20 };
        let keys: Vec<_> = (0..3).map(|i| StreamKey::new("/", "feed", &format!("k{i}"))).collect();
        let epochs: Vec<_> = {
            let disk = Disk::open(dir.path(), Default::default()).unwrap();
            let h = DiskHistory::open(disk.clone(), limits, 0).unwrap();
            // Many batches, each inserting and trimming entries of one key
            // and rewriting its meta: only the last write of each survives.
            for i in 0..3000 {
                h.append(&keys[i % 3], msg(&format!("m{i}")), 1).unwrap();
            }
            let epochs = keys.iter().map(|k| h.read(k, 1, 10, 1).unwrap().epoch).collect();
            // Closed with the history still alive: the close hook flushes.
            disk.close().unwrap();
            epochs
        };
        let disk = Disk::open(dir.path(), Default::default()).unwrap();
        let h = DiskHistory::open(disk, limits, 2).unwrap();
        for (i, k) in keys.iter().enumerate() {
            let p = h.read(k, 1, 10, 2).unwrap();
            assert_eq!((&*p.epoch, p.top, offsets(&p)), (&*epochs[i], 1000, vec![996, 997, 998, 999, 1000]));
            assert_eq!(p.messages[4].body, Bytes::from(format!("m{}", 2997 + i)));
        }
        let n = h.writer.queue.lock().ops.len();
        assert_eq!(n, 0, "reads that change nothing queue nothing");
    }

    fn page(top: u64, first: u64) -> HistoryPage {
        let messages = (first..=top)
            .map(|o| {
                let mut m = msg("x");
                m.stream = Some(StreamPosition { offset: o, epoch: "e".into() });
                Arc::new(m)
            })
            .collect();
        HistoryPage { epoch: "e".into(), top, first, messages }
    }

    fn replayed(r: &Recovery) -> Vec<u64> {
        r.replay.iter().map(|m| m.stream.as_ref().unwrap().offset).collect()
    }

    #[test]
    fn recovery_decisions() {
        let r = recover(page(10, 5), Since::Offset(7), Some("e"));
        assert_eq!((replayed(&r), r.recovered), (vec![7, 8, 9, 10], true));
        let r = recover(page(10, 5), Since::Offset(11), Some("e"));
        assert_eq!((replayed(&r), r.recovered), (vec![], true), "caught up");
        let r = recover(page(10, 5), Since::Offset(4), Some("e"));
        assert_eq!((replayed(&r), r.recovered), (vec![5, 6, 7, 8, 9, 10], false), "history does not reach back");
        let r = recover(page(10, 5), Since::Offset(7), Some("other"));
        assert_eq!((replayed(&r).len(), r.recovered), (6, false), "another epoch: all retained, not recovered");
        let r = recover(page(10, 5), Since::Offset(12), None);
        assert!(!r.recovered, "beyond the top");
        let r = recover(page(0, 1), Since::Offset(1), None);
        assert_eq!((replayed(&r), r.recovered), (vec![], true), "an empty key from its start");
        assert_eq!(replayed(&recover(page(10, 5), Since::First, None)).len(), 6);
        assert_eq!(replayed(&recover(page(10, 5), Since::Last, None)), [10]);
        let r = recover(page(10, 5), Since::Next, Some("e"));
        assert_eq!((replayed(&r), r.recovered), (vec![], true));
        assert!(!recover(page(10, 5), Since::Next, Some("x")).recovered);
    }

    #[test]
    fn since_parses_rabbitmq_values() {
        assert_eq!(Since::parse("first"), Ok(Since::First));
        assert_eq!(Since::parse("last"), Ok(Since::Last));
        assert_eq!(Since::parse("next"), Ok(Since::Next));
        assert_eq!(Since::parse(" 42 "), Ok(Since::Offset(42)));
        for bad in ["-1", "1.5", "", "FIRST", "99999999999999999999999"] {
            assert!(Since::parse(bad).unwrap_err().contains("invalid x-stream-offset"), "{bad}");
        }
    }
}
