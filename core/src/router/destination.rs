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

/// Why a destination was refused, worded as RabbitMQ's STOMP plugin words it
/// (its ERROR `message` header is [`DestinationError::summary`], its body this
/// error's text), so clients that match on the text see the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// A known prefix with a bad rest: empty, or more `/`-separated parts
    /// than the kind takes. `kind` is RabbitMQ's name for it (`queue`,
    /// `amqqueue`, `temp_queue`, ...); `rest` is what followed the prefix.
    #[error("'{rest}' is not a valid {kind} destination")]
    Invalid { kind: &'static str, rest: String },
    #[error(
        "'{0}' is not a valid destination.\nValid destination types are: /temp-queue, /exchange, /topic, /queue, \
         /amq/queue, /reply-queue/."
    )]
    Unknown(String),
    /// An empty destination header.
    #[error("Destination cannot be blank")]
    Blank,
}

impl DestinationError {
    /// The short form, for an ERROR frame's `message` header.
    pub fn summary(&self) -> &'static str {
        match self {
            DestinationError::Unknown(_) => "Unknown destination",
            DestinationError::Invalid { .. } | DestinationError::Blank => "Invalid destination",
        }
    }
}

impl Destination {
    /// Parses a destination as RabbitMQ does: split on `/`; `/exchange/<x>`
    /// and `/exchange/<x>/<key>`; one non-empty name after `/queue/`,
    /// `/topic/`, `/temp-queue/`, `/amq/queue/`; anything non-empty after
    /// `/reply-queue/`; a string without `/` is a queue name. `%2F` in a name
    /// stands for `/`.
    pub fn parse(s: &str) -> Result<Destination, DestinationError> {
        if !s.contains('/') {
            if s.is_empty() {
                return Err(DestinationError::Blank);
            }
            return Ok(Destination::Queue(unescape(s)));
        }
        if let Some(name) = s.strip_prefix("/reply-queue/") {
            if name.is_empty() {
                return Err(DestinationError::Invalid { kind: "reply_queue", rest: "/".into() });
            }
            return Ok(Destination::ReplyQueue(name.to_owned()));
        }
        let (kind, rest) = if let Some(rest) = s.strip_prefix("/amq/queue") {
            ("amqqueue", rest)
        } else {
            let Some((kind, rest)) = ["exchange", "queue", "topic", "temp-queue"].into_iter().find_map(|k| {
                let rest = s.strip_prefix('/')?.strip_prefix(k)?;
                (rest.is_empty() || rest.starts_with('/')).then_some((k, rest))
            }) else {
                return Err(DestinationError::Unknown(s.to_owned()));
            };
            (kind, rest)
        };
        if !rest.is_empty() && !rest.starts_with('/') {
            return Err(DestinationError::Unknown(s.to_owned()));
        }
        let invalid = || DestinationError::Invalid {
            kind: match kind {
                "temp-queue" => "temp_queue",
                k => k,
            },
            rest: rest.to_owned(),
        };
        // The parts after the prefix: "" → none, "/a" → ["a"], "/a/b" → ["a", "b"].
        let parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest[1..].split('/').collect() };
        match (kind, parts.as_slice()) {
            ("exchange", [x]) if !x.is_empty() => {
                Ok(Destination::Exchange { exchange: unescape(x), key: String::new() })
            }
            ("exchange", [x, key]) if !x.is_empty() => {
                Ok(Destination::Exchange { exchange: unescape(x), key: unescape(key) })
            }
            (_, [name]) if !name.is_empty() => Ok(match kind {
                "queue" => Destination::Queue(unescape(name)),
                "topic" => Destination::Topic(unescape(name)),
                "temp-queue" => Destination::TempQueue(unescape(name)),
                _ => Destination::AmqQueue(unescape(name)),
            }),
            _ => Err(invalid()),
        }
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

/// RabbitMQ's one escape in destination names: `%2F` for `/`.
fn unescape(name: &str) -> String {
    name.replace("%2F", "/")
}

/// The inverse of [`unescape`], so a parsed destination prints as one that parses back.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = self.0.split('/');
        if let Some(first) = parts.next() {
            f.write_str(first)?;
        }
        for p in parts {
            write!(f, "%2F{p}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Exchange { exchange, key } if key.is_empty() => write!(f, "/exchange/{}", Escaped(exchange)),
            Destination::Exchange { exchange, key } => write!(f, "/exchange/{}/{}", Escaped(exchange), Escaped(key)),
            Destination::Queue(q) => write!(f, "/queue/{}", Escaped(q)),
            Destination::AmqQueue(q) => write!(f, "/amq/queue/{}", Escaped(q)),
            Destination::Topic(k) => write!(f, "/topic/{}", Escaped(k)),
            Destination::TempQueue(n) => write!(f, "/temp-queue/{}", Escaped(n)),
            // Taken whole by `parse`: no escape to undo.
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
        assert_eq!(Destination::parse("/queue/jobs"), Ok(Destination::Queue("jobs".into())));
        assert_eq!(Destination::parse("/amq/queue/jobs"), Ok(Destination::AmqQueue("jobs".into())));
        assert_eq!(Destination::parse("/topic/a.*.c"), Ok(Destination::Topic("a.*.c".into())));
        assert_eq!(Destination::parse("/temp-queue/r"), Ok(Destination::TempQueue("r".into())));
        assert_eq!(Destination::parse("/reply-queue/amq.gen-1"), Ok(Destination::ReplyQueue("amq.gen-1".into())));
        assert_eq!(Destination::parse("jobs"), Ok(Destination::Queue("jobs".into())), "no prefix: a queue");
        assert_eq!(Destination::parse("/queue/a%2Fb"), Ok(Destination::Queue("a/b".into())));
        assert_eq!(Destination::parse("/reply-queue/a/b"), Ok(Destination::ReplyQueue("a/b".into())));
        assert_eq!(Destination::parse(""), Err(DestinationError::Blank));
        let invalid = |kind, rest: &str| Err(DestinationError::Invalid { kind, rest: rest.into() });
        // RabbitMQ 3.10's answers (tests/diff/transcripts/destinations.json).
        assert_eq!(Destination::parse("/queue/"), invalid("queue", "/"));
        assert_eq!(Destination::parse("/queue"), invalid("queue", ""));
        assert_eq!(Destination::parse("/queue/a/b"), invalid("queue", "/a/b"));
        assert_eq!(Destination::parse("/topic/a/b"), invalid("topic", "/a/b"));
        assert_eq!(Destination::parse("/exchange//k"), invalid("exchange", "//k"));
        assert_eq!(Destination::parse("/exchange"), invalid("exchange", ""));
        assert_eq!(Destination::parse("/exchange/amq.direct/a/b"), invalid("exchange", "/amq.direct/a/b"));
        assert_eq!(Destination::parse("/amq/queue"), invalid("amqqueue", ""));
        assert_eq!(Destination::parse("/temp-queue"), invalid("temp_queue", ""));
        assert_eq!(Destination::parse("/reply-queue/"), invalid("reply_queue", "/"));
        for s in ["/foo/bar", "/reply-queue", "/queues/x", "/amq/queuex"] {
            assert_eq!(Destination::parse(s), Err(DestinationError::Unknown(s.into())), "{s}");
        }
        assert_eq!(
            Destination::parse("/queue/a/b").unwrap_err().to_string(),
            "'/a/b' is not a valid queue destination"
        );
        for s in [
            "/exchange/feed/u",
            "/exchange/feed",
            "/queue/q",
            "/amq/queue/q",
            "/topic/t",
            "/temp-queue/n",
            "/reply-queue/q",
            "/queue/a%2Fb",
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
