//! Destinations (`/exchange/x/key`, `/queue/q`, `/topic/k`, ...) with
//! RabbitMQ's meaning, and the one mapping from a destination to the
//! (exchange, routing key) a publish is routed with. STOMP frames and the
//! application's `Engine::publish_to` both name targets this way; each caller
//! prepares queues its own way (permissions, options), then routes with
//! [`Destination::exchange_and_key`].
//!
//! Plain data: imports nothing from the crate.

use std::fmt;

/// The exchange behind `/topic/` destinations.
pub const TOPIC_EXCHANGE: &str = "amq.topic";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `/exchange/<x>[/<routing key>]`: publish to, or bind a private queue to, an exchange.
    Exchange { exchange: String, key: String },
    /// `/queue/<q>`: a shared queue, declared on first use.
    Queue(String),
    /// `/amq/queue/<q>`: a queue that must already exist.
    AmqQueue(String),
    /// `/topic/<key>`: `amq.topic` with that routing key or pattern.
    Topic(String),
    /// `/temp-queue/<name>`: only in `reply-to`; a private reply queue.
    TempQueue(String),
    /// `/reply-queue/<q>`: where a responder sends a reply.
    ReplyQueue(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("unknown destination {0:?}: use /exchange/, /queue/, /amq/queue/, /topic/, /temp-queue/ or /reply-queue/")]
    Unknown(String),
    #[error("destination {0:?} has an empty name")]
    Empty(String),
}

impl Destination {
    pub fn parse(s: &str) -> Result<Destination, DestinationError> {
        let name = |rest: &str| -> Result<String, DestinationError> {
            if rest.is_empty() {
                Err(DestinationError::Empty(s.to_owned()))
            } else {
                Ok(rest.to_owned())
            }
        };
        if let Some(rest) = s.strip_prefix("/exchange/") {
            let (x, key) = rest.split_once('/').unwrap_or((rest, ""));
            return Ok(Destination::Exchange { exchange: name(x)?, key: key.to_owned() });
        }
        if let Some(rest) = s.strip_prefix("/queue/") {
            return Ok(Destination::Queue(name(rest)?));
        }
        if let Some(rest) = s.strip_prefix("/amq/queue/") {
            return Ok(Destination::AmqQueue(name(rest)?));
        }
        if let Some(rest) = s.strip_prefix("/topic/") {
            return Ok(Destination::Topic(name(rest)?));
        }
        if let Some(rest) = s.strip_prefix("/temp-queue/") {
            return Ok(Destination::TempQueue(name(rest)?));
        }
        if let Some(rest) = s.strip_prefix("/reply-queue/") {
            return Ok(Destination::ReplyQueue(name(rest)?));
        }
        Err(DestinationError::Unknown(s.to_owned()))
    }

    /// The (exchange, routing key) a publish to this destination is routed
    /// with: queues through the default exchange (`""`, key = queue name),
    /// topics through `amq.topic`. `None` for `/temp-queue/`, which names a
    /// reply queue in `reply-to` and is not a publish target.
    pub fn exchange_and_key(&self) -> Option<(&str, &str)> {
        match self {
            Destination::Exchange { exchange, key } => Some((exchange, key)),
            Destination::Topic(key) => Some((TOPIC_EXCHANGE, key)),
            Destination::Queue(q) | Destination::AmqQueue(q) | Destination::ReplyQueue(q) => Some(("", q)),
            Destination::TempQueue(_) => None,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Exchange { exchange, key } if key.is_empty() => write!(f, "/exchange/{exchange}"),
            Destination::Exchange { exchange, key } => write!(f, "/exchange/{exchange}/{key}"),
            Destination::Queue(q) => write!(f, "/queue/{q}"),
            Destination::AmqQueue(q) => write!(f, "/amq/queue/{q}"),
            Destination::Topic(k) => write!(f, "/topic/{k}"),
            Destination::TempQueue(n) => write!(f, "/temp-queue/{n}"),
            Destination::ReplyQueue(q) => write!(f, "/reply-queue/{q}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rabbitmq_forms() {
        let x = |e: &str, k: &str| Destination::Exchange { exchange: e.into(), key: k.into() };
        assert_eq!(Destination::parse("/exchange/feed/user_x"), Ok(x("feed", "user_x")));
        assert_eq!(Destination::parse("/exchange/feed"), Ok(x("feed", "")));
        assert_eq!(Destination::parse("/exchange/amq.direct/a/b"), Ok(x("amq.direct", "a/b")));
        assert_eq!(Destination::parse("/queue/jobs"), Ok(Destination::Queue("jobs".into())));
        assert_eq!(Destination::parse("/amq/queue/jobs"), Ok(Destination::AmqQueue("jobs".into())));
        assert_eq!(Destination::parse("/topic/a.*.c"), Ok(Destination::Topic("a.*.c".into())));
        assert_eq!(Destination::parse("/temp-queue/r"), Ok(Destination::TempQueue("r".into())));
        assert_eq!(Destination::parse("/reply-queue/amq.gen-1"), Ok(Destination::ReplyQueue("amq.gen-1".into())));
        assert!(matches!(Destination::parse("/queue/"), Err(DestinationError::Empty(_))));
        assert!(matches!(Destination::parse("/exchange//k"), Err(DestinationError::Empty(_))));
        assert!(matches!(Destination::parse("jobs"), Err(DestinationError::Unknown(_))));
        for s in [
            "/exchange/feed/u",
            "/exchange/feed",
            "/queue/q",
            "/amq/queue/q",
            "/topic/t",
            "/temp-queue/n",
            "/reply-queue/q",
        ] {
            assert_eq!(Destination::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn maps_publish_targets_to_exchange_and_key() {
        let route =
            |s: &str| Destination::parse(s).unwrap().exchange_and_key().map(|(x, k)| (x.to_owned(), k.to_owned()));
        let xk = |x: &str, k: &str| Some((x.to_owned(), k.to_owned()));
        assert_eq!(route("/exchange/feed/alice"), xk("feed", "alice"));
        assert_eq!(route("/exchange/feed"), xk("feed", ""));
        assert_eq!(route("/topic/a.b"), xk("amq.topic", "a.b"));
        assert_eq!(route("/queue/jobs"), xk("", "jobs"));
        assert_eq!(route("/amq/queue/jobs"), xk("", "jobs"));
        assert_eq!(route("/reply-queue/amq.gen-1"), xk("", "amq.gen-1"));
        assert_eq!(route("/temp-queue/r"), None, "only valid in reply-to");
    }
}
