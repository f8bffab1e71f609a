//! # Herald core
//!
//! A real-time push engine: sessions, routing, presence, and the STOMP, XMPP
//! (c2s, WebSocket, BOSH) and admin edges in one process. See
//! `ARCHITECTURE.md` at the repository root for the data flow and lock order.
//!
//! # Layout
//!
//! Floors, lowest first. A module imports from its own floor and the floors
//! below, never from above: the engine knows no protocol and no listener,
//! transport knows neither the engine nor an edge, config knows nothing of
//! what it configures.
//!
//! 1. Leaves (no imports from the crate, or only from other leaves):
//!    - [`config`]: typed TOML/JS config, defaults and validation (imports `pem`, `net`, `password`).
//!    - [`pem`]: key files named by the config (RSA public keys for RS256).
//!    - [`password`]: stored password hashes (bcrypt, argon2, scrypt, PBKDF2)
//!      recognised and verified, sans-IO.
//!    - [`net`]: CIDR blocks and canonical client addresses.
//!    - [`error`]: the numbered close-reason table clients see.
//!    - [`message`]: a published message, encoded once per protocol.
//!    - [`store`]: the queue store trait (durable messages), in-memory default.
//!    - [`shaper`]: per-connection inbound rate limits (token buckets that pause reading).
//!    - [`bus`]: the node-to-node transport of a cluster (none, Redis pub/sub)
//!      and its control messages (imports `config`).
//! 2. [`transport`], the lower floor: TCP/TLS, WebSocket, SockJS, the HTTP/1.1
//!    front server, connection admission and the accept loop. Imports
//!    `config` and `net` only.
//! 3. The middle, what the engine is made of:
//!    - [`session`]: the engine's side of a session: bounded outbox, close reason.
//!    - [`hub`]: live sessions by id and by user.
//!    - [`router`]: vhosts, exchanges (direct, fanout, topic, headers), queues.
//!    - [`presence`]: availability, the presence store trait (memory, Redis).
//!    - [`directory`]: projects and members (roster source): memory, MongoDB.
//!    - [`auth`]: authenticator and authorizer traits, config users, HTTP and
//!      JWT backends, SASL, the access policy (`auth::policy` reads project
//!      membership through the engine: the one import upward).
//! 4. [`engine`]: the [`Engine`] handle: in-process publish, logins,
//!    sessions, stats, shutdown. Imports the middle and `transport::conn`
//!    (the connection gate), no edge.
//! 5. The edges, which translate between a protocol and engine calls; each
//!    wires its own listeners over `transport`:
//!    - [`stomp`]: sans-IO codec, destinations, session, `stomp::listen`
//!      (TCP, TLS, WebSocket, SockJS).
//!    - [`xmpp`]: XML streams, SASL, session, `xmpp::listen` (c2s with
//!      STARTTLS, WebSocket, BOSH).
//!    - [`admin`]: the admin API, live stream, Prometheus metrics and the console UI.
//! 6. `cluster` (feature `redis`): a node in a cluster: joins over the Bus,
//!    routes what other nodes publish, answers control messages, keeps the
//!    node registry. Imports the engine and below, no edge.
//! 7. `listen` (private): `Engine::start`, which connects the backends and
//!    calls each edge's `listen`; the only module that imports every edge.
//!
//! The `herald` binary and the Node addon sit on top and use `Engine`.

pub mod admin;
pub mod auth;
pub mod bus;
#[cfg(feature = "redis")]
pub mod cluster;
pub mod config;
pub mod directory;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
mod listen;
pub mod message;
pub mod net;
pub mod password;
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
