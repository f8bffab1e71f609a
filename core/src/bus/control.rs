//! Node-to-node control messages (kick a user everywhere, presence changes,
//! a full JID taken over on another node, ...), carried by the [`Bus`] as
//! envelopes on a reserved exchange so they share its bounds, its hostile-
//! frame checks and its reconnect handling.
//!
//! Control envelopes have the empty vhost (no vhost has an empty name) and
//! the exchange [`CONTROL_EXCHANGE`]; the routing key is the addressed
//! node's name, or [`EVERY_NODE`] for a broadcast. The body is JSON of
//! [`Control`]; a body that does not parse is counted and dropped by the
//! receiver (cluster/), never trusted: anyone with access to Redis can
//! publish on these channels.
//!
//! [`Bus`]: super::Bus

use bytes::Bytes;

use super::{Envelope, Interest};

/// The reserved exchange of control envelopes (in the empty vhost).
pub const CONTROL_EXCHANGE: &str = "herald.node";
/// The routing key of a broadcast to every node. Not a valid node name
/// (`config` refuses `*`).
pub const EVERY_NODE: &str = "*";

/// What one node asks of another (or of all). Additive: a node that does not
/// know a variant logs and drops it, so nodes of different versions can
/// share a cluster during a rolling upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Control {
    /// Close every session of `uid` on the receiving node (admin API / Node `kick`).
    #[serde(rename_all = "camelCase")]
    Kick { uid: String, reason: String },
    /// One resource of `uid` on the sending node changed (`state` is an
    /// availability, `offline` when it went away); `aggregate` is the
    /// user's new aggregate when this change changed it (the sender saw it
    /// change in Redis, exactly once in the cluster). Receivers tell their
    /// local sessions of the user and of their contacts.
    #[serde(rename_all = "camelCase")]
    Presence {
        uid: String,
        resource: String,
        state: String,
        #[serde(default)]
        status: String,
        #[serde(default)]
        priority: i8,
        #[serde(default)]
        aggregate: Option<AggregateState>,
    },
    /// The full JID `uid/resource` was bound on the sending node: the
    /// receiver's session `session`, if it still holds it, is replaced
    /// (`conflict`).
    #[serde(rename_all = "camelCase")]
    Conflict { uid: String, resource: String, session: u64 },
}

/// A user's aggregate presence in a [`Control::Presence`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AggregateState {
    pub state: String,
    #[serde(default)]
    pub status: String,
}

/// The interest of control envelopes addressed to `node`.
pub fn to_node(node: &str) -> Interest {
    Interest::exact("", CONTROL_EXCHANGE, node)
}

/// The interest of control broadcasts.
pub fn to_every_node() -> Interest {
    Interest::exact("", CONTROL_EXCHANGE, EVERY_NODE)
}

/// The envelope carrying `control` to `to` (`None`: every other node).
pub fn envelope(to: Option<&str>, control: &Control) -> Envelope {
    Envelope {
        origin: String::new(),
        seq: 0,
        vhost: String::new(),
        exchange: CONTROL_EXCHANGE.into(),
        routing_key: to.unwrap_or(EVERY_NODE).into(),
        headers: Vec::new(),
        body: Bytes::from(serde_json::to_vec(control).expect("control messages serialize")),
        persistent: false,
        sender: None,
        also_exact: false,
    }
}

/// Whether `env` is a control envelope.
pub fn is_control(env: &Envelope) -> bool {
    env.vhost.is_empty() && env.exchange == CONTROL_EXCHANGE
}

/// The control message in a control envelope.
pub fn parse(env: &Envelope) -> Result<Control, serde_json::Error> {
    serde_json::from_slice(&env.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_addressing() {
        let c = Control::Kick { uid: "alice".into(), reason: "kicked".into() };
        let env = envelope(Some("n2"), &c);
        assert!(is_control(&env));
        assert_eq!(env.routing_key, "n2");
        assert_eq!(parse(&env).unwrap(), c);
        assert_eq!(envelope(None, &c).routing_key, EVERY_NODE);
        assert_eq!(to_node("n2"), Interest::exact("", CONTROL_EXCHANGE, "n2"));
        let p = Control::Presence {
            uid: "alice".into(),
            resource: "phone".into(),
            state: "away".into(),
            status: "lunch".into(),
            priority: -1,
            aggregate: Some(AggregateState { state: "online".into(), status: String::new() }),
        };
        assert_eq!(parse(&envelope(None, &p)).unwrap(), p);
        let c = Control::Conflict { uid: "alice".into(), resource: "phone".into(), session: 7 };
        assert_eq!(parse(&envelope(Some("n1"), &c)).unwrap(), c);
    }

    #[test]
    fn hostile_bodies_do_not_parse() {
        let mut env = envelope(None, &Control::Kick { uid: "a".into(), reason: String::new() });
        for body in [&b"{"[..], b"{\"type\":\"nope\"}", b"\xff\xfe", b"{\"type\":\"kick\"}"] {
            env.body = Bytes::copy_from_slice(body);
            assert!(parse(&env).is_err(), "{body:?}");
        }
        let ordinary = Envelope { vhost: "/".into(), ..env };
        assert!(!is_control(&ordinary));
    }
}
