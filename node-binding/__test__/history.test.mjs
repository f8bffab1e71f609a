// engine.history(): the retained history of feed and project keys, with the
// offsets and epoch a STOMP subscriber sees, and recovery decided as a
// SUBSCRIBE with x-stream-offset decides it (docs/history.md).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { T, startEngine, connectStomp, ALL_PERMISSIONS } from './helpers.mjs';

const users = ['alice', 'bob'].map((name) => ({ name, password: 'secret' }));
let engine, port;

before(async () => {
  ({ engine, port } = await startEngine({
    users,
    auth: { default_permissions: ALL_PERMISSIONS },
    projects: [{ id: 'p1', members: ['alice', 'bob'] }],
    history: { size: 5 },
  }));
});

after(async () => {
  await engine.stop();
});

test('history returns what subscribers saw, with offsets and the epoch', T, async () => {
  const alice = await connectStomp(port('stomp-tcp'), 'alice');
  try {
    await alice.subscribe('/exchange/feed/alice');
    for (let i = 1; i <= 7; i++) engine.sendToUser('alice', `m${i}`, { n: String(i) });
    const live = [];
    for (let i = 1; i <= 7; i++) live.push(await alice.next('MESSAGE'));
    const h = engine.history('/exchange/feed/alice');
    assert.equal(h.epoch, live[0].headers['x-stream-epoch']);
    assert.equal(h.top, 7);
    assert.equal(h.recovered, undefined);
    assert.deepEqual(
      h.messages.map((m) => [m.offset, m.body, m.headers.n]),
      [3, 4, 5, 6, 7].map((o) => [o, `m${o}`, String(o)]),
      'the last history.size (5) are kept',
    );
    assert.deepEqual(
      live.map((m) => Number(m.headers['x-stream-offset'])),
      [1, 2, 3, 4, 5, 6, 7],
    );

    const caughtUp = engine.history('/exchange/feed/alice', { since: 6, epoch: h.epoch, limit: 1 });
    assert.equal(caughtUp.recovered, true);
    assert.deepEqual(
      caughtUp.messages.map((m) => m.offset),
      [6],
    );
    const tooOld = engine.history('/exchange/feed/alice', { since: 2, epoch: h.epoch });
    assert.equal(tooOld.recovered, false);
    assert.equal(tooOld.messages.length, 5);
    assert.equal(engine.history('/exchange/feed/alice', { since: 7, epoch: 'other' }).recovered, false);
    assert.deepEqual(
      engine.history('/exchange/feed/alice', { since: 'last' }).messages.map((m) => m.offset),
      [7],
    );
    const fresh = engine.history('/exchange/project/p1', { since: 'next' });
    assert.equal(fresh.top, 0);
    assert.equal(fresh.recovered, true);
    assert.ok(fresh.epoch.length > 0);
  } finally {
    alice.close();
  }
});

test('history refuses other destinations and bad positions with typed errors', T, () => {
  assert.throws(() => engine.history('/topic/news'), { code: 'ERR_HERALD_DESTINATION' });
  assert.throws(() => engine.history('/queue/jobs'), { code: 'ERR_HERALD_DESTINATION' });
  assert.throws(() => engine.history('/exchange/feed/alice', { since: 'soon' }), {
    code: 'ERR_HERALD_ARGUMENT',
    message: /invalid x-stream-offset/,
  });
  assert.throws(() => engine.history('/exchange/feed/alice', { since: -1 }), { code: 'ERR_HERALD_ARGUMENT' });
});
