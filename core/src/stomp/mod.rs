//! The STOMP edge: frames in, engine calls, frames out.
//!
//! `frame` is the sans-IO codec; destinations are the router's
//! ([`crate::router::destination`]); `session` runs one client over any [`crate::transport`] link
//! and translates frames into engine calls. Routing, auth and queue decisions
//! are the engine's.

pub mod frame;
mod session;

pub use session::serve;
