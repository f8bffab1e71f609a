// The demo (js-examples/demo/server.js) end to end in Debian's Chromium (playwright-core):
// the server runs as a child process on free ports; alice (WebSocket) and bob (SockJS)
// sign in from two browser contexts; bob moves a card and alice's board follows; alice goes
// away and bob's dot for her changes; a card move and a poke reach alice's badge; a wrong
// password is refused by the Express app's /auth/user handler (the page shows it, and the
// app's own decision log and console say it was that handler); Herald drops alice's
// connection (admin API kick) while bob moves her card, and her board catches up from
// the replay (x-recovered: true) without reloading. Screenshots go to
// tests/artifacts/demo-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { withTimeout } from './harness.mjs';
import { ARTIFACTS, launchChromium, startExample } from './browser.mjs';

const T = { timeout: 60000 };

let demo; // startExample(): { child, match, base, output(), stop() }
let browser;
const pages = {}; // uid → { context, page, logs }

before(async () => {
  demo = await startExample('js-examples/demo/server.js', /Herald demo: (http:\/\/\S+)\s+users: (.*)/);
  demo.url = demo.match[1];
  demo.users = demo.match[2];
  browser = await launchChromium();
});

after(async () => {
  for (const p of Object.values(pages)) await p.context.close().catch(() => {});
  if (browser) await withTimeout(browser.close(), 10000, 'browser close').catch(() => {});
  if (demo) await demo.stop();
});

async function openPage(name) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(demo.base, { timeout: 15000 });
  pages[name] = { context, page, logs };
  return pages[name];
}

async function diag(name) {
  const p = pages[name];
  const state = await p.page.evaluate(() => JSON.stringify(window.demo)).catch((e) => String(e));
  return `[${name}] state: ${state}\nconsole:\n${p.logs.join('\n')}\n--- demo output (tail) ---\n${demo.output().slice(-3000)}`;
}

// Waits for fn(arg) to be true in the page; on timeout: screenshot + page state in the error.
async function waitIn(name, fn, arg, what, timeout = 10000) {
  const p = pages[name];
  try {
    await p.page.waitForFunction(fn, arg, { timeout });
  } catch (e) {
    await p.page.screenshot({ path: path.join(ARTIFACTS, `demo-failed-${name}.png`) }).catch(() => {});
    throw new Error(`${name}: ${what}: ${e.message}\n${await diag(name)}`);
  }
}

async function signIn(name, password, transport, user = name) {
  const { page } = pages[name];
  await page.fill('#login-user', user);
  await page.fill('#login-pass', password);
  await page.selectOption('#login-transport', transport);
  await page.click('#login-submit');
}

const memberState = (uid) => `#members li[data-uid="${uid}"]`;

test('the demo prints its URL and its users', T, () => {
  assert.match(demo.url, /^http:\/\/localhost:\d+$/);
  assert.match(demo.users, /alice, bob, carol \/ secret/);
});

test('alice (WebSocket) and bob (SockJS) sign in and see each other online', T, async () => {
  await openPage('alice');
  await signIn('alice', 'secret', 'websocket');
  await waitIn('alice', () => window.demo.phase === 'ready', null, 'sign in over WebSocket', 15000);

  await openPage('bob');
  await signIn('bob', 'secret', 'sockjs');
  await waitIn('bob', () => window.demo.phase === 'ready', null, 'sign in over SockJS', 15000);

  // bob's first paint comes from GET /api/online (engine.onlineUsers): alice is there
  await waitIn('bob', () => window.demo.presence.alice === 'online', null, "alice online on bob's page");
  assert.equal(await pages.bob.page.getAttribute(memberState('alice'), 'data-state'), 'online');
  assert.ok(await pages.bob.page.isVisible(`${memberState('alice')} .dot.online`));
  // alice learns about bob from a live presence event on /exchange/presence/p1.*
  await waitIn(
    'alice',
    () => document.querySelector('#members li[data-uid="bob"]')?.dataset.state === 'online',
    null,
    "bob online on alice's page (live)",
  );
  // carol is not connected
  assert.equal(await pages.bob.page.getAttribute(memberState('carol'), 'data-state'), 'offline');

  assert.equal(await pages.alice.page.textContent('#me'), 'alice');
  assert.equal(await pages.bob.page.textContent('#me'), 'bob');
  const cards = await pages.alice.page.$$eval('.card', (els) => els.length);
  assert.ok(cards >= 6, `the board has its cards (${cards})`);
});

test("bob moves alice's card: alice's board follows live and her badge counts the notification", T, async () => {
  const card = await pages.bob.page.evaluate(() =>
    window.demo.board.cards.find((c) => c.assignee === 'alice' && c.column === 'todo'),
  );
  assert.ok(card, 'a card of alice in "To do"');
  assert.equal(await pages.alice.page.isVisible(`.column[data-column="todo"] .card[data-card="${card.id}"]`), true);

  await pages.bob.page.click(`.card[data-card="${card.id}"] .move-right`);
  await waitIn(
    'alice',
    (id) => !!document.querySelector(`.column[data-column="doing"] .card[data-card="${id}"]`),
    card.id,
    'the moved card in "In progress" on alice\'s board',
  );
  await waitIn(
    'bob',
    (id) => !!document.querySelector(`.column[data-column="doing"] .card[data-card="${id}"]`),
    card.id,
    "the moved card on bob's board",
  );
  // the project push also reached the activity feed
  await waitIn(
    'alice',
    (title) => window.demo.activity.some((a) => a.text.includes(title) && a.text.startsWith('bob moved')),
    card.title,
    'activity entry',
  );

  // it is alice's card and bob moved it: a push on /exchange/feed/alice
  await waitIn(
    'alice',
    () =>
      window.demo.unread === 1 &&
      document.querySelector('#badge').textContent === '1' &&
      !document.querySelector('#badge').hidden,
    null,
    'badge = 1',
  );
  const n = await pages.alice.page.evaluate(() => window.demo.notifications[0]);
  assert.equal(n.type, 'card-moved');
  assert.equal(n.from, 'bob');
  assert.match(n.text, /bob moved .* to In progress/);
  // bob moved his own view's card: bob got no notification
  assert.equal(await pages.bob.page.evaluate(() => window.demo.unread), 0);
});

test("a card dragged by alice moves on bob's board", T, async () => {
  const card = await pages.alice.page.evaluate(() => window.demo.board.cards.find((c) => c.column === 'review'));
  assert.ok(card, 'a card in Review');
  await pages.alice.page.dragAndDrop(`.card[data-card="${card.id}"]`, '.column[data-column="done"]');
  await waitIn(
    'bob',
    (id) => !!document.querySelector(`.column[data-column="done"] .card[data-card="${id}"]`),
    card.id,
    "the dragged card in Done on bob's board",
  );
});

test("alice goes away: bob's dot for alice changes", T, async () => {
  await pages.alice.page.selectOption('#my-presence', 'away');
  await waitIn(
    'bob',
    () => document.querySelector('#members li[data-uid="alice"]')?.dataset.state === 'away',
    null,
    "alice away on bob's page",
  );
  assert.ok(await pages.bob.page.isVisible(`${memberState('alice')} .dot.away`));
  // alice's own dot follows the same event
  await waitIn('alice', () => document.querySelector('#my-dot').classList.contains('away'), null, "alice's own dot");
  await pages.alice.page.selectOption('#my-presence', 'dnd');
  await waitIn(
    'bob',
    () => document.querySelector('#members li[data-uid="alice"]')?.dataset.state === 'dnd',
    null,
    "alice dnd on bob's page",
  );
});

test('bob pokes alice: the badge counts it; opening the list clears it', T, async () => {
  await pages.bob.page.click('#team button.poke[data-uid="alice"]');
  await waitIn(
    'alice',
    () => window.demo.unread === 2 && document.querySelector('#badge').textContent === '2',
    null,
    'badge = 2',
  );
  const n = await pages.alice.page.evaluate(() => window.demo.notifications[0]);
  assert.equal(n.type, 'poke');
  assert.equal(n.from, 'bob');
  await pages.alice.page.screenshot({ path: path.join(ARTIFACTS, 'demo-alice.png') });
  await pages.bob.page.screenshot({ path: path.join(ARTIFACTS, 'demo-bob.png') });

  await pages.alice.page.click('#bell');
  await waitIn(
    'alice',
    () => document.querySelector('#badge').hidden && !document.querySelector('#notifications').hidden,
    null,
    'badge cleared, list open',
  );
  const items = await pages.alice.page.$$eval('#notification-list li', (els) => els.map((e) => e.textContent));
  assert.equal(items.length, 2);
  assert.match(items[0], /bob poked you/);
  await pages.alice.page.screenshot({ path: path.join(ARTIFACTS, 'demo-alice-notifications.png') });
});

test("alice's connection drops: bob's moves meanwhile reach her board on reconnect, without a reload", T, async () => {
  const alice = pages.alice.page;
  const before = await alice.evaluate(() => ({
    loads: window.demo.boardLoads,
    notes: window.demo.notifications.length,
  }));
  assert.equal(before.loads, 1, 'the board was loaded once, at sign-in');
  const card = await alice.evaluate(() =>
    window.demo.board.cards.find((c) => c.assignee === 'alice' && c.column !== 'done'),
  );
  assert.ok(card, 'a card of alice not yet Done');

  // Herald drops her connection (the admin API's kick); the page reconnects after 3 s.
  const m = /Herald console: http:\/\/\S+:(\d+)\/admin\/\s+token: (\S+)/.exec(demo.output());
  assert.ok(m, `the demo printed its console URL and token\n${demo.output()}`);
  const r = await fetch(`http://127.0.0.1:${m[1]}/api/users/alice/kick`, {
    method: 'POST',
    headers: { authorization: `Bearer ${m[2]}` },
  });
  assert.equal(r.status, 200, await r.text());
  await waitIn('alice', () => document.querySelector('#conn-state').classList.contains('down'), null, 'alice down');

  await pages.bob.page.click(`.card[data-card="${card.id}"] .move-right`);
  const next = await pages.bob.page.evaluate(
    (id) => window.demo.board.columns[window.demo.board.columns.findIndex((c) => c.id === id) + 1].id,
    card.column,
  );
  await waitIn(
    'bob',
    ([id, col]) => !!document.querySelector(`.column[data-column="${col}"] .card[data-card="${id}"]`),
    [card.id, next],
    "the move on bob's board",
  );
  assert.ok(
    await alice.evaluate(() => document.querySelector('#conn-state').classList.contains('down')),
    'bob moved the card while alice was away',
  );

  await waitIn(
    'alice',
    ([id, col]) =>
      document.querySelector('#conn-state').classList.contains('up') &&
      !!document.querySelector(`.column[data-column="${col}"] .card[data-card="${id}"]`),
    [card.id, next],
    'alice back, the card in its new column on her board',
    15000,
  );
  const after = await alice.evaluate(() => ({
    loads: window.demo.boardLoads,
    resumes: window.demo.resumes,
    notes: window.demo.notifications,
  }));
  assert.deepEqual(after.resumes.map((x) => [x.destination, x.recovered]).sort(), [
    ['/exchange/feed/alice', true],
    ['/exchange/project/p1', true],
  ]);
  assert.equal(after.loads, 1, 'caught up from the replay: no board reload');
  // the notification for the move came in the replay too
  assert.equal(after.notes.length, before.notes + 1);
  assert.match(after.notes[0].text, /bob moved .* to /);
});

test("a wrong password is refused by the Express app's /auth/user handler", T, async () => {
  const t0 = new Date().toISOString();
  const { page } = await openPage('intruder');
  await signIn('intruder', 'not-her-password', 'websocket', 'alice');
  await waitIn('intruder', () => !document.querySelector('#login-error').hidden, null, 'an error on the sign-in form');
  const text = await page.textContent('#login-error');
  assert.match(text, /refused/i, `error shown: ${text}`);
  assert.equal(await page.isVisible('#app-screen'), false, 'no board after a refusal');
  assert.equal(await page.evaluate(() => window.demo.phase), 'login');
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-login-refused.png') });

  // The app's own handler made that call: its decision log and its console say so.
  const log = await (await fetch(`${demo.base}/api/auth-log`)).json();
  const denial = log.find(
    (e) => e.path === '/auth/user' && e.username === 'alice' && e.result === 'deny' && e.at >= t0,
  );
  assert.ok(denial, `a deny from /auth/user for alice in the app's log: ${JSON.stringify(log.slice(-10))}`);
  assert.equal(denial.reason, 'bad password');
  assert.match(demo.output(), /auth: \/auth\/user alice → deny \(bad password\)/);

  // and the right password still works in the same page
  await page.fill('#login-pass', 'secret');
  await page.click('#login-submit');
  await waitIn('intruder', () => window.demo.phase === 'ready', null, 'sign in after the refusal', 15000);
  await pages.intruder.context.close();
  delete pages.intruder;
});

test('alice signs out: bob sees her offline', T, async () => {
  await pages.alice.page.click('#logout');
  await waitIn(
    'bob',
    () => document.querySelector('#members li[data-uid="alice"]')?.dataset.state === 'offline',
    null,
    "alice offline on bob's page",
  );
  await pages.bob.page.screenshot({ path: path.join(ARTIFACTS, 'demo-bob-after.png') });
});
