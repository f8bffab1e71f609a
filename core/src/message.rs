//! A published message: built once, shared by every recipient.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;

/// Slots where an edge caches its encoding of the parts of a message that are
/// the same for every recipient, so a fan-out to N sessions encodes once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingSlot {
    StompRaw = 0,
    StompV11 = 1,
    StompV12 = 2,
}
const SLOTS: usize = 3;

#[derive(Debug)]
pub struct Message {
    /// Engine-wide sequence number (unique per node run).
    pub id: u64,
    /// Exchange it was published to; `""` is the default exchange.
    pub exchange: String,
    pub routing_key: String,
    /// Application headers (content-type, custom ones), in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Survives a restart when it sits in a durable queue.
    pub persistent: bool,
    /// Uid of the publisher, when a session published it.
    pub sender: Option<String>,
    /// Also kept in offline storage for the recipient (`Engine::route_to_user`):
    /// their XMPP resources get it from there, not from their inbox.
    pub parked: bool,
    /// Its place in its routing key's history (`feed` and `project`
    /// exchanges, store/history.rs), set by the history store before the
    /// message is shared; edges show it (`x-stream-offset`, `x-stream-epoch`).
    pub stream: Option<StreamPosition>,
    encoded: [OnceLock<Bytes>; SLOTS],
    /// [`Message::destination`], computed once: a fan-out writes it to
    /// every subscriber.
    destination: OnceLock<Box<str>>,
}

/// A message's offset in its key's history and the history's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: std::sync::Arc<str>,
}

/// The STOMP headers that carry a [`StreamPosition`] (RabbitMQ streams' offset
/// name; the epoch is Centrifugo's idea). Server-stamped: a publisher's own
/// values are dropped on the history exchanges.
pub const STREAM_OFFSET: &str = "x-stream-offset";
pub const STREAM_EPOCH: &str = "x-stream-epoch";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Makes sure new ids are above `id` (ids restored from the queue store).
pub fn reserve_ids_through(id: u64) {
    NEXT_ID.fetch_max(id + 1, Ordering::Relaxed);
}

impl Message {
    pub fn new(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Message {
        let persistent = headers.iter().any(|(k, v)| k == "persistent" && v == "true");
        Message {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            headers,
            body,
            persistent,
            sender: None,
            parked: false,
            stream: None,
            encoded: Default::default(),
            destination: OnceLock::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The bytes a holder of this message pins: body and headers (what a
    /// client controls), for the byte budgets of outboxes, queues and the
    /// memory alarm.
    pub fn held_bytes(&self) -> usize {
        self.body.len() + self.routing_key.len() + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    /// The cached encoding for `slot`, computed by `encode` on first use.
    pub fn encoded(&self, slot: EncodingSlot, encode: impl FnOnce(&Message) -> Bytes) -> Bytes {
        self.encoded[slot as usize].get_or_init(|| encode(self)).clone()
    }

    /// The STOMP destination a subscriber sees, derived from where it was
    /// published (RabbitMQ's mapping, DESIGN.md addressing model).
    pub fn destination(&self) -> &str {
        self.destination.get_or_init(|| {
            match self.exchange.as_str() {
                // `%2F` for `/` in a queue name, as RabbitMQ writes it (and `Destination::parse` reads it).
                "" => format!("/queue/{}", self.routing_key.replace('/', "%2F")),
                "amq.topic" => format!("/topic/{}", self.routing_key),
                x if self.routing_key.is_empty() => format!("/exchange/{x}"),
                x => format!("/exchange/{x}/{}", self.routing_key),
            }
            .into_boxed_str()
        })
    }
}
