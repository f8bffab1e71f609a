//! `runCli`: the `herald` command inside Node, for the package's bin
//! (`bin/herald.js`, `npx <package> --config herald.toml`). It is the
//! binary's own code (`herald_server::run_from_args`): same flags,
//! subcommands, start-up lines on stdout, logs on stderr and exit codes.
//! Only the signals differ: Node owns the process's signal handlers, so the
//! bin listens for SIGINT/SIGTERM in JS and settles `stop`.

use napi::bindgen_prelude::{Promise, PromiseRaw};
use napi::Env;
use napi_derive::napi;

/// Runs the `herald` command with `args` (what follows `herald` on its
/// command line, e.g. `['--config', 'herald.toml']` or `['check-config']`)
/// and resolves with its exit code: 0 ok, 1 failure, 2 bad config or usage.
/// A server runs until `stop` settles (resolved or rejected), then stops its
/// sessions as the binary does on SIGINT/SIGTERM. Logs go to stderr, filtered
/// by `HERALD_LOG` (default `info`).
#[napi(ts_return_type = "Promise<number>")]
pub fn run_cli<'env>(env: &'env Env, args: Vec<String>, stop: Promise<()>) -> napi::Result<PromiseRaw<'env, u32>> {
    let args = std::iter::once("herald".into()).chain(args.into_iter().map(Into::into)).collect();
    env.spawn_future(async move {
        let shutdown = async move {
            // A rejected `stop` is a request to stop too.
            let _ = stop.await;
        };
        Ok(u32::from(herald_server::run_from_args(args, shutdown).await))
    })
}
