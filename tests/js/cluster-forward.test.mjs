// Issue 17, item 5: no sticky sessions. Three Herald nodes joined over a real
// redis-server, behind Debian's nginx with a plain round-robin `upstream` (no
// ip_hash, no sticky): a BOSH or SockJS request that reaches a node other than the
// one holding its session is forwarded there (docs/cluster.md, "No sticky
// sessions: forwarded requests").
//
// - strophe.js over BOSH in headless Chromium (playwright-core + Debian chromium)
//   through nginx logs in, gets its roster, sends and receives chat, while its
//   requests land on every node (each node's herald_forwarded_requests_total);
// - stompjs 2.3 over sockjs-client restricted to xhr-streaming / xhr-polling
//   through nginx subscribes and receives;
// - a client's own forwarded headers are not trusted, the owner believes a node's;
// - an unknown BOSH sid still gets item-not-found, an unknown SockJS session 404.
//
// nginx, redis-server and chromium are dependencies (tests/services/install.sh,
// tests/run.sh): a missing one fails the suite, never skips it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import {
  startXmppHerald,
  startRedis,
  XmppClient,
  RawBosh,
  httpRequest,
  childText,
  freePort,
  eventually,
} from './xmpp-harness.mjs';
import { uid, sleep, withTimeout, AsyncQueue } from './harness.mjs';
import { ARTIFACTS, launchChromium } from './browser.mjs';

const require = createRequire(import.meta.url);
// Required in the SockJS tests, with strophe.js's global `document` hidden (below).
let SockJS;
const Stomp = require('stompjs');

const T = { timeout: 90000 };
const ADMIN_TOKEN = 'forward-test-token';
const CLIENT = '127.0.0.7'; // a browser behind nginx
const OTHER = '127.0.0.8'; // another one
const PREFIX = `${uid('fwd')}:`;

let redis;
const nodes = []; // { name, server, admin }
let nginx;
let pageServer;
let browser;

// ---- nginx, round-robin over the three nodes ---------------------------------

function nginxBin() {
  for (const p of [process.env.HERALD_NGINX, '/usr/sbin/nginx', '/usr/bin/nginx']) {
    if (p && fs.existsSync(p)) return p;
  }
  throw new Error('nginx not found: apt-get install nginx (tests/services/install.sh). Never skipped.');
}

async function startNginx(xmppPorts, stompPorts) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-nginx-fwd-'));
  fs.chmodSync(dir, 0o755); // workers run as nobody when the tests run as root
  const port = await freePort();
  const loc = (p, upstream) => `
        location ${p} {
            proxy_pass http://${upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 120s;
        }`;
  const upstream = (name, ports) =>
    `    upstream ${name} {\n${ports.map((p) => `        server 127.0.0.1:${p};`).join('\n')}\n    }`;
  const conf = `
worker_processes 1;
error_log ${dir}/error.log info;
pid ${dir}/nginx.pid;
events { worker_connections 512; }
http {
    log_format upstream '$remote_addr "$request" $status -> $upstream_addr $upstream_status $request_time';
    access_log ${dir}/access.log upstream;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
${upstream('xmpp_nodes', xmppPorts)}
${upstream('stomp_nodes', stompPorts)}
    server {
        listen 127.0.0.1:${port};
${loc('/http-bind', 'xmpp_nodes')}
${loc('/stomp', 'stomp_nodes')}
    }
}
`;
  const confPath = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confPath, conf);
  const proc = spawn(nginxBin(), ['-p', `${dir}/`, '-c', confPath, '-e', `${dir}/error.log`, '-g', 'daemon off;'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const deadline = Date.now() + 5000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`nginx exited at start (${proc.exitCode}): ${out}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`nginx did not listen on ${port}: ${out}`);
    await sleep(50);
  }
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    log: () => {
      try {
        const tail = (f) => fs.readFileSync(path.join(dir, f), 'utf8').slice(-3000);
        return `nginx access.log:\n${tail('access.log')}\nnginx error.log:\n${tail('error.log')}`;
      } catch {
        return '';
      }
    },
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await withTimeout(once(proc, 'exit'), 5000, 'nginx exit').catch(() => proc.kill('SIGKILL'));
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---- the nodes ------------------------------------------------------------------

function nodeExtra() {
  return [
    '[cluster]',
    `redis = "${redis.url}"`,
    `prefix = "${PREFIX}"`,
    'heartbeat_ms = 200',
    'ttl_ms = 1000',
    '',
    '[connections]',
    'trusted_proxies = ["127.0.0.1"]',
    '',
    '[admin]',
    'listen = "127.0.0.1:0"',
    `tokens = ["${ADMIN_TOKEN}"]`,
    '',
  ].join('\n');
}

async function metrics(node) {
  const res = await httpRequest(`http://127.0.0.1:${node.admin}/metrics`, {
    method: 'GET',
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  assert.equal(res.status, 200, res.text);
  const out = {};
  for (const line of res.text.split('\n')) {
    const m = /^(herald_forward\w*)(?:\{[^}]*\})? (\d+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  assert.ok('herald_forwarded_requests_total' in out, `no forward counters in /metrics of ${node.name}`);
  return out;
}

async function allMetrics() {
  return Promise.all(nodes.map(metrics));
}

// The node a BOSH sid names: `<32 hex>-<node name in hex>`.
function sidNode(sid) {
  const hex = String(sid).split('-')[1] || '';
  return Buffer.from(hex, 'hex').toString('utf8');
}

// A raw HTTP request from a chosen loopback address.
function rawRequest(url, { method = 'POST', headers = {}, body = '', from = CLIENT, timeoutMs = 15000 } = {}) {
  const u = new URL(url);
  return withTimeout(
    new Promise((resolve, reject) => {
      const data = Buffer.from(body, 'utf8');
      const req = http.request(
        {
          method,
          hostname: u.hostname,
          port: u.port,
          path: u.pathname + u.search,
          localAddress: from,
          headers: { Connection: 'close', 'Content-Length': data.length, ...headers },
          agent: false,
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
        },
      );
      req.on('error', reject);
      req.end(data);
    }),
    timeoutMs,
    `${method} ${url}`,
  );
}

before(async () => {
  redis = await startRedis();
  for (const name of ['fwd-n1', 'fwd-n2', 'fwd-n3']) {
    const server = await startXmppHerald({ nodeName: name, extra: nodeExtra() });
    nodes.push({ name, server, admin: server.listeners.admin.port });
  }
  // Every node has published where it takes forwarded requests.
  await eventually(
    async () => {
      const reg = await redis.client.hgetall(`${PREFIX}nodes`);
      const infos = Object.values(reg).map((j) => JSON.parse(j));
      return infos.length === 3 && infos.every((i) => i.bosh && i.sockjs);
    },
    10000,
    'three nodes in the registry with their BOSH and SockJS addresses',
  );
  nginx = await startNginx(
    nodes.map((n) => n.server.xmppHttpPort),
    nodes.map((n) => n.server.httpPort),
  );
});

after(async () => {
  if (browser) await withTimeout(browser.close(), 10000, 'browser close').catch(() => {});
  if (pageServer) pageServer.close();
  if (nginx) await nginx.stop();
  for (const n of nodes) await n.server.stop();
  if (redis) await redis.stop();
});

// ---- strophe.js over BOSH in Chromium, through nginx ----------------------------

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>BOSH through round-robin nginx</title>
<script src="/strophe.umd.min.js"></script></head>
<body><h1>strophe.js → nginx (round robin) → 3 Herald nodes</h1>
<div>status: <b id="status">loading</b></div><ul id="log"></ul>
<script>
(function () {
  const S = (window.Strophe && window.Strophe.Connection) ? window.Strophe : window.Strophe.Strophe;
  const bosh = new URLSearchParams(location.search).get('bosh');
  const state = (window.state = { status: 'init', jid: null, sid: null, roster: null, messages: [], errors: [] });
  const log = (t) => { const li = document.createElement('li'); li.textContent = t; document.getElementById('log').appendChild(li); };
  const conn = (window.conn = new S.Connection(bosh));
  conn.addHandler((m) => {
    const body = m.getElementsByTagName('body')[0];
    state.messages.push({ from: m.getAttribute('from'), type: m.getAttribute('type'), body: body ? body.textContent : null });
    log('message from ' + m.getAttribute('from') + ': ' + (body ? body.textContent : ''));
    return true;
  }, null, 'message');
  conn.connect('alice@localhost/browser', 'secret', (status, cond) => {
    const name = Object.keys(S.Status).find((k) => S.Status[k] === status);
    state.status = name + (cond ? ' (' + cond + ')' : '');
    document.getElementById('status').textContent = state.status;
    if (status === S.Status.CONNECTED) {
      state.jid = conn.jid;
      state.sid = conn._proto.sid;
      conn.sendIQ($iq({ type: 'get', id: 'roster-1' }).c('query', { xmlns: 'jabber:iq:roster' }), (res) => {
        state.roster = Array.from(res.getElementsByTagName('item')).map((it) => it.getAttribute('jid')).sort();
        log('roster: ' + state.roster.join(', '));
        conn.send($pres());
        state.presenceSent = true;
      }, (err) => state.errors.push('roster ' + (err ? S.serialize(err) : 'timeout')), 8000);
    } else if (status === S.Status.AUTHFAIL || status === S.Status.CONNFAIL || status === S.Status.ERROR) {
      state.errors.push(state.status);
    }
  });
  window.sendChat = (to, body) => conn.send($msg({ to, type: 'chat' }).c('body').t(body));
})();
</script></body></html>`;

test(
  'strophe.js in Chromium over BOSH through round-robin nginx: login, roster, chat both ways; requests land on every node',
  T,
  async (t) => {
    const before = await allMetrics();
    // bob on every node (straight to each node's WebSocket): whichever node holds the
    // page's session, a bob is there.
    const bobs = [];
    for (const n of nodes) {
      bobs.push(await XmppClient.connect(n.server.xmppWsUrl, 'bob', { resource: `on-${n.name}`, presence: true }));
    }
    t.after(async () => {
      for (const b of bobs) await b.close().catch(() => {});
    });

    const pkgDir = path.dirname(require.resolve('strophe.js/package.json'));
    const bundle = fs.readFileSync(path.join(pkgDir, 'dist', 'strophe.umd.min.js'));
    pageServer = http.createServer((req, res) => {
      const u = new URL(req.url, 'http://x');
      if (u.pathname === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(PAGE);
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
    const context = await browser.newContext();
    t.after(() => context.close().catch(() => {}));
    const page = await context.newPage();
    const consoleLines = [];
    page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    const boshUrl = `${nginx.base}/http-bind`;
    await page.goto(`http://127.0.0.1:${pageServer.address().port}/?bosh=${encodeURIComponent(boshUrl)}`);
    const diag = async () =>
      `page: ${JSON.stringify(await page.evaluate(() => window.state).catch(String))}\nconsole:\n${consoleLines.join('\n')}\n${nginx.log()}`;
    await page
      .waitForFunction(() => window.state?.presenceSent, null, { timeout: 30000 })
      .catch(async (e) => {
        fs.mkdirSync(ARTIFACTS, { recursive: true });
        await page.screenshot({ path: path.join(ARTIFACTS, 'cluster-forward-failed.png') }).catch(() => {});
        throw new Error(`the page did not log in through nginx: ${e.message}\n${await diag()}`);
      });
    const state = await page.evaluate(() => window.state);
    assert.match(state.jid, /^alice@localhost\/browser$/);
    assert.deepEqual(state.roster, ['bob@localhost', 'carol@localhost']);
    const owner = sidNode(state.sid);
    const ownerIdx = nodes.findIndex((n) => n.name === owner);
    assert.ok(ownerIdx >= 0, `the sid ${state.sid} names node ${owner}`);
    const bob = bobs[ownerIdx];

    // bob (on the owning node) sees alice come online, and they chat both ways.
    await bob.waitPresence(
      (p) => p.getAttribute('from') === state.jid && !p.getAttribute('type'),
      10000,
      'alice online',
    );
    bob.chat(state.jid, 'hello through nginx');
    await page
      .waitForFunction(() => window.state.messages.some((m) => m.body === 'hello through nginx'), null, {
        timeout: 15000,
      })
      .catch(async (e) => {
        throw new Error(`chat did not reach the page: ${e.message}\n${await diag()}`);
      });
    for (let i = 0; i < 3; i++) {
      await page.evaluate(([to, body]) => window.sendChat(to, body), [bob.jid, `hi bob ${i}`]);
      await bob.waitMessage((m) => childText(m, 'body') === `hi bob ${i}`, 10000, `chat ${i} from the page`);
    }
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'cluster-forward-bosh.png'), fullPage: true });

    // The requests landed on every node: the two others forwarded to the owner.
    const afterM = await allMetrics();
    for (const [i, n] of nodes.entries()) {
      if (i === ownerIdx) continue;
      const sent = afterM[i].herald_forwarded_requests_total - before[i].herald_forwarded_requests_total;
      assert.ok(sent >= 1, `${n.name} forwarded ${sent} BOSH requests to ${owner}\n${await diag()}`);
    }
    const served = afterM[ownerIdx].herald_forwarded_served_total - before[ownerIdx].herald_forwarded_served_total;
    assert.ok(served >= 2, `the owner ${owner} served ${served} forwarded requests`);
    await page.evaluate(() => window.conn.disconnect());
  },
);

// ---- stompjs 2.3 over sockjs-client (HTTP transports), through nginx -------------

for (const transport of ['xhr-streaming', 'xhr-polling']) {
  test(`stompjs over SockJS/${transport} through round-robin nginx subscribes and receives`, T, async () => {
    const before = await allMetrics();
    // strophe.js's Node build (xmpp-harness) installs a global `document` without a
    // domain, which sockjs-client takes for a page with a null origin (then no XHR
    // transport is enabled): hide it for this test.
    const doc = globalThis.document;
    globalThis.document = undefined;
    SockJS ??= require('sockjs-client'); // xhr-streaming reads `document` when loaded
    const messages = new AsyncQueue();
    const connected = new AsyncQueue();
    const errors = new AsyncQueue();
    const ws = new SockJS(`${nginx.base}/stomp`, null, { transports: [transport] });
    const client = Stomp.over(ws);
    client.debug = null;
    client.heartbeat.outgoing = 0;
    client.heartbeat.incoming = 0;
    client.connect(
      'guest',
      'guest',
      (f) => connected.push(f),
      (e) => errors.push(e),
      '/',
    );
    try {
      await Promise.race([
        connected.next(15000, `CONNECTED over SockJS/${transport} through nginx`),
        errors.next(15000, 'error').then((e) => {
          throw new Error(`connect failed: ${typeof e === 'string' ? e : JSON.stringify(e)}\n${nginx.log()}`);
        }),
      ]);
      assert.equal(ws.transport, transport);
      const dest = `/topic/fwd.${uid('t')}`;
      client.subscribe(dest, (m) => messages.push(m));
      // Several sends (each an xhr_send, landing round robin) and receives.
      for (let i = 0; i < 6; i++) {
        client.send(dest, { 'content-type': 'text/plain' }, `message ${i} over ${transport}`);
        const m = await messages.next(10000, `MESSAGE ${i} over SockJS/${transport}`);
        assert.equal(m.body, `message ${i} over ${transport}`);
      }
    } finally {
      await new Promise((resolve) => {
        ws.addEventListener('close', () => resolve());
        try {
          client.disconnect(() => {});
        } catch {
          ws.close();
        }
        setTimeout(resolve, 2000);
      });
      globalThis.document = doc;
    }
    const afterM = await allMetrics();
    const forwarding = nodes.filter(
      (_, i) => afterM[i].herald_forwarded_requests_total > before[i].herald_forwarded_requests_total,
    );
    assert.equal(
      forwarding.length,
      2,
      `two nodes forwarded SockJS requests to the third: ${forwarding.map((n) => n.name)}`,
    );
  });
}

// ---- trust -------------------------------------------------------------------------

test("a client's own forwarded headers are not trusted; a node's are", T, async () => {
  // A SockJS session created straight on node 1 from CLIENT: it belongs to that address.
  const a = nodes[0].server;
  const session = uid('s')
    .replace(/[^a-z0-9]/gi, '')
    .slice(0, 16);
  const open = await rawRequest(`http://127.0.0.1:${a.httpPort}/stomp/123/${session}/xhr`, { from: CLIENT });
  assert.equal(open.status, 200, open.text);
  assert.equal(open.text, 'o\n');
  const send = `/stomp/123/${session}/xhr_send`;
  const heartbeat = '["\\n"]'; // a STOMP EOL: harmless

  // OTHER names CLIENT as the client in a node's headers, sent to the owner itself:
  // not believed (wrong token), the session is not OTHER's.
  const forged = await rawRequest(`http://127.0.0.1:${a.httpPort}${send}`, {
    from: OTHER,
    body: heartbeat,
    headers: { 'X-Herald-Forwarded': 'guessed-token', 'X-Herald-Client': CLIENT, 'Content-Type': 'text/plain' },
  });
  assert.equal(forged.status, 404, `forged forwarded headers were believed: ${forged.status} ${forged.text}`);
  // The same headers to another node: marked as forwarded already, so never forwarded
  // again (and that node does not hold the session).
  const b = nodes[1].server;
  const loop = await rawRequest(`http://127.0.0.1:${b.httpPort}${send}`, {
    from: CLIENT,
    body: heartbeat,
    headers: { 'X-Herald-Forwarded': 'guessed-token', 'Content-Type': 'text/plain' },
  });
  assert.equal(loop.status, 404, `a request marked forwarded was forwarded again: ${loop.status}`);
  // Through nginx: every node forwards CLIENT's sends with CLIENT's address, and the
  // owner believes its peers (the session accepts them); OTHER's are refused wherever
  // they land.
  for (let i = 0; i < 3; i++) {
    const ok = await rawRequest(`${nginx.base}${send}`, {
      from: CLIENT,
      body: heartbeat,
      headers: { 'Content-Type': 'text/plain' },
    });
    assert.equal(ok.status, 204, `send ${i} from the session's own client through nginx: ${ok.status} ${ok.text}`);
    const no = await rawRequest(`${nginx.base}${send}`, {
      from: OTHER,
      body: heartbeat,
      headers: { 'Content-Type': 'text/plain', 'X-Herald-Client': CLIENT },
    });
    assert.equal(no.status, 404, `send ${i} from another client through nginx: ${no.status} ${no.text}`);
  }
});

// ---- unknown sessions ------------------------------------------------------------------

/** How many times Redis has run `HGET` (its own count, `INFO commandstats`). */
async function hgetCalls() {
  const info = String(await redis.client.cmd('INFO', 'commandstats'));
  const m = info.match(/cmdstat_hget:calls=(\d+)/);
  return m ? Number(m[1]) : 0;
}

test('an unknown BOSH sid gets item-not-found and an unknown SockJS session 404, on every node', T, async () => {
  const ghostHex = Buffer.from('ghost-node').toString('hex');
  // Made-up node names are looked up in Redis once per node (then
  // remembered until the registry refresh), not once per request.
  const before = await hgetCalls();
  const t0 = Date.now();
  const answers = await Promise.all(
    Array.from({ length: 30 }, () => {
      const b = new RawBosh(`${nginx.base}/http-bind`);
      b.sid = `0123456789abcdef0123456789abcdef-${Buffer.from('made-up').toString('hex')}`;
      return b.send();
    }),
  );
  const elapsed = Date.now() - t0;
  for (const res of answers) assert.equal(res.body?.getAttribute('condition'), 'item-not-found', res.text);
  const lookups = (await hgetCalls()) - before;
  // One per node, plus one per node after each registry refresh (every
  // heartbeat, 200 ms here) that fell inside the burst.
  const allowed = 3 * (Math.ceil(elapsed / 200) + 1);
  assert.ok(
    lookups <= allowed && lookups < 30,
    `30 requests in ${elapsed} ms naming an unknown node cost ${lookups} HGETs`,
  );
  const realHex = Buffer.from(nodes[2].name).toString('hex');
  for (const sid of [
    '0123456789abcdef0123456789abcdef',
    `0123456789abcdef0123456789abcdef-${ghostHex}`,
    `feedfacefeedfacefeedfacefeedface-${realHex}`,
    'x-zz',
  ]) {
    for (let i = 0; i < 3; i++) {
      const b = new RawBosh(`${nginx.base}/http-bind`);
      b.sid = sid;
      const res = await b.send();
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body?.getAttribute('type'), 'terminate', res.text);
      assert.equal(res.body?.getAttribute('condition'), 'item-not-found', res.text);
    }
  }
  for (let i = 0; i < 3; i++) {
    const res = await rawRequest(`${nginx.base}/stomp/000/${uid('none').replace(/[^a-z0-9]/gi, '')}/xhr_send`, {
      body: '["x"]',
      headers: { 'Content-Type': 'text/plain' },
    });
    assert.equal(res.status, 404, res.text);
  }
});

// ---- Redis down (last: the cluster's Redis does not come back) ---------------------

test(
  'with Redis down, BOSH forwarding goes on from the cached registry and SockJS sessions held elsewhere get 503',
  T,
  async () => {
    // A BOSH session through nginx, logged in before Redis goes.
    const b = new RawBosh(`${nginx.base}/http-bind`);
    const jid = await b.login('carol', 'secret', 'redis-down');
    assert.match(jid, /^carol@localhost\/redis-down$/);
    await redis.stop();
    await sleep(500);
    // Three roster queries: one request lands on each node, two are forwarded.
    for (let i = 0; i < 3; i++) {
      const id = `r-down-${i}`;
      const res = await b.send(
        `<iq type='get' id='${id}' xmlns='jabber:client'><query xmlns='jabber:iq:roster'/></iq>`,
      );
      assert.equal(res.status, 200, `request ${i} with Redis down: ${res.status} ${res.text}`);
      const iq = await b.waitFor((e) => e.localName === 'iq' && e.getAttribute('id') === id, 10000, `roster ${i}`);
      assert.equal(iq.getAttribute('type'), 'result');
    }
    // SockJS: who holds a session cannot be asked.
    for (let i = 0; i < 3; i++) {
      const res = await rawRequest(`${nginx.base}/stomp/000/${uid('down').replace(/[^a-z0-9]/gi, '')}/xhr_send`, {
        body: '["x"]',
        headers: { 'Content-Type': 'text/plain' },
      });
      assert.equal(res.status, 503, res.text);
      assert.match(res.text, /cluster registry unavailable/);
    }
  },
);
