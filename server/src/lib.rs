//! The `herald` command: its command line, logging set-up and run loop, as a
//! library so that the `herald` binary (src/main.rs) and the Node addon's
//! `herald` bin (`npx <package> --config herald.toml`, node-binding's
//! `runCli`) are one implementation with the same flags, subcommands, output
//! and exit codes.
//!
//! What stays in the binary: the global allocator (the addon keeps Node's)
//! and the runtime it builds for itself. The addon runs [`run_from_args`] on
//! its own Tokio runtime and passes a shutdown future fed by Node's signal
//! listeners, since Node owns the process's signal handlers there.
//!
//! Exit codes: 0 ok, 1 failure (runtime, bind, stdin), 2 bad config or bad
//! command line (clap's usage errors are 2 as well).
#![allow(clippy::print_stdout, reason = "the start-up lines (`herald: ready`) are on stdout for scripts")]

use std::ffi::OsString;
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald_core::{Config, Engine};

/// Everything went as asked.
pub const EXIT_OK: u8 = 0;
/// The runtime, a listener or stdin failed.
pub const EXIT_FAILURE: u8 = 1;
/// The config (or the command line) is wrong.
pub const EXIT_CONFIG: u8 = 2;

/// How long `stop` waits for sessions to finish on SIGINT/SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

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

/// What the command line asks for once its one-shot parts are done.
enum Start {
    /// Exit now with this code (help, version, bad flags, check-config, hash-password, bad config).
    Exit(u8),
    /// Run the engine with this config until shutdown (boxed: a `Config` is ~1.7 KB).
    Serve(Box<Config>),
}

/// Logs go to stderr (the journal under systemd), filtered by `HERALD_LOG`
/// (tracing-subscriber `EnvFilter` syntax, default `info`). Colours only on a
/// terminal: journald shows a line with escape codes as a blob. A process that
/// already installed a subscriber keeps it.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The whole `herald` process: `args` as from [`std::env::args_os`] (the
/// first is the program name). Builds a multi-threaded runtime and runs
/// until SIGINT or SIGTERM. Returns the process exit code.
pub fn main_from_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let config = match prepare(args) {
        Start::Exit(code) => return code,
        Start::Serve(config) => *config,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = wait_for_signal();
        serve(config, signals).await
    })
}

/// The `herald` command on a runtime the caller owns (the Node addon's):
/// the same as [`main_from_args`], except that the engine stops when
/// `shutdown` completes rather than on a signal. The blocking parts (reading
/// the config file, stdin, hashing a password) run on the blocking pool.
pub async fn run_from_args<F>(args: Vec<OsString>, shutdown: F) -> u8
where
    F: Future<Output = ()>,
{
    let config = match tokio::task::spawn_blocking(move || prepare(args)).await {
        Ok(Start::Exit(code)) => return code,
        Ok(Start::Serve(config)) => *config,
        Err(e) => {
            eprintln!("herald: {e}");
            return EXIT_FAILURE;
        }
    };
    serve(config, shutdown).await
}

/// Parses the command line and does what needs no engine. Blocking.
fn prepare<I, T>(args: I) -> Start
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    init_logging();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors to stderr, 2.
            let _ = e.print();
            return Start::Exit(u8::try_from(e.exit_code()).unwrap_or(EXIT_CONFIG));
        }
    };
    if let Some(Cmd::HashPassword) = cli.command {
        return Start::Exit(hash_password());
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            return Start::Exit(EXIT_CONFIG);
        }
    };
    if let Some(Cmd::CheckConfig) = cli.command {
        println!("herald: config {} is valid", cli.config.display());
        return Start::Exit(EXIT_OK);
    }
    Start::Serve(Box::new(config))
}

fn hash_password() -> u8 {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        eprintln!("herald: cannot read the password from stdin");
        return EXIT_FAILURE;
    }
    match herald_core::auth::config_users::hash_password(line.trim_end_matches(['\r', '\n'])) {
        Ok(h) => {
            println!("{h}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("herald: {e}");
            EXIT_FAILURE
        }
    }
}

/// Starts the engine, prints the start-up lines, runs until `shutdown`, stops.
async fn serve<F>(config: Config, shutdown: F) -> u8
where
    F: Future<Output = ()>,
{
    let engine = match Engine::new(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("herald: {e}");
            return EXIT_CONFIG;
        }
    };
    let listeners = match engine.start().await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("herald: {e}");
            return EXIT_FAILURE;
        }
    };
    // Machine-readable start-up lines: scripts and tests wait for `ready`.
    for l in &listeners {
        println!("herald: listening {} {}", l.name, l.addr);
    }
    println!("herald: ready");
    shutdown.await;
    tracing::info!("shutting down");
    engine.stop(STOP_GRACE).await;
    EXIT_OK
}

/// Completes on the first SIGINT or SIGTERM (never, if the handlers cannot be
/// installed). The handlers are installed when this is called, inside the
/// runtime, not when the future is first polled: the engine starts before
/// the future is awaited, and a SIGTERM right after `herald: ready` found the
/// default action and killed the process without a clean stop.
pub fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers, run until killed.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
