// js-examples/auth-app.js with Herald in-process (the `herald` npm package): the Express
// app's rabbitmq-auth-backend-http handlers, installed with engine.useExpressAuth(), decide
// who may connect and what they may touch — checked with real STOMP clients (@stomp/stompjs
// over /ws, raw frames over TCP and WebSocket, stompjs 2.3 over SockJS) — and the app's
// POST /publish reaches a subscriber, and GET /messages gives back what it sent to a feed or
// project (recovery.html's reload) to those who may read it.
//
// The app's decision log (GET /auth/log) proves each answer came from the app's handler.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { stompConnect, subscribeWithReceipt, closeAll, RawStomp, AsyncQueue, withTimeout, uid } from './harness.mjs';

const require = createRequire(import.meta.url);
const { startAuthApp, createAuthRules, AUTH_PATHS } = require('../../js-examples/auth-app.js');

const T = { timeout: 30000 };
let app; // { url, listeners, stop, app, engine }
let dataDir;
let server; // the harness's view: { wsUrl, sockjsUrl, stompPort }

before(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-demo-api-'));
  app = await startAuthApp({
    env: { HERALD_STOMP_PORT: '0', HERALD_HTTP_PORT: '0', HERALD_BOSH_PORT: 'off', HERALD_DATA_DIR: dataDir },
    port: 0,
    host: '127.0.0.1',
    quiet: true,
  });
  const byName = Object.fromEntries(app.listeners.map((l) => [l.name, Number(l.addr.split(':').pop())]));
  assert.ok(byName.http, `an http listener: ${JSON.stringify(app.listeners)}`);
  assert.ok(byName['stomp-tcp'], `a stomp-tcp listener: ${JSON.stringify(app.listeners)}`);
  server = {
    wsUrl: `ws://127.0.0.1:${byName.http}/ws`,
    sockjsUrl: `http://127.0.0.1:${byName.http}/stomp`,
    stompPort: byName['stomp-tcp'],
  };
  app.base = `http://127.0.0.1:${app.server.address().port}`;
});

after(async () => {
  if (app) await withTimeout(app.stop(), 10000, 'auth app stop').catch(() => {});
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

async function authLog() {
  const r = await fetch(`${app.base}/auth/log`);
  assert.equal(r.status, 200);
  return r.json();
}

// Waits until the app's log has an entry matching `pred` (Herald may cache or call late).
async function expectDecision(pred, what, ms = 3000) {
  const until = Date.now() + ms;
  for (;;) {
    const log = await authLog();
    const hit = log.find(pred);
    if (hit) return hit;
    if (Date.now() > until)
      throw new Error(`no auth decision for ${what}; log:\n${JSON.stringify(log.slice(-15), null, 1)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function rawConnect(kind, login, passcode) {
  const r = kind === 'tcp' ? await RawStomp.tcp(server.stompPort) : await RawStomp.ws(server.wsUrl);
  const f = await r.connect({ login, passcode });
  return { r, f };
}

test('the handlers answer in the rabbitmq-auth-backend-http shape over plain HTTP too', T, async () => {
  const get = async (p, q) => {
    const res = await fetch(`${app.base}${p}?${new URLSearchParams(q)}`);
    assert.equal(res.status, 200);
    return (await res.text()).trim();
  };
  assert.equal(await get(AUTH_PATHS.user, { username: 'alice', password: 'secret' }), 'allow');
  assert.equal(await get(AUTH_PATHS.user, { username: 'guest', password: 'guest' }), 'allow administrator management');
  assert.equal(await get(AUTH_PATHS.user, { username: 'alice', password: 'nope' }), 'deny');
  assert.equal(await get(AUTH_PATHS.user, { username: 'mallory', password: 'secret' }), 'deny');
  assert.equal(await get(AUTH_PATHS.vhost, { username: 'alice', vhost: '/', ip: '127.0.0.1' }), 'allow');
  assert.equal(await get(AUTH_PATHS.vhost, { username: 'alice', vhost: 'other' }), 'deny');
  const res = (name, permission, resource = 'exchange') =>
    get(AUTH_PATHS.resource, { username: 'alice', vhost: '/', resource, name, permission });
  assert.equal(await res('feed', 'read'), 'allow');
  assert.equal(await res('presence', 'read'), 'allow');
  assert.equal(await res('presence', 'write'), 'deny');
  assert.equal(await res('alice.jobs', 'configure', 'queue'), 'allow');
  assert.equal(await res('bob.jobs', 'read', 'queue'), 'deny');
  const topic = (name, permission, routing_key, username = 'alice') =>
    get(AUTH_PATHS.topic, { username, vhost: '/', resource: 'topic', name, permission, routing_key });
  assert.equal(await topic('feed', 'read', 'alice'), 'allow');
  assert.equal(await topic('feed', 'read', 'bob'), 'deny');
  assert.equal(await topic('feed', 'write', 'bob'), 'allow');
  assert.equal(await topic('project', 'read', 'p1'), 'allow');
  assert.equal(await topic('project', 'read', 'p2'), 'deny');
  assert.equal(await topic('presence', 'read', 'p1.*'), 'allow');
  assert.equal(await topic('feed', 'read', 'bob', 'guest'), 'allow');
  // POST with a form body, as rabbitmq-auth-backend-http does with http_method = post
  const post = await fetch(`${app.base}${AUTH_PATHS.user}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'username=bob&password=secret',
  });
  assert.equal((await post.text()).trim(), 'allow');
  // the rules are plain functions too
  assert.equal(createAuthRules().user('carol', 'secret').allow, true);
});

test('an allowed user connects over /ws; Herald asked the Express /auth/user handler', T, async () => {
  const before = (await authLog()).length;
  const c = await stompConnect(server, { login: 'alice', passcode: 'secret' });
  try {
    assert.equal(c.connected.command, 'CONNECTED');
    const log = (await authLog()).slice(before);
    assert.ok(
      log.some((e) => e.path === '/auth/user' && e.username === 'alice' && e.result === 'allow'),
      `the app's /auth/user allowed alice: ${JSON.stringify(log)}`,
    );
  } finally {
    await closeAll(c);
  }
});

for (const kind of ['tcp', 'ws']) {
  test(`a wrong password and an unknown user are refused by the app's handler (STOMP over ${kind})`, T, async () => {
    for (const [login, passcode, reason] of [
      ['alice', 'not-the-password', 'bad password'],
      [`mallory${kind}`, 'secret', 'unknown user'],
    ]) {
      const { r, f } = await rawConnect(kind, login, passcode);
      try {
        assert.equal(f.command, 'ERROR', `${login}: ${f.command} ${JSON.stringify(f.headers)}`);
        assert.equal(f.headers.message, 'Bad CONNECT', `ERROR message: ${JSON.stringify(f.headers)}`);
        assert.match(f.bodyText, new RegExp(`Access refused for user '${login}'`), f.bodyText);
        await r.waitClosed(3000, 'close after a refused CONNECT');
      } finally {
        r.close();
      }
      await expectDecision(
        (e) => e.path === '/auth/user' && e.username === login && e.result === 'deny' && e.reason === reason,
        `${login} denied (${reason})`,
      );
    }
  });
}

test('resource denial: SEND to the presence exchange is refused by /auth/resource', T, async () => {
  const { r, f } = await rawConnect('ws', 'bob', 'secret');
  try {
    assert.equal(f.command, 'CONNECTED', `${f.command} ${JSON.stringify(f.headers)} ${f.bodyText}`);
    r.send(
      'SEND',
      { destination: '/exchange/presence/p1.bob', receipt: 'fake-presence', 'content-type': 'application/json' },
      '{"uid":"bob","state":"online"}',
    );
    const e = await r.expectFrame('ERROR', 5000);
    assert.match(e.headers.message || '', /refused|denied/i, JSON.stringify(e.headers));
  } finally {
    r.close();
  }
  await expectDecision(
    (e) =>
      e.path === '/auth/resource' &&
      e.username === 'bob' &&
      e.name === 'presence' &&
      e.permission === 'write' &&
      e.result === 'deny',
    'bob write presence denied',
  );
});

test("topic denial: subscribing to someone else's feed is refused by /auth/topic; your own is allowed", T, async () => {
  const { r, f } = await rawConnect('tcp', 'alice', 'secret');
  try {
    assert.equal(f.command, 'CONNECTED');
    r.send('SUBSCRIBE', { id: 'own', destination: '/exchange/feed/alice', receipt: 'own-feed' });
    const ok = await r.expectFrame('RECEIPT', 5000);
    assert.equal(ok.headers['receipt-id'], 'own-feed');
    r.send('SUBSCRIBE', { id: 'other', destination: '/exchange/feed/bob', receipt: 'bob-feed' });
    const e = await r.expectFrame('ERROR', 5000);
    assert.match(e.headers.message || '', /refused|denied/i, JSON.stringify(e.headers));
  } finally {
    r.close();
  }
  await expectDecision(
    (e) =>
      e.path === '/auth/topic' &&
      e.username === 'alice' &&
      e.name === 'feed' &&
      e.routing_key === 'bob' &&
      e.result === 'deny',
    'alice read feed/bob denied',
  );
});

test('project membership: dave may not subscribe to p1, carol may', T, async () => {
  const carol = await stompConnect(server, { login: 'carol', passcode: 'secret' });
  try {
    await subscribeWithReceipt(carol.client, '/exchange/project/p1');
  } finally {
    await closeAll(carol);
  }
  const { r } = await rawConnect('ws', 'dave', 'secret');
  try {
    r.send('SUBSCRIBE', { id: 's', destination: '/exchange/project/p1', receipt: 'p1' });
    const e = await r.expectFrame('ERROR', 5000);
    assert.match(e.headers.message || '', /refused|denied/i);
  } finally {
    r.close();
  }
  await expectDecision(
    (e) => e.path === '/auth/topic' && e.username === 'dave' && e.routing_key === 'p1' && e.result === 'deny',
    'dave p1 denied',
  );
});

test('POST /publish reaches a subscriber (@stomp/stompjs over /ws) with the JSON body and headers', T, async () => {
  const alice = await stompConnect(server, { login: 'alice', passcode: 'secret' });
  try {
    const { q } = await subscribeWithReceipt(alice.client, '/exchange/feed/alice');
    const token = uid('pub');
    const res = await fetch(`${app.base}/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        destination: '/exchange/feed/alice',
        body: { text: 'hello alice', token },
        headers: { 'x-trace': token },
      }),
    });
    assert.equal(res.status, 200);
    const out = await res.json();
    assert.ok(out.routed >= 1, `routed: ${JSON.stringify(out)}`);
    const m = await q.next(5000, 'MESSAGE from POST /publish');
    assert.deepEqual(JSON.parse(m.body), { text: 'hello alice', token });
    assert.equal(m.headers['content-type'], 'application/json');
    assert.equal(m.headers['x-trace'], token);
    assert.equal(m.headers.destination, '/exchange/feed/alice');

    // a plain-text body to the project reaches a member
    const { q: pq } = await subscribeWithReceipt(alice.client, '/exchange/project/p1');
    const r2 = await fetch(`${app.base}/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ destination: '/exchange/project/p1', body: 'standup in 5' }),
    });
    assert.equal(r2.status, 200);
    const pm = await pq.next(5000, 'project MESSAGE');
    assert.equal(pm.body, 'standup in 5');
  } finally {
    await closeAll(alice);
  }
});

test('GET /messages: what /publish sent to a feed, with its x-app-id, for the feed owner only', T, async () => {
  const basic = (u, p) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });
  const get = (dest, headers = {}) =>
    fetch(`${app.base}/messages?destination=${encodeURIComponent(dest)}`, { headers });
  const carol = await stompConnect(server, { login: 'carol', passcode: 'secret' });
  try {
    const { q } = await subscribeWithReceipt(carol.client, '/exchange/feed/carol');
    const token = uid('kept');
    const res = await fetch(`${app.base}/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ destination: '/exchange/feed/carol', body: token }),
    });
    assert.equal(res.status, 200);
    const m = await q.next(5000, 'MESSAGE from POST /publish');
    assert.match(m.headers['x-app-id'], /^\d+$/);

    const r = await get('/exchange/feed/carol', basic('carol', 'secret'));
    assert.equal(r.status, 200);
    const { messages } = await r.json();
    const kept = messages.find((x) => x.body === token);
    assert.ok(kept, JSON.stringify(messages));
    assert.equal(kept.id, m.headers['x-app-id'], 'the id the message carried');
  } finally {
    await closeAll(carol);
  }
  assert.equal((await get('/exchange/feed/carol')).status, 401, 'no credentials');
  assert.equal((await get('/exchange/feed/carol', basic('carol', 'wrong'))).status, 401, 'wrong password');
  assert.equal((await get('/exchange/feed/carol', basic('bob', 'secret'))).status, 403, "bob reads carol's feed");
  assert.equal((await get('/exchange/project/p2', basic('alice', 'secret'))).status, 403, 'alice is not in p2');
  assert.equal((await get('/queue/carol.q', basic('carol', 'secret'))).status, 400, 'not a feed or project');
  assert.equal((await get('/exchange/project/p2', basic('dave', 'secret'))).status, 200, 'a member of p2');
});

test("POST /publish with a bad destination answers 400 with the engine's error code", T, async () => {
  const res = await fetch(`${app.base}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ destination: '/queue/a/b', body: 'x' }),
  });
  assert.equal(res.status, 400);
  const out = await res.json();
  assert.ok(out.error, JSON.stringify(out));
  assert.ok(out.code, `an Error with a code: ${JSON.stringify(out)}`);
  const missing = await fetch(`${app.base}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  assert.equal(missing.status, 400);
});

test('the administrator (guest) may read any feed: stompjs 2.3 over SockJS', T, async () => {
  const SockJS = require('sockjs-client');
  const Stomp = require('stompjs');
  const messages = new AsyncQueue();
  const ws = new SockJS(server.sockjsUrl, null, { transports: ['xhr-streaming'] });
  const client = Stomp.over(ws);
  client.debug = null;
  client.heartbeat.outgoing = 0;
  client.heartbeat.incoming = 0;
  await withTimeout(
    new Promise((resolve, reject) =>
      client.connect(
        'guest',
        'guest',
        resolve,
        (e) => reject(new Error(`connect: ${typeof e === 'string' ? e : e.headers?.message}`)),
        '/',
      ),
    ),
    8000,
    'SockJS CONNECTED',
  );
  try {
    const receipt = new Promise((resolve) => (client.onreceipt = resolve));
    client.subscribe('/exchange/feed/bob', (m) => messages.push(m), { receipt: 'guest-bob' });
    await withTimeout(receipt, 5000, 'RECEIPT');
    const res = await fetch(`${app.base}/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ destination: '/exchange/feed/bob', body: 'for bob (and the admin)' }),
    });
    assert.equal(res.status, 200);
    const m = await messages.next(5000, 'MESSAGE over SockJS');
    assert.equal(m.body, 'for bob (and the admin)');
  } finally {
    await new Promise((resolve) => {
      try {
        client.disconnect(resolve);
      } catch {
        resolve();
      }
      setTimeout(resolve, 2000);
    });
    ws.close();
  }
});
