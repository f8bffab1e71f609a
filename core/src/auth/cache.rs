//! Pieces the remote auth sources (the HTTP backend, MongoDB users) share:
//! a TTL cache bounded in entries, and a rate limit on "unavailable"
//! warnings (a dead backend must not write one line per login).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A TTL cache bounded in entries; the oldest go first. Expired entries
/// are dropped as new ones come in, so memory follows the login rate, not
/// the history.
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    map: HashMap<K, (V, Instant)>,
    /// Insertion order. An entry is stale when the map holds the key with a
    /// later time (it expired and was asked again).
    order: VecDeque<(K, Instant)>,
}

impl<K: Eq + Hash + Clone, V> Inner<K, V> {
    /// Drops the oldest entry; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((k, at)) = self.order.pop_front() else { return false };
        if self.map.get(&k).is_some_and(|(_, t)| *t == at) {
            self.map.remove(&k);
        }
        true
    }
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// `max` is raised to 1.
    pub(crate) fn new(ttl: Duration, max: usize) -> TtlCache<K, V> {
        TtlCache { ttl, max: max.max(1), inner: Mutex::new(Inner { map: HashMap::new(), order: VecDeque::new() }) }
    }

    pub(crate) fn get(&self, k: &K) -> Option<V> {
        let inner = self.inner.lock();
        let (v, at) = inner.map.get(k)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    pub(crate) fn insert(&self, k: K, v: V) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        while inner.order.front().is_some_and(|(_, at)| now.duration_since(*at) >= self.ttl) {
            inner.pop_oldest();
        }
        if let Some((old, at)) = inner.map.get_mut(&k) {
            // Asked twice at once: keep the first time, so `order` has one live entry per key.
            if now.duration_since(*at) < self.ttl {
                *old = v;
                return;
            }
        }
        while inner.map.len() >= self.max && inner.pop_oldest() {}
        inner.map.insert(k.clone(), (v, now));
        inner.order.push_back((k, now));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map.len()
    }
}

/// At most one "backend unavailable" warning per this interval.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets a warning through at most once per [`WARN_EVERY`], counting the
/// ones held back in between.
#[derive(Default)]
pub(crate) struct WarnLimiter {
    state: Mutex<(Option<Instant>, u64)>,
}

impl WarnLimiter {
    /// `Some(suppressed)`: log now, saying how many were held back since the
    /// last one. `None`: hold this one back.
    pub(crate) fn due(&self) -> Option<u64> {
        let mut state = self.state.lock();
        if state.0.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            state.1 += 1;
            return None;
        }
        state.0 = Some(Instant::now());
        Some(std::mem::take(&mut state.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_oldest_go_first() {
        let c = TtlCache::new(Duration::from_millis(100), 2);
        c.insert("a", 1);
        c.insert("b", 2);
        c.insert("c", 3);
        assert_eq!((c.get(&"a"), c.get(&"b"), c.get(&"c"), c.len()), (None, Some(2), Some(3), 2));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(c.get(&"b"), None, "expired");
        c.insert("d", 4);
        assert_eq!(c.len(), 1, "expired entries dropped on insert");
    }

    #[test]
    fn warnings_are_rate_limited() {
        let w = WarnLimiter::default();
        assert_eq!(w.due(), Some(0));
        assert_eq!(w.due(), None);
        assert_eq!(w.due(), None);
        w.state.lock().0 = Some(Instant::now() - WARN_EVERY);
        assert_eq!(w.due(), Some(2));
    }
}
