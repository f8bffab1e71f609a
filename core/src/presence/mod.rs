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

#[cfg(feature = "redis")]
pub mod cluster;
pub mod fanout;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
pub mod service;

use std::fmt::Debug;

pub use memory::MemoryPresence;

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Other nodes' presence notices queued on this node and delivered (by
/// `cluster::presence_worker`, in arrival order). A step that must come
/// after everything already queued waits with [`Backlog::caught_up`]: the
/// reaper, before announcing a dead node's users offline, so a notice that
/// node sent before dying is not delivered after the reaper's.
#[derive(Debug, Default)]
pub struct Backlog {
    queued: std::sync::atomic::AtomicU64,
    delivered: std::sync::atomic::AtomicU64,
    progress: tokio::sync::Notify,
}

impl Backlog {
    /// A notice was queued (after the queue took it).
    pub fn queued(&self) {
        self.queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The oldest queued notice was delivered.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.progress.notify_waiters();
    }

    /// Resolves once every notice queued before the call is delivered, or
    /// after `limit` (a stuck directory must not stop the reaper).
    pub async fn caught_up(&self, limit: std::time::Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        let target = self.queued.load(SeqCst);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.delivered.load(SeqCst) >= target {
                return;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return;
            }
        }
    }
}

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

/// `s` cut to at most `max` bytes, on a character boundary (status texts
/// shared between nodes have a byte budget).
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

/// One resource of a user as every node of a cluster sees it: held by
/// `node` as its session `session`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedResource {
    pub node: String,
    pub session: u64,
    pub resource: String,
    pub availability: Availability,
    pub status: String,
    pub priority: i8,
}

/// A user's aggregate before and after one operation on their resources,
/// as computed atomically by the [`SharedPresence`] (exactly one operation
/// sees each change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedChange {
    pub before: (Availability, String),
    pub after: (Availability, String),
}

impl SharedChange {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// Presence shared by the nodes of a cluster: every node's resources of a
/// user, aggregated to one state; the store's user hash and project online
/// sets follow the aggregate. Guarantees (checked by [`shared_conformance`]):
/// - `update` sets (`Some`) or removes (`None`) one resource of the calling
///   node, recomputes the aggregate (most available, then highest priority)
///   and returns it before and after, atomically: concurrent updates from
///   several nodes each see a distinct before/after, so exactly one of them
///   reports each change of the aggregate, and the online sets of
///   `projects` end up exactly "users whose aggregate is not offline".
/// - `resources` lists every node's resources of a user.
/// - `users_on(node)` includes every user with a resource held by `node`
///   (it may include users without one any more).
/// - `remove_node` removes every resource of `node` for one user (a dead
///   node, or this node restarting) and returns them with the change.
/// - `claim` binds a full JID to this node's session and returns who held
///   it before; `release` unbinds it only if this session still holds it.
pub trait SharedPresence: Send + Sync + Debug + 'static {
    /// This node's name (the resources `update` writes are this node's).
    fn node(&self) -> &str;
    /// Notes that a change of this node's was not written (Redis out of
    /// reach): what the node holds is to be asserted again.
    fn mark_stale(&self);
    /// Whether a change was missed since the last call (and clears it).
    fn take_stale(&self) -> bool;
    fn update<'a>(
        &'a self,
        uid: &'a str,
        session: u64,
        state: Option<&'a SharedResource>,
        projects: &'a [String],
    ) -> BoxFuture<'a, Result<SharedChange, PresenceError>>;
    fn resources<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Vec<SharedResource>, PresenceError>>;
    fn users_on<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<String>, PresenceError>>;
    fn remove_node<'a>(
        &'a self,
        uid: &'a str,
        node: &'a str,
        projects: &'a [String],
    ) -> BoxFuture<'a, Result<(Vec<SharedResource>, SharedChange), PresenceError>>;
    /// Makes this node's resources of `uid` exactly `resources` (after
    /// Redis came back: what this node holds is asserted again).
    fn replace_mine<'a>(
        &'a self,
        uid: &'a str,
        resources: &'a [SharedResource],
        projects: &'a [String],
    ) -> BoxFuture<'a, Result<SharedChange, PresenceError>>;
    /// Forgets `users_on(node)` (after every user there was removed).
    fn forget_node<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), PresenceError>>;
    fn claim<'a>(
        &'a self,
        uid: &'a str,
        resource: &'a str,
        session: u64,
    ) -> BoxFuture<'a, Result<Option<(String, u64)>, PresenceError>>;
    fn release<'a>(
        &'a self,
        uid: &'a str,
        resource: &'a str,
        session: u64,
    ) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.release_of(uid, resource, self.node(), session)
    }
    /// [`release`](Self::release) for a session of `node` (a dead node's, when reaped).
    fn release_of<'a>(
        &'a self,
        uid: &'a str,
        resource: &'a str,
        node: &'a str,
        session: u64,
    ) -> BoxFuture<'a, Result<(), PresenceError>>;
}

/// The conformance suite of [`SharedPresence`]: `a` and `b` are two nodes
/// (`a.node()` ≠ `b.node()`) over the same shared state, `store` reads its
/// user hashes and online sets. Fresh ids (tests give each run its own prefix).
pub async fn shared_conformance(a: &dyn SharedPresence, b: &dyn SharedPresence, store: &dyn PresenceStore) {
    let res = |node: &dyn SharedPresence, session: u64, resource: &str, av: Availability, status: &str, p: i8| {
        SharedResource {
            node: node.node().to_owned(),
            session,
            resource: resource.into(),
            availability: av,
            status: status.into(),
            priority: p,
        }
    };
    let projects = ["p1".to_owned(), "p2".to_owned()];
    let off = (Availability::Offline, String::new());
    let on = |av: Availability, s: &str| (av, s.to_owned());

    let r1 = res(a, 1, "phone", Availability::Away, "lunch", 0);
    let c = a.update("alice", 1, Some(&r1), &projects).await.unwrap();
    assert_eq!((c.before.clone(), c.after.clone()), (off.clone(), on(Availability::Away, "lunch")));
    assert!(c.changed());
    assert_eq!(store.online("p1").await.unwrap(), ["alice"], "online in every project given");
    assert_eq!(store.online("p2").await.unwrap(), ["alice"]);
    let u = store.get_user("alice").await.unwrap().expect("the user hash follows the aggregate");
    assert_eq!((u.availability, u.status.as_str(), u.node.as_str()), (Availability::Away, "lunch", a.node()));

    let r2 = res(b, 1, "desk", Availability::Online, "", 5);
    let c = b.update("alice", 1, Some(&r2), &projects).await.unwrap();
    assert_eq!(c.after, on(Availability::Online, ""), "the most available resource on any node wins");
    assert_eq!(store.get_user("alice").await.unwrap().unwrap().node, b.node());
    let c = b.update("alice", 1, Some(&r2), &projects).await.unwrap();
    assert!(!c.changed(), "the same state again changes nothing");
    let mut rs = a.resources("alice").await.unwrap();
    rs.sort_by(|x, y| x.node.cmp(&y.node));
    let mut want = vec![r1.clone(), r2.clone()];
    want.sort_by(|x, y| x.node.cmp(&y.node));
    assert_eq!(rs, want, "every node's resources, with their node and session");
    assert!(a.users_on(a.node()).await.unwrap().contains(&"alice".to_owned()));
    assert!(a.users_on(b.node()).await.unwrap().contains(&"alice".to_owned()));

    let c = b.update("alice", 1, None, &projects).await.unwrap();
    assert_eq!(c.after, on(Availability::Away, "lunch"), "the other node's resource is left");
    assert_eq!(store.online("p1").await.unwrap(), ["alice"]);
    let c = a.update("alice", 1, None, &projects).await.unwrap();
    assert_eq!(c.after, off, "last resource gone: offline");
    assert!(store.online("p1").await.unwrap().is_empty());
    assert_eq!(store.get_user("alice").await.unwrap(), None);
    assert!(!a.update("alice", 1, None, &projects).await.unwrap().changed(), "removing twice is no news");

    // A dead node's resources go at once; the others stay.
    a.update("bob", 7, Some(&res(a, 7, "r7", Availability::Dnd, "x", 0)), &projects).await.unwrap();
    a.update("bob", 8, Some(&res(a, 8, "r8", Availability::Xa, "", 0)), &projects).await.unwrap();
    b.update("bob", 9, Some(&res(b, 9, "r9", Availability::Xa, "", 0)), &projects).await.unwrap();
    let (mut removed, c) = b.remove_node("bob", a.node(), &projects).await.unwrap();
    removed.sort_by_key(|r| r.session);
    assert_eq!(removed.iter().map(|r| r.resource.as_str()).collect::<Vec<_>>(), ["r7", "r8"]);
    assert_eq!((c.before.0, c.after.0), (Availability::Dnd, Availability::Xa));
    assert_eq!(store.online("p2").await.unwrap(), ["bob"]);
    let (removed, c) = a.remove_node("bob", b.node(), &projects).await.unwrap();
    assert_eq!((removed.len(), c.after.0), (1, Availability::Offline));
    assert!(store.online("p2").await.unwrap().is_empty());
    a.forget_node(a.node()).await.unwrap();
    assert!(a.users_on(a.node()).await.unwrap().is_empty());

    // Re-asserting a node's resources (Redis came back): exactly these, others' untouched.
    a.update("dan", 1, Some(&res(a, 1, "old", Availability::Online, "", 0)), &projects).await.unwrap();
    b.update("dan", 2, Some(&res(b, 2, "b", Availability::Xa, "", 0)), &projects).await.unwrap();
    let c = a.replace_mine("dan", &[res(a, 3, "new", Availability::Away, "", 0)], &projects).await.unwrap();
    assert_eq!((c.before.0, c.after.0), (Availability::Online, Availability::Away));
    let mut names: Vec<String> = a.resources("dan").await.unwrap().into_iter().map(|r| r.resource).collect();
    names.sort();
    assert_eq!(names, ["b", "new"]);
    let c = a.replace_mine("dan", &[], &projects).await.unwrap();
    assert_eq!(c.after.0, Availability::Xa);
    b.update("dan", 2, None, &projects).await.unwrap();
    assert!(store.online("p1").await.unwrap().is_empty());

    // Full JIDs.
    assert_eq!(a.claim("carol", "phone", 3).await.unwrap(), None);
    assert_eq!(b.claim("carol", "phone", 4).await.unwrap(), Some((a.node().to_owned(), 3)), "who held it");
    a.release("carol", "phone", 3).await.unwrap();
    assert_eq!(
        a.claim("carol", "phone", 5).await.unwrap(),
        Some((b.node().to_owned(), 4)),
        "not released by a former holder"
    );
    a.release("carol", "phone", 5).await.unwrap();
    assert_eq!(b.claim("carol", "phone", 6).await.unwrap(), None, "released by its holder");
    a.release_of("carol", "phone", b.node(), 6).await.unwrap();
    assert_eq!(a.claim("carol", "phone", 7).await.unwrap(), None, "released for a (dead) node");
    a.release("carol", "phone", 7).await.unwrap();
}

#[cfg(test)]
mod backlog_tests {
    use super::Backlog;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn caught_up_waits_for_what_was_queued_before_it_and_no_longer_than_its_limit() {
        let b = Arc::new(Backlog::default());
        b.caught_up(Duration::from_secs(5)).await; // nothing queued: at once
        b.queued();
        b.queued();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.caught_up(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await; // the waiter takes its target (2)
        b.queued(); // after the waiter looked: not waited for
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.delivered();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one of the two queued before it is not delivered yet");
        b.delivered();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("resolves").unwrap();
        let started = tokio::time::Instant::now();
        b.caught_up(Duration::from_millis(50)).await; // the third is never delivered
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
