//! # herald-node
//!
//! Herald embedded in a Node.js process: the npm package `@herald-push/herald`, built with
//! napi-rs. Like lightningcss and node-rs, this crate only converts values
//! and maps errors; every decision (routing, presence, auth checks, config
//! validation) is made by `herald-core` through the same in-process API the
//! `herald` binary uses. `index.d.ts` is generated from the `///` docs here.
//!
//! # Layout
//!
//! - [`engine`]: the `Engine` class: lifecycle, publishing, presence, stats.
//! - [`config`]: a JS config object to `herald_core::Config` (same schema as the TOML file).
//! - [`events`]: `engine.on(...)`: engine events to JS callbacks through weak threadsafe functions.
//! - [`auth`]: `useAuth` (JS callbacks) and `useExpressAuth` (an Express app, in-process)
//!   as `herald_core::auth::{Authenticator, Authorizer}`.
//! - [`cli`]: `runCli`, the `herald` command (herald-server's) for the package's bin.
//! - [`js`]: small Node-API glue types (values that may be promises, JSON copies).
//! - [`error`]: the `ERR_HERALD_*` codes every JS-visible failure carries.
//!
//! Threads: JS callbacks always run on the Node main thread (threadsafe
//! functions queue them there); engine work runs on napi-rs's Tokio runtime.
//! Nothing here blocks the Node main thread on the engine.

pub mod auth;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod events;
pub mod js;

use std::io::IsTerminal;
use std::sync::Once;

/// Logs from the engine and the addon go to stderr, filtered by `HERALD_LOG`
/// (tracing-subscriber `EnvFilter` syntax, default `warn`). Installed once, on
/// the first `new Engine()`; a process that already installed a subscriber keeps it.
pub(crate) fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init();
    });
}
