// Presence from JS: setPresence, onlineUsers, presence(), presence events, project members.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { T, startEngine, connectStomp, collect, waitFor, ALL_PERMISSIONS } from './helpers.mjs';

const users = ['alice', 'bob', 'carol', 'dave'].map((name) => ({ name, password: 'secret' }));
let engine, port, presence;

before(async () => {
  ({ engine, port } = await startEngine({
    node: { name: 'node-a' },
    users,
    auth: { default_permissions: ALL_PERMISSIONS },
    projects: [{ id: 'p1', name: 'Project One', members: ['alice', 'bob'] }],
  }));
  presence = collect(engine, 'presence');
});

after(async () => {
  await engine.stop();
});

test('a STOMP connection puts its user online; presence events and onlineUsers follow', T, async () => {
  assert.deepEqual(await engine.onlineUsers('p1'), []);
  assert.equal(await engine.presence('alice'), null);
  const alice = await connectStomp(port('stomp-tcp'), 'alice');
  try {
    const ev = await waitFor('online event', () => presence.find((e) => e.uid === 'alice' && e.state === 'online'));
    assert.deepEqual(ev, { type: 'presence', uid: 'alice', state: 'online', status: '' });
    await waitFor('alice in p1', async () => (await engine.onlineUsers('p1')).includes('alice'));
    const p = await engine.presence('alice');
    assert.equal(p.state, 'online');
    assert.equal(p.node, 'node-a');
    assert.ok(Math.abs(Date.now() - p.updated) < 60000, `updated ${p.updated} is a recent epoch-ms time`);
  } finally {
    alice.close();
  }
  await waitFor('offline event', () => presence.find((e) => e.uid === 'alice' && e.state === 'offline'));
  await waitFor('alice gone from p1', async () => !(await engine.onlineUsers('p1')).includes('alice'));
});

test("setPresence changes a connected user's state and status; busy means dnd", T, async () => {
  const bob = await connectStomp(port('stomp-tcp'), 'bob');
  try {
    await waitFor('bob online', async () => (await engine.presence('bob'))?.state === 'online');
    const before = presence.length;
    assert.equal(await engine.setPresence('bob', 'away', 'lunch'), 1);
    const ev = await waitFor('away event', () =>
      presence.slice(before).find((e) => e.uid === 'bob' && e.state === 'away'),
    );
    assert.equal(ev.status, 'lunch');
    assert.deepEqual((({ state, status }) => ({ state, status }))(await engine.presence('bob')), {
      state: 'away',
      status: 'lunch',
    });
    assert.equal(await engine.setPresence('bob', 'busy'), 1);
    assert.equal((await engine.presence('bob')).state, 'dnd');
    assert.deepEqual(await engine.onlineUsers('p1'), ['bob'], 'away/dnd users are still online');
  } finally {
    bob.close();
  }
});

test('setPresence for a user without sessions changes nothing; a bad state is ERR_HERALD_ARGUMENT', T, async () => {
  assert.equal(await engine.setPresence('carol', 'online'), 0);
  assert.equal(await engine.presence('carol'), null);
  assert.throws(() => engine.setPresence('carol', 'sleepy'), { code: 'ERR_HERALD_ARGUMENT', message: /sleepy/ });
});

test('setProjectMembers: online sets follow the new membership', T, async () => {
  const carol = await connectStomp(port('stomp-tcp'), 'carol');
  const dave = await connectStomp(port('stomp-tcp'), 'dave');
  try {
    await waitFor(
      'carol and dave online',
      async () =>
        (await engine.presence('carol'))?.state === 'online' && (await engine.presence('dave'))?.state === 'online',
    );
    assert.deepEqual(await engine.onlineUsers('p2'), []);
    await engine.setProjectMembers('p2', ['carol', 'dave', 'eve']);
    assert.deepEqual(await engine.onlineUsers('p2'), ['carol', 'dave']);
    await engine.setProjectMembers('p2', ['dave']);
    assert.deepEqual(await engine.onlineUsers('p2'), ['dave']);
    // a presence change now reaches p2's presence exchange: dave's project subscription sees it
    const before = presence.length;
    await engine.setPresence('dave', 'xa', 'gone fishing');
    await waitFor('xa event', () => presence.slice(before).find((e) => e.uid === 'dave' && e.state === 'xa'));
  } finally {
    carol.close();
    dave.close();
  }
});
