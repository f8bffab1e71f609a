// The example pages served by js-examples/auth-app.js, in Debian's Chromium (playwright-core):
// the auth app runs as a child process on free ports (Herald in-process, BOSH on its own
// port); each page signs in with the form, and a POST /publish to the app reaches it.
//   stomp-sockjs.html  legacy stompjs 2.3 + sockjs-client at /stomp (the Web-STOMP snippet)
//   stompjs-ws.html    @stomp/stompjs 7 at /ws
//   strophe-bosh.html  strophe.js 5 over BOSH: roster, a contact's live presence
// Screenshots: tests/artifacts/demo-pages-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { withTimeout } from './harness.mjs';
import { ARTIFACTS, launchChromium, startExample } from './browser.mjs';

const T = { timeout: 60000 };

let srv; // startExample(): { child, base, output(), stop() }
let browser;

before(async () => {
  srv = await startExample('js-examples/auth-app.js', /Herald examples: (http:\/\/\S+)/, { HERALD_BOSH_PORT: '0' });
  browser = await launchChromium();
});

after(async () => {
  if (browser) await withTimeout(browser.close(), 10000, 'browser close').catch(() => {});
  if (srv) await srv.stop();
});

async function open(t, file) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(`${srv.base}/${file}`, { timeout: 15000 });
  const wait = async (fn, arg, what, timeout = 10000) => {
    try {
      await page.waitForFunction(fn, arg, { timeout });
    } catch (e) {
      await page
        .screenshot({ path: path.join(ARTIFACTS, `demo-pages-failed-${file.replace('.html', '')}.png`) })
        .catch(() => {});
      const state = await page.evaluate(() => JSON.stringify(window.state)).catch((x) => String(x));
      throw new Error(
        `${file}: ${what}: ${e.message}\nstate: ${state}\nconsole:\n${logs.join('\n')}\n--- server (tail) ---\n${srv.output().slice(-2000)}`,
      );
    }
  };
  return { page, wait };
}

async function publish(destination, body) {
  const r = await fetch(`${srv.base}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ destination, body }),
  });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  return JSON.parse(text);
}

async function signIn(page, user, password) {
  await page.fill('#user', user);
  await page.fill('#pass', password);
  await page.click('#connect');
}

test('index page links the examples', T, async (t) => {
  const { page } = await open(t, '');
  const links = await page.$$eval('a', (as) => as.map((a) => a.getAttribute('href')));
  for (const f of ['stomp-sockjs.html', 'stompjs-ws.html', 'strophe-bosh.html', 'recovery.html'])
    assert.ok(links.includes(f), `link to ${f}`);
});

test('stomp-sockjs.html: the Web-STOMP snippet signs in, gets a publish and its own SEND', T, async (t) => {
  const { page, wait } = await open(t, 'stomp-sockjs.html');
  await signIn(page, 'alice', 'secret');
  await wait(() => window.state.connected, null, 'connected over SockJS');
  await new Promise((r) => setTimeout(r, 300)); // the legacy client has no subscribe receipt here
  const out = await publish('/exchange/feed/alice', 'pushed by the server');
  assert.ok(out.routed >= 1);
  await wait(() => window.state.messages.some((m) => m.body === 'pushed by the server'), null, 'the publish');
  await page.fill('#body', 'sent from the page');
  await page.click('#sendBtn');
  await wait(() => window.state.messages.some((m) => m.body === 'sent from the page'), null, 'its own SEND back');
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-pages-stomp-sockjs.png') });
});

test('stomp-sockjs.html: a wrong password shows the refusal', T, async (t) => {
  const { page, wait } = await open(t, 'stomp-sockjs.html');
  await signIn(page, 'bob', 'wrong');
  await wait(() => window.state.errors.length > 0, null, 'an error');
  assert.match(await page.textContent('#status'), /error/i);
  assert.equal(await page.evaluate(() => window.state.connected), false);
});

test('stompjs-ws.html: @stomp/stompjs gets project and presence pushes', T, async (t) => {
  const { page, wait } = await open(t, 'stompjs-ws.html');
  await signIn(page, 'carol', 'secret');
  await wait(() => window.state.connected, null, 'connected over /ws');
  await new Promise((r) => setTimeout(r, 300));
  await publish('/exchange/project/p2', 'p2 standup');
  await wait(
    () => window.state.messages.some((m) => m.body === 'p2 standup' && m.destination === '/exchange/project/p2'),
    null,
    'the p2 publish',
  );
  // dave connects (TCP-less: a second page): carol's page sees his presence on /exchange/presence/p2.*
  const dave = await open(t, 'stompjs-ws.html');
  await signIn(dave.page, 'dave', 'secret');
  await dave.wait(() => window.state.connected, null, 'dave connected');
  await wait(
    () =>
      window.state.messages.some(
        (m) => m.destination.startsWith('/exchange/presence/p2.') && JSON.parse(m.body).uid === 'dave',
      ),
    null,
    "dave's presence",
  );
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-pages-stompjs-ws.png') });
});

test("strophe-bosh.html: roster from the projects and a contact's live presence over BOSH", T, async (t) => {
  const alice = await open(t, 'strophe-bosh.html');
  await signIn(alice.page, 'alice', 'secret');
  await alice.wait(
    () => window.state.connected && Object.keys(window.state.contacts).length >= 2,
    null,
    'logged in with a roster',
    15000,
  );
  const jids = await alice.page.evaluate(() => Object.keys(window.state.contacts).sort());
  assert.deepEqual(jids, ['bob@localhost', 'carol@localhost']);

  const bob = await open(t, 'strophe-bosh.html');
  await signIn(bob.page, 'bob', 'secret');
  await bob.wait(() => window.state.connected, null, 'bob logged in', 15000);
  await alice.wait(() => window.state.contacts['bob@localhost']?.online, null, "bob online on alice's page", 15000);
  await bob.page.selectOption('#show', 'away');
  await bob.page.fill('#statusText', 'lunch');
  await bob.page.click('#setPresence');
  await alice.wait(
    () =>
      window.state.contacts['bob@localhost']?.show === 'away' &&
      window.state.contacts['bob@localhost']?.status === 'lunch',
    null,
    "bob away on alice's page",
    15000,
  );
  assert.ok(await alice.page.isVisible('li[data-jid="bob@localhost"] .dot.away'));
  // a push to alice's feed arrives as a headline message over BOSH
  await publish('/exchange/feed/alice', 'headline for alice');
  await alice.wait(
    () => window.state.messages.some((m) => m.body === 'headline for alice'),
    null,
    'the feed publish as a message',
    15000,
  );
  await alice.page.screenshot({ path: path.join(ARTIFACTS, 'demo-pages-strophe-bosh.png') });
  await bob.page.evaluate(() => window.conn.disconnect());
  await alice.wait(() => !window.state.contacts['bob@localhost']?.online, null, 'bob offline after logout', 15000);
  await alice.page.evaluate(() => window.conn.disconnect());
});
