//! Which Bus interests this node's bindings need (bus/interest.rs), kept
//! only in a cluster: each vhost counts its bindings per [`Interest`]
//! ([`Interests`]) and, when an interest appears (first binding) or
//! vanishes (last), marks it here. The router is sync under its locks and
//! must not wait for Redis, so it only marks; the cluster's reconciler
//! (cluster/) takes the marked interests and subscribes or unsubscribes
//! each to match the count as it is *then* (a bind and an unbind in quick
//! succession cost nothing, and nothing is queued per change: the marked
//! set is bounded by the interests themselves).
//!
//! A session that must not answer before its binding is heard cluster-wide
//! (a SUBSCRIBE's RECEIPT) waits for [`InterestChanges::settled`].

use std::collections::HashSet;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::bus::{Interest, Interests};
use crate::config::ExchangeKind;

/// The interests whose count crossed zero since the reconciler last looked,
/// shared by every vhost of a router.
#[derive(Debug)]
pub struct InterestChanges {
    marked: Mutex<Marked>,
    changed: Notify,
    /// The last generation the reconciler finished.
    done: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Marked {
    interests: HashSet<Interest>,
    /// Bumped by every mark: what a waiter waits for.
    generation: u64,
}

impl Default for InterestChanges {
    fn default() -> InterestChanges {
        InterestChanges { marked: Mutex::default(), changed: Notify::new(), done: watch::channel(0).0 }
    }
}

impl InterestChanges {
    /// `interest` appeared or vanished: the reconciler will look at it.
    pub fn mark(&self, interest: Interest) {
        let mut m = self.marked.lock();
        m.interests.insert(interest);
        m.generation += 1;
        drop(m);
        self.changed.notify_one();
    }

    /// Everything marked so far, and the generation it covers. For the
    /// reconciler; call [`InterestChanges::finished`] with the generation
    /// once handled.
    pub fn take(&self) -> (Vec<Interest>, u64) {
        let mut m = self.marked.lock();
        (m.interests.drain().collect(), m.generation)
    }

    /// Puts back interests the reconciler could not handle (Redis down):
    /// they are tried again later, without holding up waiters.
    pub fn retry(&self, interests: Vec<Interest>) {
        self.marked.lock().interests.extend(interests);
    }

    /// Whether something waits for the reconciler.
    pub fn pending(&self) -> bool {
        !self.marked.lock().interests.is_empty()
    }

    /// Resolves when something is marked (the reconciler's wake-up).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// The reconciler handled everything marked through `generation`.
    pub fn finished(&self, generation: u64) {
        self.done.send_if_modified(|d| {
            let newer = generation > *d;
            if newer {
                *d = generation;
            }
            newer
        });
    }

    /// Resolves once every interest change made before the call has been
    /// handled by the reconciler (subscribed in Redis, or given up on
    /// because Redis is down). Callers bound it with a timeout.
    pub async fn settled(&self) {
        let want = self.marked.lock().generation;
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d >= want).await;
    }
}

/// One vhost's bindings counted per interest: `None` until the node joins
/// a cluster (a single node keeps no count at all).
#[derive(Debug, Default)]
pub(super) struct VhostInterests(Mutex<Option<Interests>>);

impl VhostInterests {
    /// Starts counting from the bindings that exist now (`bindings`: every
    /// (exchange name, kind, key) once), marking each interest. Called with
    /// the vhost's binding list locked, so no bind slips between the count
    /// and the switch.
    pub(super) fn start<'a>(
        &self,
        vhost: &str,
        bindings: impl Iterator<Item = (&'a str, ExchangeKind, &'a str)>,
        changes: &InterestChanges,
    ) {
        let mut slot = self.0.lock();
        if slot.is_some() {
            return;
        }
        let mut counts = Interests::default();
        for (x, kind, key) in bindings {
            let i = Interest::of_binding(vhost, x, kind, key);
            if counts.add(i.clone()) {
                changes.mark(i);
            }
        }
        *slot = Some(counts);
    }

    /// One binding more (`add`) or less, called under the vhost's binding
    /// list lock; marks the interest when its count crossed zero.
    pub(super) fn count(
        &self,
        vhost: &str,
        exchange: &str,
        kind: ExchangeKind,
        key: &str,
        add: bool,
        changes: &InterestChanges,
    ) {
        let mut slot = self.0.lock();
        let Some(counts) = slot.as_mut() else { return };
        let i = Interest::of_binding(vhost, exchange, kind, key);
        let crossed = if add { counts.add(i.clone()) } else { counts.remove(&i) };
        if crossed {
            changes.mark(i);
        }
    }

    /// Whether some binding of this vhost needs `interest` now.
    pub(super) fn holds(&self, interest: &Interest) -> bool {
        self.0.lock().as_ref().is_some_and(|c| c.contains(interest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_cross_zero_and_waiters_follow_the_reconciler() {
        let changes = InterestChanges::default();
        let v = VhostInterests::default();
        v.count("/", "amq.topic", ExchangeKind::Topic, "a", true, &changes);
        assert!(!changes.pending(), "nothing counted before the node joins");
        v.start(
            "/",
            [("amq.topic", ExchangeKind::Topic, "a.*"), ("feed", ExchangeKind::Topic, "u1")].into_iter(),
            &changes,
        );
        let (mut first, g1) = changes.take();
        first.sort();
        assert_eq!(first, [Interest::wildcard("/", "amq.topic"), Interest::exact("/", "feed", "u1")]);
        // A second session of u1: no change. A fanout binding: the wildcard.
        v.count("/", "feed", ExchangeKind::Topic, "u1", true, &changes);
        v.count("/", "amq.topic", ExchangeKind::Topic, "#", true, &changes);
        assert!(!changes.pending());
        v.count("/", "amq.fanout", ExchangeKind::Fanout, "k", true, &changes);
        v.count("/", "feed", ExchangeKind::Topic, "u1", false, &changes);
        v.count("/", "feed", ExchangeKind::Topic, "u1", false, &changes);
        let (mut second, g2) = changes.take();
        second.sort();
        assert_eq!(second, [Interest::wildcard("/", "amq.fanout"), Interest::exact("/", "feed", "u1")]);
        assert!(!v.holds(&Interest::exact("/", "feed", "u1")));
        assert!(v.holds(&Interest::wildcard("/", "amq.fanout")));
        // A waiter resolves once the reconciler finished what was marked before it.
        changes.finished(g1);
        let settled = changes.settled();
        tokio::pin!(settled);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), &mut settled).await.is_err());
        changes.finished(g2);
        tokio::time::timeout(std::time::Duration::from_secs(1), settled).await.unwrap();
    }
}
