// Constructing, starting and stopping an engine; config errors; error codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Engine, RawStomp, T, connectStomp, startEngine, ALL_PERMISSIONS } from './helpers.mjs';

test('new Engine() with no config binds nothing; start and stop resolve', T, async () => {
  const engine = new Engine();
  assert.deepEqual(await engine.start(), []);
  await engine.stop();
});

test('start resolves with the bound listeners; stop closes them', T, async () => {
  const engine = new Engine({ stomp: { listen: '127.0.0.1:0' }, http: { listen: '127.0.0.1:0' } });
  const listeners = await engine.start();
  assert.deepEqual(listeners.map((l) => l.name).sort(), ['http', 'stomp-tcp']);
  for (const l of listeners) {
    assert.match(l.addr, /^127\.0\.0\.1:\d+$/);
    assert.equal(l.addr, `127.0.0.1:${l.port}`);
    assert.ok(l.port > 0);
  }
  const stomp = listeners.find((l) => l.name === 'stomp-tcp');
  const c = await RawStomp.open(stomp.port);
  c.close();
  await engine.stop();
  await assert.rejects(RawStomp.open(stomp.port), /ECONNREFUSED/);
});

test('stop closes open sessions with a shutdown error', T, async () => {
  const { engine, port } = await startEngine({
    users: [{ name: 'alice', password: 'secret' }],
    auth: { default_permissions: ALL_PERMISSIONS },
  });
  const c = await connectStomp(port('stomp-tcp'), 'alice');
  await engine.stop();
  const f = await c.next('ERROR');
  assert.match(f.headers.message, /shutting down/);
  await c.closed;
});

test('an unknown config key is an ERR_HERALD_CONFIG error naming the key', T, () => {
  assert.throws(
    () => new Engine({ stomp: { listn: '127.0.0.1:0' } }),
    (e) => {
      assert.ok(e instanceof Error);
      assert.equal(e.code, 'ERR_HERALD_CONFIG');
      assert.match(e.message, /stomp\.listn/);
      return true;
    },
  );
  assert.throws(() => new Engine({ nope: true }), { code: 'ERR_HERALD_CONFIG', message: /`nope`/ });
});

test('wrong types and invalid values are ERR_HERALD_CONFIG errors naming the key', T, () => {
  assert.throws(() => new Engine({ limits: { max_frame_bytes: 'lots' } }), {
    code: 'ERR_HERALD_CONFIG',
    message: /limits\.max_frame_bytes/,
  });
  assert.throws(() => new Engine({ limits: { max_frame_bytes: 3 } }), {
    code: 'ERR_HERALD_CONFIG',
    message: /limits\.max_frame_bytes.*at least 256/,
  });
  assert.throws(() => new Engine({ stomp: { listen: 'localhost' } }), {
    code: 'ERR_HERALD_CONFIG',
    message: /stomp\.listen/,
  });
  assert.throws(() => new Engine({ users: [{ name: 'x' }] }), { code: 'ERR_HERALD_CONFIG', message: /users\[0\]/ });
  assert.throws(() => new Engine('stomp'), { code: 'ERR_HERALD_CONFIG', message: /expected an object/ });
  assert.throws(() => new Engine({ node: { name: 10n } }), { code: 'ERR_HERALD_CONFIG', message: /BigInt/ });
});

test('undefined config properties are ignored, as JSON drops them', T, async () => {
  const engine = new Engine({ stomp: { listen: '127.0.0.1:0', tls: undefined }, http: undefined });
  const listeners = await engine.start();
  assert.deepEqual(
    listeners.map((l) => l.name),
    ['stomp-tcp'],
  );
  await engine.stop();
});

test('a taken port rejects start with ERR_HERALD_LISTEN naming the address', T, async () => {
  const blocker = net.createServer();
  await new Promise((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const { port } = blocker.address();
  try {
    const engine = new Engine({ stomp: { listen: `127.0.0.1:${port}` } });
    await assert.rejects(engine.start(), (e) => {
      assert.ok(e instanceof Error);
      assert.equal(e.code, 'ERR_HERALD_LISTEN');
      assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      return true;
    });
  } finally {
    blocker.close();
  }
});

test('starting twice rejects with ERR_HERALD_STATE', T, async () => {
  const { engine } = await startEngine();
  await assert.rejects(engine.start(), { code: 'ERR_HERALD_STATE' });
  await engine.stop();
});

test('publish errors carry codes: destination, route', T, () => {
  const engine = new Engine();
  assert.throws(() => engine.publish('/nowhere/x', 'hi'), { code: 'ERR_HERALD_DESTINATION', message: /nowhere/ });
  assert.throws(() => engine.publish('/exchange/missing/key', 'hi'), { code: 'ERR_HERALD_ROUTE', message: /missing/ });
  assert.throws(() => engine.publish('/amq/queue/absent', 'hi'), { code: 'ERR_HERALD_ROUTE', message: /absent/ });
  assert.throws(() => engine.on('bogus', () => {}), { code: 'ERR_HERALD_ARGUMENT', message: /bogus/ });
});

test('stats() has camelCase fields', T, async () => {
  const engine = new Engine({ node: { name: 'embedded@test' } });
  engine.publish('/queue/jobs', 'one');
  const s = engine.stats();
  assert.equal(s.node, 'embedded@test');
  assert.equal(s.sessions, 0);
  assert.equal(s.usersOnline, 0);
  assert.deepEqual(s.sessionsByTransport, {});
  assert.equal(s.queues, 1);
  assert.equal(s.messagesReady, 1);
  assert.equal(s.messagesUnacked, 0);
  assert.equal(typeof s.uptimeSecs, 'number');
});

test('the generated typings declare the whole API', T, async () => {
  const { readFile } = await import('node:fs/promises');
  const dts = await readFile(new URL('../index.d.ts', import.meta.url), 'utf8');
  assert.match(dts, /auto-generated by NAPI-RS/);
  for (const name of [
    'start',
    'stop',
    'publish',
    'sendToUser',
    'setPresence',
    'onlineUsers',
    'presence',
    'setProjectMembers',
    'kick',
    'stats',
    'on',
    'once',
    'useAuth',
    'useExpressAuth',
  ]) {
    assert.match(dts, new RegExp(`\\n  ${name}[<(]`), `index.d.ts declares ${name}`);
  }
});

// A child Node process: does it exit by itself, and when?
function runChild(body) {
  const main = fileURLToPath(new URL('../main.js', import.meta.url));
  const script = `const { Engine } = require(${JSON.stringify(main)}); const t0 = Date.now();\n${body}`;
  const started = Date.now();
  const r = spawnSync(process.execPath, ['-e', script], { timeout: 3000, encoding: 'utf8' });
  return { ...r, ms: Date.now() - started };
}

test('a started engine keeps Node alive until stop(); listeners and auth callbacks do not', T, () => {
  const running = runChild(`
    const e = new Engine({ stomp: { listen: '127.0.0.1:0' } })
    e.on('session', () => {})
    e.useAuth({ user: () => true })
    e.start().then(() => console.log('started'))`);
  assert.equal(running.stdout.trim(), 'started');
  assert.equal(running.signal, 'SIGTERM', 'still running when the 3 s timeout killed it');

  const stopped = runChild(`
    const e = new Engine({ stomp: { listen: '127.0.0.1:0' } })
    e.start().then(() => setTimeout(() => e.stop().then(() => console.log('stopped')), 100))`);
  assert.equal(stopped.stdout.trim(), 'stopped');
  assert.equal(stopped.status, 0);
  assert.ok(stopped.ms < 2500, `exited ${stopped.ms} ms after spawn`);

  const idle = runChild(`
    const e = new Engine()
    e.on('message', () => {})
    e.useAuth({ user: () => true })`);
  assert.equal(idle.status, 0, 'an engine never started does not hold the process');
});

test('useAuth() without callbacks is ERR_HERALD_ARGUMENT', T, () => {
  assert.throws(() => new Engine().useAuth(), { code: 'ERR_HERALD_ARGUMENT' });
});
