// The XMPP scenarios with production-like backends: presence in Redis (redis-server
// started here on a free port) and the project directory in MongoDB (SecantusDB's
// secantusd-py, a MongoDB-wire server, seeded with the official `mongodb` driver).
// Project names differ from their ids, so roster groups show which source they came from,
// and Redis keys are checked directly.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startXmppHerald, startRedis, startMongo, XmppClient, track, eventually, bare } from './xmpp-harness.mjs';
import { defineXmppScenarios, stompGuest } from './xmpp-scenarios.mjs';

const prefix = `herald-test-${crypto.randomBytes(6).toString('hex')}:`;
const database = `herald_test_${crypto.randomBytes(4).toString('hex')}`;
const ctx = { transport: 'websocket, redis+mongodb', altPath: '/ws', groups: { p1: 'Project One', p2: 'Project Two' } };
let redis;
let mongo;

before(async () => {
  redis = await startRedis();
  mongo = await startMongo();
  const db = mongo.client.db(database);
  await db.collection('projects').insertMany([
    { _id: 'p1', name: 'Project One', members: ['alice', 'bob', 'carol'] },
    { _id: 'p2', name: 'Project Two', members: ['carol', 'dave', 'eve'] },
  ]);
  // the same projects under custom field names, for the field-mapping test
  await db.collection('teams').insertMany([
    { key: 'p1', title: 'Team Uno', users: ['alice', 'bob', 'carol'] },
    { key: 'p2', title: 'Team Dos', users: ['carol', 'dave', 'eve'] },
  ]);
  ctx.server = await startXmppHerald({
    presence: { backend: 'redis', url: redis.url, prefix },
    directory: { backend: 'mongodb', uri: mongo.uri, database },
  });
  ctx.service = ctx.server.xmppWsUrl;
  ctx.altService = ctx.server.xmppWsAltUrl;
  ctx.redis = { client: redis.client, prefix };
});

after(async () => {
  if (ctx.server) await ctx.server.stop();
  if (mongo) await mongo.stop();
  if (redis) await redis.stop();
});

describe('XMPP with Redis presence and MongoDB directory', () => {
  defineXmppScenarios(ctx);

  test('Redis: online set and presence hash follow alice through online, away and disconnect', async (t) => {
    const r = redis.client;
    const alice = await XmppClient.connect(ctx.service, 'alice', { presence: true });
    t.after(() => alice.close());
    await eventually(
      async () => (await r.smembers(`${prefix}online:p1`)).includes('alice'),
      5000,
      `SMEMBERS ${prefix}online:p1 contains alice`,
    );
    assert.ok(!(await r.smembers(`${prefix}online:p2`)).includes('alice'), 'alice is not in p2');
    const h = await eventually(
      async () => {
        const x = await r.hgetall(`${prefix}presence:alice`);
        return x.state === 'online' ? x : null;
      },
      5000,
      'presence:alice state=online',
    );
    for (const f of ['state', 'node', 'updated']) assert.ok(f in h, `presence hash lacks ${f}: ${JSON.stringify(h)}`);
    assert.ok(Number.isFinite(Number(h.updated)) || !Number.isNaN(Date.parse(h.updated)), `updated=${h.updated}`);
    alice.sendPresence({ show: 'away', status: 'brb' });
    await eventually(
      async () => {
        const x = await r.hgetall(`${prefix}presence:alice`);
        return x.state === 'away' && x.status === 'brb';
      },
      5000,
      'presence:alice state=away status=brb',
    );
    await alice.disconnect();
    await eventually(
      async () => !(await r.smembers(`${prefix}online:p1`)).includes('alice'),
      5000,
      'alice removed from online:p1',
    );
    await eventually(
      async () => {
        const x = await r.hgetall(`${prefix}presence:alice`);
        return Object.keys(x).length === 0 || x.state === 'offline';
      },
      5000,
      'presence:alice cleared',
    );
    const keys = await r.cmd('KEYS', `${prefix}*`);
    assert.ok(Array.isArray(keys));
  });

  test("Redis: carol is in both projects' online sets and leaves both on an abrupt drop", async (t) => {
    const r = redis.client;
    const carol = await XmppClient.connect(ctx.service, 'carol', { presence: true });
    t.after(() => carol.close());
    await eventually(
      async () =>
        (await r.smembers(`${prefix}online:p1`)).includes('carol') &&
        (await r.smembers(`${prefix}online:p2`)).includes('carol'),
      5000,
      'carol in online:p1 and online:p2',
    );
    carol.kill();
    await eventually(
      async () =>
        !(await r.smembers(`${prefix}online:p1`)).includes('carol') &&
        !(await r.smembers(`${prefix}online:p2`)).includes('carol'),
      8000,
      'carol gone from both online sets',
    );
  });

  test('Redis: a STOMP-only user is online in Redis too', async (t) => {
    const r = redis.client;
    const s = await stompGuest(ctx.server, 'eve', 'secret');
    t.after(() => s.close());
    await eventually(
      async () => (await r.smembers(`${prefix}online:p2`)).includes('eve'),
      5000,
      'eve (STOMP) in online:p2',
    );
    s.send('DISCONNECT', {});
    s.close();
    await eventually(
      async () => !(await r.smembers(`${prefix}online:p2`)).includes('eve'),
      5000,
      'eve removed after STOMP disconnect',
    );
  });

  test('BOSH with the same backends: login and roster groups from MongoDB', async (t) => {
    const bob = await track(t, XmppClient.connect(ctx.server.boshUrl, 'bob'));
    const items = await bob.roster();
    assert.deepEqual(items.map((i) => `${i.jid}:${i.groups.join(',')}`).sort(), [
      'alice@localhost:Project One',
      'carol@localhost:Project One',
    ]);
  });
});

describe('MongoDB directory with custom collection and field names', () => {
  let server;
  before(async () => {
    server = await startXmppHerald({
      directory: {
        backend: 'mongodb',
        uri: mongo.uri,
        database,
        collection: 'teams',
        id_field: 'key',
        name_field: 'title',
        members_field: 'users',
      },
    });
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('roster groups come from the configured name field', async (t) => {
    const carol = await track(t, XmppClient.connect(server.xmppWsUrl, 'carol'));
    const items = await carol.roster();
    const m = Object.fromEntries(items.map((i) => [bare(i.jid), i.groups]));
    assert.deepEqual(m, {
      'alice@localhost': ['Team Uno'],
      'bob@localhost': ['Team Uno'],
      'dave@localhost': ['Team Dos'],
      'eve@localhost': ['Team Dos'],
    });
  });
});
