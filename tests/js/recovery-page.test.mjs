// js-examples/public/recovery.html in Debian's Chromium (playwright-core): @stomp/stompjs
// resuming its feed after a reconnect from the last x-stream-offset / x-stream-epoch it saw.
// The example app (auth-app.js, Herald in-process) runs as a child process with a short
// history window (HERALD_HISTORY_TTL_MS), publishing through its own POST /publish.
//   1. Herald drops alice's connection (admin API: POST /api/users/alice/kick). While the
//      page waits to reconnect, 10 messages are published to her feed; the page resubscribes
//      from the next offset and gets all 10 in order, its RECEIPT says x-recovered: true and
//      it does not reload.
//   2. alice clicks Disconnect (the page's WebSocket closes), 3 messages are published and
//      the history window passes; on Connect the RECEIPT says x-recovered: false and the
//      page reloads her feed from the app (GET /messages), which has the 3.
// Screenshots: tests/artifacts/recovery-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { withTimeout } from './harness.mjs';
import { ARTIFACTS, launchChromium, startExample } from './browser.mjs';

const T = { timeout: 90000 };
const TTL_SECS = 6; // the history window of this run: longer than a reconnect, short to wait out
const RECONNECT_MS = 2500; // the page's reconnect delay: the test publishes meanwhile
const TOKEN = 'recovery-page-test-token';
const FEED = '/exchange/feed/alice';

let srv; // startExample(): { child, base, output(), stop() }
let admin; // http://127.0.0.1:<admin port>
let browser;
let page;
const logs = [];

before(async () => {
  srv = await startExample('js-examples/auth-app.js', /Herald examples: (http:\/\/\S+)/, {
    HERALD_BOSH_PORT: 'off',
    HERALD_ADMIN_TOKEN: TOKEN,
    HERALD_HISTORY_TTL_MS: String(TTL_SECS * 1000),
  });
  const m = /herald: listening admin (\S+)/.exec(srv.output());
  assert.ok(m, `the app printed its admin listener\n${srv.output()}`);
  admin = `http://${m[1]}`;
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  page = await context.newPage();
  page.on('console', (msg) => logs.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(`${srv.base}/recovery.html?reconnectDelay=${RECONNECT_MS}`, { timeout: 15000 });
});

after(async () => {
  if (browser) await withTimeout(browser.close(), 10000, 'browser close').catch(() => {});
  if (srv) await srv.stop();
});

const pageState = () => page.evaluate(() => window.state);

async function wait(fn, arg, what, timeout = 10000) {
  try {
    await page.waitForFunction(fn, arg, { timeout });
  } catch (e) {
    await page.screenshot({ path: path.join(ARTIFACTS, 'recovery-failed.png') }).catch(() => {});
    const state = await page.evaluate(() => JSON.stringify(window.state)).catch((x) => String(x));
    throw new Error(
      `recovery.html: ${what}: ${e.message}\nstate: ${state}\nconsole:\n${logs.join('\n')}\n--- app (tail) ---\n${srv.output().slice(-3000)}`,
    );
  }
}

async function publish(body) {
  const r = await fetch(`${srv.base}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ destination: FEED, body }),
  });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  return JSON.parse(text);
}

// The feed's RECEIPT of CONNECT number n (1 = the first).
const feedReceipt = (state, n) => state.receipts.find((r) => r.destination === FEED && r.connect === n);

test('the page signs in, subscribes with a receipt and gets offsets and epochs on its feed', T, async () => {
  await page.fill('#user', 'alice');
  await page.fill('#pass', 'secret');
  await page.click('#connect');
  await wait(
    (feed) => window.state.connected && window.state.reloads.some((r) => r.destination === feed && r.connect === 1),
    FEED,
    'connected, first subscribe answered and the feed loaded from the app',
  );
  const s0 = await pageState();
  // The first subscribe has no position: nothing to recover, the state comes from the app.
  assert.equal(feedReceipt(s0, 1).recovered, null);

  await publish('m0');
  await wait((feed) => window.state.received.some((m) => m.destination === feed), FEED, 'the live message m0');
  const [m0] = (await pageState()).received;
  assert.equal(m0.body, 'm0');
  assert.ok(Number.isInteger(m0.offset) && m0.offset >= 0, `x-stream-offset is an offset: ${JSON.stringify(m0)}`);
  assert.ok(m0.epoch, `x-stream-epoch is set: ${JSON.stringify(m0)}`);
});

test(
  'dropped by the server, 10 pushes meanwhile: all 10 replayed in order, x-recovered: true, no reload',
  T,
  async () => {
    const before = await pageState();
    const last = before.received.at(-1);

    const r = await fetch(`${admin}/api/users/alice/kick`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(r.status, 200, await r.text());
    await wait(() => !window.state.connected, null, 'the page sees its connection dropped');

    for (let i = 1; i <= 10; i++) await publish(`m${i}`);
    // All 10 went out while the page was away (it reconnects after RECONNECT_MS).
    assert.equal((await pageState()).connected, false, 'the page reconnected before the 10 were published');

    await wait(
      ([feed, n]) => window.state.received.filter((m) => m.destination === feed && m.connect === 2).length >= n,
      [FEED, 10],
      'the 10 messages after the reconnect',
      15000,
    );
    await wait((feed) => window.state.receipts.some((x) => x.destination === feed && x.connect === 2), FEED, 'receipt');
    const s = await pageState();
    assert.equal(s.connects, 2);
    assert.equal(feedReceipt(s, 2).recovered, 'true', JSON.stringify(s.receipts));
    const got = s.received.filter((m) => m.destination === FEED && m.connect === 2);
    assert.deepEqual(
      got.map((m) => m.body),
      ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9', 'm10'],
    );
    assert.deepEqual(
      got.map((m) => m.offset),
      Array.from({ length: 10 }, (_, i) => last.offset + 1 + i),
      'consecutive offsets right after the last one seen',
    );
    for (const m of got) assert.equal(m.epoch, last.epoch);
    assert.ok(!s.reloads.some((x) => x.destination === FEED && x.connect === 2), 'recovered: no reload from the app');
    // No duplicate: every offset of the feed once in all.
    const feedOffsets = s.received.filter((m) => m.destination === FEED).map((m) => m.offset);
    assert.deepEqual(feedOffsets, [last.offset, ...got.map((m) => m.offset)]);
    await page.screenshot({ path: path.join(ARTIFACTS, 'recovery-recovered.png') });
  },
);

test('away longer than the history window: x-recovered: false and the page reloads from the app', T, async () => {
  await page.click('#disconnect');
  await wait(() => !window.state.connected, null, 'the page disconnected');
  for (const b of ['n1', 'n2', 'n3']) await publish(b);
  await new Promise((r) => setTimeout(r, TTL_SECS * 1000 + 2000));

  await page.click('#connect');
  await wait(
    (feed) => window.state.reloads.some((x) => x.destination === feed && x.connect === 3),
    FEED,
    'the reload after a failed recovery',
    15000,
  );
  const s = await pageState();
  assert.equal(feedReceipt(s, 3).recovered, 'false', JSON.stringify(s.receipts));
  const reload = s.reloads.find((x) => x.destination === FEED && x.connect === 3);
  assert.equal(reload.count, 14, 'the app kept m0..m10 and n1..n3');
  // The page shows the 3 it missed, from the app.
  const text = await page.textContent('#messages');
  for (const b of ['n1', 'n2', 'n3']) assert.match(text, new RegExp(`${b}\\s+\\(from the app\\)`));

  // And it is live again, with a position in the stream.
  await publish('after');
  await wait(
    (feed) => window.state.received.some((m) => m.destination === feed && m.body === 'after'),
    FEED,
    'a live message after the reload',
  );
  const after = (await pageState()).received.at(-1);
  assert.equal(after.connect, 3);
  assert.ok(Number.isInteger(after.offset), JSON.stringify(after));
  await page.screenshot({ path: path.join(ARTIFACTS, 'recovery-reloaded.png') });
});
