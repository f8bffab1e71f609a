// Legacy stompjs 2.3.3 over sockjs-client 1.6.1 at /stomp — the snippet RabbitMQ Web-STOMP
// users have in their pages, run once per SockJS transport that works in Node.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';
import { startHerald, RawStomp, AsyncQueue, sleep, uid } from './harness.mjs';

const require = createRequire(import.meta.url);
const SockJS = require('sockjs-client');
const Stomp = require('stompjs');

const T = { timeout: 30000 };
let server;

before(async () => {
  server = await startHerald();
});

after(async () => {
  if (server) await server.stop();
});

// The page: exactly what RabbitMQ's Web-STOMP examples do, instrumented with queues.
function page(url, transports, login = 'guest', passcode = 'guest') {
  const messages = new AsyncQueue();
  const errors = new AsyncQueue();
  const connected = new AsyncQueue();
  const receipts = new AsyncQueue();
  var ws = new SockJS(url, null, { transports });
  var client = Stomp.over(ws);
  client.debug = null;
  client.heartbeat.outgoing = 0;
  client.heartbeat.incoming = 0;
  client.onreceipt = (frame) => receipts.push(frame);
  var on_connect = (frame) => {
    connected.push(frame);
  };
  var on_error = (err) => {
    errors.push(err);
  };
  client.connect(login, passcode, on_connect, on_error, '/');
  return { ws, client, messages, errors, connected, receipts };
}

async function connectedPage(transport, opts = {}) {
  const p = page(server.sockjsUrl, [transport], opts.login, opts.passcode);
  const frame = await Promise.race([
    p.connected.next(8000, `CONNECTED over SockJS/${transport}`),
    p.errors.next(8000, 'error').then((e) => {
      throw new Error(`connect failed over SockJS/${transport}: ${typeof e === 'string' ? e : JSON.stringify(e)}`);
    }),
  ]);
  return { p, frame };
}

function closePage(p) {
  return new Promise((resolve) => {
    if (p.ws.readyState === SockJS.CLOSED) return resolve();
    p.ws.addEventListener('close', () => resolve());
    try {
      p.client.disconnect(() => {});
    } catch {
      p.ws.close();
    }
    setTimeout(resolve, 2000);
  });
}

function httpGet(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(3000, () => req.destroy(new Error('GET timed out')));
  });
}

test('SockJS /stomp/info answers like a SockJS server', T, async () => {
  const r = await httpGet(`${server.sockjsUrl}/info`);
  assert.equal(r.status, 200);
  const info = JSON.parse(r.body);
  assert.equal(info.websocket, true);
  assert.equal(typeof info.cookie_needed, 'boolean');
  assert.ok(Array.isArray(info.origins));
  assert.equal(typeof info.entropy, 'number');
});

for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource']) {
  test(`RabbitMQ Web-STOMP snippet over SockJS/${transport}: the page gets its own message`, T, async () => {
    const { p, frame } = await connectedPage(transport);
    try {
      assert.equal(p.ws.transport, transport, 'SockJS used the forced transport');
      assert.equal(frame.command, 'CONNECTED');
      assert.ok(['1.0', '1.1'].includes(frame.headers.version ?? '1.0'), `version ${frame.headers.version}`);
      // stompjs 2.3 sent heart-beat:0,0 → no heart-beats either way
      assert.ok(frame.headers['heart-beat'] === undefined || frame.headers['heart-beat'] === '0,0');

      // --- the snippet ---
      const data = `hello over ${transport} — ünïcode ✓ "quotes" \\ backslash`;
      p.client.subscribe('/exchange/feed/user_x', (m) => p.messages.push(m));
      p.client.send('/exchange/feed/user_x', { 'content-type': 'text/plain' }, data);
      // --- end of snippet ---

      const m = await p.messages.next(5000, `MESSAGE over SockJS/${transport}`);
      assert.equal(m.command, 'MESSAGE');
      assert.equal(m.body, data);
      assert.equal(m.headers.destination, '/exchange/feed/user_x');
      assert.equal(m.headers['content-type'], 'text/plain');
      assert.ok(m.headers['message-id']);

      // a message from another connection (plain STOMP over TCP) reaches the page too
      // (sent as guest, the suite's administrator: user_x is nobody's contact, and
      // [access] keeps plain users to their contacts' feeds)
      const tcp = await RawStomp.tcp(server.stompPort);
      try {
        const c = await tcp.connect({ login: 'guest', passcode: 'guest' });
        assert.equal(c.command, 'CONNECTED');
        tcp.send(
          'SEND',
          { destination: '/exchange/feed/user_x', 'content-type': 'text/plain', receipt: 'r' },
          'from bob',
        );
        assert.equal((await tcp.expectFrame('RECEIPT')).headers['receipt-id'], 'r');
      } finally {
        tcp.close();
      }
      const m2 = await p.messages.next(5000, 'MESSAGE from another client');
      assert.equal(m2.body, 'from bob');

      // stompjs 2.3 splits frames over 16 KiB into several SockJS messages
      const big = `${'B'.repeat(40 * 1024)}end`;
      p.client.send('/exchange/feed/user_x', { 'content-type': 'text/plain' }, big);
      const m3 = await p.messages.next(8000, 'large MESSAGE (frame split over SockJS messages)');
      assert.equal(m3.body.length, big.length);
      assert.equal(m3.body, big);
      assert.equal(p.errors.length, 0, 'no error callback');
    } finally {
      await closePage(p);
    }
  });
}

for (const transport of ['websocket', 'xhr-streaming']) {
  test(`bad login over SockJS/${transport} calls the error callback with ERROR Bad CONNECT`, T, async () => {
    const p = page(server.sockjsUrl, [transport], 'guest', 'not-the-password');
    try {
      const err = await p.errors.next(8000, 'error callback');
      assert.equal(typeof err, 'object', `expected an ERROR frame, got ${JSON.stringify(err)}`);
      assert.equal(err.command, 'ERROR');
      assert.equal(err.headers.message, 'Bad CONNECT');
      assert.equal(err.body.replace(/\n$/, ''), "Access refused for user 'guest'");
      assert.equal(p.connected.length, 0, 'must not be connected');
      // the server then closes the session: stompjs reports the lost connection
      const lost = await p.errors.next(5000, 'lost-connection callback after ERROR');
      assert.match(String(lost), /Lost connection/);
    } finally {
      await closePage(p);
    }
  });
}

test('SockJS sessions are independent: one session ERROR leaves another receiving', T, async () => {
  const good = await connectedPage('xhr-streaming');
  const bad = page(server.sockjsUrl, ['websocket']);
  try {
    const dest = `/exchange/feed/${uid('iso')}`;
    good.p.client.subscribe(dest, (m) => good.p.messages.push(m), { receipt: 'iso-sub' });
    const rc = await good.p.receipts.next(5000, 'RECEIPT for SUBSCRIBE');
    assert.equal(rc.headers['receipt-id'], 'iso-sub');
    await bad.connected.next(8000, 'second page CONNECTED');
    // a frame the server must reject: SUBSCRIBE to /amq/queue/ of a queue that does not exist
    bad.client.subscribe(`/amq/queue/does-not-exist-${uid('q')}`, () => {});
    const err = await bad.errors.next(5000, 'ERROR for /amq/queue of a missing queue');
    assert.equal(err.command, 'ERROR');
    await sleep(200);
    good.p.client.send(dest, {}, 'still alive');
    const m = await good.p.messages.next(5000, 'message to the unaffected session');
    assert.equal(m.body, 'still alive');
  } finally {
    await closePage(bad);
    await closePage(good.p);
  }
});

for (const transport of ['websocket', 'xhr-streaming']) {
  test(`oversized frame over SockJS/${transport}: ERROR "frame larger than" to the error callback`, T, async () => {
    const small = await startHerald({ limits: { max_frame_bytes: 65536 } });
    const p = page(small.sockjsUrl, [transport]);
    try {
      await p.connected.next(8000, 'CONNECTED');
      // stompjs 2.3 cuts this into 16 KiB SockJS messages; the STOMP frame is still > 64 KiB
      p.client.send('/exchange/feed/user_x', {}, 'O'.repeat(100 * 1024));
      const err = await p.errors.next(8000, 'error callback');
      assert.equal(typeof err, 'object', `expected an ERROR frame, got ${JSON.stringify(err)}`);
      assert.equal(err.command, 'ERROR');
      assert.match(err.headers.message, /frame larger than/);
    } finally {
      await closePage(p);
      await small.stop();
    }
  });
}

// A STOMP frame under max_frame_bytes must pass whatever its SockJS encoding costs: sockjs-client
// JSON-escapes (a '"' becomes 2 bytes; each UTF-16 surrogate of an emoji becomes a 6-byte \uXXXX,
// so a 4-byte emoji costs 12) and batches queued messages into one xhr_send POST, so the POST body
// can be several times the STOMP frame.
for (const transport of ['xhr-streaming', 'xhr-polling', 'websocket']) {
  test(
    `a frame under max_frame_bytes that grows when JSON-escaped still passes over SockJS/${transport}`,
    T,
    async () => {
      const small = await startHerald({ limits: { max_frame_bytes: 65536 } });
      const p = page(small.sockjsUrl, [transport]);
      try {
        await p.connected.next(8000, 'CONNECTED');
        // 8000 emoji: 32 000 bytes as a STOMP body (well under 64 KiB), ~96 KB as the SockJS JSON message
        const body = '\u{1F600}'.repeat(8000);
        p.client.subscribe('/exchange/feed/user_x', (m) => p.messages.push(m));
        p.client.send('/exchange/feed/user_x', { 'content-type': 'text/plain' }, body);
        const m = await Promise.race([
          p.messages.next(8000, 'MESSAGE'),
          p.errors.next(8000, 'error').then((e) => {
            throw new Error(`session failed instead: ${typeof e === 'string' ? e : JSON.stringify(e.headers)}`);
          }),
        ]);
        assert.equal(m.body, body);
      } finally {
        await closePage(p);
        await small.stop();
      }
    },
  );
}
