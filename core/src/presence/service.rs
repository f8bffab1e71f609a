//! The engine's presence service: per-session states, aggregated per user,
//! and written to the [`PresenceStore`]. Who hears of a change is
//! [`super::fanout`]'s job.
//!
//! Imports `presence` and `session` (the state types); nothing imports this
//! back from `session`.
//!
//! The local map is authoritative for sessions on this node; the store is
//! what other processes read. Writes to the store for one user are
//! serialized (striped async locks) and always write the latest local state,
//! so a quick available → unavailable cannot leave the store stale.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::{Availability, PresenceStore, UserPresence};
use crate::session::SessionId;
pub use crate::session::{PresenceNotice, ResourceState};

const STRIPES: usize = 64;

#[derive(Debug, Default)]
struct UserState {
    resources: Vec<ResourceState>,
}

impl UserState {
    /// The most available resource wins; ties go to the higher priority.
    fn aggregate(&self) -> (Availability, String) {
        self.resources
            .iter()
            .max_by_key(|r| (r.availability, r.priority))
            .map(|r| (r.availability, r.status.clone()))
            .unwrap_or((Availability::Offline, String::new()))
    }
}

pub struct PresenceService {
    node: String,
    local: Mutex<HashMap<String, UserState>>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

/// What [`PresenceService::update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// The user's aggregate (availability or status) changed.
    pub aggregate_changed: bool,
    /// The session had a state before (so removing it is news to contacts).
    pub existed: bool,
    /// The session's new state is the one it already had: nothing to announce
    /// (a client repeating its presence must not make every contact hear it
    /// again; issue 19's flood of 20,000 identical presences).
    pub unchanged: bool,
}

/// What changed for the user as a whole (drives the store and the exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateChange {
    pub uid: String,
    pub availability: Availability,
    pub status: String,
}

impl PresenceService {
    pub fn new(node: &str) -> PresenceService {
        PresenceService {
            node: node.to_owned(),
            local: Mutex::new(HashMap::new()),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }

    /// Sets (or, with `None`, removes) one session's state. Returns the
    /// aggregate before and after, and whether the session had a state.
    pub fn update(&self, uid: &str, session: SessionId, state: Option<ResourceState>) -> Update {
        let mut local = self.local.lock();
        if let (Some(new), Some(user)) = (&state, local.get(uid)) {
            // Left as it is (not even reordered, which could move a tie in
            // the aggregate): the same state again changes nothing.
            if user.resources.iter().any(|r| r.session == session && r == new) {
                return Update { aggregate_changed: false, existed: true, unchanged: true };
            }
        }
        let user = local.entry(uid.to_owned()).or_default();
        let before = user.aggregate();
        let count = user.resources.len();
        user.resources.retain(|r| r.session != session);
        let existed = user.resources.len() != count;
        if let Some(s) = state {
            // Most users have one session: room for exactly that, not the
            // four slots a first `push` reserves.
            user.resources.reserve_exact(1);
            user.resources.push(s);
        }
        let after = user.aggregate();
        if user.resources.is_empty() {
            local.remove(uid);
        }
        Update { aggregate_changed: before != after, existed, unchanged: false }
    }

    /// Current aggregate of a user on this node.
    pub fn aggregate(&self, uid: &str) -> (Availability, String) {
        self.local.lock().get(uid).map(UserState::aggregate).unwrap_or((Availability::Offline, String::new()))
    }

    /// Every user with a session state on this node.
    pub fn users(&self) -> Vec<String> {
        self.local.lock().keys().cloned().collect()
    }

    /// Every resource of `uid` that is available (has sent presence).
    pub fn resources(&self, uid: &str) -> Vec<ResourceState> {
        self.local
            .lock()
            .get(uid)
            .map(|u| u.resources.iter().filter(|r| r.availability != Availability::Offline).cloned().collect())
            .unwrap_or_default()
    }

    /// Writes the user's latest aggregate to the store, serialized per user.
    /// Returns it, so callers announce exactly what was written.
    pub async fn sync_store(&self, store: &dyn PresenceStore, uid: &str) -> AggregateChange {
        let stripe = (self.hasher.hash_one(uid) as usize) % STRIPES;
        let _guard = self.stripes[stripe].lock().await;
        let (availability, status) = self.aggregate(uid);
        let result = if availability == Availability::Offline {
            store.clear_user(uid).await
        } else {
            let updated_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            store
                .set_user(
                    uid,
                    &UserPresence { availability, status: status.clone(), node: self.node.clone(), updated_ms },
                )
                .await
        };
        if let Err(e) = result {
            tracing::warn!(uid, error = %e, "presence store write failed; keeping the local view");
        }
        AggregateChange { uid: uid.to_owned(), availability, status }
    }
}

impl std::fmt::Debug for PresenceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceService").field("node", &self.node).finish_non_exhaustive()
    }
}

/// The JSON body of a presence event on the `presence` exchange
/// (routing key `<projectId>.<uid>`).
pub fn event_json(change: &AggregateChange, project: &str) -> String {
    serde_json::json!({
        "uid": change.uid,
        "project": project,
        "state": change.availability.as_str(),
        "status": change.status,
    })
    .to_string()
}

pub type SharedPresence = Arc<PresenceService>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::MemoryPresence;

    fn rs(session: SessionId, a: Availability, priority: i8, status: &str) -> ResourceState {
        ResourceState { session, resource: format!("r{session}"), availability: a, status: status.into(), priority }
    }

    #[tokio::test]
    async fn aggregates_over_resources_and_writes_latest() {
        let p = PresenceService::new("n1");
        let store = MemoryPresence::default();
        let u = p.update("alice", 1, Some(rs(1, Availability::Away, 0, "lunch")));
        assert_eq!(u, Update { aggregate_changed: true, existed: false, unchanged: false });
        let again = p.update("alice", 1, Some(rs(1, Availability::Away, 0, "lunch")));
        assert_eq!(
            again,
            Update { aggregate_changed: false, existed: true, unchanged: true },
            "the same presence again is no news"
        );
        let status = p.update("alice", 1, Some(rs(1, Availability::Away, 0, "coffee")));
        assert_eq!(status, Update { aggregate_changed: true, existed: true, unchanged: false });
        p.update("alice", 1, Some(rs(1, Availability::Away, 0, "lunch")));
        assert_eq!(p.aggregate("alice").0, Availability::Away);
        p.update("alice", 2, Some(rs(2, Availability::Online, -1, "")));
        assert_eq!(p.aggregate("alice").0, Availability::Online, "most available wins");
        p.update("alice", 3, Some(rs(3, Availability::Online, 5, "here")));
        assert_eq!(p.aggregate("alice"), (Availability::Online, "here".into()), "priority breaks ties");
        let change = p.sync_store(&store, "alice").await;
        assert_eq!(change.availability, Availability::Online);
        assert_eq!(store.get_user("alice").await.unwrap().unwrap().status, "here");
        assert!(p.update("alice", 3, None).existed);
        assert!(!p.update("alice", 3, None).existed, "a second removal is no news");
        p.update("alice", 2, None);
        assert_eq!(p.resources("alice").len(), 1);
        p.update("alice", 1, None);
        assert_eq!(p.aggregate("alice").0, Availability::Offline);
        p.sync_store(&store, "alice").await;
        assert_eq!(store.get_user("alice").await.unwrap(), None, "offline clears the store");
    }
}
