//! The data directory: one fjall database (an LSM tree per keyspace behind a
//! shared write-ahead journal) and the group commit that makes writes durable.
//!
//! Writers put their changes into fjall directly (a write lands in the
//! journal's buffer and the memtable: visible at once, crash-consistent, not
//! yet on disk). One who must promise durability (a RECEIPT for a persistent
//! SEND) then asks [`Disk::durable`] for a ticket; a single syncer thread
//! fsyncs the journal once for every ticket asked while the previous fsync
//! ran, so a thousand publishers cost one fsync per round, not a thousand.
//! Durable queues, offline messages and feed history each keep their own
//! keyspaces here (ARCHITECTURE.md, "Storage").

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::{io, Durable, StoreError};

/// Written at a clean shutdown and removed at start: its absence at start
/// means the last run was killed, so whatever was only in the journal's
/// buffer may be gone (history epochs change, recovered messages count as
/// possibly delivered).
const CLEAN_MARK: &str = "CLEAN_SHUTDOWN";

#[derive(Debug, Clone, Copy)]
pub struct DiskOptions {
    /// `false` trades durability for speed: tickets resolve once the journal
    /// is handed to the OS (survives `kill -9`, not a power cut).
    pub fsync: bool,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions { fsync: true }
    }
}

/// Counters for `/metrics` and benchmarks.
#[derive(Debug, Default)]
pub struct DiskCounters {
    /// Journal syncs done by the group commit.
    pub syncs: AtomicU64,
    /// Tickets those syncs resolved (tickets / syncs = the group size).
    pub tickets: AtomicU64,
}

#[derive(Default)]
struct Pending {
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    closed: bool,
}

struct GroupCommit {
    pending: Mutex<Pending>,
    wake: Condvar,
}

pub struct Disk {
    db: Database,
    dir: PathBuf,
    unclean: bool,
    options: DiskOptions,
    commit: Arc<GroupCommit>,
    syncer: Mutex<Option<JoinHandle<()>>>,
    /// Run first in [`Disk::close`]: stores that write behind flush here so
    /// their writes are in the final sync, before the clean-shutdown mark.
    close_hooks: Mutex<Vec<CloseHook>>,
    pub counters: Arc<DiskCounters>,
}

type CloseHook = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("dir", &self.dir).field("unclean", &self.unclean).finish_non_exhaustive()
    }
}

impl Disk {
    /// Opens (creating when missing) the database under `dir`. Fails when
    /// another process holds it (fjall locks the directory).
    pub fn open(dir: &Path, options: DiskOptions) -> Result<Arc<Disk>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(format!("{}: {e}", dir.display())))?;
        // A new directory lost nothing: it starts clean.
        let fresh = !dir.join("db").exists();
        let db = Database::builder(dir.join("db"))
            // The syncer decides when the journal reaches the disk.
            .manual_journal_persist(true)
            // Descriptors count against the process's file limit, which
            // client connections need (fjall's default is 900).
            .max_cached_files(Some(64))
            // Reads happen at start and on history replays; the block cache
            // need not be fjall's default 32 MiB.
            .cache_size(8 << 20)
            // Journals are replayed at start: keep them short.
            .max_journaling_size(64 << 20)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => io(format!(
                    "{} is in use by another process (one Herald per data directory: node.data_dir)",
                    dir.display()
                )),
                e => io(format!("{}: {e}", dir.display())),
            })?;
        let mark = dir.join(CLEAN_MARK);
        let unclean = !fresh && !mark.exists();
        if mark.exists() {
            std::fs::remove_file(&mark).map_err(io)?;
            sync_dir(dir)?;
        }
        let commit = Arc::new(GroupCommit { pending: Mutex::new(Pending::default()), wake: Condvar::new() });
        let counters = Arc::new(DiskCounters::default());
        let syncer = {
            let (db, commit, counters) = (db.clone(), commit.clone(), counters.clone());
            let mode = if options.fsync { PersistMode::SyncData } else { PersistMode::Buffer };
            std::thread::Builder::new()
                .name("herald-disk-sync".into())
                .spawn(move || run_syncer(db, mode, commit, counters))
                .map_err(io)?
        };
        if unclean {
            tracing::warn!(dir = %dir.display(), "data directory was not shut down cleanly; recovering from its journal");
        }
        Ok(Arc::new(Disk {
            db,
            dir: dir.to_owned(),
            unclean,
            options,
            commit,
            syncer: Mutex::new(Some(syncer)),
            close_hooks: Mutex::new(Vec::new()),
            counters,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the previous run ended without [`Disk::close`] (killed).
    pub fn was_unclean(&self) -> bool {
        self.unclean
    }

    pub fn options(&self) -> DiskOptions {
        self.options
    }

    /// The database, for atomic batches across keyspaces.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Opens (creating when missing) a keyspace. Names are fixed strings of
    /// the store modules, never client input.
    pub fn keyspace(&self, name: &str) -> Result<Keyspace, StoreError> {
        self.db.keyspace(name, KeyspaceCreateOptions::default).map_err(io)
    }

    /// A ticket that resolves once everything written before this call is on
    /// disk (group commit: one journal sync serves every ticket asked while
    /// the previous one ran).
    pub fn durable(&self) -> Durable {
        let (tx, rx) = oneshot::channel();
        let mut p = self.commit.pending.lock();
        if p.closed {
            return Durable::ready(Err(StoreError::Unavailable("data directory closed".into())));
        }
        p.waiters.push(tx);
        drop(p);
        self.commit.wake.notify_one();
        Durable::waiting(rx)
    }

    /// Registers `hook` to run at the start of [`Disk::close`] (once).
    pub fn on_close(&self, hook: impl FnOnce() + Send + 'static) {
        self.close_hooks.lock().push(Box::new(hook));
    }

    /// Runs the close hooks, syncs, stops the syncer and leaves the
    /// clean-shutdown mark. Later tickets fail; writes after this are not
    /// promised to anyone.
    pub fn close(&self) -> Result<(), StoreError> {
        {
            let mut p = self.commit.pending.lock();
            if p.closed {
                return Ok(());
            }
            p.closed = true;
        }
        let hooks = std::mem::take(&mut *self.close_hooks.lock());
        for hook in hooks {
            hook();
        }
        self.commit.wake.notify_one();
        if let Some(t) = self.syncer.lock().take() {
            let _ = t.join();
        }
        self.db.persist(PersistMode::SyncAll).map_err(io)?;
        File::create(self.dir.join(CLEAN_MARK)).and_then(|f| f.sync_all()).map_err(io)?;
        sync_dir(&self.dir)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "closing the data directory failed");
        }
    }
}

fn run_syncer(db: Database, mode: PersistMode, commit: Arc<GroupCommit>, counters: Arc<DiskCounters>) {
    loop {
        let (waiters, closed) = {
            let mut p = commit.pending.lock();
            while p.waiters.is_empty() && !p.closed {
                commit.wake.wait(&mut p);
            }
            (std::mem::take(&mut p.waiters), p.closed)
        };
        if !waiters.is_empty() {
            let result = db.persist(mode).map_err(io);
            if let Err(e) = &result {
                tracing::error!(error = %e, "journal sync failed; receipts for persistent messages are refused");
            }
            counters.syncs.fetch_add(1, Ordering::Relaxed);
            counters.tickets.fetch_add(waiters.len() as u64, Ordering::Relaxed);
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
        if closed {
            return;
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_resolve_after_a_sync_and_the_mark_tells_clean_from_killed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Disk::open(tmp.path(), DiskOptions::default()).unwrap();
        assert!(!d.was_unclean(), "a new directory lost nothing");
        let ks = d.keyspace("t").unwrap();
        ks.insert("k", "v").unwrap();
        let tickets: Vec<_> = (0..50).map(|_| d.durable()).collect();
        for t in tickets {
            t.wait().await.unwrap();
        }
        let syncs = d.counters.syncs.load(Ordering::Relaxed);
        assert!((1..=50).contains(&syncs), "{syncs} syncs for 50 tickets");
        assert_eq!(d.counters.tickets.load(Ordering::Relaxed), 50);
        d.close().unwrap();
        assert!(d.durable().wait().await.is_err(), "a closed directory promises nothing");
        drop(ks);
        drop(d);

        let d = Disk::open(tmp.path(), DiskOptions::default()).unwrap();
        assert!(!d.was_unclean(), "closed cleanly last time");
        assert_eq!(d.keyspace("t").unwrap().get("k").unwrap().as_deref(), Some(&b"v"[..]));
        // Not closed: a forgotten handle is what kill -9 leaves, as far as
        // the mark is concerned (fjall's lock goes with the process, so the
        // directory is reopened in another test process below).
        std::mem::forget(d);
    }

    #[test]
    fn a_start_without_the_mark_is_unclean() {
        let tmp = tempfile::tempdir().unwrap();
        Disk::open(tmp.path(), DiskOptions::default()).unwrap().close().unwrap();
        std::fs::remove_file(tmp.path().join(CLEAN_MARK)).unwrap();
        assert!(Disk::open(tmp.path(), DiskOptions::default()).unwrap().was_unclean());
    }

    #[test]
    fn a_second_opener_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _d = Disk::open(tmp.path(), DiskOptions::default()).unwrap();
        assert!(Disk::open(tmp.path(), DiskOptions::default()).is_err());
    }
}
