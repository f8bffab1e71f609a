// engine.useAuth: sync and async JS callbacks; throwing, rejecting and slow ones deny.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { T, RawStomp, startEngine, connectStomp, sleep, ALL_PERMISSIONS } from './helpers.mjs';

/** CONNECT and return the first frame (CONNECTED or ERROR). */
async function tryConnect(port, login, passcode) {
  const c = await RawStomp.open(port);
  const f = await c.connect(login, passcode);
  return { c, f };
}

async function withEngine(config, fn) {
  const { engine, port } = await startEngine(config);
  try {
    await fn(engine, port('stomp-tcp'));
  } finally {
    await engine.stop();
  }
}

test('sync callbacks: boolean and string answers', T, () =>
  withEngine({}, async (engine, port) => {
    const seen = [];
    engine.useAuth({
      user: (username, password, ip) => {
        seen.push(['user', username, password, ip]);
        if (username === 'carol') return 'allow';
        if (username === 'dave') return 'deny';
        return username === 'alice' && password === 'right';
      },
      vhost: (username, vhost, ip) => {
        seen.push(['vhost', username, vhost, ip]);
        return true;
      },
    });
    const ok = await connectStomp(port, 'alice', 'right');
    ok.close();
    // The client's address is the callbacks' third argument (issue 19).
    assert.deepEqual(seen.slice(0, 2), [
      ['user', 'alice', 'right', '127.0.0.1'],
      ['vhost', 'alice', '/', '127.0.0.1'],
    ]);
    for (const [login, pass] of [
      ['alice', 'wrong'],
      ['dave', 'x'],
    ]) {
      const { c, f } = await tryConnect(port, login, pass);
      assert.equal(f.command, 'ERROR', `${login} is refused`);
      c.close();
    }
    const carol = await connectStomp(port, 'carol', 'any');
    carol.close();
  }),
);

test('async callbacks: a promise of { allow, tags } and of booleans', T, () =>
  withEngine({}, async (engine, port) => {
    engine.useAuth({
      user: async (username, password) => {
        await sleep(20);
        return { allow: password === 'pw', tags: ['administrator'] };
      },
      vhost: async () => {
        await sleep(5);
        return 'allow';
      },
      resource: async (username, vhost, resource, name, permission) => {
        await sleep(5);
        return !(resource === 'exchange' && name === 'feed' && permission === 'write');
      },
    });
    const alice = await connectStomp(port, 'alice', 'pw');
    await alice.subscribe('/exchange/feed/alice');
    engine.publish('/exchange/feed/alice', 'ok');
    assert.equal((await alice.next('MESSAGE')).body, 'ok');
    // the async resource check denies writing to the feed exchange
    alice.send('SEND', { destination: '/exchange/feed/bob' }, 'nope');
    const err = await alice.next('ERROR');
    assert.match(err.body + err.headers.message, /refused|access/);
    alice.close();
    const { c, f } = await tryConnect(port, 'alice', 'bad');
    assert.equal(f.command, 'ERROR');
    c.close();
  }),
);

test('a throwing user callback denies and the process survives', T, () =>
  withEngine({}, async (engine, port) => {
    let calls = 0;
    engine.useAuth({
      user: () => {
        calls++;
        throw new Error('database exploded');
      },
    });
    for (let i = 0; i < 3; i++) {
      const { c, f } = await tryConnect(port, 'alice', 'x');
      assert.equal(f.command, 'ERROR');
      c.close();
    }
    assert.equal(calls, 3);
    // a non-Error throw is handled the same way
    engine.useAuth({
      user: () => {
        throw 'a string'; // eslint-disable-line no-throw-literal
      },
    });
    const { c, f } = await tryConnect(port, 'alice', 'x');
    assert.equal(f.command, 'ERROR');
    c.close();
    // still serving: a good callback lets alice in
    engine.useAuth({ user: () => true });
    const alice = await connectStomp(port, 'alice', 'x');
    alice.close();
  }),
);

test('a rejecting user callback denies', T, () =>
  withEngine({}, async (engine, port) => {
    engine.useAuth({ user: async () => Promise.reject(new Error('ldap down')) });
    const { c, f } = await tryConnect(port, 'alice', 'x');
    assert.equal(f.command, 'ERROR');
    c.close();
  }),
);

test('a callback slower than authTimeoutMs denies, on time', T, () =>
  withEngine({}, async (engine, port) => {
    const timers = [];
    engine.useAuth(
      {
        user: () => new Promise((resolve) => timers.push(setTimeout(() => resolve(true), 3000))),
      },
      200,
    );
    const started = Date.now();
    const { c, f } = await tryConnect(port, 'alice', 'x');
    const took = Date.now() - started;
    assert.equal(f.command, 'ERROR');
    assert.ok(took >= 150 && took < 2500, `denied after ${took} ms`);
    c.close();
    for (const t of timers) clearTimeout(t);
  }),
);

test('answers that mean neither allow nor deny deny', T, () =>
  withEngine({}, async (engine, port) => {
    for (const answer of [undefined, null, 42, 'maybe', { allow: 'yes' }]) {
      engine.useAuth({ user: () => answer });
      const { c, f } = await tryConnect(port, 'alice', 'x');
      assert.equal(f.command, 'ERROR', `answer ${JSON.stringify(answer)} denies`);
      c.close();
    }
  }),
);

test('vhost and topic callbacks deny; they get the RabbitMQ arguments', T, () =>
  withEngine({}, async (engine, port) => {
    const topicCalls = [];
    engine.useAuth({
      user: () => true,
      vhost: (username) => username !== 'mallory',
      topic: (username, vhost, exchange, routingKey, permission) => {
        topicCalls.push([username, vhost, exchange, routingKey, permission]);
        return routingKey.startsWith('public.');
      },
    });
    const { c, f } = await tryConnect(port, 'mallory', 'x');
    assert.equal(f.command, 'ERROR');
    assert.match(f.headers.message + f.body, /access denied|refused/i);
    c.close();
    const alice = await connectStomp(port, 'alice', 'x');
    alice.send('SEND', { destination: '/topic/public.news', receipt: 'r1' }, 'fine');
    assert.equal((await alice.next()).command, 'RECEIPT');
    alice.send('SEND', { destination: '/topic/secret.plans' }, 'nope');
    assert.equal((await alice.next()).command, 'ERROR');
    alice.close();
    assert.deepEqual(topicCalls, [
      ['alice', '/', 'amq.topic', 'public.news', 'write'],
      ['alice', '/', 'amq.topic', 'secret.plans', 'write'],
    ]);
  }),
);

test('omitted user keeps config users; omitted authorizer callbacks allow', T, () =>
  withEngine({ users: [{ name: 'alice', password: 'secret' }] }, async (engine, port) => {
    // config users alone have no permissions (none configured): the vhost is refused
    const { c, f } = await tryConnect(port, 'alice', 'secret');
    assert.equal(f.command, 'ERROR');
    c.close();
    const resources = [];
    engine.useAuth({ resource: (...args) => resources.push(args) > 0 });
    const alice = await connectStomp(port, 'alice', 'secret');
    await alice.subscribe('/exchange/feed/alice');
    alice.close();
    assert.ok(resources.length > 0);
    assert.deepEqual(resources[0].slice(0, 2), ['alice', '/']);
    const bad = await tryConnect(port, 'alice', 'wrong');
    assert.equal(bad.f.command, 'ERROR', 'config password still checked');
    bad.c.close();
  }),
);

test('config users with permissions work without useAuth', T, () =>
  withEngine(
    { users: [{ name: 'alice', password: 'secret' }], auth: { default_permissions: ALL_PERMISSIONS } },
    async (engine, port) => {
      const alice = await connectStomp(port, 'alice', 'secret');
      alice.close();
    },
  ),
);
