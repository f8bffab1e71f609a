//! # herald-bench
//!
//! Load generator and scenario runner for Herald, RabbitMQ and ejabberd.
//! The same client code (STOMP over TCP and WebSocket, XMPP over WebSocket
//! and BOSH) talks to every server, so the numbers compare.
//!
//! # Layout
//! - `main.rs` — command line: `run` (one scenario, one server), `worker`
//!   (spawned by `run`), `report` (tables and ratios from the results file).
//! - `orch.rs` — scenarios S1–S4, worker pool, publishers, /proc sampling.
//! - `worker.rs` — a process holding up to a few thousand sessions.
//! - `stomp.rs`, `xmpp.rs`, `conn.rs` — the protocol clients.
//! - `cluster.rs` — S5 (idle sessions over several nodes) and S6 (cross-node
//!   pushes and fan-out, Herald or Socket.IO).
//! - `sio.rs` — the Socket.IO 4 client (S6's peer).
//! - `durable.rs` — D1 (persistent SENDs with receipts) and R1 (recovery from history).
//! - `stats.rs`, `hist.rs` — timestamps in payloads, latency histograms.
//! - `report.rs` — the markdown tables of `docs/benchmarks.md`.
//!
//! See `bench/README.md` for how the pieces are driven by `compare.sh` and `smoke.sh`.
#![allow(clippy::print_stdout, reason = "its reports and progress lines are its output")]

mod cluster;
mod conn;
mod durable;
mod hist;
mod orch;
mod report;
mod sio;
mod stats;
mod stomp;
mod worker;
mod xmpp;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herald-bench",
    about = "Herald load generator: scenarios S1-S4 against Herald, RabbitMQ and ejabberd"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process; boxing the arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario against one server; prints a table row, appends JSON to --out.
    Run(orch::RunArgs),
    /// (internal) hold sessions for `run`; speaks JSON lines on stdio.
    Worker(worker::WorkerArgs),
    /// Print the result tables (markdown) and Herald/peer ratios from a results file.
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Worker(a) => worker::main(a),
        Cmd::Report(a) => report::main(a),
        Cmd::Run(a) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|rt| rt.block_on(orch::run(a)))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
