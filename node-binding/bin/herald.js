#!/usr/bin/env node
'use strict';
// `herald` from the npm package (`npx @herald-push/herald --config herald.toml`): the
// standalone broker, running the `herald` binary's own code in the addon
// (runCli: same flags, subcommands, output and exit codes; see `--help`).
//
// Signals: Node owns the process's handlers, so they are caught here. As in
// the binary, the first SIGINT or SIGTERM stops the engine gracefully
// (sessions are told, up to 5 s) and later ones are ignored while it stops
// (the listeners stay, so Node's default of dying at once does not apply).

const { runCli } = require('../main.js');

const stop = new Promise((resolve) => {
  process.on('SIGINT', () => resolve());
  process.on('SIGTERM', () => resolve());
});

runCli(process.argv.slice(2), stop).then(
  (code) => {
    process.exitCode = code;
    // Nothing else of ours is pending; exit now rather than wait for the signal listeners' promise.
    process.exit();
  },
  (err) => {
    console.error(`herald: ${err?.message ? err.message : err}`);
    process.exit(1);
  },
);
