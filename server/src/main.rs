//! `herald`: run the engine from a TOML config.
//!
//! The command line, logging and run loop are in the library (src/lib.rs,
//! which uses herald-core's public API only), shared with the Node package's
//! `herald` bin. What only the binary owns is the process: the global
//! allocator, the runtime and the signal handlers.

use std::process::ExitCode;

/// mimalloc rather than glibc malloc: an idle session is ~30 small
/// allocations, and glibc's per-chunk header and rounding were ~15 % of it.
/// Measured with `herald-bench run --scenario s1` at 1k/5k/10k sessions
/// (bytes of RSS per session, glibc -> jemalloc -> mimalloc): BOSH
/// 6,760 -> 6,473 -> 5,724; STOMP/TCP 3,749 -> 3,429 -> 3,045. The Node
/// addon keeps Node's allocator: this static is only in the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ExitCode::from(herald_server::main_from_args(std::env::args_os()))
}
