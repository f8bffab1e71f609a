// Shared by the browser suites: Debian's Chromium through playwright-core, and the
// example servers (js-examples) started as child processes on free ports.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withTimeout } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');
export const ARTIFACTS = path.resolve(HERE, '..', 'artifacts');
const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
// Without the background-networking flags Chromium keeps dialing out, which this
// machine's closed network refuses.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Launches headless Chromium; a missing browser fails the suite (never skips). */
export async function launchChromium() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} not found: apt-get install chromium (tests/run.sh does). Tests never skip on a missing browser.`,
    );
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const { chromium } = await import('playwright-core');
  return withTimeout(
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 }),
    40000,
    'chromium launch',
  );
}

/**
 * Starts `node <script>` (relative to the repo root) with every port free (0) and
 * waits for the line `ready` matches. Returns { child, match, base, output(), stop() };
 * `base` is http://127.0.0.1:<port of the first URL in the match>.
 */
export async function startExample(script, ready, env = {}) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-example-'));
  const child = spawn(process.execPath, [path.join(ROOT, script)], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: '0',
      HOST: '127.0.0.1',
      HERALD_BIND: '127.0.0.1',
      HERALD_HTTP_PORT: '0',
      HERALD_STOMP_PORT: '0',
      HERALD_ADMIN_PORT: '0',
      HERALD_DATA_DIR: dataDir,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const match = await withTimeout(
    new Promise((resolve, reject) => {
      child.stdout.on('data', () => {
        const m = ready.exec(out);
        if (m) resolve(m);
      });
      child.on('exit', (code) => reject(new Error(`${script} exited (${code}) before it was ready`)));
    }),
    30000,
    `${script} to print its URL`,
  ).catch((e) => {
    child.kill('SIGKILL');
    fs.rmSync(dataDir, { recursive: true, force: true });
    throw new Error(`${e.message}\n--- output ---\n${out}`);
  });
  const port = new URL(/http:\/\/\S+/.exec(match[0])[0]).port;
  return {
    child,
    match,
    base: `http://127.0.0.1:${port}`,
    output: () => out,
    async stop() {
      child.kill('SIGTERM');
      await withTimeout(
        new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r))),
        10000,
        `${script} exit`,
      ).catch(() => child.kill('SIGKILL'));
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
