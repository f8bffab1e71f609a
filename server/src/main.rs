//! `herald`: run the engine from a TOML config.
//!
//! The only place that owns a process: the command line (clap), logging
//! set-up, the global allocator, the runtime and the signals. It imports
//! herald-core's public API only (`Config`, `Engine`, `auth::config_users`);
//! everything a library user or the Node addon also needs belongs in core.
#![allow(clippy::print_stdout, reason = "the start-up lines (`herald: ready`) are on stdout for scripts")]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald_core::{Config, Engine};

/// mimalloc rather than glibc malloc: an idle session is ~30 small
/// allocations, and glibc's per-chunk header and rounding were ~15 % of it.
/// Measured with `herald-bench run --scenario s1` at 1k/5k/10k sessions
/// (bytes of RSS per session, glibc -> jemalloc -> mimalloc): BOSH
/// 6,760 -> 6,473 -> 5,724; STOMP/TCP 3,749 -> 3,429 -> 3,045. The Node
/// addon keeps Node's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "herald", version, about = "Herald real-time push engine")]
struct Cli {
    /// Path to the TOML config (see docs/config.md).
    #[arg(long, short, default_value = "config/dev.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check the config and exit.
    CheckConfig,
    /// Print an argon2 hash of a password (read from stdin) for `password_hash`.
    HashPassword,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(Cmd::HashPassword) = cli.command {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() {
            eprintln!("herald: cannot read the password from stdin");
            return ExitCode::FAILURE;
        }
        return match herald_core::auth::config_users::hash_password(line.trim_end_matches(['\r', '\n'])) {
            Ok(h) => {
                println!("{h}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("herald: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Cmd::CheckConfig) = cli.command {
        println!("herald: config {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let engine = match Engine::new(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    let listeners = match engine.start().await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Machine-readable start-up lines: scripts and tests wait for `ready`.
    for l in &listeners {
        println!("herald: listening {} {}", l.name, l.addr);
    }
    println!("herald: ready");
    wait_for_signal().await;
    tracing::info!("shutting down");
    engine.stop(Duration::from_secs(5)).await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers, run until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
