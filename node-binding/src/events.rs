//! `engine.on(event, callback)` / `engine.once(...)`: engine events to JS.
//!
//! One Tokio task per engine reads `Engine::events()` (a bounded broadcast)
//! and queues each event on the threadsafe function of every listener for
//! its kind, without waiting: the task never blocks on JavaScript. Each
//! listener has an id; the function `on`/`once` return removes it by id (a
//! threadsafe function keeps no JS identity to compare, so there is no
//! `off(event, callback)`). Listener
//! functions are weak (they do not keep Node alive) and bounded: when a
//! listener's queue is full (the main thread is busy), further events for it
//! are dropped and counted in the log, as the engine itself drops the oldest
//! events for a listener that falls behind. A listener that throws, or
//! returns a promise that rejects, is logged and otherwise ignored.

use std::collections::HashMap;
use std::sync::Arc;

use herald_core::engine::EngineEvent;
use napi::bindgen_prelude::Either3;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;

use crate::error::{Code, HeraldError};
use crate::js::Settled;

/// A session authenticated (`event: 'open'`) or ended (`event: 'close'`).
#[napi(object)]
#[derive(Clone)]
pub struct SessionEvent {
    /// Always `'session'`.
    #[napi(js_name = "type", ts_type = "'session'")]
    pub kind: String,
    #[napi(ts_type = "'open' | 'close'")]
    pub event: String,
    /// Session id, unique in this engine.
    pub session: i64,
    /// The user id (STOMP login, XMPP local part).
    pub uid: String,
    /// `'stomp'` or `'xmpp'`.
    pub protocol: String,
    /// `'tcp'`, `'tls'`, `'ws'`, `'sockjs'`, `'bosh'`, ...
    pub transport: String,
    /// Why a closed session ended (the close-reason table), when known.
    pub reason: Option<String>,
}

/// A user's aggregated presence changed.
#[napi(object)]
#[derive(Clone)]
pub struct PresenceEvent {
    /// Always `'presence'`.
    #[napi(js_name = "type", ts_type = "'presence'")]
    pub kind: String,
    pub uid: String,
    #[napi(ts_type = "'online' | 'away' | 'dnd' | 'xa' | 'chat' | 'offline'")]
    pub state: String,
    /// Free-text status, may be empty.
    pub status: String,
}

/// A message was routed (a client's SEND, an XMPP message, or `publish`).
#[napi(object)]
#[derive(Clone)]
pub struct MessageEvent {
    /// Always `'message'`.
    #[napi(js_name = "type", ts_type = "'message'")]
    pub kind: String,
    pub vhost: String,
    pub exchange: String,
    pub routing_key: String,
    /// The STOMP destination form, e.g. `/exchange/feed/alice`.
    pub destination: String,
    /// Message headers; where a name repeats, the first value (STOMP 1.2 rule).
    pub headers: HashMap<String, String>,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
    /// The publishing user, when a client sent it.
    pub sender: Option<String>,
}

/// What `engine.on(name, callback)` passes to `callback`, by event name.
/// Only a type: it lets TypeScript give a `'presence'` listener a
/// `PresenceEvent`, a `'session'` listener a `SessionEvent`, and so on.
#[napi(object)]
pub struct EngineEvents {
    /// A session opened or closed.
    pub session: SessionEvent,
    /// A user's aggregated presence changed.
    pub presence: PresenceEvent,
    /// A message was routed.
    pub message: MessageEvent,
}

pub type JsEvent = Either3<SessionEvent, PresenceEvent, MessageEvent>;

/// A listener's threadsafe function: `(event) => unknown`, weak, at most
/// `LISTENER_QUEUE` events waiting for the main thread.
pub type ListenerFn = ThreadsafeFunction<JsEvent, Settled, JsEvent, Status, false, true, LISTENER_QUEUE>;

pub const LISTENER_QUEUE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Session,
    Presence,
    Message,
}

impl Kind {
    pub fn parse(name: &str) -> Result<Kind, HeraldError> {
        match name {
            "session" => Ok(Kind::Session),
            "presence" => Ok(Kind::Presence),
            "message" => Ok(Kind::Message),
            other => Err(HeraldError::new(
                Code::Argument,
                format!("unknown event {other:?}: expected 'session', 'presence' or 'message'"),
            )),
        }
    }

    /// `None` for event kinds this binding does not forward (yet).
    fn of(event: &EngineEvent) -> Option<Kind> {
        match event {
            EngineEvent::Session { .. } => Some(Kind::Session),
            EngineEvent::Presence { .. } => Some(Kind::Presence),
            EngineEvent::Message { .. } => Some(Kind::Message),
            #[allow(unreachable_patterns)] // core may grow event kinds
            _ => None,
        }
    }
}

struct Entry {
    id: u64,
    kind: Kind,
    /// Removed before its first call (`once`).
    once: bool,
    f: Arc<ListenerFn>,
}

/// The listeners of one engine, and whether its reader task runs.
#[derive(Default)]
pub struct Listeners {
    list: Mutex<Vec<Entry>>,
    next_id: std::sync::atomic::AtomicU64,
    reading: std::sync::atomic::AtomicBool,
}

impl Listeners {
    /// Adds a listener and returns its id; the first one starts the reader task.
    pub fn add(self: &Arc<Self>, engine: &herald_core::Engine, kind: Kind, once: bool, f: ListenerFn) -> u64 {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.list.lock().push(Entry { id, kind, once, f: Arc::new(f) });
        if !self.reading.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let mut rx = engine.events();
            let listeners = Arc::clone(self);
            napi::bindgen_prelude::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(event) => listeners.dispatch(event),
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "engine.on() listeners fell behind; events dropped")
                        }
                        // The engine is gone (the JS object was collected).
                        Err(RecvError::Closed) => break,
                    }
                }
            });
        }
        id
    }

    /// Removes listener `id`; false when it is already gone (removed, or a
    /// `once` listener that fired). Its threadsafe function is released
    /// when the last queued call for it has run.
    pub fn remove(&self, id: u64) -> bool {
        let mut list = self.list.lock();
        let before = list.len();
        list.retain(|e| e.id != id);
        list.len() != before
    }

    fn dispatch(&self, event: EngineEvent) {
        let Some(kind) = Kind::of(&event) else { return };
        // Clone the matching functions out so the lock is not held while
        // queueing; `once` listeners leave the list here, so they fire once.
        let targets: Vec<Arc<ListenerFn>> = {
            let mut list = self.list.lock();
            let targets = list.iter().filter(|e| e.kind == kind).map(|e| Arc::clone(&e.f)).collect();
            list.retain(|e| !(e.once && e.kind == kind));
            targets
        };
        if targets.is_empty() {
            return;
        }
        let Some(js) = to_js(event) else { return };
        for f in targets {
            let status =
                f.call_with_return_value(js.clone(), ThreadsafeFunctionCallMode::NonBlocking, |result, _env| {
                    if let Err(e) = result {
                        tracing::warn!(error = %e.reason, "an engine.on() listener threw; ignored");
                    }
                    Ok(())
                });
            match status {
                Status::Ok | Status::Closing => {}
                Status::QueueFull => {
                    tracing::warn!("an engine.on() listener is {LISTENER_QUEUE} events behind; event dropped")
                }
                other => tracing::warn!(status = ?other, "engine.on() listener not called"),
            }
        }
    }
}

fn to_js(event: EngineEvent) -> Option<JsEvent> {
    Some(match event {
        EngineEvent::Session { event, session, uid, protocol, transport, reason } => Either3::A(SessionEvent {
            kind: "session".into(),
            event: event.into(),
            session: i64::try_from(session).unwrap_or(i64::MAX),
            uid,
            protocol: protocol.into(),
            transport: transport.into(),
            reason,
        }),
        EngineEvent::Presence { uid, state, status } => {
            Either3::B(PresenceEvent { kind: "presence".into(), uid, state: state.into(), status })
        }
        EngineEvent::Message { vhost, exchange, routing_key, destination, headers, body, sender } => {
            let mut map = HashMap::with_capacity(headers.len());
            for (k, v) in headers {
                map.entry(k).or_insert(v);
            }
            Either3::C(MessageEvent {
                kind: "message".into(),
                vhost,
                exchange,
                routing_key,
                destination,
                headers: map,
                body,
                sender,
            })
        }
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}
