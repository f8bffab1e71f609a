// The admin console (admin-app, built into admin-app/dist) served by the real herald
// binary at /admin/, driven in Debian's headless Chromium (playwright-core), with real
// @stomp/stompjs clients making the changes it must show live:
//   a wrong token is refused with the server's message; login; alice appears within 2 s
//   of connecting; a queue's depth follows SENDs; server-side sort; kick a user (her
//   client is disconnected) and a single session; purge; the publish form; overview
//   numbers and charts update; 20,000 online users stay a handful of DOM rows.
// Screenshots: tests/artifacts/admin-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  startHerald,
  stompConnect,
  publishWithReceipt,
  closeAll,
  withTimeout,
  sleep,
  USERS,
  PROJECTS,
} from './harness.mjs';
import { ARTIFACTS, ROOT, launchChromium } from './browser.mjs';

const T = { timeout: 60000 };
const TOKEN = `t0ken-${crypto.randomBytes(12).toString('hex')}`;
const DIST = path.join(ROOT, 'admin-app', 'dist');
const QUEUE = 'admin-test';
const OTHER_QUEUE = 'admin-test-small';
const N = 5;

let server;
let browser;
let context;
let page;
let base; // http://127.0.0.1:<admin port>
const logs = [];
const clients = [];

/** The built console must exist; a missing or placeholder build is a failure, never a skip. */
function assertDist() {
  const index = path.join(DIST, 'index.html');
  const hint = 'build the console first: npm run build -w herald-admin (or `npm run build` in admin-app/)';
  if (!fs.existsSync(index)) throw new Error(`${index} is missing: ${hint}. Tests never skip on a missing build.`);
  const html = fs.readFileSync(index, 'utf8');
  const m = /<script[^>]+src="\.\/(assets\/[^"]+\.js)"/.exec(html);
  if (!m || !fs.existsSync(path.join(DIST, m[1]))) {
    throw new Error(`${index} is not a Vite build of admin-app (no ./assets/*.js script): ${hint}`);
  }
}

async function api(method, p, body) {
  const r = await fetch(`${base}${p}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${p}: ${r.status} ${text}`);
  return JSON.parse(text);
}

async function shot(name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `admin-${name}.png`) });
}

/** Waits for a page predicate; on timeout saves a screenshot and reports console and server output. */
async function waitFor(fn, arg, what, timeout = 5000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    const name = `failed-${what.replace(/[^a-z0-9]+/gi, '-').slice(0, 50)}`;
    await shot(name).catch(() => {});
    const out = server ? server.output() : { stdout: '', stderr: '' };
    throw new Error(
      `${what}: ${e.message}\nscreenshot: tests/artifacts/admin-${name}.png\n--- console ---\n${logs.slice(-40).join('\n')}\n--- herald stderr (tail) ---\n${out.stderr.slice(-2000)}`,
    );
  }
}

const text = (sel) => page.$eval(sel, (el) => el.textContent.trim());
const go = async (route) => {
  await page.evaluate((r) => (location.hash = r), `#/${route}`);
  await waitFor((r) => document.getElementById('view')?.dataset.view === r, route, `${route} screen`);
};
const queueDepth = (name) =>
  page.evaluate(
    (n) => document.querySelector(`.vl-row[data-queue="${n}"] [data-testid="queue-depth"]`)?.textContent.trim() ?? null,
    name,
  );

before(async () => {
  assertDist();
  const users = [...USERS, { name: 'zed', password: 'secret' }];
  server = await startHerald({
    users,
    projects: PROJECTS,
    extra: ['[admin]', 'listen = "127.0.0.1:0"', `tokens = ["${TOKEN}"]`, `ui_dir = ${JSON.stringify(DIST)}`, ''].join(
      '\n',
    ),
  });
  const admin = server.listeners.admin;
  if (!admin)
    throw new Error(
      `herald printed no "herald: listening admin 127.0.0.1:PORT" line; listeners: ${JSON.stringify(server.listeners)}`,
    );
  base = `http://127.0.0.1:${admin.port}`;
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
});

after(async () => {
  await closeAll(...clients);
  if (browser) await withTimeout(browser.close(), 10000, 'browser close').catch(() => {});
  if (server) await server.stop();
});

test('the console is served at /admin/ and a wrong token is refused with the server message', T, async () => {
  const res = await fetch(`${base}/admin/`);
  assert.equal(res.status, 200);
  assert.match(await res.text(), /<div id="app">/);
  await page.goto(`${base}/admin/`, { timeout: 15000 });
  await waitFor(() => document.querySelector('[data-testid="token-input"]'), null, 'login form');
  await page.fill('[data-testid="token-input"]', 'not-the-token');
  await page.click('[data-testid="login-submit"]');
  await waitFor(
    () => {
      const e = document.querySelector('[data-testid="login-error"]');
      return e && !e.hidden && e.textContent.length > 0;
    },
    null,
    'the 401 message',
  );
  const msg = await text('[data-testid="login-error"]');
  assert.match(msg, /401/, msg);
  assert.match(msg, /bearer token is required/i, `the server's own message is shown: ${msg}`);
  assert.equal(await page.$('[data-testid="overview"]'), null, 'no dashboard after a refused token');
  await shot('login-refused');
});

test('logs in with the token; the live stream connects; the overview shows the node', T, async () => {
  await page.fill('[data-testid="token-input"]', TOKEN);
  await page.click('[data-testid="login-submit"]');
  await waitFor(() => document.querySelector('[data-testid="overview"]'), null, 'overview after login');
  await waitFor(
    () => document.querySelector('[data-testid="stream-status"]')?.dataset.state === 'live',
    null,
    'stream status live',
  );
  assert.equal(await text('[data-testid="node-name"]'), 'herald-test@localhost');
  assert.equal(
    await page.evaluate(() => sessionStorage.getItem('herald-admin.connection') !== null),
    true,
    'token kept in sessionStorage',
  );
});

test('alice appears in online users within two seconds of connecting over STOMP', T, async () => {
  await go('users');
  await waitFor(
    () => /\d/.test(document.querySelector('[data-testid="users-total"]')?.textContent ?? ''),
    null,
    'users total',
  );
  assert.equal(await page.$('.vl-row[data-uid="alice"]'), null, 'alice is not online yet');
  const alice = await stompConnect(server, { login: 'alice', passcode: 'secret' });
  clients.push(alice);
  const t0 = Date.now();
  await waitFor(() => document.querySelector('.vl-row[data-uid="alice"]'), null, 'alice row', 2000);
  const took = Date.now() - t0;
  assert.ok(took <= 2000, `alice showed after ${took} ms`);
  assert.match(await text('[data-testid="users-total"]'), /^1 online/);
  assert.equal(await text('.vl-row[data-uid="alice"] [data-testid="session-count"]'), '1');
  const dot = await page.$eval('.vl-row[data-uid="alice"] [data-testid="presence-dot"]', (e) => ({
    state: e.dataset.state,
    color: getComputedStyle(e).backgroundColor,
  }));
  assert.equal(dot.state, 'online');
  assert.equal(dot.color, 'rgb(22, 163, 74)', 'an available user has a green dot');
  assert.equal(await text('.vl-row[data-uid="alice"] .presence .state'), 'available');
  // expand: her session with protocol and transport
  await page.click('.vl-row[data-uid="alice"] .ucols.main');
  await waitFor(
    () => document.querySelector('.vl-row[data-uid="alice"] [data-testid="user-sessions"] .srow'),
    null,
    'alice sessions expanded',
  );
  const row = await text('.vl-row[data-uid="alice"] [data-testid="user-sessions"] .srow');
  assert.match(row, /stomp/);
  assert.match(row, /ws/);
  assert.match(row, /127\.0\.0\.1:\d+/, 'peer address shown');
  await shot('users');
});

test('project filter and uid search narrow the list (server-side)', T, async () => {
  const bob = await stompConnect(server, { login: 'bob', passcode: 'secret' });
  const zed = await stompConnect(server, { login: 'zed', passcode: 'secret' });
  clients.push(bob, zed);
  await waitFor(
    () => ['alice', 'bob', 'zed'].every((u) => document.querySelector(`.vl-row[data-uid="${u}"]`)),
    null,
    'alice, bob and zed rows',
  );
  await waitFor(
    () => [...document.querySelectorAll('[data-testid="project-filter"] option')].some((o) => o.value === 'p2'),
    null,
    'projects in the filter',
  );
  await page.selectOption('[data-testid="project-filter"]', 'p1');
  await waitFor(
    () => !document.querySelector('.vl-row[data-uid="zed"]') && document.querySelector('.vl-row[data-uid="bob"]'),
    null,
    'p1 keeps alice and bob, not zed',
  );
  assert.match(await text('[data-testid="users-total"]'), /^2 online/);
  await page.selectOption('[data-testid="project-filter"]', '');
  await page.fill('[data-testid="user-search"]', 'ze');
  await waitFor(
    () => document.querySelector('.vl-row[data-uid="zed"]') && !document.querySelector('.vl-row[data-uid="alice"]'),
    null,
    'search "ze" keeps only zed',
  );
  await page.fill('[data-testid="user-search"]', '');
  await waitFor(() => document.querySelectorAll('.vl-row[data-uid]').length === 3, null, 'all three again');
  await closeAll(zed);
  await waitFor(
    () => !document.querySelector('.vl-row[data-uid="zed"]'),
    null,
    'zed leaves the list live when he disconnects',
    3000,
  );
});

test('a queue with no consumer: its depth follows SENDs, server-side sort puts it first', T, async () => {
  const producer = await stompConnect(server, { login: 'guest', passcode: 'guest' });
  clients.push(producer);
  await go('queues');
  for (let i = 0; i < N; i++)
    await publishWithReceipt(producer.client, { destination: `/queue/${QUEUE}`, body: `m${i}` });
  for (let i = 0; i < 2; i++)
    await publishWithReceipt(producer.client, { destination: `/queue/${OTHER_QUEUE}`, body: `s${i}` });
  await waitFor(
    (n) => document.querySelector(`.vl-row[data-queue="${n}"] [data-testid="queue-depth"]`)?.textContent.trim() === '5',
    QUEUE,
    `${QUEUE} depth 5`,
    4000,
  );
  await waitFor(
    (n) => document.querySelector(`.vl-row[data-queue="${n}"] [data-testid="queue-depth"]`)?.textContent.trim() === '2',
    OTHER_QUEUE,
    `${OTHER_QUEUE} depth 2`,
    4000,
  );
  // one more: the 1 s refresh picks it up without a reload
  await publishWithReceipt(producer.client, { destination: `/queue/${QUEUE}`, body: 'm-last' });
  await waitFor(
    (n) => document.querySelector(`.vl-row[data-queue="${n}"] [data-testid="queue-depth"]`)?.textContent.trim() === '6',
    QUEUE,
    `${QUEUE} depth 6`,
    3000,
  );
  assert.equal(await text(`.vl-row[data-queue="${QUEUE}"] [data-testid="queue-consumers"]`), '0');

  // sort by depth: descending first, then ascending (asked of the server, not sorted here)
  const seen = [];
  const onReq = (r) => r.url().includes('/api/queues?') && seen.push(new URL(r.url()).searchParams);
  page.on('request', onReq);
  await page.click('[data-testid="sort-depth"]');
  await waitFor(
    (n) => document.querySelector('.vl-row[data-index="0"]')?.dataset.queue === n,
    QUEUE,
    'deepest queue first',
  );
  assert.ok(
    seen.some((p) => p.get('sort') === 'depth' && p.get('order') === 'desc'),
    'sort=depth&order=desc requested',
  );
  await page.click('[data-testid="sort-depth"]');
  await waitFor(
    (n) => {
      const rows = [...document.querySelectorAll('.vl-row[data-queue]')].sort(
        (a, b) => a.dataset.index - b.dataset.index,
      );
      return rows.length >= 2 && rows[rows.length - 1].dataset.queue === n;
    },
    QUEUE,
    'deepest queue last when ascending',
  );
  assert.ok(
    seen.some((p) => p.get('sort') === 'depth' && p.get('order') === 'asc'),
    'sort=depth&order=asc requested',
  );
  page.off('request', onReq);
  await page.fill('[data-testid="queue-filter"]', 'small');
  await waitFor(
    (n) =>
      document.querySelectorAll('.vl-row[data-queue]').length === 1 &&
      document.querySelector(`.vl-row[data-queue="${n}"]`),
    OTHER_QUEUE,
    'filter keeps one queue',
  );
  await page.fill('[data-testid="queue-filter"]', '');
  await page.click('[data-testid="sort-depth"]'); // back to descending for the screenshot
  await waitFor(
    (n) => document.querySelector('.vl-row[data-index="0"]')?.dataset.queue === n,
    QUEUE,
    'deepest first again',
  );
  await sleep(1200); // a sample or two for the sparklines
  await shot('queues');
});

test('kicking alice from the UI disconnects her STOMP client', T, async () => {
  const [alice] = clients;
  await go('users');
  await waitFor(
    () => document.querySelector('.vl-row[data-uid="alice"] [data-testid="kick-user"]'),
    null,
    'alice kick button',
  );
  await page.click('.vl-row[data-uid="alice"] [data-testid="kick-user"]');
  await waitFor(() => document.querySelector('[data-testid="confirm-dialog"]'), null, 'confirm dialog');
  await shot('kick-confirm');
  await page.click('[data-testid="confirm-ok"]');
  // the server may send an ERROR frame before closing; the socket close is what must happen
  const error = alice.errors.next(5000, 'ERROR frame').then(
    (f) => f.headers.message,
    () => null,
  );
  const close = await alice.closes.next(5000, "alice's websocket to close after the kick");
  const closed = `websocket close ${close.code}${(await error) ? `, ERROR "${await error}"` : ''}`;
  await waitFor(() => !document.querySelector('.vl-row[data-uid="alice"]'), null, 'alice gone from the list', 3000);
  assert.equal(alice.client.connected, false, `alice's client is disconnected (${closed})`);
});

test('kicking one session of a user leaves the other', T, async () => {
  const bob2 = await stompConnect(server, { login: 'bob', passcode: 'secret' });
  clients.push(bob2);
  const bob1 = clients[1];
  await waitFor(
    () => document.querySelector('.vl-row[data-uid="bob"] [data-testid="session-count"]')?.textContent === '2',
    null,
    'bob with 2 sessions',
  );
  await page.click('.vl-row[data-uid="bob"] .ucols.main');
  await waitFor(
    () => document.querySelectorAll('.vl-row[data-uid="bob"] [data-testid="kick-session"]').length === 2,
    null,
    'bob sessions expanded',
  );
  await shot('users-expanded');
  const sessions = (await api('GET', '/api/users/bob')).sessions.map((s) => String(s.id));
  assert.equal(sessions.length, 2);
  // the newest session is bob2's
  const newest = sessions.sort((a, b) => Number(a) - Number(b))[1];
  await page.click(`.vl-row[data-uid="bob"] [data-testid="kick-session"][data-session="${newest}"]`);
  await page.click('[data-testid="confirm-ok"]');
  await bob2.closes.next(5000, "bob's second websocket to close");
  await waitFor(
    () => document.querySelector('.vl-row[data-uid="bob"] [data-testid="session-count"]')?.textContent === '1',
    null,
    'bob back to 1 session',
    3000,
  );
  assert.equal(bob1.client.connected, true, "bob's first session stays");
});

test('purge empties the queue (after a confirmation)', T, async () => {
  await go('queues');
  await waitFor(
    (n) => document.querySelector(`.vl-row[data-queue="${n}"] [data-testid="purge-queue"]`),
    QUEUE,
    'purge button',
  );
  await page.click(`.vl-row[data-queue="${QUEUE}"] [data-testid="purge-queue"]`);
  await page.click('[data-testid="confirm-cancel"]');
  await sleep(300);
  assert.equal(await queueDepth(QUEUE), '6', 'cancel keeps the messages');
  await page.click(`.vl-row[data-queue="${QUEUE}"] [data-testid="purge-queue"]`);
  await page.click('[data-testid="confirm-ok"]');
  await waitFor(
    (n) => document.querySelector(`.vl-row[data-queue="${n}"] [data-testid="queue-depth"]`)?.textContent.trim() === '0',
    QUEUE,
    `${QUEUE} depth 0`,
    3000,
  );
  const q = (await api('GET', `/api/queues?q=${QUEUE}`)).items.find((x) => x.name === QUEUE);
  assert.equal(q.depth, 0);
  assert.equal(await queueDepth(OTHER_QUEUE), '2', 'the other queue is untouched');
});

test('the publish form routes to a queue and shows errors', T, async () => {
  await go('publish');
  await page.fill('[data-testid="publish-destination"]', `/queue/${QUEUE}`);
  await page.fill('[data-testid="publish-body"]', 'from the console');
  await page.fill('[data-testid="publish-headers"]', 'content-type=text/plain\nx-from=admin-ui');
  await page.click('[data-testid="publish-submit"]');
  await waitFor(
    () => document.querySelector('[data-testid="publish-result"]')?.dataset.state === 'ok',
    null,
    'publish ok',
  );
  assert.equal(await page.$eval('[data-testid="publish-result"]', (e) => e.dataset.routed), '1');
  assert.match(await text('[data-testid="publish-result"]'), /Routed to 1 queue/);
  // An unprefixed name is a queue (as over STOMP); a slash inside a queue name is not.
  await page.fill('[data-testid="publish-destination"]', '/queue/a/b');
  await page.click('[data-testid="publish-submit"]');
  await waitFor(
    () => document.querySelector('[data-testid="publish-result"]')?.dataset.state === 'error',
    null,
    'publish error',
  );
  assert.match(await text('[data-testid="publish-result"]'), /^400 bad_request: /);
  await shot('publish');
  await go('queues');
  await waitFor(
    (n) => document.querySelector(`.vl-row[data-queue="${n}"] [data-testid="queue-depth"]`)?.textContent.trim() === '1',
    QUEUE,
    'the published message in the queue',
  );
});

test('overview: numbers update live and the charts are drawn', T, async () => {
  await go('overview');
  await waitFor(
    () =>
      document.querySelector('[data-testid="chart-rates"] canvas') &&
      document.querySelector('[data-testid="chart-sessions"] canvas'),
    null,
    'chart canvases',
  );
  const size = await page.$eval('[data-testid="chart-rates"] canvas', (c) => [c.width, c.height]);
  assert.ok(size[0] > 300 && size[1] > 100, `rates canvas is sized: ${size}`);
  const before = { uptime: await text('[data-testid="uptime"]'), sessions: await text('[data-testid="sessions"]') };
  await waitFor(
    (u) => document.querySelector('[data-testid="uptime"]').textContent.trim() !== u,
    before.uptime,
    'uptime ticks',
    3000,
  );
  const o = await api('GET', '/api/overview');
  await waitFor(
    (n) => document.querySelector('[data-testid="sessions"]').textContent.trim() === String(n),
    o.sessions,
    `sessions = ${o.sessions}`,
    3000,
  );
  const carol = await stompConnect(server, { login: 'carol', passcode: 'secret' });
  clients.push(carol);
  await waitFor(
    (n) => document.querySelector('[data-testid="sessions"]').textContent.trim() === String(n),
    o.sessions + 1,
    'sessions count +1 without reload',
    3000,
  );
  await waitFor(
    (n) => document.querySelector('[data-testid="users-online"]').textContent.trim() === String(n),
    o.users_online + 1,
    'users online +1',
    3000,
  );
  assert.ok(
    Number((await text('[data-testid="total-published"]')).replace(/,/g, '')) >= N + 3,
    'published total counts the SENDs',
  );
  assert.match(await text('[data-testid="sessions-by-transport"]'), /stomp\/ws/);
  // the charts hold history plus live samples
  const legend = await page.$eval('[data-testid="chart-rates"] .u-legend', (e) => e.textContent);
  for (const s of ['publish', 'deliver', 'ack'])
    assert.ok(legend.includes(s), `${s} series in the rates chart legend: ${legend}`);
  // the chart is fed: history plus live samples, more than one point per series
  const points = Number(await page.$eval('[data-testid="chart-rates"]', (e) => e.dataset.points));
  assert.ok(points >= 3, `chart data points: ${points}`);
  await waitFor(
    (n) => Number(document.querySelector('[data-testid="chart-sessions"]').dataset.points) > n,
    points,
    'a live sample appended to the charts',
    3000,
  );
  await sleep(1500);
  await shot('overview');
});

test('20,000 online users: a virtual list that fetches only the pages in view', T, async () => {
  const TOTAL = 20000;
  const states = ['online', 'away', 'dnd', 'xa', 'chat'];
  const requested = [];
  // Only GET /api/users is synthetic (a real node here has a handful of users); the page,
  // the rest of the API and the stream are the real herald.
  await page.route(/\/api\/users\?/, (route) => {
    const u = new URL(route.request().url());
    const pageNo = Number(u.searchParams.get('page'));
    const per = Number(u.searchParams.get('per_page'));
    requested.push(pageNo);
    const items = [];
    for (let i = (pageNo - 1) * per; i < Math.min(TOTAL, pageNo * per); i++) {
      const uid = `u${String(i).padStart(5, '0')}`;
      const n = 1 + (i % 3);
      items.push({
        uid,
        presence: { state: states[i % states.length], status: i % 7 === 0 ? 'in a meeting' : '' },
        sessions: Array.from({ length: n }, (_, k) => ({
          id: i * 10 + k,
          uid,
          vhost: '/',
          protocol: k === 2 ? 'xmpp' : 'stomp',
          transport: ['ws', 'tcp', 'bosh'][k],
          peer: `10.0.${i % 250}.${k + 1}:5${k}000`,
          connected_at: Date.now() - i * 1000,
          resource: k === 2 ? 'phone' : null,
        })),
      });
    }
    route.fulfill({
      status: 200,
      contentType: 'application/json',
      body: JSON.stringify({ total: TOTAL, page: pageNo, per_page: per, items }),
    });
  });
  try {
    await go('users');
    await waitFor(
      () => document.querySelector('[data-testid="users-total"]')?.textContent.startsWith('20,000'),
      null,
      '20,000 online',
    );
    await waitFor(() => document.querySelector('.vl-row[data-uid="u00000"]'), null, 'first user');
    const rows = () => page.evaluate(() => document.querySelectorAll('[data-testid="users-list"] .vl-row').length);
    assert.ok((await rows()) < 60, `only the visible rows exist (${await rows()})`);
    const t0 = Date.now();
    await page.$eval('[data-testid="users-list"]', (el) => (el.scrollTop = el.scrollHeight));
    await waitFor(
      () => document.querySelector('.vl-row[data-uid="u19999"]'),
      null,
      'the last user after scrolling to the end',
      3000,
    );
    const tookEnd = Date.now() - t0;
    await page.$eval('[data-testid="users-list"]', (el) => (el.scrollTop = el.scrollHeight / 2));
    await waitFor(() => document.querySelector('.vl-row[data-uid="u10000"]'), null, 'the middle user', 3000);
    assert.ok((await rows()) < 60, `still only the visible rows (${await rows()})`);
    const distinct = new Set(requested);
    assert.ok(distinct.size <= 8, `fetched ${distinct.size} of 200 pages: ${[...distinct].join(',')}`);
    assert.ok(distinct.has(200) && distinct.has(101), 'fetched the last page and the middle one');
    assert.ok(tookEnd < 3000, `end of the list in ${tookEnd} ms`);
    // presence dots per state
    const colors = await page.evaluate(() =>
      Object.fromEntries(
        [...document.querySelectorAll('[data-testid="presence-dot"]')].map((d) => [
          d.dataset.state,
          getComputedStyle(d).backgroundColor,
        ]),
      ),
    );
    assert.equal(colors.online, 'rgb(22, 163, 74)');
    assert.equal(colors.chat, 'rgb(22, 163, 74)');
    assert.equal(colors.away, colors.xa);
    assert.equal(colors.dnd, 'rgb(220, 38, 38)');
    await page.click('.vl-row[data-uid="u10001"] .ucols.main');
    await waitFor(
      () => document.querySelectorAll('.vl-row[data-uid="u10001"] .srow').length === 3,
      null,
      'u10001 expanded: its 3 sessions',
    );
    const below = await page.$eval('.vl-row[data-uid="u10001"]', (r) => r.getBoundingClientRect().bottom);
    const next = await page.$eval('.vl-row[data-uid="u10002"]', (r) => r.getBoundingClientRect().top);
    assert.ok(Math.abs(next - below) <= 1, `the next row moves down below the expanded one (${below} vs ${next})`);
    await sleep(300); // let the chevron finish turning
    await shot('users-20k');
  } finally {
    await page.unroute(/\/api\/users\?/);
  }
});

test('the live stream reconnects with backoff after failures, and the indicator says so', T, async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const p = await ctx.newPage();
    let attempts = 0;
    let fail = true;
    await p.route('**/api/stream', (route) => {
      attempts += 1;
      return fail ? route.abort('connectionreset') : route.continue();
    });
    await p.goto(`${base}/admin/`, { timeout: 15000 });
    await p.fill('[data-testid="token-input"]', TOKEN);
    await p.click('[data-testid="login-submit"]');
    await p.waitForFunction(
      () => document.querySelector('[data-testid="stream-status"]')?.dataset.state === 'offline',
      null,
      { timeout: 5000 },
    );
    assert.match(await p.$eval('[data-testid="stream-status"]', (e) => e.title), /retrying in/);
    await sleep(1800);
    assert.ok(attempts >= 2 && attempts <= 4, `retried with backoff (0.5 s, 1 s, 2 s…): ${attempts} attempts in ~2 s`);
    fail = false;
    await p.waitForFunction(
      () => document.querySelector('[data-testid="stream-status"]')?.dataset.state === 'live',
      null,
      { timeout: 6000 },
    );
    // and the overview keeps updating from it
    const up = await p.$eval('[data-testid="uptime"]', (e) => e.textContent);
    await p.waitForFunction((u) => document.querySelector('[data-testid="uptime"]').textContent !== u, up, {
      timeout: 3000,
    });
  } finally {
    await ctx.close();
  }
});

// The Tauri app loads the same dist; its connection profiles come from Rust commands
// (src-tauri) through window.__TAURI_INTERNALS__.invoke. Here a stub stands in for them, and
// the profile URL uses `localhost` while the page is on 127.0.0.1, so every API call and the
// stream are cross-origin, as from the Tauri webview (CORS preflight with Authorization).
async function tauriPage(startup) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.addInitScript((startupProfile) => {
    let profiles = [];
    window.__calls = [];
    window.__TAURI_INTERNALS__ = {
      transformCallback: () => 0,
      unregisterCallback() {},
      convertFileSrc: (p) => p,
      async invoke(cmd, args) {
        window.__calls.push([cmd, JSON.parse(JSON.stringify(args ?? {}))]);
        switch (cmd) {
          case 'startup_profile':
            return startupProfile;
          case 'profiles_list':
            return profiles;
          case 'profile_save':
            if (!args.profile.name) throw 'invalid profile name "": the name is empty';
            profiles = [...profiles.filter((p) => p.name !== args.profile.name), args.profile];
            return profiles;
          case 'profile_delete':
            profiles = profiles.filter((p) => p.name !== args.name);
            return profiles;
          default:
            throw `unknown command ${cmd}`;
        }
      },
    };
  }, startup);
  const p = await ctx.newPage();
  p.on('console', (m) => logs.push(`tauri ${m.type()}: ${m.text()}`));
  p.on('pageerror', (e) => logs.push(`tauri pageerror: ${e.message}`));
  return { ctx, p };
}

test('Tauri: a startup profile connects at once (cross-origin API and stream)', T, async () => {
  const url = base.replace('127.0.0.1', 'localhost');
  const { ctx, p } = await tauriPage({ name: 'from-cli', url, token: TOKEN });
  try {
    await p.goto(`${base}/admin/`, { timeout: 15000 });
    await p.waitForFunction(() => document.querySelector('[data-testid="overview"]'), null, { timeout: 5000 });
    await p.waitForFunction(
      () => document.querySelector('[data-testid="stream-status"]')?.dataset.state === 'live',
      null,
      { timeout: 5000 },
    );
    assert.equal(await p.$eval('.conn-label', (e) => e.textContent), 'from-cli');
    const calls = await p.evaluate(() => window.__calls.map((c) => c[0]));
    assert.deepEqual(calls, ['startup_profile'], 'no login screen, no profile list');
    await p.waitForFunction(
      () => /^\d/.test(document.querySelector('[data-testid="sessions"]')?.textContent ?? ''),
      null,
      { timeout: 3000 },
    );
  } finally {
    await ctx.close();
  }
});

test('Tauri: profiles are listed, saved, connected to (401 shown for a wrong token) and deleted', T, async () => {
  const url = base.replace('127.0.0.1', 'localhost');
  const { ctx, p } = await tauriPage(null);
  try {
    await p.goto(`${base}/admin/`, { timeout: 15000 });
    await p.waitForFunction(
      () => document.querySelector('[data-testid="profiles"]')?.textContent.includes('No saved connections'),
      null,
      { timeout: 5000 },
    );
    await p.fill('[data-testid="profile-name"]', 'staging');
    await p.fill('[data-testid="profile-url"]', `${url}/`);
    await p.fill('[data-testid="profile-token"]', 'wrong-token-123');
    await p.click('[data-testid="profile-save-connect"]');
    await p.waitForFunction(
      () => {
        const e = document.querySelector('[data-testid="login-error"]');
        return e && !e.hidden && /401/.test(e.textContent);
      },
      null,
      { timeout: 5000 },
    );
    assert.match(await p.$eval('[data-testid="login-error"]', (e) => e.textContent), /^staging: 401/);
    const saved = await p.evaluate(() => window.__calls.find((c) => c[0] === 'profile_save')[1]);
    assert.deepEqual(
      saved,
      { profile: { name: 'staging', url, token: 'wrong-token-123' } },
      'profile_save({profile}) with the URL normalised',
    );
    await p.click('[data-profile="staging"] button:has-text("Edit")');
    await p.fill('[data-testid="profile-token"]', TOKEN);
    await p.click('[data-testid="profile-save"]');
    await p.waitForFunction(() => window.__calls.filter((c) => c[0] === 'profile_save').length === 2, null, {
      timeout: 3000,
    });
    assert.equal(await p.$$eval('[data-profile]', (els) => els.length), 1, 'saving under the same name replaces');
    await p.screenshot({ path: path.join(ARTIFACTS, 'admin-tauri-profiles.png') });
    await p.click('[data-profile="staging"] [data-testid="profile-connect"]');
    await p.waitForFunction(
      () => document.querySelector('[data-testid="stream-status"]')?.dataset.state === 'live',
      null,
      { timeout: 5000 },
    );
    assert.equal(await p.$eval('.conn-label', (e) => e.textContent), 'staging');
    await p.click('[data-testid="logout"]');
    await p.waitForFunction(() => document.querySelector('[data-profile="staging"]'), null, { timeout: 3000 });
    await p.click('[data-profile="staging"] [data-testid="profile-delete"]');
    await p.waitForFunction(() => !document.querySelector('[data-profile]'), null, { timeout: 3000 });
    assert.deepEqual(await p.evaluate(() => window.__calls.filter((c) => c[0] === 'profile_delete')[0][1]), {
      name: 'staging',
    });
  } finally {
    await ctx.close();
  }
});

test('disconnect returns to the login screen and forgets the token', T, async () => {
  await page.click('[data-testid="logout"]');
  await waitFor(() => document.querySelector('[data-testid="token-input"]'), null, 'login form after disconnect');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('herald-admin.connection')), null);
  await page.reload();
  await waitFor(() => document.querySelector('[data-testid="token-input"]'), null, 'still logged out after reload');
});
