// Publishing from JS to real STOMP clients (TCP, and @stomp/stompjs over WebSocket),
// engine events, kicking.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import { T, startEngine, connectStomp, collect, waitFor, withTimeout, ALL_PERMISSIONS } from './helpers.mjs';

const users = ['alice', 'bob', 'carol'].map((name) => ({ name, password: 'secret' }));
let engine, port, messages, sessions;

before(async () => {
  ({ engine, port } = await startEngine({
    http: { listen: '127.0.0.1:0' },
    users,
    auth: { default_permissions: ALL_PERMISSIONS },
  }));
  messages = collect(engine, 'message');
  sessions = collect(engine, 'session');
});

after(async () => {
  await engine.stop();
});

test('publish to /exchange/feed/alice reaches alice over STOMP/TCP, with headers', T, async () => {
  const alice = await connectStomp(port('stomp-tcp'), 'alice');
  try {
    await alice.subscribe('/exchange/feed/alice');
    const n = engine.publish('/exchange/feed/alice', JSON.stringify({ hello: 'alice' }), {
      'content-type': 'application/json',
      'x-trace': 't1',
    });
    assert.equal(n, 1, "one queue (alice's subscription) took it");
    const m = await alice.next('MESSAGE');
    assert.equal(m.body, '{"hello":"alice"}');
    assert.equal(m.headers['content-type'], 'application/json');
    assert.equal(m.headers['x-trace'], 't1');
    assert.equal(m.headers.subscription, 'sub-0');
  } finally {
    alice.close();
  }
});

test('a Buffer body arrives byte for byte; sendToUser reaches the same feed', T, async () => {
  const bob = await connectStomp(port('stomp-tcp'), 'bob');
  try {
    await bob.subscribe('/exchange/feed/bob');
    assert.equal(engine.publish('/exchange/feed/bob', Buffer.from('héllo', 'utf8')), 1);
    assert.equal((await bob.next('MESSAGE')).body, 'héllo');
    assert.equal(engine.sendToUser('bob', 'direct', { kind: 'dm' }), 1);
    const m = await bob.next('MESSAGE');
    assert.equal(m.body, 'direct');
    assert.equal(m.headers.kind, 'dm');
    assert.equal(engine.sendToUser('nobody-listening', 'lost'), 0);
  } finally {
    bob.close();
  }
});

test('message events fire for publishes and client SENDs', T, async () => {
  const carol = await connectStomp(port('stomp-tcp'), 'carol');
  try {
    const before = messages.length;
    engine.publish('/exchange/feed/alice', 'from-api', { a: '1' });
    const ev = await waitFor('message event', () => messages.slice(before).find((m) => m.body === 'from-api'));
    assert.deepEqual(
      {
        type: ev.type,
        vhost: ev.vhost,
        exchange: ev.exchange,
        routingKey: ev.routingKey,
        destination: ev.destination,
        a: ev.headers.a,
      },
      {
        type: 'message',
        vhost: '/',
        exchange: 'feed',
        routingKey: 'alice',
        destination: '/exchange/feed/alice',
        a: '1',
      },
    );
    assert.equal(ev.sender, undefined, 'published by the application, not a user');
    carol.send('SEND', { destination: '/topic/news.tech', receipt: 'sent' }, 'from-carol');
    assert.equal((await carol.next('RECEIPT')).headers['receipt-id'], 'sent');
    const sent = await waitFor('SEND event', () => messages.find((m) => m.body === 'from-carol'));
    assert.equal(sent.exchange, 'amq.topic');
    assert.equal(sent.routingKey, 'news.tech');
    assert.equal(sent.sender, 'carol');
  } finally {
    carol.close();
  }
});

test('session events on connect and disconnect', T, async () => {
  const before = sessions.length;
  const alice = await connectStomp(port('stomp-tcp'), 'alice');
  const open = await waitFor('open event', () =>
    sessions.slice(before).find((e) => e.event === 'open' && e.uid === 'alice'),
  );
  assert.equal(open.type, 'session');
  assert.equal(open.protocol, 'stomp');
  assert.equal(open.transport, 'tcp');
  assert.equal(typeof open.session, 'number');
  assert.equal(engine.stats().sessions >= 1, true);
  alice.send('DISCONNECT', { receipt: 'bye' });
  await alice.next('RECEIPT');
  await alice.closed;
  const close = await waitFor('close event', () =>
    sessions.find((e) => e.event === 'close' && e.session === open.session),
  );
  assert.equal(close.uid, 'alice');
});

test('kick disconnects every session of a user', T, async () => {
  const a1 = await connectStomp(port('stomp-tcp'), 'alice');
  const a2 = await connectStomp(port('stomp-tcp'), 'alice');
  const b = await connectStomp(port('stomp-tcp'), 'bob');
  try {
    const before = sessions.length;
    assert.equal(engine.kick('alice'), 2);
    for (const c of [a1, a2]) {
      const f = await c.next('ERROR');
      assert.match(f.headers.message, /kicked/);
      await withTimeout(c.closed, 5000, 'kicked socket closes');
    }
    const closes = await waitFor('2 close events', () => {
      const c = sessions.slice(before).filter((e) => e.event === 'close' && e.uid === 'alice');
      return c.length === 2 && c;
    });
    assert.ok(
      closes.every((e) => /kicked/.test(e.reason)),
      JSON.stringify(closes),
    );
    // bob is untouched
    await b.subscribe('/exchange/feed/bob', 'still-here');
    assert.equal(engine.kick('nobody'), 0);
  } finally {
    for (const c of [a1, a2, b]) c.close();
  }
});

test('publish reaches @stomp/stompjs over WebSocket (/ws)', T, async () => {
  const received = [];
  const client = new Client({
    webSocketFactory: () => new WebSocket(`ws://127.0.0.1:${port('http')}/ws`, ['v12.stomp']),
    connectHeaders: { login: 'alice', passcode: 'secret', host: '/' },
    reconnectDelay: 0,
    debug: () => {},
  });
  const connected = new Promise((resolve, reject) => {
    client.onConnect = resolve;
    client.onStompError = (f) => reject(new Error(f.headers.message));
    client.onWebSocketError = () => reject(new Error('websocket error'));
  });
  client.activate();
  try {
    await withTimeout(connected, 5000, 'stompjs connects');
    await new Promise((resolve) => {
      client.subscribe('/exchange/feed/alice', (m) => received.push(m), { receipt: 'ws-sub' });
      client.watchForReceipt('ws-sub', resolve);
    });
    assert.equal(engine.publish('/exchange/feed/alice', 'over-ws', { 'content-type': 'text/plain' }), 1);
    const m = await waitFor('stompjs MESSAGE', () => received[0]);
    assert.equal(m.body, 'over-ws');
    assert.equal(m.headers['content-type'], 'text/plain');
    const open = await waitFor('ws open event', () =>
      sessions.find((e) => e.event === 'open' && e.transport !== 'tcp'),
    );
    assert.equal(open.protocol, 'stomp');
  } finally {
    await client.deactivate();
  }
});

test('a listener that throws (or rejects) is logged; the engine and process carry on', T, async () => {
  let calls = 0;
  engine.on('message', () => {
    calls++;
    throw new Error('listener bug');
  });
  engine.on('message', async () => {
    calls++;
    throw new Error('async listener bug');
  });
  const before = messages.length;
  engine.publish('/topic/x.y', 'one');
  engine.publish('/topic/x.y', 'two');
  await waitFor('both events', () => messages.length >= before + 2);
  await waitFor('throwing listeners called', () => calls >= 4);
  // still alive and routing
  const b = await connectStomp(port('stomp-tcp'), 'bob');
  try {
    await b.subscribe('/exchange/feed/bob');
    assert.equal(engine.sendToUser('bob', 'after'), 1);
    assert.equal((await b.next('MESSAGE')).body, 'after');
  } finally {
    b.close();
  }
});
