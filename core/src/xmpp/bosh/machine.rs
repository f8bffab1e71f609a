//! The rid-window machine of one BOSH session (XEP-0124 §§ 7–12), as plain
//! state with effects: no sockets, no tasks, no clock of its own.
//!
//! Inputs are method calls, each with the time it happens: a request with
//! rid N and its parsed payload arrived ([`Machine::submit`]), a held
//! request's `wait` may have run out ([`Machine::check_deadline`]), its
//! client went away ([`Machine::abandoned`]), the app queued stanzas
//! ([`Machine::queue`]), opened the stream ([`Machine::open`]) or closed it
//! ([`Machine::close`]), the app took a client event ([`Machine::next_in`])
//! or let go of the reading half ([`Machine::reader_gone`]), the sweeper
//! looked ([`Machine::sweep`], [`Machine::expire`]). Outputs are
//! [`Effects`]: answer this waiting request with this `<body/>` (a terminal
//! one carries the condition), wake the reader, the session ended (why).
//! The caller applies them once its lock on the machine is released.
//!
//! A waiting request is any [`Waiter`]: the HTTP side's response channel in
//! production, a plain value in the unit tests below.
//!
//! May import: the `<body>` codec ([`super::body`]), the XMPP link types
//! ([`crate::xmpp::link`]), the byte shaper and the HTTP session table's
//! [`Sweep`]. Nothing that does I/O.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;
use tokio::time::Instant;

use super::body::{body_xml, empty_body, secs, terminal_body, Kind, OpenDefaults, Request, NS_STREAM, NS_XBOSH};
use crate::shaper::Shaper;
use crate::transport::http_session::Sweep;
use crate::xmpp::link::{StreamError, XmppIn};

/// How long the response to a creation or restart request waits for the
/// session's stream header and features (bounded by the session's `wait`).
pub const OPEN_WAIT: Duration = Duration::from_secs(10);

/// What is fixed at session creation.
pub(super) struct Params {
    pub sid: String,
    pub wait: Duration,
    pub hold: usize,
    pub requests: usize,
    pub window: u64,
    pub polling: Duration,
    pub inactivity: Duration,
    pub max_pending: usize,
    /// Client stanzas (in request-body bytes) that may wait for the app.
    pub inbox_budget: usize,
    pub ver: String,
    pub content_type: HeaderValue,
    /// The creation request's `to`, `xml:lang` and `xmpp:version`: defaults
    /// for restarts that leave them out.
    pub defaults: OpenDefaults,
}

/// A request waiting for its response, as the machine sees it.
pub(super) trait Waiter {
    /// Its client has gone (the HTTP connection closed): it will never see
    /// an answer.
    fn is_gone(&self) -> bool;
}

struct Pending<W> {
    req: Request,
    tx: W,
    arrived: Instant,
}

/// A processed request waiting for its response.
struct Held<W> {
    rid: u64,
    tx: W,
    arrived: Instant,
    deadline: Instant,
    /// Creation or restart: answered on the first flush after `open`.
    opening: bool,
    empty: bool,
}

/// A response kept for retransmissions (and the polling check).
struct Answered {
    rid: u64,
    body: Bytes,
    payload: bool,
    /// Released because `wait` ran out.
    expired: bool,
    /// Its client had gone (a page reload aborts the held request): the
    /// client never saw this answer, so it is no evidence of polling.
    abandoned: bool,
    arrived: Instant,
    empty: bool,
}

#[derive(Default)]
struct StreamInfo {
    authid: Option<String>,
    from: Option<String>,
    /// `open` was called since the last creation/restart request was processed.
    opened: bool,
    /// `authid`/`from` were not in the creation response: send them with the
    /// next response after `open`.
    announce: bool,
}

struct Ending {
    condition: Option<&'static str>,
    /// Stanzas (and the stream error) for the terminal response.
    payload: Vec<Bytes>,
    /// The terminal response has gone out (or nobody will ever get it).
    delivered: bool,
}

/// Why the app's stanzas were not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The session had already ended.
    Ended,
    /// More than `max_pending` stanzas would wait: the session ends with
    /// `policy-violation`.
    TooMany,
}

/// The state of one session.
pub(super) struct Machine<W> {
    /// The next `rid` to process.
    next_rid: u64,
    /// Received, not yet processed (waiting for an earlier `rid` or for room
    /// in the inbox).
    pending: BTreeMap<u64, Pending<W>>,
    /// Processed, waiting for their responses, in `rid` order.
    held: VecDeque<Held<W>>,
    answered: VecDeque<Answered>,
    /// Client events for the reading half, each with the bytes it is charged.
    inbox: VecDeque<(XmppIn, usize)>,
    inbox_bytes: usize,
    rx_gone: bool,
    /// Flushed stanzas waiting for a request.
    outbox: Vec<Bytes>,
    stream: StreamInfo,
    /// The creation request, until answered (its response has the session attributes).
    creation: Option<u64>,
    end: Option<Ending>,
    /// Since when no request has arrived or been answered.
    idle_since: Instant,
    /// Request-body bytes per second (`[shaper]`); `None` when off.
    shaper: Option<Box<Shaper>>,
}

/// What to do once the lock on the machine is released.
pub(super) struct Effects<W> {
    /// Answer each waiting request with its `<body/>`.
    pub replies: Vec<(W, Bytes)>,
    /// Client events (or the end) for the reading half.
    pub wake: bool,
    /// The session ended, and why (for the log).
    pub ended: Option<&'static str>,
}

impl<W> Default for Effects<W> {
    fn default() -> Self {
        Effects { replies: Vec::new(), wake: false, ended: None }
    }
}

impl<W> Effects<W> {
    fn reply(&mut self, tx: W, body: Bytes) {
        self.replies.push((tx, body));
    }
}

impl<W: Waiter> Machine<W> {
    /// A session whose creation request has `rid` (not yet submitted).
    pub fn new(p: &Params, rid: u64, now: Instant, shaper: Option<Box<Shaper>>) -> Machine<W> {
        Machine {
            next_rid: rid,
            pending: BTreeMap::new(),
            // Sized for what they keep: a first push would reserve four.
            held: VecDeque::with_capacity(p.requests),
            answered: VecDeque::with_capacity(p.window.clamp(1, 8) as usize),
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            rx_gone: false,
            outbox: Vec::new(),
            stream: StreamInfo::default(),
            creation: Some(rid),
            end: None,
            idle_since: now,
            shaper,
        }
    }

    /// The session has ended (the terminal response may not have gone out yet).
    pub fn ended(&self) -> bool {
        self.end.is_some()
    }

    /// The session has ended and its terminal response has gone out: it can
    /// be forgotten.
    pub fn finished(&self) -> bool {
        self.end.as_ref().is_some_and(|e| e.delivered)
    }

    /// Charges a request body of `n` bytes to the byte shaper, unless the
    /// session is still paused by earlier ones: then the request must wait
    /// until the returned instant before the session sees it (and ask again).
    /// (The shaper reads the clock itself.)
    pub fn admit(&mut self, n: usize) -> Option<Instant> {
        let s = self.shaper.as_deref_mut()?;
        if let Some(until) = s.paused() {
            return Some(until);
        }
        s.read(n);
        None
    }

    /// The next client event for the app: `Some(None)` once the session has
    /// ended and everything before has been taken, `None` when there is
    /// nothing yet.
    pub fn next_in(&mut self, p: &Params, now: Instant, fx: &mut Effects<W>) -> Option<Option<XmppIn>> {
        match self.inbox.pop_front() {
            Some((item, cost)) => {
                self.inbox_bytes -= cost;
                if self.inbox.is_empty() {
                    // An idle session keeps no emptied ring (4 slots after one request).
                    self.inbox = VecDeque::new();
                }
                if cost > 0 {
                    // Room for requests held back by a full inbox.
                    self.pump(p, now, false, fx);
                }
                Some(Some(item))
            }
            None if self.end.is_some() => Some(None),
            None => None,
        }
    }

    /// Nobody reads any more: drop what is queued and stop holding requests back.
    pub fn reader_gone(&mut self, p: &Params, now: Instant, fx: &mut Effects<W>) {
        self.rx_gone = true;
        self.inbox.clear();
        self.inbox_bytes = 0;
        self.pump(p, now, false, fx);
    }

    /// The app opened the stream: records the stream id (`authid`) and
    /// domain (`from`) for the response to the creation or restart request,
    /// which now waits for the next flush. `false` once the session has ended.
    pub fn open(&mut self, id: &str, from: &str) -> bool {
        if self.end.is_some() {
            return false;
        }
        self.stream.authid = Some(id.to_owned());
        self.stream.from = Some(from.to_owned());
        self.stream.opened = true;
        true
    }

    /// The app's stanzas (`batch`, emptied) for the client: to the oldest
    /// waiting request or the next one. `flushing`: the app flushed (answers
    /// a creation or restart request even without payload).
    pub fn queue(
        &mut self,
        p: &Params,
        batch: &mut Vec<Bytes>,
        flushing: bool,
        now: Instant,
        fx: &mut Effects<W>,
    ) -> Result<(), Refused> {
        if self.end.is_some() {
            batch.clear();
            Err(Refused::Ended)
        } else if self.outbox.len() + batch.len() > p.max_pending {
            batch.clear();
            self.outbox.clear();
            self.end_session(Some("policy-violation"), Vec::new(), "too many stanzas waiting for the client", None, fx);
            Err(Refused::TooMany)
        } else {
            self.outbox.append(batch);
            self.pump(p, now, flushing, fx);
            Ok(())
        }
    }

    /// The app ends the session: the oldest waiting request (or the next to
    /// come) gets the stanzas still queued (then `batch`, emptied) and
    /// `<body type='terminate'/>`, with `condition='remote-stream-error'`
    /// and the `<stream:error/>` when there is an error.
    pub fn close(&mut self, batch: &mut Vec<Bytes>, error: Option<StreamError>, fx: &mut Effects<W>) {
        if self.end.is_none() {
            let mut payload = std::mem::take(&mut self.outbox);
            payload.append(batch);
            let condition = match &error {
                Some(e) => {
                    payload.push(e.to_element().to_bytes());
                    Some("remote-stream-error")
                }
                None => None,
            };
            self.end_session(condition, payload, "closed by the server", None, fx);
        }
        batch.clear();
    }

    /// Releases the request `rid` if its `wait` is over; returns when to look again.
    pub fn check_deadline(&mut self, p: &Params, rid: u64, now: Instant, fx: &mut Effects<W>) -> Instant {
        if let Some(pos) = self.held.iter().position(|h| h.rid == rid) {
            if self.held[pos].deadline <= now {
                // Responses go out in rid order: older held ones first.
                for _ in 0..=pos {
                    self.answer_front(p, now, true, fx);
                }
                self.pump(p, now, false, fx);
                now + Duration::from_secs(1)
            } else {
                self.held[pos].deadline
            }
        } else {
            // Not processed yet (or already answered): look again later.
            now + p.wait.max(Duration::from_millis(100))
        }
    }

    /// The client of request `rid` went away before its response: the
    /// session is idle from now on unless others wait.
    pub fn abandoned(&mut self, p: &Params, rid: u64, now: Instant, fx: &mut Effects<W>) {
        if self.held.iter().any(|h| h.rid == rid) || self.pending.contains_key(&rid) {
            self.idle_since = now;
            self.pump(p, now, false, fx);
        }
    }

    /// What the sweeper does with the session: it ends after `inactivity`
    /// without any request waiting or arriving (a request stuck behind a
    /// missing `rid`, or whose client has gone, doesn't count as waiting).
    pub fn sweep(&self, p: &Params, now: Instant) -> Sweep {
        if self.finished() {
            return Sweep::Forget;
        }
        let busy = self.held.iter().any(|h| !h.tx.is_gone())
            || self.pending.get(&self.next_rid).is_some_and(|pe| !pe.tx.is_gone());
        if busy || now.duration_since(self.idle_since) < p.inactivity {
            Sweep::Keep
        } else {
            Sweep::Expire
        }
    }

    /// Inactivity: ends the session without telling anybody (a request
    /// still waiting is dropped: its handler answers `item-not-found`).
    pub fn expire(&mut self, fx: &mut Effects<W>) {
        if self.end.is_none() {
            self.end = Some(Ending { condition: None, payload: Vec::new(), delivered: true });
            fx.ended = Some("inactivity");
            fx.wake = true;
        }
        self.held.clear();
        self.pending.clear();
        self.outbox.clear();
        self.answered.clear();
    }

    /// A request with `rid` arrived (`tx` waits for its response).
    pub fn submit(&mut self, p: &Params, rid: u64, req: Request, tx: W, now: Instant, fx: &mut Effects<W>) {
        if self.end.is_some() {
            self.deliver_end(Some(tx), fx);
            return;
        }
        self.idle_since = now;
        if rid < self.next_rid {
            // A retransmission: same response again.
            if let Some(a) = self.answered.iter().find(|a| a.rid == rid) {
                fx.reply(tx, a.body.clone());
            } else if let Some(h) = self.held.iter_mut().find(|h| h.rid == rid) {
                // Still waiting: the new connection takes over; the old one
                // (normally already closed by the client) gets an empty body.
                let old = std::mem::replace(&mut h.tx, tx);
                fx.reply(old, empty_body());
            } else {
                self.fail("item-not-found", tx, "retransmitted rid no longer cached", fx);
            }
            return;
        }
        if let Some(pe) = self.pending.get_mut(&rid) {
            let old = std::mem::replace(&mut pe.tx, tx);
            fx.reply(old, empty_body());
            return;
        }
        if rid - self.next_rid >= p.window {
            self.fail("item-not-found", tx, "rid outside the window", fx);
            return;
        }
        // Overactivity (XEP-0124 §11): more unanswered requests than
        // `requests` (one more to terminate). Requests whose client is gone
        // don't count.
        let unanswered = self.held.iter().filter(|h| !h.tx.is_gone()).count() + self.pending.len() + 1;
        let allowed = p.requests + usize::from(req.kind == Kind::Terminate);
        if unanswered > allowed {
            self.fail("policy-violation", tx, "too many simultaneous requests", fx);
            return;
        }
        // Polling too fast (XEP-0124 §12): two empty requests within
        // `polling`, the first answered empty before its `wait` ran out, and
        // nothing held.
        if req.empty && !p.polling.is_zero() && self.held.is_empty() && self.pending.is_empty() {
            let prev = self.answered.iter().find(|a| a.rid.checked_add(1) == Some(rid));
            if prev.is_some_and(|a| {
                a.empty && !a.payload && !a.expired && !a.abandoned && now.duration_since(a.arrived) < p.polling
            }) {
                self.fail("policy-violation", tx, "polling too frequently", fx);
                return;
            }
        }
        self.pending.insert(rid, Pending { req, tx, arrived: now });
        self.pump(p, now, false, fx);
    }

    /// Processes the requests that are next in `rid` order, then answers what
    /// can be answered. `flushing`: the app flushed (answers a creation or
    /// restart request even without payload).
    fn pump(&mut self, p: &Params, now: Instant, flushing: bool, fx: &mut Effects<W>) {
        if self.end.is_some() {
            return;
        }
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next_rid {
                break;
            }
            let req = &entry.get().req;
            let full = self.inbox_bytes > 0 && self.inbox_bytes + req.cost > p.inbox_budget;
            if !req.items.is_empty() && !self.rx_gone && full {
                break;
            }
            let Pending { req, tx, arrived } = entry.remove();
            let rid = self.next_rid;
            self.next_rid += 1;
            if !self.rx_gone && !req.items.is_empty() {
                self.inbox_bytes += req.cost;
                let mut cost = req.cost;
                for item in req.items {
                    self.inbox.push_back((item, std::mem::take(&mut cost)));
                }
                fx.wake = true;
            }
            let opening = match req.kind {
                Kind::Terminate => {
                    // Older requests first, then the terminate itself.
                    while !self.held.is_empty() {
                        self.answer_front(p, now, false, fx);
                    }
                    let body = terminal_body(None, &[]);
                    for (_, pe) in std::mem::take(&mut self.pending) {
                        fx.reply(pe.tx, body.clone());
                    }
                    fx.reply(tx, body);
                    self.end = Some(Ending { condition: None, payload: Vec::new(), delivered: true });
                    self.outbox.clear();
                    self.answered.clear();
                    fx.ended = Some("terminated by the client");
                    fx.wake = true;
                    return;
                }
                Kind::Create | Kind::Restart => {
                    self.stream.opened = false;
                    true
                }
                Kind::Normal => false,
            };
            let hold_for = if opening { p.wait.min(OPEN_WAIT) } else { p.wait };
            self.held.push_back(Held { rid, tx, arrived, deadline: now + hold_for, opening, empty: req.empty });
        }
        if self.pending.is_empty() {
            // An emptied BTreeMap keeps its root leaf (~0.8 KiB here): drop it,
            // most sessions have nothing pending most of the time.
            self.pending = BTreeMap::new();
        }
        while let Some(front) = self.held.front() {
            let ready = !front.opening || self.stream.opened;
            // A request waiting for the stream header is held even by a
            // polling client, for a while.
            let limit = if front.opening && !ready { p.hold.max(1) } else { p.hold };
            let release = front.tx.is_gone()
                || self.held.len() > limit
                || (ready && (!self.outbox.is_empty() || (flushing && front.opening)));
            if !release {
                break;
            }
            self.answer_front(p, now, false, fx);
        }
    }

    /// Answers the oldest held request with what is queued (if it may have it).
    fn answer_front(&mut self, p: &Params, now: Instant, expired: bool, fx: &mut Effects<W>) {
        let Some(h) = self.held.pop_front() else { return };
        let ready = !h.opening || self.stream.opened;
        // Stanzas never go to a request whose client is gone.
        let payload = if ready && !h.tx.is_gone() { std::mem::take(&mut self.outbox) } else { Vec::new() };
        let mut attrs: Vec<(&str, String)> = Vec::new();
        let creation = self.creation == Some(h.rid);
        if creation {
            self.creation = None;
            attrs.push(("sid", p.sid.clone()));
            attrs.push(("wait", secs(p.wait)));
            attrs.push(("requests", p.requests.to_string()));
            attrs.push(("hold", p.hold.to_string()));
            attrs.push(("inactivity", secs(p.inactivity)));
            if !p.polling.is_zero() {
                attrs.push(("polling", secs(p.polling)));
            }
            attrs.push(("ver", p.ver.clone()));
            attrs.push(("xmpp:restartlogic", "true".to_owned()));
        }
        let announce = ready && self.stream.announce && self.stream.authid.is_some();
        if creation || announce {
            if ready {
                if let Some(from) = &self.stream.from {
                    attrs.push(("from", from.clone()));
                }
                if let Some(id) = &self.stream.authid {
                    attrs.push(("authid", id.clone()));
                }
            }
            self.stream.announce = !ready;
            attrs.push(("xmpp:version", "1.0".to_owned()));
            attrs.push(("xmlns:xmpp", NS_XBOSH.to_owned()));
        }
        if creation || announce || (h.opening && ready) {
            attrs.push(("xmlns:stream", NS_STREAM.to_owned()));
        }
        let body = body_xml(&attrs, &payload);
        // Room made before the push: the ring is sized for `window` (see
        // `Machine::new`), and a push past it would grow it.
        while !self.answered.is_empty() && self.answered.len() as u64 >= p.window {
            self.answered.pop_front();
        }
        self.answered.push_back(Answered {
            rid: h.rid,
            body: body.clone(),
            payload: !payload.is_empty(),
            expired,
            abandoned: h.tx.is_gone(),
            arrived: h.arrived,
            empty: h.empty,
        });
        self.idle_since = now;
        fx.reply(h.tx, body);
    }

    /// A binding error: everyone waiting gets the terminal body, the session ends.
    fn fail(&mut self, condition: &'static str, tx: W, reason: &'static str, fx: &mut Effects<W>) {
        self.outbox.clear();
        self.end_session(Some(condition), Vec::new(), reason, Some(tx), fx);
    }

    /// Ends the session; the terminal body goes to whoever waits (and
    /// `extra`), or else to the next request.
    fn end_session(
        &mut self,
        condition: Option<&'static str>,
        payload: Vec<Bytes>,
        reason: &'static str,
        extra: Option<W>,
        fx: &mut Effects<W>,
    ) {
        if self.end.is_none() {
            self.end = Some(Ending { condition, payload, delivered: false });
            self.answered.clear();
            fx.ended = Some(reason);
            fx.wake = true;
        }
        self.deliver_end(extra, fx);
    }

    /// Hands the terminal body to the waiting requests (and `extra`): the
    /// oldest gets the payload, the others a bare one. Once it has gone out,
    /// later requests get `item-not-found`.
    fn deliver_end(&mut self, extra: Option<W>, fx: &mut Effects<W>) {
        let Some(end) = &mut self.end else { return };
        let mut waiting: Vec<W> = self.held.drain(..).map(|h| h.tx).collect();
        waiting.extend(std::mem::take(&mut self.pending).into_values().map(|pe| pe.tx));
        waiting.extend(extra);
        if waiting.is_empty() {
            return;
        }
        let mut first = true;
        for tx in waiting {
            let body = if end.delivered {
                terminal_body(Some("item-not-found"), &[])
            } else if first {
                first = false;
                terminal_body(end.condition, &end.payload)
            } else {
                terminal_body(end.condition, &[])
            };
            fx.reply(tx, body);
        }
        end.delivered = true;
        end.payload = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::xmpp::bosh::body::{NS_HTTPBIND, XML};
    use crate::xmpp::xml::{parse_element, Limits};

    /// A waiting request: its rid, and whether its client has gone.
    struct W(u64, Rc<Cell<bool>>);

    impl Waiter for W {
        fn is_gone(&self) -> bool {
            self.1.get()
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    fn params(hold: usize) -> Params {
        Params {
            sid: "s1".into(),
            wait: Duration::from_secs(60),
            hold,
            requests: hold + 1,
            window: 2,
            polling: Duration::from_secs(2),
            inactivity: Duration::from_secs(60),
            max_pending: 3,
            inbox_budget: 1000,
            ver: "1.6".into(),
            content_type: HeaderValue::from_static(XML),
            defaults: OpenDefaults::default(),
        }
    }

    /// A session driven by hand: the machine, the time, and what came out.
    struct Bench {
        m: Machine<W>,
        p: Params,
        now: Instant,
        answers: Vec<(u64, String)>,
        woke: bool,
        ended: Option<&'static str>,
    }

    impl Bench {
        /// A session created by request 100, opened by the app: the creation
        /// response has gone out.
        fn open(hold: usize) -> Bench {
            let p = params(hold);
            let now = Instant::now();
            let mut b =
                Bench { m: Machine::new(&p, 100, now, None), p, now, answers: Vec::new(), woke: false, ended: None };
            b.submit(100, &format!("<body xmlns='{NS_HTTPBIND}' rid='100' to='example.com'/>"), true);
            assert!(b.answers.is_empty(), "the creation response waits for the stream header");
            assert!(matches!(b.next_in(), Some(Some(XmppIn::Open { .. }))));
            assert!(b.m.open("stream-1", "example.com"));
            b.queue(&["<features/>"]).unwrap();
            let (rid, body) = b.answers.remove(0);
            assert_eq!(rid, 100);
            assert!(body.contains("sid='s1'") && body.contains("authid='stream-1'"), "{body}");
            assert!(body.ends_with("><features/></body>"), "{body}");
            b
        }

        fn run<T>(&mut self, f: impl FnOnce(&mut Machine<W>, &Params, Instant, &mut Effects<W>) -> T) -> T {
            let mut fx = Effects::default();
            let out = f(&mut self.m, &self.p, self.now, &mut fx);
            for (w, body) in fx.replies {
                self.answers.push((w.0, String::from_utf8(body.to_vec()).unwrap()));
            }
            self.woke |= fx.wake;
            self.ended = self.ended.or(fx.ended);
            out
        }

        fn submit_with(&mut self, rid: u64, xml: &str, creating: bool, gone: Rc<Cell<bool>>) {
            let body = parse_element(xml.as_bytes(), &Limits::default()).unwrap();
            let req = Request::parse(body, creating, xml.len(), None);
            self.run(|m, p, now, fx| m.submit(p, rid, req, W(rid, gone), now, fx));
        }

        fn submit(&mut self, rid: u64, xml: &str, creating: bool) {
            self.submit_with(rid, xml, creating, Rc::default());
        }

        fn poll(&mut self, rid: u64) {
            self.submit(rid, &format!("<body xmlns='{NS_HTTPBIND}' rid='{rid}' sid='s1'/>"), false);
        }

        fn send(&mut self, rid: u64, payload: &str) {
            self.submit(rid, &format!("<body xmlns='{NS_HTTPBIND}' rid='{rid}' sid='s1'>{payload}</body>"), false);
        }

        fn queue(&mut self, stanzas: &[&str]) -> Result<(), Refused> {
            let mut batch: Vec<Bytes> = stanzas.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect();
            self.run(|m, p, now, fx| m.queue(p, &mut batch, true, now, fx))
        }

        fn next_in(&mut self) -> Option<Option<XmppIn>> {
            self.run(|m, p, now, fx| m.next_in(p, now, fx))
        }

        /// The stanza names the app has been given, in order.
        fn stanzas(&mut self) -> Vec<String> {
            let mut out = Vec::new();
            while let Some(Some(item)) = self.next_in() {
                match item {
                    XmppIn::Stanza(e) => out.push(e.attr("id").unwrap_or(&e.name).to_owned()),
                    XmppIn::Close => out.push("CLOSE".into()),
                    XmppIn::Open { .. } => out.push("OPEN".into()),
                }
            }
            out
        }

        fn take(&mut self) -> Vec<(u64, String)> {
            std::mem::take(&mut self.answers)
        }
    }

    fn empty() -> String {
        format!("<body xmlns='{NS_HTTPBIND}'/>")
    }

    fn terminate(condition: &str) -> String {
        format!("<body xmlns='{NS_HTTPBIND}' type='terminate' condition='{condition}'/>")
    }

    fn with(stanzas: &str) -> String {
        format!("<body xmlns='{NS_HTTPBIND}'>{stanzas}</body>")
    }

    #[test]
    fn in_order_requests_are_held_then_answered_with_what_is_queued() {
        let mut b = Bench::open(1);
        b.send(101, "<message id='a'/>");
        assert!(b.take().is_empty(), "held: nothing to send");
        assert!(b.woke);
        assert_eq!(b.stanzas(), ["a"]);
        b.queue(&["<x/>"]).unwrap();
        assert_eq!(b.take(), [(101, with("<x/>"))]);
        // Queued while no request waits: for the next one, at once.
        b.queue(&["<y/>"]).unwrap();
        b.poll(102);
        assert_eq!(b.take(), [(102, with("<y/>"))]);
    }

    #[test]
    fn out_of_order_requests_wait_for_the_missing_rid() {
        let mut b = Bench::open(1);
        b.send(102, "<message id='b'/>");
        assert!(b.take().is_empty());
        assert_eq!(b.stanzas(), Vec::<String>::new(), "102 waits for 101");
        b.send(101, "<message id='a'/>");
        assert_eq!(b.stanzas(), ["a", "b"]);
        // Two held with hold=1: the older is released (empty), in rid order.
        assert_eq!(b.take(), [(101, empty())]);
        b.queue(&["<x/>"]).unwrap();
        assert_eq!(b.take(), [(102, with("<x/>"))]);
    }

    #[test]
    fn a_retransmitted_rid_gets_the_same_answer() {
        let mut b = Bench::open(1);
        b.poll(101);
        b.queue(&["<x/>"]).unwrap();
        assert_eq!(b.take(), [(101, with("<x/>"))]);
        b.poll(101);
        assert_eq!(b.take(), [(101, with("<x/>"))], "same answer again");
        // A held request retransmitted: the new connection takes over.
        b.poll(102);
        b.poll(102);
        assert_eq!(b.take(), [(102, empty())], "the old connection gets an empty body");
        b.queue(&["<y/>"]).unwrap();
        assert_eq!(b.take(), [(102, with("<y/>"))]);
        // Out of the cache (window 2: 101 and 102 kept, after 103 and 104 only those).
        b.poll(103);
        b.queue(&["<z/>"]).unwrap();
        b.poll(104);
        b.queue(&["<w/>"]).unwrap();
        b.take();
        b.poll(101);
        assert_eq!(b.take(), [(101, terminate("item-not-found"))]);
        assert_eq!(b.ended, Some("retransmitted rid no longer cached"));
    }

    #[test]
    fn a_rid_outside_the_window_ends_the_session() {
        let mut b = Bench::open(1);
        b.poll(101); // held
        b.poll(103); // next is 102; window 2 allows 102 and 103
        assert!(b.take().is_empty());
        b.poll(104);
        // Everybody waiting gets the terminal body.
        let got = b.take();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|(_, body)| *body == terminate("item-not-found")), "{got:?}");
        assert!(b.m.ended() && b.m.finished());
        assert_eq!(b.next_in(), Some(None));
        b.poll(102);
        assert_eq!(b.take(), [(102, terminate("item-not-found"))], "forgotten");
    }

    #[test]
    fn a_newer_request_releases_the_oldest_beyond_hold() {
        let mut b = Bench::open(1);
        b.poll(101);
        assert!(b.take().is_empty());
        b.poll(102);
        assert_eq!(b.take(), [(101, empty())]);
        let mut b = Bench::open(0);
        b.poll(101);
        assert_eq!(b.take(), [(101, empty())], "hold 0: nothing is held");
    }

    #[test]
    fn too_many_simultaneous_requests() {
        let mut b = Bench::open(1);
        b.p.window = 3;
        // requests 2: two out-of-order requests wait for 101, which is one too many.
        b.poll(102);
        b.poll(103);
        assert!(b.take().is_empty());
        b.poll(101);
        let got = b.take();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|(_, body)| body.contains("condition='policy-violation'")), "{got:?}");
        assert_eq!(b.ended, Some("too many simultaneous requests"));
    }

    #[test]
    fn polling_too_frequently() {
        let mut b = Bench::open(0);
        b.poll(101);
        assert_eq!(b.take(), [(101, empty())], "hold 0: answered at once");
        b.now += 3 * SEC;
        b.poll(102);
        assert_eq!(b.take(), [(102, empty())], "after `polling`: fine");
        b.now += SEC;
        b.poll(103);
        assert_eq!(b.take(), [(103, terminate("policy-violation"))]);
        assert_eq!(b.ended, Some("polling too frequently"));
    }

    #[test]
    fn wait_running_out_answers_empty_and_is_no_poll() {
        let mut b = Bench::open(1);
        b.poll(101);
        let deadline = b.run(|m, p, now, fx| m.check_deadline(p, 101, now, fx));
        assert_eq!(deadline, b.now + b.p.wait);
        assert!(b.take().is_empty());
        b.now = deadline;
        b.run(|m, p, now, fx| m.check_deadline(p, 101, now, fx));
        assert_eq!(b.take(), [(101, empty())]);
        assert!(b.m.answered.back().is_some_and(|a| a.expired));
        // An expired answer is no evidence of polling.
        b.poll(102);
        assert!(b.take().is_empty(), "held, not refused");
    }

    #[test]
    fn inactivity() {
        let mut b = Bench::open(1);
        let gone = Rc::new(Cell::new(false));
        b.submit_with(101, &format!("<body xmlns='{NS_HTTPBIND}' rid='101' sid='s1'/>"), false, gone.clone());
        b.now += 2 * b.p.inactivity;
        assert_eq!(b.m.sweep(&b.p, b.now), Sweep::Keep, "a held request keeps the session");
        gone.set(true);
        b.run(|m, p, now, fx| m.abandoned(p, 101, now, fx));
        assert_eq!(b.take(), [(101, empty())], "released: its client is gone");
        assert_eq!(b.m.sweep(&b.p, b.now + SEC), Sweep::Keep, "idle since the abandon");
        b.now += b.p.inactivity;
        assert_eq!(b.m.sweep(&b.p, b.now), Sweep::Expire);
        b.run(|m, _, _, fx| m.expire(fx));
        assert_eq!(b.ended, Some("inactivity"));
        assert_eq!(b.m.sweep(&b.p, b.now), Sweep::Forget);
        assert_eq!(b.next_in(), Some(None));
    }

    #[test]
    fn client_terminate() {
        let mut b = Bench::open(1);
        b.poll(101);
        b.send(102, "<presence id='bye' type='unavailable'/>");
        b.take();
        b.submit(103, &format!("<body xmlns='{NS_HTTPBIND}' rid='103' sid='s1' type='terminate'/>"), false);
        assert_eq!(b.take(), [(102, empty()), (103, format!("<body xmlns='{NS_HTTPBIND}' type='terminate'/>"))]);
        assert_eq!(b.stanzas(), ["bye", "CLOSE"]);
        assert_eq!(b.next_in(), Some(None));
        assert!(b.m.finished());
        assert_eq!(b.queue(&["<late/>"]), Err(Refused::Ended));
    }

    #[test]
    fn app_close_with_a_stream_error() {
        let mut b = Bench::open(1);
        b.poll(101);
        let mut batch = vec![Bytes::from_static(b"<last/>")];
        let error = StreamError::new("conflict", "Replaced");
        b.run(|m, _, _, fx| m.close(&mut batch, Some(error), fx));
        let got = b.take();
        assert_eq!(got.len(), 1);
        let (rid, body) = &got[0];
        assert_eq!(*rid, 101);
        let head = format!("<body xmlns='{NS_HTTPBIND}' type='terminate' condition='remote-stream-error'");
        assert!(body.starts_with(&head), "{body}");
        assert!(body.contains("<last/>") && body.contains("conflict"), "{body}");
        b.poll(102);
        assert_eq!(b.take(), [(102, terminate("item-not-found"))]);
    }

    #[test]
    fn app_close_with_nobody_waiting_answers_the_next_request() {
        let mut b = Bench::open(1);
        b.queue(&["<x/>"]).unwrap();
        let mut batch = Vec::new();
        b.run(|m, _, _, fx| m.close(&mut batch, None, fx));
        assert!(b.take().is_empty() && b.m.ended() && !b.m.finished());
        b.poll(101);
        let body = format!("<body xmlns='{NS_HTTPBIND}' type='terminate' xmlns:stream='{NS_STREAM}'><x/></body>");
        assert_eq!(b.take(), [(101, body)]);
        assert!(b.m.finished());
    }

    #[test]
    fn too_many_pending_stanzas() {
        let mut b = Bench::open(1);
        b.queue(&["<a/>", "<b/>"]).unwrap();
        assert_eq!(b.queue(&["<c/>", "<d/>"]), Err(Refused::TooMany));
        b.poll(101);
        assert_eq!(b.take(), [(101, terminate("policy-violation"))]);
    }

    #[test]
    fn a_full_inbox_holds_requests_back() {
        let mut b = Bench::open(1);
        b.p.inbox_budget = 60;
        let big = format!("<message id='{}'/>", "a".repeat(20));
        b.send(101, &big);
        b.send(102, "<message id='next'/>");
        assert_eq!(b.m.next_rid, 102, "102 waits: the inbox is over budget");
        assert_eq!(b.stanzas(), ["a".repeat(20), "next".to_owned()]);
        assert_eq!(b.m.next_rid, 103);
    }
}
