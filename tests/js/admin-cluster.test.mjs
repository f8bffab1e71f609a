// The console's Nodes view (admin-app, built into admin-app/dist) on a two-node cluster:
// a real redis-server (port 64510) and two real herald nodes (n1, n2) joined over it, the
// console served by n1 at /admin/ in Debian's headless Chromium (playwright-core), real
// @stomp/stompjs clients on both nodes. Both nodes show alive with their sessions and the
// cluster-wide user count; after kill -9 of n2 its row turns dead.
// Screenshots: tests/artifacts/admin-nodes*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { assertBinary, buildConfig, closeAll, stompConnect, withTimeout, sleep } from './harness.mjs';
import { ARTIFACTS, ROOT, launchChromium } from './browser.mjs';

const T = { timeout: 60000 };
const TOKEN = `t0ken-${crypto.randomBytes(12).toString('hex')}`;
const DIST = path.join(ROOT, 'admin-app', 'dist');
const REDIS_PORT = 64510;
const PREFIX = `ops-${crypto.randomBytes(4).toString('hex')}:`;

let redis;
const nodes = {};
let browser;
let page;
const logs = [];
const clients = [];

function assertDist() {
  const index = path.join(DIST, 'index.html');
  if (!fs.existsSync(index))
    throw new Error(`${index} is missing: npm run build -w herald-admin. Tests never skip on a missing build.`);
}

async function startRedis() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-redis-'));
  const proc = spawn(
    'redis-server',
    ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: 'ignore' },
  );
  proc.on('error', (e) => {
    throw new Error(`redis-server: ${e.message} (tests/services/install.sh installs it)`);
  });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(REDIS_PORT, '127.0.0.1', () => s.write('PING\r\n'));
      s.on('data', (d) => {
        s.destroy();
        resolve(d.toString().startsWith('+PONG'));
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return { proc, dir };
    if (proc.exitCode !== null) throw new Error(`redis-server exited (${proc.exitCode})`);
    await sleep(50);
  }
  throw new Error(`redis-server did not listen on ${REDIS_PORT}`);
}

/** A herald node named `name` in the cluster; resolves once it printed `herald: ready`. */
async function startNode(name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-'));
  const extra = [
    '[cluster]',
    `redis = "redis://127.0.0.1:${REDIS_PORT}"`,
    `prefix = "${PREFIX}"`,
    'heartbeat_ms = 200',
    'ttl_ms = 1000',
    '',
    '[admin]',
    'listen = "127.0.0.1:0"',
    `tokens = ["${TOKEN}"]`,
    `ui_dir = ${JSON.stringify(DIST)}`,
    '',
  ].join('\n');
  const config = buildConfig({ dataDir: path.join(dir, 'data'), extra }).replace(
    'name = "herald-test@localhost"',
    `name = "${name}"`,
  );
  fs.writeFileSync(path.join(dir, 'herald.toml'), config);
  const proc = spawn(assertBinary(), ['--config', path.join(dir, 'herald.toml')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => {
    err = (err + d).slice(-20000);
  });
  const listeners = {};
  await withTimeout(
    new Promise((resolve, reject) => {
      proc.stdout.on('data', (d) => {
        out += d;
        for (const m of out.matchAll(/^herald: listening (\S+) (\S+):(\d+)$/gm)) listeners[m[1]] = Number(m[3]);
        if (/^herald: ready$/m.test(out)) resolve();
      });
      proc.on('exit', (code) => reject(new Error(`${name} exited (${code}): ${err.slice(-2000)}`)));
    }),
    20000,
    `${name} ready`,
  );
  return {
    proc,
    dir,
    listeners,
    wsUrl: `ws://127.0.0.1:${listeners.http}/ws`,
    stderr: () => err,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill(signal);
        await withTimeout(new Promise((r) => proc.once('exit', r)), 10000, `${name} exit`).catch(() =>
          proc.kill('SIGKILL'),
        );
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function shot(name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `admin-${name}.png`) });
}

async function waitFor(fn, arg, what, timeout = 5000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    await shot(`nodes-failed-${what.replace(/[^a-z0-9]+/gi, '-').slice(0, 40)}`).catch(() => {});
    throw new Error(`${what}: ${e.message}\n--- console ---\n${logs.slice(-30).join('\n')}`);
  }
}

const cell = (node, key) =>
  page.$eval(`tr[data-node="${node}"] [data-testid="node-cell-${key}"]`, (el) => el.textContent.trim());

before(async () => {
  assertDist();
  redis = await startRedis();
  nodes.n1 = await startNode('n1');
  nodes.n2 = await startNode('n2');
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
});

after(async () => {
  await closeAll(...clients);
  if (browser) await withTimeout(browser.close(), 10000, 'browser close').catch(() => {});
  for (const n of Object.values(nodes)) await n.stop();
  if (redis) {
    redis.proc.kill('SIGKILL');
    fs.rmSync(redis.dir, { recursive: true, force: true });
  }
});

test('the Nodes view lists both nodes alive with their sessions and the users of the cluster', T, async () => {
  clients.push(await stompConnect(nodes.n1, { login: 'alice', passcode: 'secret' }));
  clients.push(await stompConnect(nodes.n2, { login: 'bob', passcode: 'secret' }));
  clients.push(await stompConnect(nodes.n2, { login: 'carol', passcode: 'secret' }));
  await page.goto(`http://127.0.0.1:${nodes.n1.listeners.admin}/admin/`, { timeout: 15000 });
  await waitFor(() => document.querySelector('[data-testid="token-input"]'), null, 'login form');
  await page.fill('[data-testid="token-input"]', TOKEN);
  await page.click('[data-testid="login-submit"]');
  await waitFor(() => document.querySelector('[data-testid="overview"]'), null, 'overview after login');
  await page.click('[data-testid="nav-nodes"]');
  await waitFor(() => document.getElementById('view')?.dataset.view === 'nodes', null, 'nodes screen');
  await waitFor(
    () =>
      document.querySelector('tr[data-node="n1"] [data-testid="node-cell-sessions"]')?.textContent.trim() === '1' &&
      document.querySelector('tr[data-node="n2"] [data-testid="node-cell-sessions"]')?.textContent.trim() === '2',
    null,
    'n1 with 1 session and n2 with 2',
  );
  for (const n of ['n1', 'n2']) {
    assert.equal(await page.$eval(`tr[data-node="${n}"]`, (el) => el.dataset.alive), 'true', `${n} alive`);
    assert.equal(await cell(n, 'state'), 'alive');
    assert.match(await cell(n, 'age'), /^\d\.\d s$/, 'heartbeat age in seconds');
    assert.match(await cell(n, 'memory'), /MiB$/);
  }
  assert.match(await cell('n1', 'name'), /^n1\s*this/, 'the node the console talks to is marked');
  await waitFor(
    () => document.querySelector('[data-testid="cluster-users-online"]')?.textContent.trim() === '3',
    null,
    '3 users online in the cluster',
  );
  assert.equal(await page.$eval('[data-testid="cluster-nodes-alive"]', (e) => e.textContent.trim()), '2 / 2');
  assert.match(await page.$eval('[data-testid="cluster-mode"]', (e) => e.textContent), /Redis connected/);
  await shot('nodes');
});

test('after kill -9 of n2 its row shows dead (until reaped) and its users leave the count', T, async () => {
  nodes.n2.proc.kill('SIGKILL');
  // Dead from its TTL until a survivor reaps it one heartbeat later, which
  // removes its registry entry: the console may show either.
  await waitFor(
    () => {
      const row = document.querySelector('tr[data-node="n2"]');
      return !row || row.dataset.alive === 'false';
    },
    null,
    'n2 dead or reaped within its TTL',
    5000,
  );
  if (await page.$('tr[data-node="n2"]')) assert.equal(await cell('n2', 'state'), 'dead');
  await waitFor(
    () => document.querySelector('[data-testid="cluster-users-online"]')?.textContent.trim() === '1',
    null,
    'only alice left',
  );
  assert.match(await page.$eval('[data-testid="cluster-nodes-alive"]', (e) => e.textContent.trim()), /^1 \/ [12]$/);
  await shot('nodes-dead');
});
