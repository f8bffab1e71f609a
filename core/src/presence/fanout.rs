//! Presence fan-out: who hears of a presence change, and how.
//!
//! A session's change is recorded in the [`PresenceService`]; when the
//! user's aggregate changed it goes to the presence store, the engine's
//! event stream and, per project, the `presence` exchange (both through the
//! [`Host`]); then every session of the user and of their contacts that
//! takes presence notices gets the resource's new state. A change of a
//! project's members updates the online sets and reaches the sessions that
//! take roster pushes.
//!
//! Sessions are chosen by what they can receive ([`Capabilities`]), never by
//! their protocol. Imports the hub, sessions, the directory and the presence
//! store, not the engine: the engine is the [`Host`].

use std::sync::Arc;

use super::service::{event_json, AggregateChange, PresenceService};
use super::{Availability, PresenceStore, SharedChange, SharedPresence, SharedResource};
use crate::directory::Directory;
use crate::hub::Hub;
use crate::session::{Capabilities, Outbound, PresenceNotice, ResourceState, SessionHandle};

/// What a fan-out needs from the engine: its parts, and what only it can do.
pub trait Host: Sync {
    fn hub(&self) -> &Hub;
    fn presence(&self) -> &PresenceService;
    fn store(&self) -> Arc<dyn PresenceStore>;
    fn directory(&self) -> Arc<dyn Directory>;
    /// The user's aggregate changed (for the engine's event stream).
    fn aggregate_changed(&self, change: &AggregateChange);
    /// Publishes a presence event on the `presence` exchange, key
    /// `<project>.<uid>`, with `body` ([`event_json`]).
    fn publish_event(&self, project: &str, uid: &str, body: String);
    /// Presence shared with the other nodes of a cluster; `None` on one node.
    fn shared(&self) -> Option<Arc<dyn SharedPresence>> {
        None
    }
    /// Tells every other node of a resource's change (and of the
    /// aggregate's, when this node saw it change). Nothing on one node.
    fn tell_presence(&self, _notice: &PresenceNotice, _change: Option<&AggregateChange>) {}
    /// Whether the cluster's Redis is reachable now (always on one node).
    fn cluster_up(&self) -> bool {
        true
    }
}

/// Sets one session's presence, then tells everyone who should know. A
/// repeated presence is not news: contacts already have exactly this state,
/// so it is neither broadcast again nor written to the store.
pub async fn set(
    host: &impl Host,
    session: &SessionHandle,
    resource: &str,
    availability: Availability,
    status: &str,
    priority: i8,
) {
    let state = ResourceState {
        session: session.id,
        resource: resource.to_owned(),
        availability,
        status: status.to_owned(),
        priority,
    };
    let update = host.presence().update(&session.uid, session.id, Some(state.clone()));
    if update.unchanged {
        return;
    }
    announce(host, &session.uid, state, update.aggregate_changed).await;
}

/// Forgets a session's presence (it ended or sent unavailable). Only a
/// session that had announced itself is announced gone, once.
pub async fn remove(host: &impl Host, session: &SessionHandle, resource: &str) {
    let update = host.presence().update(&session.uid, session.id, None);
    if !update.existed {
        return;
    }
    let gone = ResourceState {
        session: session.id,
        resource: resource.to_owned(),
        availability: Availability::Offline,
        status: String::new(),
        priority: 0,
    };
    announce(host, &session.uid, gone, update.aggregate_changed).await;
}

async fn announce(host: &impl Host, uid: &str, state: ResourceState, aggregate_changed: bool) {
    let projects = match host.directory().projects_of(uid).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(uid, error = %e, "directory unavailable; presence goes to the user's own sessions only");
            Vec::new()
        }
    };
    let change = match host.shared() {
        // Redis out of reach: not waited for (a login would take the
        // command timeout); asserted again once it is back (cluster/reap.rs).
        Some(shared) if !host.cluster_up() => {
            shared.mark_stale();
            None
        }
        // In a cluster the aggregate is over every node's resources: Redis
        // says whether it changed (and wrote the store), exactly once.
        Some(shared) => {
            let ids: Vec<String> = projects.iter().map(|p| p.id.clone()).collect();
            let resource = SharedResource {
                node: shared.node().to_owned(),
                session: state.session,
                resource: state.resource.clone(),
                availability: state.availability,
                status: state.status.clone(),
                priority: state.priority,
            };
            match shared.update(uid, state.session, Some(&resource), &ids).await {
                Ok(c) => changed(uid, c),
                Err(e) => {
                    tracing::warn!(uid, error = %e, "cluster presence not updated; asserted again once Redis answers");
                    shared.mark_stale();
                    None
                }
            }
        }
        None if aggregate_changed => {
            let store = host.store();
            let change = host.presence().sync_store(store.as_ref(), uid).await;
            for p in &projects {
                let r = if change.availability == Availability::Offline {
                    store.remove_online(&p.id, uid).await
                } else {
                    store.add_online(&p.id, uid).await
                };
                if let Err(e) = r {
                    tracing::warn!(uid, project = %p.id, error = %e, "presence store: online set not updated");
                }
            }
            Some(change)
        }
        None => None,
    };
    if let Some(change) = &change {
        host.aggregate_changed(change);
        for p in &projects {
            host.publish_event(&p.id, uid, event_json(change, &p.id));
        }
    }
    let notice = PresenceNotice { uid: uid.to_owned(), state };
    host.tell_presence(&notice, change.as_ref());
    deliver(host, &projects, Arc::new(notice));
}

fn changed(uid: &str, c: SharedChange) -> Option<AggregateChange> {
    c.changed().then(|| AggregateChange { uid: uid.to_owned(), availability: c.after.0, status: c.after.1 })
}

/// Hands a resource's change to the sessions on this node of the user and
/// of their contacts that take presence notices (not the session that changed).
fn deliver(host: &impl Host, projects: &[crate::directory::Project], notice: Arc<PresenceNotice>) {
    let uid = notice.uid.as_str();
    let mut recipients: Vec<&str> = vec![uid];
    for p in projects {
        recipients.extend(p.members.iter().map(String::as_str));
    }
    recipients.sort_unstable();
    recipients.dedup();
    for r in recipients {
        for s in host.hub().user_sessions(r) {
            if s.capabilities.contains(Capabilities::PRESENCE_NOTICES) && s.id != notice.state.session {
                // A full outbox closes that session as a slow consumer; presence is not requeued.
                let _ = s.offer(Outbound::Presence(notice.clone()));
            }
        }
    }
}

/// Another node's resource changed (`notice.state.session` is 0: no
/// session here): the user's and their contacts' sessions on this node
/// hear of it, and the engine's event stream of the aggregate's change.
/// Contacts come from this node's directory, not from the message.
pub async fn elsewhere(host: &impl Host, notice: PresenceNotice, change: Option<AggregateChange>) {
    if let Some(change) = &change {
        host.aggregate_changed(change);
    }
    let projects = host.directory().projects_of(&notice.uid).await.unwrap_or_default();
    deliver(host, &projects, Arc::new(notice));
}

/// A dead node's resources of `uid` were removed (this node won the reap,
/// or is the same node restarting): announced as if each had gone
/// unavailable, on this node and to every other, the aggregate's change
/// once, with its `presence` events from here.
pub async fn reaped(host: &impl Host, uid: &str, removed: Vec<SharedResource>, change: SharedChange) {
    let projects = host.directory().projects_of(uid).await.unwrap_or_default();
    let mut change = changed(uid, change);
    if let Some(change) = &change {
        host.aggregate_changed(change);
        for p in &projects {
            host.publish_event(&p.id, uid, event_json(change, &p.id));
        }
    }
    for r in removed {
        let state = ResourceState {
            session: 0,
            resource: r.resource,
            availability: Availability::Offline,
            status: String::new(),
            priority: 0,
        };
        let notice = PresenceNotice { uid: uid.to_owned(), state };
        host.tell_presence(&notice, change.take().as_ref());
        deliver(host, &projects, Arc::new(notice));
    }
}

/// Redis came back and this node's resources of `uid` were asserted again
/// (`resources`, this node's current ones) and the aggregate moved: the
/// change is announced as a fresh one (events here, every resource to the
/// other nodes, which may have missed changes meanwhile). This node's own
/// sessions were told at the time.
pub async fn reasserted(host: &impl Host, uid: &str, resources: Vec<ResourceState>, change: SharedChange) {
    let projects = host.directory().projects_of(uid).await.unwrap_or_default();
    let mut change = changed(uid, change);
    if let Some(change) = &change {
        host.aggregate_changed(change);
        for p in &projects {
            host.publish_event(&p.id, uid, event_json(change, &p.id));
        }
    }
    for state in resources {
        host.tell_presence(&PresenceNotice { uid: uid.to_owned(), state }, change.take().as_ref());
    }
}

/// A project's members changed from `before` to `after` (the directory
/// already says `after`): the online sets follow, `removed` runs for each
/// member who left (after their online entry went), and every affected
/// session that takes roster pushes gets one.
pub async fn members_changed(
    host: &impl Host,
    project: &str,
    before: &[String],
    after: &[String],
    removed: impl Fn(&str) + Sync,
) {
    let store = host.store();
    for uid in before.iter().filter(|u| !after.contains(u)) {
        let _ = store.remove_online(project, uid).await;
        removed(uid);
    }
    for uid in after.iter().filter(|u| !before.contains(u)) {
        let available = match host.shared() {
            Some(shared) => shared.resources(uid).await.is_ok_and(|r| !r.is_empty()),
            None => host.presence().aggregate(uid).0 != Availability::Offline,
        };
        if available {
            let _ = store.add_online(project, uid).await;
        }
    }
    let mut affected: Vec<&String> = before.iter().chain(after.iter()).collect();
    affected.sort_unstable();
    affected.dedup();
    for uid in affected {
        for s in host.hub().user_sessions(uid) {
            if s.capabilities.contains(Capabilities::ROSTER_PUSHES) {
                let _ = s.offer(Outbound::RosterChanged);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::MemoryDirectory;
    use crate::presence::MemoryPresence;
    use crate::session::Protocol;
    use crate::transport::Peer;

    /// The engine's parts, without the engine: what the fan-out told it is recorded.
    struct TestHost {
        hub: Hub,
        presence: PresenceService,
        store: Arc<MemoryPresence>,
        directory: Arc<MemoryDirectory>,
        changes: parking_lot::Mutex<Vec<(String, Availability)>>,
        events: parking_lot::Mutex<Vec<(String, String)>>,
    }

    impl Host for TestHost {
        fn hub(&self) -> &Hub {
            &self.hub
        }
        fn presence(&self) -> &PresenceService {
            &self.presence
        }
        fn store(&self) -> Arc<dyn PresenceStore> {
            self.store.clone()
        }
        fn directory(&self) -> Arc<dyn Directory> {
            self.directory.clone()
        }
        fn aggregate_changed(&self, change: &AggregateChange) {
            self.changes.lock().push((change.uid.clone(), change.availability));
        }
        fn publish_event(&self, project: &str, uid: &str, _body: String) {
            self.events.lock().push((project.to_owned(), uid.to_owned()));
        }
    }

    fn host() -> TestHost {
        TestHost {
            hub: Hub::default(),
            presence: PresenceService::new("n1"),
            store: Arc::default(),
            directory: Arc::default(),
            changes: Default::default(),
            events: Default::default(),
        }
    }

    fn session(host: &TestHost, uid: &str, protocol: Protocol) -> Arc<SessionHandle> {
        let s = SessionHandle::new(
            uid,
            "/",
            protocol,
            &Peer { addr: None, transport: crate::transport::Transport::Tcp },
            16,
        );
        host.hub.register(s.clone());
        s
    }

    fn drained(s: &SessionHandle) -> Vec<Outbound> {
        let mut out = Vec::new();
        s.drain(&mut out, 16);
        out
    }

    #[tokio::test]
    async fn a_change_reaches_the_store_the_projects_and_the_sessions_that_take_notices() {
        let host = host();
        host.directory.set_members("p1", &["alice".into(), "bob".into()]).await.unwrap();
        let alice = session(&host, "alice", Protocol::Stomp);
        let bob_xmpp = session(&host, "bob", Protocol::Xmpp);
        let bob_stomp = session(&host, "bob", Protocol::Stomp);
        let carol = session(&host, "carol", Protocol::Xmpp);

        set(&host, &alice, "stomp-1", Availability::Online, "", 0).await;
        assert_eq!(host.changes.lock().as_slice(), [("alice".to_owned(), Availability::Online)]);
        assert_eq!(host.events.lock().as_slice(), [("p1".to_owned(), "alice".to_owned())]);
        assert_eq!(host.store.online("p1").await.unwrap(), ["alice"]);
        assert!(
            matches!(drained(&bob_xmpp).as_slice(), [Outbound::Presence(n)] if n.uid == "alice"),
            "a contact's session that takes presence notices hears of it"
        );
        assert!(drained(&bob_stomp).is_empty(), "a session without the capability does not");
        assert!(drained(&carol).is_empty(), "nor does a session of someone who is not a contact");
        assert!(drained(&alice).is_empty(), "nor the session that changed");

        set(&host, &alice, "stomp-1", Availability::Online, "", 0).await;
        assert_eq!(host.changes.lock().len(), 1, "the same presence again is no news");
        assert!(drained(&bob_xmpp).is_empty());

        remove(&host, &alice, "stomp-1").await;
        assert_eq!(host.changes.lock().last(), Some(&("alice".to_owned(), Availability::Offline)));
        assert!(host.store.online("p1").await.unwrap().is_empty());
        assert!(
            matches!(drained(&bob_xmpp).as_slice(), [Outbound::Presence(n)] if n.state.availability == Availability::Offline)
        );
        remove(&host, &alice, "stomp-1").await;
        assert_eq!(host.changes.lock().len(), 2, "gone is announced once");
    }

    #[tokio::test]
    async fn membership_changes_push_rosters_to_sessions_that_take_them() {
        let host = host();
        let alice = session(&host, "alice", Protocol::Xmpp);
        let alice_stomp = session(&host, "alice", Protocol::Stomp);
        let bob = session(&host, "bob", Protocol::Xmpp);
        set(&host, &bob, "phone", Availability::Away, "", 0).await;
        let removed = parking_lot::Mutex::new(Vec::new());
        let before = vec!["alice".to_owned()];
        let after = vec!["bob".to_owned()];
        members_changed(&host, "p1", &before, &after, |uid| removed.lock().push(uid.to_owned())).await;
        assert_eq!(removed.lock().as_slice(), ["alice"]);
        assert_eq!(host.store.online("p1").await.unwrap(), ["bob"], "an available new member is online in it");
        assert!(matches!(drained(&alice).as_slice(), [Outbound::RosterChanged]));
        assert!(matches!(drained(&bob).as_slice(), [Outbound::RosterChanged]));
        assert!(drained(&alice_stomp).is_empty(), "no roster pushes for a session that cannot take them");
    }
}
