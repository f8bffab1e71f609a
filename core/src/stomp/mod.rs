//! The STOMP edge: frames in, engine calls, frames out.
//!
//! `frame` is the sans-IO codec; destinations are the router's
//! ([`crate::router::destination`]); `session` runs one client over any [`crate::transport`] link
//! and translates frames into engine calls. Routing, auth and queue decisions
//! are the engine's. `listen` binds STOMP's listeners (TCP, TLS, and HTTP
//! with WebSocket and SockJS) over transport's accept loop; `ws` is STOMP's
//! framing on a WebSocket link.

pub mod frame;
pub mod listen;
mod session;
pub mod ws;

pub use session::serve;
