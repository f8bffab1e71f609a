//! The hub: which sessions are live, and which belong to which user.
//!
//! Sharded so that connect/disconnect storms on many cores do not serialize on
//! one lock; each shard's lock is held only for a map operation.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::CloseReason;
use crate::session::{SessionHandle, SessionId};

const SHARDS: usize = 16;

#[derive(Debug)]
pub struct Hub {
    sessions: [Mutex<HashMap<SessionId, Arc<SessionHandle>>>; SHARDS],
    users: [Mutex<HashMap<Arc<str>, Vec<SessionId>>>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            sessions: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            users: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: Default::default(),
        }
    }
}

impl Hub {
    fn shard_of<K: Hash>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    pub fn register(&self, session: Arc<SessionHandle>) {
        let uid = session.uid.clone();
        let id = session.id;
        self.sessions[self.shard_of(&id)].lock().insert(id, session);
        self.users[self.shard_of(&uid)].lock().entry(uid).or_default().push(id);
    }

    pub fn unregister(&self, id: SessionId) -> Option<Arc<SessionHandle>> {
        let session = self.sessions[self.shard_of(&id)].lock().remove(&id)?;
        let mut users = self.users[self.shard_of(&session.uid)].lock();
        if let Some(ids) = users.get_mut(&session.uid) {
            ids.retain(|s| *s != id);
            if ids.is_empty() {
                users.remove(&session.uid);
            }
        }
        Some(session)
    }

    pub fn get(&self, id: SessionId) -> Option<Arc<SessionHandle>> {
        self.sessions[self.shard_of(&id)].lock().get(&id).cloned()
    }

    /// Sums `f` over every live session without copying the map (the memory
    /// monitor reads each outbox's byte count: the outbox lock is taken
    /// under a shard's, and never takes another).
    pub fn sum_sessions(&self, f: impl Fn(&SessionHandle) -> u64) -> u64 {
        self.sessions.iter().map(|s| s.lock().values().map(|h| f(h)).sum::<u64>()).sum()
    }

    /// Live sessions of one user.
    pub fn user_sessions(&self, uid: &str) -> Vec<Arc<SessionHandle>> {
        let ids = self.users[self.shard_of(&uid)].lock().get(uid).cloned().unwrap_or_default();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.iter().map(|s| s.lock().len()).sum()
    }

    pub fn user_count(&self) -> usize {
        self.users.iter().map(|s| s.lock().len()).sum()
    }

    /// A snapshot of every live session (for stats and admin listings).
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions.iter().flat_map(|s| s.lock().values().cloned().collect::<Vec<_>>()).collect()
    }

    /// Closes every session of `uid`; returns how many.
    pub fn kick_user(&self, uid: &str, reason: CloseReason) -> usize {
        let sessions = self.user_sessions(uid);
        for s in &sessions {
            s.close(reason.clone());
        }
        sessions.len()
    }

    pub fn close_all(&self, reason: CloseReason) {
        for s in self.sessions() {
            s.close(reason.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CloseCode;
    use crate::session::Protocol;
    use crate::transport::Peer;

    #[test]
    fn register_lookup_unregister() {
        let hub = Hub::default();
        let peer = Peer { addr: None, transport: crate::transport::Transport::Tcp };
        let a1 = SessionHandle::new("alice", "/", Protocol::Stomp, &peer, 8);
        let a2 = SessionHandle::new("alice", "/", Protocol::Stomp, &peer, 8);
        let b = SessionHandle::new("bob", "/", Protocol::Stomp, &peer, 8);
        for s in [&a1, &a2, &b] {
            hub.register(s.clone());
        }
        assert_eq!(hub.session_count(), 3);
        assert_eq!(hub.user_count(), 2);
        assert_eq!(hub.user_sessions("alice").len(), 2);
        assert_eq!(hub.kick_user("alice", CloseReason::new(CloseCode::Kicked, "kicked")), 2);
        assert!(a1.is_closing() && a2.is_closing() && !b.is_closing());
        hub.unregister(a1.id);
        assert_eq!(hub.user_sessions("alice").len(), 1);
        hub.unregister(a2.id);
        assert_eq!(hub.user_count(), 1);
        assert!(hub.get(a2.id).is_none());
    }
}
