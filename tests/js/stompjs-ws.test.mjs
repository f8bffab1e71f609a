// @stomp/stompjs 7 over Herald's WebSocket endpoint /ws (RabbitMQ Web-STOMP semantics).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald,
  stompConnect,
  subscribeWithReceipt,
  publishWithReceipt,
  closeAll,
  RawStomp,
  AsyncQueue,
  WebSocket,
  sleep,
  uid,
  withTimeout,
} from './harness.mjs';
import { Client } from '@stomp/stompjs';

const T = { timeout: 30000 };
let server;

before(async () => {
  server = await startHerald();
});

after(async () => {
  if (server) await server.stop();
});

const _utf8 = (b) => Buffer.from(b).toString('utf8');
const stripNl = (s) => s.replace(/\n$/, '');

test('connects over /ws, negotiates v12.stomp and STOMP 1.2', T, async () => {
  const c = await stompConnect(server, { login: 'alice', passcode: 'secret' });
  try {
    assert.equal(c.socket().protocol, 'v12.stomp');
    assert.equal(c.connected.command, 'CONNECTED');
    assert.equal(c.connected.headers.version, '1.2');
  } finally {
    await closeAll(c);
  }
});

test('WebSocket subprotocols: each version, none, and the highest of several', T, async () => {
  for (const [protocols, accept, version, expected] of [
    [['v10.stomp'], '1.0', '1.0'],
    [['v11.stomp'], '1.1', '1.1'],
    [['v12.stomp'], '1.2', '1.2'],
    [[], '1.0,1.1,1.2', '1.2'],
    // Several offered: the highest version wins, whatever the order (RabbitMQ 3.10's
    // Web-STOMP answers `v10.stomp, v11.stomp` with v11.stomp).
    [['v10.stomp', 'v11.stomp'], '1.1', '1.1', 'v11.stomp'],
    [['v10.stomp', 'v12.stomp', 'v11.stomp'], '1.2', '1.2', 'v12.stomp'],
  ]) {
    const r = await RawStomp.ws(server.wsUrl, protocols);
    try {
      const chosen = expected ?? protocols[0] ?? '';
      assert.equal(r.protocol, chosen, `negotiated subprotocol for ${JSON.stringify(protocols)}`);
      const f = await r.connect({ acceptVersion: accept });
      assert.equal(f.command, 'CONNECTED', `${f.command} ${f.bodyText}`);
      if (version === '1.0') {
        // a 1.0 CONNECTED may omit version; if present it must be 1.0
        assert.ok(f.headers.version === undefined || f.headers.version === '1.0', `version=${f.headers.version}`);
      } else {
        assert.equal(f.headers.version, version);
      }
    } finally {
      r.close();
    }
  }
});

test('exchange destination: subscriber gets body and headers sent by a second client', T, async () => {
  const alice = await stompConnect(server, { login: 'alice', passcode: 'secret' });
  const bob = await stompConnect(server, { login: 'bob', passcode: 'secret' });
  try {
    // alice reads her own feed; bob, a contact (p1), writes to it ([access]).
    const dest = '/exchange/feed/alice';
    const { sub, q } = await subscribeWithReceipt(alice.client, dest);
    // another routing key on the same topic exchange must not reach the alice binding
    await publishWithReceipt(bob.client, { destination: '/exchange/feed/carol', body: 'not for alice' });
    const body = 'héllo alice — ünïcode ✓';
    await publishWithReceipt(bob.client, {
      destination: dest,
      body,
      headers: { 'content-type': 'text/plain', 'x-trace-id': 'trace-42' },
    });
    const m = await q.next(3000, 'MESSAGE on /exchange/feed/alice');
    assert.equal(m.command, 'MESSAGE');
    assert.equal(m.body, body);
    assert.equal(m.headers.destination, dest);
    assert.equal(m.headers.subscription, sub.id);
    assert.ok(m.headers['message-id'], 'message-id header present');
    assert.equal(m.headers.redelivered, 'false');
    assert.equal(m.headers['content-length'], String(Buffer.byteLength(body)));
    assert.equal(m.headers['content-type'], 'text/plain');
    assert.equal(m.headers['x-trace-id'], 'trace-42');
    await q.expectNone(400, 'second MESSAGE (carol must not match alice)');
  } finally {
    await closeAll(alice, bob);
  }
});

test('receipts for SUBSCRIBE, SEND, UNSUBSCRIBE and DISCONNECT (raw frames)', T, async () => {
  const r = await RawStomp.ws(server.wsUrl);
  try {
    const c = await r.connect();
    assert.equal(c.command, 'CONNECTED');
    const dest = `/exchange/feed/${uid('rcpt')}`;
    r.send('SUBSCRIBE', { id: 's1', destination: dest, receipt: 'r-sub' });
    let f = await r.expectFrame('RECEIPT');
    assert.equal(f.headers['receipt-id'], 'r-sub');
    r.send('SEND', { destination: dest, receipt: 'r-send' }, 'payload');
    // RECEIPT and MESSAGE may come in either order
    const got = [await r.next(3000), await r.next(3000)];
    const rc = got.find((x) => x.command === 'RECEIPT');
    const msg = got.find((x) => x.command === 'MESSAGE');
    assert.ok(rc, `RECEIPT expected, got ${got.map((x) => x.command)}`);
    assert.equal(rc.headers['receipt-id'], 'r-send');
    assert.ok(msg, 'MESSAGE expected');
    assert.equal(msg.bodyText, 'payload');
    assert.equal(msg.headers.subscription, 's1');
    r.send('UNSUBSCRIBE', { id: 's1', receipt: 'r-unsub' });
    f = await r.expectFrame('RECEIPT');
    assert.equal(f.headers['receipt-id'], 'r-unsub');
    r.send('SEND', { destination: dest }, 'after unsubscribe');
    r.send('DISCONNECT', { receipt: 'r-disc' });
    f = await r.expectFrame('RECEIPT');
    assert.equal(f.headers['receipt-id'], 'r-disc', 'no MESSAGE may arrive after UNSUBSCRIBE');
    await r.waitClosed(3000, 'server to close after DISCONNECT receipt');
  } finally {
    r.close();
  }
});

test('client-individual ack, NACK requeue → redelivered:true, NACK requeue:false drops', T, async () => {
  const consumer = await stompConnect(server);
  const producer = await stompConnect(server);
  try {
    const dest = `/queue/${uid('nack')}`;
    const { q } = await subscribeWithReceipt(consumer.client, dest, { ack: 'client-individual' });
    await publishWithReceipt(producer.client, { destination: dest, body: 'm1' });
    const first = await q.next(3000, 'first delivery');
    assert.equal(first.body, 'm1');
    assert.equal(first.headers.redelivered, 'false');
    assert.ok(first.headers.ack, 'STOMP 1.2 MESSAGE in client-individual mode carries an ack header');
    first.nack(); // requeue defaults to true
    const again = await q.next(3000, 'redelivery after NACK');
    assert.equal(again.body, 'm1');
    assert.equal(again.headers.redelivered, 'true');
    again.ack();
    await q.expectNone(500, 'delivery after ACK');

    await publishWithReceipt(producer.client, { destination: dest, body: 'm2' });
    const m2 = await q.next(3000, 'm2');
    assert.equal(m2.body, 'm2');
    m2.nack({ requeue: 'false' });
    await q.expectNone(600, 'redelivery after NACK requeue:false');

    // and the consumer still works
    await publishWithReceipt(producer.client, { destination: dest, body: 'm3' });
    const m3 = await q.next(3000, 'm3');
    assert.equal(m3.body, 'm3');
    assert.equal(m3.headers.redelivered, 'false');
    m3.ack();
  } finally {
    await closeAll(consumer, producer);
  }
});

test('client ack mode is cumulative; unacked messages are redelivered to the next consumer', T, async () => {
  const producer = await stompConnect(server);
  const c1 = await stompConnect(server);
  let c2;
  try {
    const dest = `/queue/${uid('cumul')}`;
    const { q } = await subscribeWithReceipt(c1.client, dest, { ack: 'client' });
    for (const b of ['a', 'b', 'c']) await publishWithReceipt(producer.client, { destination: dest, body: b });
    const ms = [await q.next(3000), await q.next(3000), await q.next(3000)];
    assert.deepEqual(
      ms.map((m) => m.body),
      ['a', 'b', 'c'],
    );
    // ACK of 'b' in client mode acknowledges 'a' and 'b'
    const receipt = uid('ack');
    const acked = new Promise((res) => c1.client.watchForReceipt(receipt, res));
    ms[1].ack({ receipt });
    await withTimeout(acked, 3000, 'RECEIPT for ACK');
    await closeAll(c1);
    c2 = await stompConnect(server);
    const s2 = await subscribeWithReceipt(c2.client, dest, { ack: 'client-individual' });
    const r = await s2.q.next(3000, 'redelivery of the unacked message');
    assert.equal(r.body, 'c');
    assert.equal(r.headers.redelivered, 'true');
    r.ack();
    await s2.q.expectNone(500, 'redelivery of a cumulatively acked message');
  } finally {
    await closeAll(producer, c1, c2);
  }
});

test('transactions: COMMIT delivers, ABORT discards', T, async () => {
  const sub = await stompConnect(server);
  const pub = await stompConnect(server);
  try {
    const dest = `/exchange/feed/${uid('tx')}`;
    const { q } = await subscribeWithReceipt(sub.client, dest);

    const tx = pub.client.begin();
    pub.client.publish({ destination: dest, body: 'tx-1', headers: { transaction: tx.id } });
    pub.client.publish({ destination: dest, body: 'tx-2', headers: { transaction: tx.id } });
    await q.expectNone(400, 'MESSAGE before COMMIT');
    tx.commit();
    // @stomp/stompjs' commit() takes no headers; a receipt-bearing SEND afterwards orders things
    await publishWithReceipt(pub.client, { destination: dest, body: 'after-commit' });
    const got = [await q.next(3000), await q.next(3000), await q.next(3000)];
    assert.deepEqual(
      got.map((m) => m.body),
      ['tx-1', 'tx-2', 'after-commit'],
    );

    const tx2 = pub.client.begin();
    pub.client.publish({ destination: dest, body: 'aborted', headers: { transaction: tx2.id } });
    tx2.abort();
    await publishWithReceipt(pub.client, { destination: dest, body: 'control' });
    const c = await q.next(3000, 'control message');
    assert.equal(c.body, 'control', 'an aborted SEND must never be delivered');
    await q.expectNone(400, 'MESSAGE after ABORT');
  } finally {
    await closeAll(sub, pub);
  }
});

test('topic wildcards: /topic/a.*.c and /topic/a.#', T, async () => {
  const sub = await stompConnect(server);
  const pub = await stompConnect(server);
  try {
    const star = await subscribeWithReceipt(sub.client, '/topic/a.*.c');
    const hash = await subscribeWithReceipt(sub.client, '/topic/a.#');
    const keys = ['a.b.c', 'a.b.b.c', 'a.c', 'a', 'a.b', 'b.a.c', 'a.xyz.c', 'x.a.b'];
    for (const k of keys) await publishWithReceipt(pub.client, { destination: `/topic/${k}`, body: k });
    const collect = async (s, n) => {
      const out = [];
      for (let i = 0; i < n; i++) out.push(await s.q.next(3000, `message ${i + 1}/${n}`));
      await s.q.expectNone(400, 'extra message');
      return out;
    };
    const starGot = await collect(star, 2);
    assert.deepEqual(
      starGot.map((m) => m.body),
      ['a.b.c', 'a.xyz.c'],
    );
    assert.equal(starGot[0].headers.destination, '/topic/a.b.c');
    assert.equal(starGot[0].headers.subscription, star.sub.id);
    const hashGot = await collect(hash, 6);
    assert.deepEqual(
      hashGot.map((m) => m.body),
      ['a.b.c', 'a.b.b.c', 'a.c', 'a', 'a.b', 'a.xyz.c'],
    );
  } finally {
    await closeAll(sub, pub);
  }
});

test('work queue /queue/jobs is shared round-robin between two consumers', T, async () => {
  const w1 = await stompConnect(server, { login: 'alice', passcode: 'secret' });
  const w2 = await stompConnect(server, { login: 'bob', passcode: 'secret' });
  const boss = await stompConnect(server, { login: 'carol', passcode: 'secret' });
  try {
    const dest = '/queue/jobs';
    const s1 = await subscribeWithReceipt(w1.client, dest);
    const s2 = await subscribeWithReceipt(w2.client, dest);
    const N = 10;
    for (let i = 0; i < N; i++) await publishWithReceipt(boss.client, { destination: dest, body: `job-${i}` });
    const got1 = [];
    const got2 = [];
    for (let i = 0; i < N / 2; i++) got1.push((await s1.q.next(3000, `worker1 job ${i}`)).body);
    for (let i = 0; i < N / 2; i++) got2.push((await s2.q.next(3000, `worker2 job ${i}`)).body);
    await s1.q.expectNone(300, 'more than half the jobs on worker1');
    await s2.q.expectNone(100, 'more than half the jobs on worker2');
    const all = [...got1, ...got2].sort();
    assert.deepEqual(all, Array.from({ length: N }, (_, i) => `job-${i}`).sort(), 'each job delivered exactly once');
    // strict alternation (RabbitMQ round-robins consumers of one queue)
    const idx = (s) => Number(s.split('-')[1]);
    const parity1 = new Set(got1.map((s) => idx(s) % 2));
    assert.equal(parity1.size, 1, `worker1 got ${got1}`);
  } finally {
    await closeAll(w1, w2, boss);
  }
});

test('binary bodies with NULs round-trip byte for byte', T, async () => {
  const sub = await stompConnect(server);
  const pub = await stompConnect(server);
  try {
    const dest = `/exchange/feed/${uid('bin')}`;
    const { q } = await subscribeWithReceipt(sub.client, dest);
    const allBytes = new Uint8Array(512);
    for (let i = 0; i < allBytes.length; i++) allBytes[i] = i % 256;
    const utf8WithNuls = new TextEncoder().encode('a\u0000b\u0000\u0000c');
    for (const bytes of [utf8WithNuls, allBytes]) {
      await publishWithReceipt(pub.client, {
        destination: dest,
        binaryBody: bytes,
        headers: { 'content-type': 'application/octet-stream' },
      });
      const m = await q.next(3000, 'binary MESSAGE').catch((e) => {
        throw new Error(
          `${e.message}; subscriber websocket closes: ${JSON.stringify(sub.closes.items.map((c) => [c.code, c.reason]))}`,
        );
      });
      assert.equal(m.headers['content-length'], String(bytes.length));
      assert.equal(Buffer.compare(Buffer.from(m.binaryBody), Buffer.from(bytes)), 0, 'body bytes differ');
    }
    // the subscriber's socket survived (an invalid-UTF-8 text frame would have killed it)
    assert.equal(sub.closes.length, 0, 'subscriber websocket closed');
  } finally {
    await closeAll(sub, pub);
  }
});

// Heart-beat intervals are whole seconds so the exact values are RabbitMQ-compatible
// (RabbitMQ rounds heart-beat values to seconds).
test('heart-beats: CONNECTED answers like RabbitMQ and both sides keep the connection alive', T, async () => {
  const c = await stompConnect(server, { heartbeatOutgoing: 2000, heartbeatIncoming: 1000 });
  try {
    // client sent heart-beat:2000,1000 → server sends every 1000ms and expects every 2000ms
    assert.equal(c.connected.headers['heart-beat'], '1000,2000');
    await subscribeWithReceipt(c.client, `/exchange/feed/${uid('hb')}`);
    await sleep(3500); // @stomp/stompjs drops the socket if the server sends nothing for ~2×1000ms
    assert.equal(c.closes.length, 0, 'connection closed while both sides heart-beat');
    assert.ok(c.client.connected);
    await publishWithReceipt(c.client, { destination: '/exchange/feed/hb-still-alive', body: 'x' });
  } finally {
    await closeAll(c);
  }
});

test('heart-beats: server sends EOLs at the client requested interval (raw frames)', T, async () => {
  const r = await RawStomp.ws(server.wsUrl);
  try {
    const f = await r.connect({ heartBeat: '0,1000' });
    assert.equal(f.headers['heart-beat'], '1000,0');
    const before = r.decoder.heartbeats;
    await sleep(3300);
    const n = r.decoder.heartbeats - before;
    assert.ok(n >= 2 && n <= 8, `expected ~3 heart-beats in 3.3s at 1000ms, got ${n}`);
    assert.ok(!r.isClosed);
  } finally {
    r.close();
  }
});

test('heart-beats: a client silent for more than 2× its send interval is disconnected', T, async () => {
  const silent = await RawStomp.ws(server.wsUrl);
  const chatty = await RawStomp.ws(server.wsUrl);
  let timer;
  try {
    const f = await silent.connect({ heartBeat: '1000,0' });
    assert.equal(f.headers['heart-beat'], '0,1000');
    const f2 = await chatty.connect({ heartBeat: '1000,0' });
    assert.equal(f2.headers['heart-beat'], '0,1000');
    const t0 = Date.now();
    timer = setInterval(() => chatty.sendRaw('\n'), 300);
    await silent.waitClosed(6000, 'server to drop the silent client');
    const elapsed = silent.closedAt - t0;
    assert.ok(elapsed >= 1500, `closed too early (${elapsed}ms): must tolerate up to 2×1000ms of silence`);
    await sleep(Math.max(0, 4500 - (Date.now() - t0)));
    assert.ok(!chatty.isClosed, 'a client that keeps heart-beating must stay connected');
    chatty.send('SUBSCRIBE', { id: 's', destination: '/queue/hb-check', receipt: 'alive' });
    const rc = await chatty.expectFrame('RECEIPT');
    assert.equal(rc.headers['receipt-id'], 'alive');
  } finally {
    clearInterval(timer);
    silent.close();
    chatty.close();
  }
});

async function expectBadLogin(login, passcode) {
  const errors = new AsyncQueue();
  const closes = new AsyncQueue();
  let connected = false;
  const client = new Client({
    webSocketFactory: () => new WebSocket(server.wsUrl, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
    connectHeaders: { login, passcode, host: '/' },
    reconnectDelay: 0,
    debug: () => {},
  });
  client.onConnect = () => (connected = true);
  client.onStompError = (f) => errors.push(f);
  client.onWebSocketClose = (e) => closes.push(e);
  client.activate();
  try {
    const err = await errors.next(5000, 'ERROR frame for bad login');
    assert.equal(err.command, 'ERROR');
    assert.equal(err.headers.message, 'Bad CONNECT');
    assert.equal(stripNl(err.body), `Access refused for user '${login}'`);
    await closes.next(3000, 'server to close after ERROR');
    assert.equal(connected, false);
  } finally {
    await client.deactivate({ force: true }).catch(() => {});
  }
}

test('bad login: ERROR message:Bad CONNECT, then the server closes', T, async () => {
  await expectBadLogin('alice', 'wrong-password');
  await expectBadLogin('mallory', 'secret');
});

test('oversized frame: ERROR "frame larger than", connection closed, other sessions unaffected', T, async () => {
  const bystander = await stompConnect(server);
  const pub = await stompConnect(server);
  const r = await RawStomp.ws(server.wsUrl);
  try {
    const dest = `/exchange/feed/${uid('big')}`;
    const { q } = await subscribeWithReceipt(bystander.client, dest);
    await r.connect();
    r.send('SEND', { destination: dest }, Buffer.alloc(1048576 + 4096, 0x61)); // default max_frame_bytes = 1 MiB
    const err = await r.expectFrame('ERROR', 5000);
    assert.match(err.headers.message ?? '', /frame larger than/);
    await r.waitClosed(3000);
    await q.expectNone(300, 'the oversized message must not be routed');
    await publishWithReceipt(pub.client, { destination: dest, body: 'still here' });
    const m = await q.next(3000, 'bystander delivery after another session errored');
    assert.equal(m.body, 'still here');
    assert.equal(bystander.closes.length, 0);
  } finally {
    r.close();
    await closeAll(bystander, pub);
  }
});

test('max_frame_bytes is configurable: 40 KiB passes and 100 KiB fails under a 64 KiB limit', T, async () => {
  const small = await startHerald({ limits: { max_frame_bytes: 65536 } });
  try {
    const r = await RawStomp.ws(small.wsUrl);
    const dest = `/exchange/feed/${uid('lim')}`;
    await r.connect();
    r.send('SUBSCRIBE', { id: 's', destination: dest, receipt: 'sub' });
    await r.expectFrame('RECEIPT');
    const ok = Buffer.alloc(40 * 1024, 0x62);
    r.send('SEND', { destination: dest }, ok);
    const m = await r.expectFrame('MESSAGE');
    assert.equal(m.body.length, ok.length);
    r.send('SEND', { destination: dest }, Buffer.alloc(100 * 1024, 0x63));
    const err = await r.expectFrame('ERROR');
    assert.match(err.headers.message ?? '', /frame larger than/);
    await r.waitClosed(3000);
    r.close();
  } finally {
    await small.stop();
  }
});

test('frames split over several WebSocket messages (@stomp/stompjs splitLargeFrames) are reassembled', T, async () => {
  const sub = await stompConnect(server);
  const pub = await stompConnect(server);
  try {
    const dest = `/exchange/feed/${uid('split')}`;
    const { q } = await subscribeWithReceipt(sub.client, dest);
    pub.client.splitLargeFrames = true; // 8 KiB WebSocket messages
    const body = `${'S'.repeat(100 * 1024)}|end`;
    await publishWithReceipt(pub.client, { destination: dest, body });
    const m = await q.next(5000, 'reassembled MESSAGE');
    assert.equal(m.body.length, body.length);
    assert.equal(m.body, body);
  } finally {
    await closeAll(sub, pub);
  }
});

test('several frames in one WebSocket message are all processed', T, async () => {
  const r = await RawStomp.ws(server.wsUrl);
  try {
    await r.connect();
    const dest = `/exchange/feed/${uid('multi')}`;
    const { encodeFrame } = await import('./harness.mjs');
    const batch = Buffer.concat([
      encodeFrame('SUBSCRIBE', { id: 's', destination: dest, receipt: 'r1' }),
      encodeFrame('SEND', { destination: dest }, 'one'),
      Buffer.from('\n'), // a heart-beat EOL between frames
      encodeFrame('SEND', { destination: dest }, 'two'),
    ]);
    r.sendRaw(batch.toString('utf8'));
    const got = [await r.next(), await r.next(), await r.next()];
    assert.deepEqual(
      got.map((f) => f.command),
      ['RECEIPT', 'MESSAGE', 'MESSAGE'],
    );
    assert.deepEqual(
      got.slice(1).map((f) => f.bodyText),
      ['one', 'two'],
    );
  } finally {
    r.close();
  }
});

test('every subscriber of the same exchange destination gets its own copy', T, async () => {
  const a = await stompConnect(server, { login: 'alice', passcode: 'secret' });
  const b = await stompConnect(server, { login: 'bob', passcode: 'secret' });
  const p = await stompConnect(server, { login: 'carol', passcode: 'secret' });
  try {
    // alice, bob and carol are p1's members: [access] lets only members use project/p1.
    const dest = '/exchange/project/p1';
    const sa = await subscribeWithReceipt(a.client, dest);
    const sb = await subscribeWithReceipt(b.client, dest);
    await publishWithReceipt(p.client, { destination: dest, body: 'broadcast' });
    assert.equal((await sa.q.next(3000, 'copy for alice')).body, 'broadcast');
    assert.equal((await sb.q.next(3000, 'copy for bob')).body, 'broadcast');
    await sa.q.expectNone(300, 'duplicate');
  } finally {
    await closeAll(a, b, p);
  }
});
