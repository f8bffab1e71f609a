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
    no_transparent_huge_pages();
    ExitCode::from(herald_server::main_from_args(std::env::args_os()))
}

/// Turns transparent huge pages off for this process, unless the operator
/// set `MIMALLOC_ALLOW_THP`. mimalloc asks for huge pages on its arenas and
/// gives freed memory back: each later fault there zeroes 2 MiB in the
/// faulting thread. With Debian's `madvise` default that was 5.5 % of the
/// CPU and the cross-node push p99 went from 3.8 ms to 16.5 ms at 20k
/// pushes/s (bench/compare.sh s6 without and with, docs/benchmarks.md).
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments and only sets
        // a flag of this process; a failure leaves THP as it was.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}
