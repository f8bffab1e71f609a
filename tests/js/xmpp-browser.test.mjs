// Headless Chromium (Debian's `chromium`, driven by playwright-core) loads a page from a
// test HTTP server on another port (another origin than Herald), which uses strophe.js's
// browser bundle to log in over BOSH at Herald's /http-bind (cross-origin: CORS), fetch
// the roster, send presence and receive a chat from a Node-side strophe.js client.
// The page checks its own results; a screenshot goes to tests/artifacts/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { startXmppHerald, XmppClient, track, childText } from './xmpp-harness.mjs';
import { withTimeout } from './harness.mjs';
import { ARTIFACTS, launchChromium } from './browser.mjs';

const require = createRequire(import.meta.url);

function stropheBundle() {
  const pkgDir = path.dirname(require.resolve('strophe.js/package.json'));
  const file = path.join(pkgDir, 'dist', 'strophe.umd.min.js');
  if (!fs.existsSync(file)) throw new Error(`strophe.js browser bundle missing: ${file}`);
  return fs.readFileSync(file);
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Herald BOSH from the browser</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 24px; }
 h1 { font-size: 18px; } .ok { color: #0a7d28; } .fail { color: #b00020; }
 pre { background: #f4f4f4; padding: 8px; max-height: 260px; overflow: auto; font-size: 11px; }
</style>
<script src="/strophe.umd.min.js"></script></head>
<body>
<h1>strophe.js ${'${VERSION}'} → Herald BOSH</h1>
<div>page origin: <code id="origin"></code>; BOSH: <code id="bosh"></code></div>
<div>status: <b id="status">loading</b></div>
<h2>checks</h2><ul id="checks"></ul>
<h2>messages</h2><ul id="messages"></ul>
<h2>traffic</h2><pre id="traffic"></pre>
<script>
(function () {
  const S = (window.Strophe && window.Strophe.Connection) ? window.Strophe : window.Strophe.Strophe;
  const params = new URLSearchParams(location.search);
  const bosh = params.get('bosh');
  const state = (window.state = { status: 'init', connected: false, jid: null, roster: null, messages: [], checks: [], errors: [] });
  document.getElementById('origin').textContent = location.origin;
  document.getElementById('bosh').textContent = bosh;
  const $ = (id) => document.getElementById(id);
  function setStatus(s) { state.status = s; $('status').textContent = s; }
  function check(name, ok, detail) {
    state.checks.push({ name, ok: !!ok, detail: detail || '' });
    const li = document.createElement('li');
    li.className = ok ? 'ok' : 'fail';
    li.textContent = (ok ? '✔ ' : '✘ ') + name + (detail ? ' — ' + detail : '');
    $('checks').appendChild(li);
  }
  window.check = check;
  const conn = new S.Connection(bosh);
  window.conn = conn;
  conn.xmlInput = (el) => { $('traffic').textContent += '<< ' + S.serialize(el).slice(0, 300) + '\\n'; };
  conn.xmlOutput = (el) => { $('traffic').textContent += '>> ' + S.serialize(el).slice(0, 300) + '\\n'; };
  conn.addHandler((m) => {
    const body = m.getElementsByTagName('body')[0];
    const rec = { from: m.getAttribute('from'), type: m.getAttribute('type'), id: m.getAttribute('id'), body: body ? body.textContent : null };
    state.messages.push(rec);
    const li = document.createElement('li');
    li.textContent = rec.type + ' from ' + rec.from + ': ' + rec.body;
    $('messages').appendChild(li);
    return true;
  }, null, 'message');
  conn.connect('alice@localhost/browser', 'secret', (status, cond) => {
    const name = Object.keys(S.Status).find((k) => S.Status[k] === status);
    setStatus(name + (cond ? ' (' + cond + ')' : ''));
    if (status === S.Status.CONNECTED) {
      state.connected = true;
      state.jid = conn.jid;
      check('logged in over BOSH from another origin', /^alice@localhost\\//.test(conn.jid), conn.jid);
      const iq = $iq({ type: 'get', id: 'roster-1' }).c('query', { xmlns: 'jabber:iq:roster' });
      conn.sendIQ(iq, (res) => {
        const items = Array.from(res.getElementsByTagName('item')).map((it) => ({
          jid: it.getAttribute('jid'),
          subscription: it.getAttribute('subscription'),
          groups: Array.from(it.getElementsByTagName('group')).map((g) => g.textContent),
        }));
        state.roster = items;
        const jids = items.map((i) => i.jid).sort().join(',');
        check('roster has bob and carol', jids === 'bob@localhost,carol@localhost', jids);
        const bob = items.find((i) => i.jid === 'bob@localhost');
        check('bob: subscription both, group p1', bob && bob.subscription === 'both' && bob.groups.join() === 'p1', JSON.stringify(bob));
        conn.send($pres().c('status').t('hello from chromium'));
        state.presenceSent = true;
      }, (err) => { state.errors.push('roster: ' + (err ? S.serialize(err) : 'timeout')); check('roster', false, 'error'); }, 5000);
    } else if (status === S.Status.AUTHFAIL || status === S.Status.CONNFAIL) {
      state.errors.push(name + ' ' + cond);
      check('login', false, name + ' ' + (cond || ''));
    }
  });
  window.sendChat = (to, body) => conn.send($msg({ to, type: 'chat', id: 'from-browser' }).c('body').t(body));
})();
</script>
</body></html>`;

let herald;
let pageServer;
let browser;

before(async () => {
  herald = await startXmppHerald();
  const bundle = stropheBundle();
  const version = require('strophe.js/package.json').version;
  pageServer = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE.replace('${VERSION}', version));
    } else if (u.pathname === '/strophe.umd.min.js') {
      res.writeHead(200, { 'content-type': 'application/javascript' });
      res.end(bundle);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  pageServer.listen(0, '127.0.0.1');
  await once(pageServer, 'listening');
  browser = await launchChromium();
});

after(async () => {
  if (browser) await withTimeout(browser.close(), 10000, 'browser close').catch(() => {});
  if (pageServer) pageServer.close();
  if (herald) await herald.stop();
});

test('chromium page on another origin: BOSH login, roster, presence and a chat from Node', async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  fs.rmSync(path.join(ARTIFACTS, 'xmpp-browser-failed.png'), { force: true });
  const bob = await track(t, XmppClient.connect(herald.xmppWsUrl, 'bob', { presence: true }));
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  const pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;
  assert.notEqual(new URL(pageOrigin).port, new URL(herald.boshUrl).port, 'page must come from another origin');
  await page.goto(`${pageOrigin}/?bosh=${encodeURIComponent(herald.boshUrl)}`, { timeout: 15000 });

  const diag = async () =>
    `page state: ${JSON.stringify(await page.evaluate(() => window.state).catch((e) => String(e)))}\nconsole:\n${consoleLines.join('\n')}`;
  try {
    await page.waitForFunction(() => window.state?.presenceSent, null, { timeout: 20000 });
  } catch (e) {
    await page.screenshot({ path: path.join(ARTIFACTS, 'xmpp-browser-failed.png') }).catch(() => {});
    throw new Error(`page did not log in and send presence: ${e.message}\n${await diag()}`);
  }

  // Node-side bob sees the page's presence, then chats to it.
  const jid = await page.evaluate(() => window.state.jid);
  assert.equal(jid, 'alice@localhost/browser');
  const p = await bob.waitPresence(
    (x) => x.getAttribute('from') === jid && !x.getAttribute('type'),
    8000,
    'presence from the browser',
  );
  assert.equal(childText(p, 'status'), 'hello from chromium');
  bob.chat('alice@localhost', 'hello chromium, from node', { id: 'to-browser' });
  await page
    .waitForFunction(() => window.state.messages.some((m) => m.body === 'hello chromium, from node'), null, {
      timeout: 10000,
    })
    .catch(async (e) => {
      throw new Error(`chat did not reach the page: ${e.message}\n${await diag()}`);
    });
  await page.evaluate((bobJid) => {
    const m = window.state.messages.find((x) => x.body === 'hello chromium, from node');
    window.check(
      'chat from node received',
      m && m.type === 'chat' && m.from === bobJid && m.id === 'to-browser',
      JSON.stringify(m),
    );
    window.sendChat(bobJid, 'hi node, from chromium');
  }, bob.jid);
  await bob.waitMessage((x) => childText(x, 'body') === 'hi node, from chromium', 8000, 'chat from the browser');

  await page.screenshot({ path: path.join(ARTIFACTS, 'xmpp-browser.png'), fullPage: true });
  const state = await page.evaluate(() => window.state);
  const failed = state.checks.filter((c) => !c.ok);
  assert.equal(
    state.checks.length >= 4,
    true,
    `page ran ${state.checks.length} checks: ${JSON.stringify(state.checks)}`,
  );
  assert.deepEqual(failed, [], `checks failed in the page: ${JSON.stringify(failed)}\n${await diag()}`);
  assert.deepEqual(state.errors, []);
  await page.evaluate(() => window.conn.disconnect());
});
