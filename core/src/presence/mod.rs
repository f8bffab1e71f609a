//! Presence: one aggregated state per user, and per-project online sets,
//! shared by every protocol.
//!
//! The engine's presence service (per-session states, aggregation,
//! [`service`]) is built on a [`PresenceStore`]: where the aggregated state
//! and the online sets live so other processes (the team's own services,
//! other nodes) can read them. In memory by default; Redis when configured.
//! [`fanout`] decides who hears of a change.
//!
//! This file is vocabulary and the store trait: it imports nothing from the
//! crate, so `session` can use [`Availability`] while `service` and `fanout`
//! use `session` without a loop.

pub mod fanout;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
pub mod service;

use std::fmt::Debug;

pub use memory::MemoryPresence;

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A user's availability, aggregated over their sessions. Ordered from least
/// to most available, so the aggregate of several sessions is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Offline,
    /// Extended away (XMPP `xa`).
    Xa,
    Away,
    /// Busy (XMPP `dnd`).
    Dnd,
    Online,
    /// Free for chat (XMPP `chat`).
    Chat,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Offline => "offline",
            Availability::Xa => "xa",
            Availability::Away => "away",
            Availability::Dnd => "dnd",
            Availability::Online => "online",
            Availability::Chat => "chat",
        }
    }

    /// Parses the stored/API form; `busy` is accepted for `dnd`, `available` for `online`.
    pub fn parse(s: &str) -> Option<Availability> {
        Some(match s {
            "offline" | "unavailable" => Availability::Offline,
            "xa" => Availability::Xa,
            "away" => Availability::Away,
            "dnd" | "busy" => Availability::Dnd,
            "online" | "available" => Availability::Online,
            "chat" => Availability::Chat,
            _ => return None,
        })
    }
}

/// What the store keeps for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub availability: Availability,
    /// Free-text status ("In a meeting"), may be empty.
    pub status: String,
    /// Node that holds the user's sessions.
    pub node: String,
    /// Milliseconds since the Unix epoch of the last change.
    pub updated_ms: u64,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PresenceError {
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
}

/// Guarantees every implementation gives (checked by [`conformance`]):
/// - `set_user` then `get_user` returns what was set (last write wins);
///   `clear_user` makes `get_user` return `None`.
/// - `add_online`/`remove_online` are idempotent set operations;
///   `online` returns the members in any order; an unknown project is empty.
/// - Operations on different users or projects are independent; there is no
///   multi-key atomicity (callers order their writes: user state first, then sets).
/// - A failure is reported as `Unavailable`; the engine logs it and carries on
///   with its in-memory view (presence is advisory).
pub trait PresenceStore: Send + Sync + Debug + 'static {
    fn set_user<'a>(&'a self, uid: &'a str, presence: &'a UserPresence) -> BoxFuture<'a, Result<(), PresenceError>>;
    fn get_user<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Option<UserPresence>, PresenceError>>;
    fn clear_user<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>>;
    fn add_online<'a>(&'a self, project: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>>;
    fn remove_online<'a>(&'a self, project: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>>;
    fn online<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<String>, PresenceError>>;
}

/// The conformance suite every [`PresenceStore`] must pass. `store` must be
/// empty for the ids used here (tests give each run a fresh key prefix).
pub async fn conformance(store: &dyn PresenceStore) {
    let p = |a: Availability, status: &str, t: u64| UserPresence {
        availability: a,
        status: status.into(),
        node: "n1".into(),
        updated_ms: t,
    };
    assert_eq!(store.get_user("alice").await.unwrap(), None, "unknown user has no presence");
    store.set_user("alice", &p(Availability::Online, "", 1)).await.unwrap();
    store.set_user("bob", &p(Availability::Dnd, "in a meeting: 2pm", 2)).await.unwrap();
    assert_eq!(store.get_user("alice").await.unwrap(), Some(p(Availability::Online, "", 1)));
    store.set_user("alice", &p(Availability::Away, "lunch", 3)).await.unwrap();
    assert_eq!(store.get_user("alice").await.unwrap(), Some(p(Availability::Away, "lunch", 3)), "last write wins");
    assert_eq!(
        store.get_user("bob").await.unwrap(),
        Some(p(Availability::Dnd, "in a meeting: 2pm", 2)),
        "users are independent; status text kept verbatim"
    );
    store.clear_user("alice").await.unwrap();
    assert_eq!(store.get_user("alice").await.unwrap(), None);
    store.clear_user("nobody").await.unwrap();

    assert!(store.online("p1").await.unwrap().is_empty(), "unknown project is empty");
    store.add_online("p1", "alice").await.unwrap();
    store.add_online("p1", "alice").await.unwrap();
    store.add_online("p1", "bob").await.unwrap();
    store.add_online("p2", "bob").await.unwrap();
    let mut on = store.online("p1").await.unwrap();
    on.sort();
    assert_eq!(on, ["alice", "bob"], "sets: no duplicates");
    store.remove_online("p1", "alice").await.unwrap();
    store.remove_online("p1", "alice").await.unwrap();
    assert_eq!(store.online("p1").await.unwrap(), ["bob"]);
    assert_eq!(store.online("p2").await.unwrap(), ["bob"], "projects are independent");
    store.remove_online("p1", "bob").await.unwrap();
    assert!(store.online("p1").await.unwrap().is_empty());
    for a in [
        Availability::Offline,
        Availability::Xa,
        Availability::Away,
        Availability::Dnd,
        Availability::Online,
        Availability::Chat,
    ] {
        store.set_user("carol", &p(a, "", 9)).await.unwrap();
        assert_eq!(store.get_user("carol").await.unwrap().unwrap().availability, a, "every availability round-trips");
    }
}
