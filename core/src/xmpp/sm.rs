//! XEP-0198 Stream Management (`urn:xmpp:sm:3`) on c2s TCP and WebSocket.
//!
//! [`Sm`] is the sans-IO part: the two 32-bit wrapping counters and the
//! bounded queue of stanzas sent but not yet acknowledged. A session has
//! none of it until the client sends `<enable/>` (`Option<Box<Sm>>`), so an
//! idle session without SM pays one pointer.
//!
//! [`Registry`] maps resumption ids to whoever owns the session now: the
//! live session's task, or the task that keeps it detached after its
//! connection dropped. A resuming stream leaves its request in the
//! session's takeover slot and wakes the session's handle (the wake-up every
//! session already waits on, so SM adds no waiter); the owner answers with
//! the session, so exactly one task holds it at any time and nothing is
//! locked across an await. Ids are random (UUID v4, 122 random bits) and
//! bound to the user: a stream that authenticated as someone else cannot
//! take a session over even with the id.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::session::SessionHandle;

use super::xml::Element;

pub const NS: &str = "urn:xmpp:sm:3";

/// Caps on the unacked queue (`xmpp.sm_max_unacked`, `xmpp.sm_max_unacked_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmLimits {
    pub max_unacked: usize,
    pub max_unacked_bytes: usize,
}

/// A stanza sent and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Unacked {
    /// The stanza as written (retransmitted as is on resumption).
    pub stanza: Bytes,
    /// When it was first sent, ms since the Unix epoch (the offline stamp).
    pub sent_ms: u64,
    /// The sender, for a `chat`/`normal` message with a body: what goes to
    /// offline storage if it is never acknowledged. `None` for the rest.
    pub offline_from: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmError {
    /// The client acknowledged more than was sent (XEP-0198 §4: stream error
    /// `undefined-condition` with `<handled-count-too-high/>`).
    #[error("acknowledged {h} stanzas, {sent} were sent")]
    HandledCountTooHigh { h: u32, sent: u32 },
    /// The unacked queue is full: the client does not acknowledge.
    #[error("more than {0} unacknowledged stanzas")]
    TooManyUnacked(usize),
    #[error("more than {0} bytes of unacknowledged stanzas")]
    TooManyUnackedBytes(usize),
}

/// Per-stream SM state once enabled.
#[derive(Debug)]
pub struct Sm {
    /// Stanzas handled from the client: the `h` this side reports.
    pub inbound: u32,
    /// Stanzas sent to the client since `<enabled/>`.
    sent: u32,
    /// The client's last `h`: `sent - acked` = queue length (mod 2^32).
    acked: u32,
    queue: VecDeque<Unacked>,
    bytes: usize,
    limits: SmLimits,
    /// An `<r/>` is out and not yet answered: one at a time.
    pub requested: bool,
    /// The resumption id, when resumption was enabled.
    pub resume_id: Option<Box<str>>,
    /// Seconds the session is kept after its connection drops.
    pub resume_secs: u32,
    /// Where a resuming stream asks for this session.
    pub(crate) takeover: Option<TakeoverSlot>,
}

/// Send the session through this to hand it to a resuming stream.
pub(crate) type Handover = oneshot::Sender<Box<super::session::Session>>;

/// A resuming stream's request, waiting for the session's owner.
pub(crate) type TakeoverSlot = Arc<Mutex<Option<Handover>>>;

impl Sm {
    pub fn new(limits: SmLimits) -> Sm {
        Sm {
            inbound: 0,
            sent: 0,
            acked: 0,
            queue: VecDeque::new(),
            bytes: 0,
            limits,
            requested: false,
            resume_id: None,
            resume_secs: 0,
            takeover: None,
        }
    }

    /// The client sent a stanza (not an SM element).
    pub fn handled(&mut self) {
        self.inbound = self.inbound.wrapping_add(1);
    }

    /// A stanza goes out: it is kept until acknowledged. Over a cap it is
    /// not kept and the stream must end.
    pub fn record(&mut self, u: Unacked) -> Result<(), SmError> {
        if self.queue.len() >= self.limits.max_unacked {
            return Err(SmError::TooManyUnacked(self.limits.max_unacked));
        }
        if self.bytes + u.stanza.len() > self.limits.max_unacked_bytes {
            return Err(SmError::TooManyUnackedBytes(self.limits.max_unacked_bytes));
        }
        self.bytes += u.stanza.len();
        self.queue.push_back(u);
        self.sent = self.sent.wrapping_add(1);
        Ok(())
    }

    /// The client handled `h` stanzas in all (`<a h/>` or `<resume h/>`).
    /// The counter wraps at 2^32, so "more than sent" means more than the
    /// queue holds past the last ack.
    pub fn ack(&mut self, h: u32) -> Result<(), SmError> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.queue.len() {
            return Err(SmError::HandledCountTooHigh { h, sent: self.sent });
        }
        for u in self.queue.drain(..n) {
            self.bytes -= u.stanza.len();
        }
        self.acked = h;
        Ok(())
    }

    pub fn unacked(&self) -> usize {
        self.queue.len()
    }

    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// What was not acknowledged, oldest first (retransmitted on resumption).
    pub fn pending(&self) -> impl Iterator<Item = &Unacked> {
        self.queue.iter()
    }

    /// Everything unacknowledged, leaving the queue empty (the session ends).
    pub fn take_pending(&mut self) -> VecDeque<Unacked> {
        self.bytes = 0;
        std::mem::take(&mut self.queue)
    }

    /// Whether to ask the client for an ack now: something is unacked and
    /// no request is out.
    pub fn should_request(&self) -> bool {
        !self.requested && !self.queue.is_empty()
    }
}

/// For an outgoing element: `Some(from)` when it is a `chat` or `normal`
/// message with a body (what offline storage keeps, XEP-0160), else `None`.
pub fn offline_from(e: &Element) -> Option<Box<str>> {
    if e.name != "message" || e.ns != super::ns::CLIENT {
        return None;
    }
    if !matches!(e.attr("type").unwrap_or("normal"), "chat" | "normal") {
        return None;
    }
    e.child("body", super::ns::CLIENT)?;
    Some(e.attr("from").unwrap_or_default().into())
}

/// Whether an element counts for SM (RFC 6120 stanzas; not SM's own, not features).
pub fn is_stanza(e: &Element) -> bool {
    e.ns == super::ns::CLIENT && matches!(e.name.as_str(), "message" | "presence" | "iq")
}

/// `<a h/>`, `<r/>`, `<enabled/>`, `<resumed/>`, `<failed/>`.
pub fn ack(h: u32) -> Element {
    Element::new("a", NS).with_attr("h", h.to_string())
}

pub fn request() -> Element {
    Element::new("r", NS)
}

pub fn failed(condition: &str) -> Element {
    Element::new("failed", NS).with_child(Element::new(condition, super::ns::STANZAS))
}

/// The `h` attribute of `<a/>` or `<resume/>`: a 32-bit unsigned integer.
pub fn parse_h(e: &Element) -> Option<u32> {
    e.attr("h")?.trim().parse().ok()
}

/// XEP-0198 §4's stream error for an `h` beyond what was sent.
pub fn too_high_error(h: u32, sent: u32) -> Element {
    const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    Element::new("error", super::ns::STREAM).with_child(Element::new("undefined-condition", STREAMS)).with_child(
        Element::new("handled-count-too-high", NS)
            .with_attr("h", h.to_string())
            .with_attr("send-count", sent.to_string()),
    )
}

/// Resumable sessions by id: who to ask for each, and how many each user
/// holds. A detached session no longer holds a connection slot, so the
/// connection caps do not bound them: the per-user count does
/// (`xmpp.sm_max_resumable_per_user`).
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Box<str>, Entry>,
    per_uid: HashMap<Box<str>, usize>,
}

impl Inner {
    fn insert(&mut self, id: &str, entry: Entry) {
        *self.per_uid.entry(entry.uid.clone()).or_default() += 1;
        if let Some(old) = self.map.insert(id.into(), entry) {
            self.forget(&old.uid);
        }
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.map.remove(id)?;
        self.forget(&e.uid);
        Some(e)
    }

    fn forget(&mut self, uid: &str) {
        if let Some(n) = self.per_uid.get_mut(uid) {
            *n -= 1;
            if *n == 0 {
                self.per_uid.remove(uid);
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    uid: Box<str>,
    slot: TakeoverSlot,
    handle: Arc<SessionHandle>,
}

impl Registry {
    /// The session `id` of `uid` (woken through `handle`) is owned by the
    /// caller, who looks into the returned slot when woken (replacing an
    /// older entry). For a session that was resumable already (after a
    /// resume); new ones go through [`Registry::try_register`].
    pub(crate) fn register(&self, id: &str, uid: &str, handle: &Arc<SessionHandle>) -> TakeoverSlot {
        let slot = TakeoverSlot::default();
        self.inner.lock().insert(id, Entry { uid: uid.into(), slot: slot.clone(), handle: handle.clone() });
        slot
    }

    /// [`Registry::register`] unless `uid` already holds `max` resumable
    /// sessions (then `None`: the stream is enabled without resumption,
    /// which XEP-0198 allows).
    pub(crate) fn try_register(
        &self,
        id: &str,
        uid: &str,
        handle: &Arc<SessionHandle>,
        max: usize,
    ) -> Option<TakeoverSlot> {
        let mut inner = self.inner.lock();
        if inner.per_uid.get(uid).copied().unwrap_or(0) >= max {
            return None;
        }
        let slot = TakeoverSlot::default();
        inner.insert(id, Entry { uid: uid.into(), slot: slot.clone(), handle: handle.clone() });
        Some(slot)
    }

    /// Asks the owner of session `id` to hand it to a resuming stream of
    /// `uid`: the entry goes (one taker only) and the owner is woken.
    /// `false` when the id is unknown, expired, or another user's (which
    /// looks the same to the asker, and leaves the entry where it is).
    pub(crate) fn request(&self, id: &str, uid: &str, to: Handover) -> bool {
        let entry = {
            let mut inner = self.inner.lock();
            if inner.map.get(id).is_none_or(|e| &*e.uid != uid) {
                return false;
            }
            inner.remove(id).expect("checked above")
        };
        *entry.slot.lock() = Some(to);
        entry.handle.wake();
        true
    }

    /// The session ended for good.
    pub fn unregister(&self, id: &str) {
        self.inner.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resumable sessions `uid` holds.
    pub fn of_user(&self, uid: &str) -> usize {
        self.inner.lock().per_uid.get(uid).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SmLimits {
        SmLimits { max_unacked: 3, max_unacked_bytes: 100 }
    }

    fn u(s: &str) -> Unacked {
        Unacked { stanza: Bytes::copy_from_slice(s.as_bytes()), sent_ms: 0, offline_from: None }
    }

    #[test]
    fn acks_drop_what_was_handled_and_keep_the_rest_in_order() {
        let mut sm = Sm::new(limits());
        for s in ["a", "b", "c"] {
            sm.record(u(s)).unwrap();
        }
        sm.ack(1).unwrap();
        assert_eq!(sm.pending().map(|u| &u.stanza[..]).collect::<Vec<_>>(), [b"b", b"c"]);
        // The same h again acknowledges nothing more.
        sm.ack(1).unwrap();
        assert_eq!(sm.unacked(), 2);
        sm.ack(3).unwrap();
        assert_eq!(sm.unacked(), 0);
        assert!(!sm.should_request());
    }

    #[test]
    fn an_ack_beyond_what_was_sent_is_an_error_and_changes_nothing() {
        let mut sm = Sm::new(limits());
        sm.record(u("a")).unwrap();
        assert_eq!(sm.ack(2), Err(SmError::HandledCountTooHigh { h: 2, sent: 1 }));
        assert_eq!(sm.unacked(), 1);
        sm.ack(1).unwrap();
        // An h behind the last one is "too many" modulo 2^32: refused too.
        assert!(sm.ack(0).is_err());
    }

    #[test]
    fn counters_wrap_at_two_to_the_32() {
        let mut sm = Sm::new(SmLimits { max_unacked: 10, max_unacked_bytes: 1000 });
        sm.sent = u32::MAX - 1;
        sm.acked = u32::MAX - 1;
        sm.inbound = u32::MAX;
        sm.handled();
        assert_eq!(sm.inbound, 0);
        for s in ["a", "b", "c", "d"] {
            sm.record(u(s)).unwrap();
        }
        assert_eq!(sm.sent(), 2);
        sm.ack(u32::MAX).unwrap();
        assert_eq!(sm.pending().map(|u| &u.stanza[..]).collect::<Vec<_>>(), [b"b", b"c", b"d"]);
        sm.ack(1).unwrap();
        assert_eq!(sm.unacked(), 1);
        assert!(sm.ack(3).is_err());
        sm.ack(2).unwrap();
        assert_eq!(sm.unacked(), 0);
    }

    #[test]
    fn the_queue_is_bounded_in_count_and_bytes() {
        let mut sm = Sm::new(limits());
        for s in ["a", "b", "c"] {
            sm.record(u(s)).unwrap();
        }
        assert_eq!(sm.record(u("d")), Err(SmError::TooManyUnacked(3)));
        sm.ack(3).unwrap();
        sm.record(u(&"x".repeat(60))).unwrap();
        assert_eq!(sm.record(u(&"y".repeat(41))), Err(SmError::TooManyUnackedBytes(100)));
        sm.record(u(&"y".repeat(40))).unwrap();
        assert_eq!(sm.sent(), 5);
        assert_eq!(sm.take_pending().len(), 2);
        assert_eq!(sm.bytes, 0);
    }

    #[test]
    fn one_ack_request_at_a_time() {
        let mut sm = Sm::new(limits());
        assert!(!sm.should_request());
        sm.record(u("a")).unwrap();
        assert!(sm.should_request());
        sm.requested = true;
        assert!(!sm.should_request());
    }

    #[test]
    fn only_chat_and_normal_messages_with_a_body_go_offline() {
        let client = super::super::ns::CLIENT;
        let body = || Element::new("body", client).with_text("hi");
        let m = |t: Option<&str>| {
            let mut e = Element::new("message", client).with_attr("from", "a@x/r").with_child(body());
            if let Some(t) = t {
                e.set_attr("type", t);
            }
            e
        };
        assert_eq!(offline_from(&m(Some("chat"))).as_deref(), Some("a@x/r"));
        assert_eq!(offline_from(&m(None)).as_deref(), Some("a@x/r"));
        assert_eq!(offline_from(&m(Some("headline"))), None);
        assert_eq!(offline_from(&m(Some("groupchat"))), None);
        assert_eq!(offline_from(&Element::new("message", client).with_attr("type", "chat")), None);
        assert_eq!(offline_from(&Element::new("presence", client)), None);
    }

    #[test]
    fn the_registry_hands_an_id_only_to_its_user() {
        let r = Registry::default();
        let peer = crate::transport::Peer { addr: None, transport: crate::transport::Transport::Local };
        let h = SessionHandle::new("bob", "/", crate::session::Protocol::Xmpp, &peer, 8);
        let slot = r.register("id1", "bob", &h);
        let ask = || oneshot::channel().0;
        assert!(!r.request("id1", "alice", ask()));
        assert!(!r.request("nope", "bob", ask()));
        assert!(slot.lock().is_none(), "nothing asked of the owner by others");
        assert!(r.request("id1", "bob", ask()));
        assert!(slot.lock().is_some(), "the owner finds the request");
        assert!(!r.request("id1", "bob", ask()), "taken once");
        let _slot = r.register("id2", "bob", &h);
        r.unregister("id2");
        assert!(r.is_empty());
    }

    #[test]
    fn a_user_holds_at_most_max_resumable_sessions() {
        let r = Registry::default();
        let peer = crate::transport::Peer { addr: None, transport: crate::transport::Transport::Local };
        let h = SessionHandle::new("bob", "/", crate::session::Protocol::Xmpp, &peer, 8);
        assert!(r.try_register("a", "bob", &h, 2).is_some());
        assert!(r.try_register("b", "bob", &h, 2).is_some());
        assert!(r.try_register("c", "bob", &h, 2).is_none(), "over the cap");
        assert!(r.try_register("c", "carol", &h, 2).is_some(), "per user");
        assert_eq!(r.of_user("bob"), 2);
        assert!(r.request("a", "bob", oneshot::channel().0));
        assert_eq!(r.of_user("bob"), 1, "a taken session no longer counts until re-registered");
        let _ = r.register("a", "bob", &h);
        r.unregister("b");
        r.unregister("b");
        assert_eq!(r.of_user("bob"), 1, "unregistering twice counts once");
        let _ = r.register("a", "bob", &h);
        assert_eq!(r.of_user("bob"), 1, "the same id replaced is one session");
        r.unregister("a");
        r.unregister("c");
        assert_eq!((r.of_user("bob"), r.len()), (0, 0));
    }
}
