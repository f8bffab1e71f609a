//! # Herald core
//!
//! A real-time push engine: sessions, routing, STOMP (and, next, XMPP and
//! presence) in one process. See `ARCHITECTURE.md` at the repository root for
//! the data flow and lock order.
//!
//! # Layout
//!
//! - [`config`]: typed TOML/JS config, defaults and validation.
//! - [`engine`]: the [`Engine`] handle: listeners, in-process publish, stats.
//! - [`hub`]: live sessions by id and by user.
//! - [`session`]: the engine's side of a session: bounded outbox, close reason.
//! - [`shaper`]: per-connection inbound rate limits (token buckets that pause reading).
//! - [`router`]: vhosts, exchanges (direct, fanout, topic, headers), queues.
//! - [`message`]: a published message, encoded once per protocol.
//! - [`store`]: the queue store trait (durable messages), in-memory default.
//! - [`auth`]: authenticator and authorizer traits, config users.
//! - [`presence`]: availability, the presence store trait (memory, Redis).
//! - [`directory`]: projects and members (roster source): memory, MongoDB.
//! - [`stomp`]: the STOMP edge (sans-IO codec, destinations, session).
//! - [`transport`]: TCP/TLS, WebSocket, SockJS and the HTTP listener.
//! - [`xmpp`]: the XMPP edge: XML streams, SASL, c2s TCP/STARTTLS, WebSocket, BOSH.
//! - [`admin`]: the admin API, live stream, Prometheus metrics and the console UI.
//! - [`error`]: the numbered close-reason table clients see.

pub mod admin;
pub mod auth;
pub mod config;
pub mod directory;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
mod listen;
pub mod message;
pub mod pem;
pub mod presence;
pub mod router;
pub mod session;
pub mod shaper;
pub mod stomp;
pub mod store;
pub mod transport;
pub mod xmpp;

pub use config::Config;
pub use engine::Engine;
