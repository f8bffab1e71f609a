//! The router's side of stream history (store/history.rs): which exchanges
//! keep it, and the per-key order that makes recovery gapless.
//!
//! A key's lock is held from the offset's assignment through the fan-out to
//! every bound queue, and by a subscription from its history read through
//! its bind and replay. So for one key, offsets reach every queue in
//! increasing order, and a new subscription's queue gets the replay
//! `first..=top` followed by the live `top+1…`: no gap, no duplicate at the
//! seam, without buffering or comparing offsets. Different keys share a
//! stripe of locks only by hash; the lock is held for a fan-out (no client
//! controls its cost beyond the bindings `[routing]` and queue limits bound)
//! and a replay of at most `history.size` messages.

use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::store::history::{HistoryLimits, HistoryStore, StreamKey};

const STRIPES: usize = 256;

#[derive(Debug)]
pub struct History {
    pub store: Arc<dyn HistoryStore>,
    /// The exchanges with history (`exchanges.feed`, `exchanges.project`).
    exchanges: [String; 2],
    locks: Box<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl History {
    pub fn new(store: Arc<dyn HistoryStore>, feed: &str, project: &str) -> History {
        History {
            store,
            exchanges: [feed.to_owned(), project.to_owned()],
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }

    pub fn limits(&self) -> HistoryLimits {
        self.store.limits()
    }

    /// Whether messages published to `exchange` get offsets.
    pub fn covers(&self, exchange: &str) -> bool {
        self.limits().enabled() && self.exchanges.iter().any(|x| x == exchange)
    }

    /// The key's lock: taken before any router lock (router/mod.rs, lock order).
    pub fn lock(&self, key: &StreamKey) -> MutexGuard<'_, ()> {
        self.locks[(self.hasher.hash_one(key) as usize) % STRIPES].lock()
    }
}
