// engine.useExpressAuth: an unchanged Express app with rabbitmq-auth-backend-http
// routes answers Herald's auth questions in-process; the app never listens.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import express from 'express';
import { T, RawStomp, startEngine, connectStomp, sleep } from './helpers.mjs';

const passwords = { alice: 'secret', admin: 'root' };

/** The rabbitmq-auth-backend-http example app, as a team already runs it. */
function authApp(log) {
  const app = express();
  app.use(express.urlencoded({ extended: false }));
  const params = (req) => (req.method === 'POST' ? req.body : req.query);
  const route = (path, decide) => {
    const handler = (req, res) => {
      const p = { ...params(req) };
      log.push([path, req.method, p]);
      res.send(decide(p));
    };
    app.get(path, handler);
    app.post(path, handler);
  };
  route('/auth/user', ({ username, password }) => {
    if (passwords[username] !== password) return 'deny';
    return username === 'admin' ? 'allow administrator management' : 'allow';
  });
  route('/auth/vhost', ({ vhost }) => (vhost === '/' ? 'allow' : 'deny'));
  route('/auth/resource', ({ resource, name, permission, tags }) => {
    // only administrators may publish to the feed exchange
    const ok =
      !(resource === 'exchange' && name === 'feed' && permission === 'write') ||
      tags.split(' ').includes('administrator');
    return ok ? 'allow' : 'deny';
  });
  route('/auth/topic', ({ routing_key: key }) => (key.startsWith('private.') ? 'deny' : 'allow'));
  app.get('/broken/user', () => {
    throw new Error('handler bug');
  });
  app.get('/slow/user', (req, res) => setTimeout(() => res.send('allow'), 2000));
  app.listen = () => {
    throw new Error('the app must not listen');
  };
  return app;
}

// Every server socket a test opens, to show that none is (engine listeners are native).
let listens = 0;
const realListen = net.Server.prototype.listen;
before(() => {
  net.Server.prototype.listen = function (...args) {
    listens++;
    return realListen.apply(this, args);
  };
});
after(() => {
  net.Server.prototype.listen = realListen;
});

let current;
afterEach(async () => {
  if (current) await current.stop();
  current = undefined;
});

async function setup(paths, timeoutMs) {
  const log = [];
  const { engine, port } = await startEngine();
  current = engine;
  engine.useExpressAuth(authApp(log), paths, timeoutMs);
  return { engine, port: port('stomp-tcp'), log };
}

test('logins go to GET /auth/user with username and password; allow/deny decide', T, async () => {
  const { port, log } = await setup();
  const alice = await connectStomp(port, 'alice', 'secret');
  alice.close();
  const bad = await RawStomp.open(port);
  assert.equal((await bad.connect('alice', 'wrong')).command, 'ERROR');
  bad.close();
  assert.deepEqual(log[0], ['/auth/user', 'GET', { username: 'alice', password: 'secret', ip: '127.0.0.1' }]);
  assert.deepEqual(log[1], ['/auth/vhost', 'GET', { username: 'alice', vhost: '/', ip: '127.0.0.1', tags: '' }]);
  assert.equal(listens, 0, 'no listening socket was opened');
});

test('tags from `allow <tags>` flow into later checks; a denied SEND gets an ERROR', T, async () => {
  const { engine, port, log } = await setup();
  const admin = await connectStomp(port, 'admin', 'root');
  const vhostQuery = log.find(([path, , p]) => path === '/auth/vhost' && p.username === 'admin')[2];
  assert.equal(vhostQuery.tags, 'administrator management');
  await admin.subscribe('/exchange/feed/admin');
  admin.send('SEND', { destination: '/exchange/feed/admin', receipt: 'r' }, 'from admin');
  assert.equal((await admin.next('RECEIPT')).headers['receipt-id'], 'r');
  assert.equal((await admin.next('MESSAGE')).body, 'from admin');
  admin.close();
  const writeCheck = log.find(
    ([path, , p]) => path === '/auth/resource' && p.username === 'admin' && p.permission === 'write',
  )[2];
  assert.deepEqual(writeCheck, {
    username: 'admin',
    vhost: '/',
    resource: 'exchange',
    name: 'feed',
    permission: 'write',
    tags: 'administrator management',
  });

  // alice has no administrator tag: the resource handler denies her SEND
  const alice = await connectStomp(port, 'alice', 'secret');
  await alice.subscribe('/exchange/feed/alice');
  alice.send('SEND', { destination: '/exchange/feed/alice' }, 'not allowed');
  const err = await alice.next('ERROR');
  assert.match(`${err.headers.message} ${err.body}`, /refused/);
  await alice.closed;
  assert.equal(engine.stats().sessions, 0);
  assert.equal(listens, 0);
});

test('topic checks send resource=topic, name=<exchange> and routing_key', T, async () => {
  const { port, log } = await setup();
  const alice = await connectStomp(port, 'alice', 'secret');
  alice.send('SEND', { destination: '/topic/public.news', receipt: 'ok' }, 'hi');
  assert.equal((await alice.next()).command, 'RECEIPT');
  alice.send('SEND', { destination: '/topic/private.news' }, 'hi');
  assert.equal((await alice.next()).command, 'ERROR');
  alice.close();
  const topics = log.filter(([path]) => path === '/auth/topic').map(([, , p]) => p);
  assert.deepEqual(topics[0], {
    username: 'alice',
    vhost: '/',
    resource: 'topic',
    name: 'amq.topic',
    permission: 'write',
    tags: '',
    routing_key: 'public.news',
  });
  assert.equal(topics[1].routing_key, 'private.news');
});

test('POST sends the same parameters as a form body; custom paths', T, async () => {
  const { port, log } = await setup({ method: 'POST', user: '/auth/user' });
  const alice = await connectStomp(port, 'alice', 'secret');
  alice.close();
  assert.deepEqual(log[0], ['/auth/user', 'POST', { username: 'alice', password: 'secret', ip: '127.0.0.1' }]);
  assert.equal(log[1][1], 'POST');
});

test('a handler that throws (HTTP 500), a missing route (404) or a slow one denies', T, async () => {
  for (const [paths, timeout] of [
    [{ user: '/broken/user' }],
    [{ user: '/no/such/route' }],
    [{ user: '/slow/user' }, 200],
  ]) {
    const { port } = await setup(paths, timeout);
    const started = Date.now();
    const c = await RawStomp.open(port);
    assert.equal((await c.connect('alice', 'secret')).command, 'ERROR', JSON.stringify(paths));
    assert.ok(Date.now() - started < 1500, 'denied without waiting for the slow handler');
    c.close();
    await current.stop();
    current = undefined;
  }
  await sleep(10);
});

test('bad arguments are ERR_HERALD_ARGUMENT', T, async () => {
  const { engine } = await setup();
  assert.throws(() => engine.useExpressAuth({}), { code: 'ERR_HERALD_ARGUMENT' });
  assert.throws(() => engine.useExpressAuth(express(), { method: 'PUT' }), {
    code: 'ERR_HERALD_ARGUMENT',
    message: /PUT/,
  });
});
