// Cross-node push (issue 17 items 1, 2 and 9): @stomp/stompjs on node A (a `herald`
// binary) gets a SEND made by a client on node B (another binary) and an
// `engine.sendToUser` / `engine.publish` from a Node engine acting as node C
// (`new Engine({ cluster })` from this repository's addon), all three joined over a
// real redis-server. Port 64120 (Redis).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  closeAll,
  publishWithReceipt,
  startHerald,
  stompConnect,
  subscribeWithReceipt,
  uid,
  withTimeout,
} from './harness.mjs';

const require = createRequire(import.meta.url);
// This checkout's addon (not whatever `@herald-push/herald` resolves to).
const { Engine } = require('../../node-binding/main.js');

const REDIS_PORT = 64120;
const REDIS_URL = `redis://127.0.0.1:${REDIS_PORT}/`;
const prefix = `${uid('js')}:`;

let redis;
let redisDir;
let nodeA;
let nodeB;
let engineC;

function redisBin() {
  const which = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const bin = which.stdout.trim();
  if (!bin) throw new Error('redis-server not found: run tests/services/install.sh (tests never skip)');
  return bin;
}

async function redisUp(ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(REDIS_PORT, '127.0.0.1');
      s.once('connect', () => s.write('PING\r\n'));
      s.once('data', (d) => {
        s.destroy();
        resolve(d.toString().startsWith('+PONG'));
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server on ${REDIS_PORT} did not answer PING`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function clusterToml(node) {
  return [
    '[cluster]',
    `redis = "${REDIS_URL}"`,
    `prefix = "${prefix}"`,
    'heartbeat_ms = 200',
    'ttl_ms = 1000',
    `# ${node}`,
  ].join('\n');
}

before(async () => {
  redisDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-js-redis-'));
  const args = ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  redis = spawn(redisBin(), [...args, '--dir', redisDir], { stdio: 'ignore' });
  await redisUp();
  nodeA = await startHerald({ nodeName: 'a', extra: clusterToml('a') });
  nodeB = await startHerald({ nodeName: 'b', extra: clusterToml('b') });
  engineC = new Engine({
    node: { name: 'c' },
    cluster: { redis: REDIS_URL, prefix, heartbeat_ms: 200, ttl_ms: 1000 },
  });
  await engineC.start();
});

after(async () => {
  await engineC?.stop();
  await nodeA?.stop();
  await nodeB?.stop();
  redis?.kill('SIGKILL');
  fs.rmSync(redisDir, { recursive: true, force: true });
});

test('stompjs on node A gets a SEND from node B and pushes from a Node engine (node C)', async () => {
  const alice = await stompConnect(nodeA, { login: 'alice', passcode: 'secret' });
  const bob = await stompConnect(nodeB, { login: 'bob', passcode: 'secret' });
  try {
    // The RECEIPT comes once Redis confirmed node A's subscriptions.
    const feed = await subscribeWithReceipt(alice.client, '/exchange/feed/alice');
    const news = await subscribeWithReceipt(alice.client, '/topic/cluster.*');

    await publishWithReceipt(bob.client, { destination: '/topic/cluster.news', body: 'from B' });
    let m = await news.q.next(5000, 'the SEND made on node B');
    assert.equal(m.body, 'from B');
    assert.equal(m.headers.destination, '/topic/cluster.news');

    await publishWithReceipt(bob.client, { destination: '/exchange/feed/alice', body: 'chat from bob' });
    m = await feed.q.next(5000, "bob's message to alice's feed");
    assert.equal(m.body, 'chat from bob');

    // Node C is an embedded engine: its pushes cross the same Bus.
    engineC.sendToUser('alice', 'from the Node engine', { 'content-type': 'text/plain' });
    m = await feed.q.next(5000, 'engine.sendToUser on node C');
    assert.equal(m.body, 'from the Node engine');
    assert.equal(m.headers['content-type'], 'text/plain');
    engineC.publish('/topic/cluster.deploy', 'published on C');
    m = await news.q.next(5000, 'engine.publish on node C');
    assert.equal(m.body, 'published on C');

    // Once per node: nothing more.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(feed.q.length + news.q.length, 0);
  } finally {
    await closeAll(alice, bob);
  }
});

test('a Node engine given a cluster it cannot reach refuses to start', async () => {
  const lonely = new Engine({
    node: { name: 'd' },
    cluster: { redis: 'redis://127.0.0.1:64129/', prefix },
  });
  await assert.rejects(withTimeout(lonely.start(), 15000, 'start'), /cluster/);
});
