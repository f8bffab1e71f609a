#!/usr/bin/env node
'use strict';
// The repository's `npm install` (the root package's postinstall) builds the addon from
// source (the published package ships it prebuilt instead and runs nothing on install):
// `napi build --platform --release`, which also regenerates index.js and index.d.ts.
//
// Skipped, in well under a second, when herald.<platform>.node is newer than every
// file it is built from (this crate, herald-core, the workspace Cargo.toml/Cargo.lock).
// Needs cargo (Rust); without it the install fails with a message saying so.
// HERALD_NODE_SKIP_BUILD=1 skips the build (an install that only wants the JS tools).
// HERALD_NODE_FORCE_BUILD=1 builds even when the addon looks fresh.
// Cargo builds in $CARGO_TARGET_DIR, default /var/tmp/herald-target as scripts/test and .ci/run.

const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const { spawnSync } = require('node:child_process');

const pkgDir = path.resolve(__dirname, '..');
const root = path.resolve(pkgDir, '..');

function fail(message) {
  console.error(`\nherald: ${message}\n`);
  process.exit(1);
}

if (process.env.HERALD_NODE_SKIP_BUILD === '1') {
  console.log('herald: HERALD_NODE_SKIP_BUILD=1, not building the native addon');
  process.exit(0);
}

// The file napi-rs's loader (index.js) looks for on this platform.
function addonName() {
  let abi = '';
  if (process.platform === 'linux') {
    const header = process.report?.getReport ? process.report.getReport().header : {};
    abi = header?.glibcVersionRuntime ? '-gnu' : '-musl';
  } else if (process.platform === 'win32') {
    abi = '-msvc';
  }
  return `herald.${process.platform}-${process.arch}${abi}.node`;
}

// Newest modification time (ms) under `p`, following only what matters to cargo.
function newest(p) {
  let st;
  try {
    st = fs.statSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let max = st.mtimeMs;
  for (const entry of fs.readdirSync(p)) {
    if (entry === 'target' || entry === 'node_modules' || entry.startsWith('.')) continue;
    max = Math.max(max, newest(path.join(p, entry)));
  }
  return max;
}

function fresh() {
  if (process.env.HERALD_NODE_FORCE_BUILD === '1') return false;
  const addon = path.join(pkgDir, addonName());
  let built;
  try {
    built = fs.statSync(addon).mtimeMs;
  } catch {
    return false;
  }
  for (const generated of ['index.js', 'index.d.ts']) {
    if (!fs.existsSync(path.join(pkgDir, generated))) return false;
  }
  const sources = [
    path.join(pkgDir, 'src'),
    path.join(pkgDir, 'Cargo.toml'),
    path.join(pkgDir, 'build.rs'),
    path.join(root, 'core', 'src'),
    path.join(root, 'core', 'Cargo.toml'),
    path.join(root, 'Cargo.toml'),
    path.join(root, 'Cargo.lock'),
  ];
  return sources.every((s) => newest(s) < built);
}

if (fresh()) {
  console.log(`herald: ${addonName()} is newer than its Rust sources; not rebuilding`);
  process.exit(0);
}

// cargo: on PATH, or in the rustup default location npm's PATH may lack.
function findCargo() {
  const probe = spawnSync('cargo', ['--version'], { stdio: 'ignore' });
  if (!probe.error && probe.status === 0) return true;
  const home = process.env.CARGO_HOME || path.join(os.homedir(), '.cargo');
  const bin = path.join(home, 'bin');
  if (fs.existsSync(path.join(bin, process.platform === 'win32' ? 'cargo.exe' : 'cargo'))) {
    process.env.PATH = `${bin}${path.delimiter}${process.env.PATH || ''}`;
    return true;
  }
  return false;
}

if (!findCargo()) {
  fail(
    'cannot build the native addon: `cargo` (Rust) was not found on PATH or in ~/.cargo/bin.\n' +
      "Install Rust (https://rustup.rs, or your distribution's cargo package) and run `npm install` again.",
  );
}

let cli;
try {
  const cliPkg = require.resolve('@napi-rs/cli/package.json', { paths: [pkgDir] });
  const meta = JSON.parse(fs.readFileSync(cliPkg, 'utf8'));
  const bin = typeof meta.bin === 'string' ? meta.bin : meta.bin.napi;
  cli = path.join(path.dirname(cliPkg), bin);
} catch {
  fail(
    'cannot build the native addon: @napi-rs/cli is not installed (it is a devDependency of @herald-push/herald; install without --omit=dev).',
  );
}

// The repository's scripts share one cargo target directory outside the clone; use it too.
if (!process.env.CARGO_TARGET_DIR) {
  process.env.CARGO_TARGET_DIR =
    process.platform === 'win32' ? path.join(os.tmpdir(), 'herald-target') : '/var/tmp/herald-target';
}
console.log(
  `herald: building the native addon (napi build --platform --release, target dir ${process.env.CARGO_TARGET_DIR})`,
);
const started = Date.now();
const build = spawnSync(process.execPath, [cli, 'build', '--platform', '--release'], { cwd: pkgDir, stdio: 'inherit' });
if (build.error) fail(`napi build could not run: ${build.error.message}`);
if (build.status !== 0) fail(`napi build failed (exit ${build.status}); see the cargo output above`);
console.log(`herald: native addon built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
