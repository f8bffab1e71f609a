// engine.useExpressAuth: an unchanged app with rabbitmq-auth-backend-http routes
// answers Herald's auth questions in-process; the app need not listen, and when it
// does, its own HTTP traffic is the same before and after logins.
//
// Every test runs against Express 4 and Express 5 (devDependencies express4 and
// express5), including the seed's own handlers verbatim: js-examples/auth-app.js and
// js-examples/demo/server.js are loaded with their `require('express')` answered by
// the Express under test.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Module, { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import express4 from 'express4';
import express5 from 'express5';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import { T, RawStomp, startEngine, connectStomp, sleep, waitFor, withTimeout } from './helpers.mjs';

const require = createRequire(import.meta.url);
const expressAuth = require('../express-auth.js');
const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'js-examples');

const VERSIONS = [
  ['Express 4', express4, require('express4/package.json').version],
  ['Express 5', express5, require('express5/package.json').version],
];

/**
 * `file` (and the files of js-examples it requires) loaded afresh, with
 * `require('express')` answered by `express`; everything else resolves as usual
 * (so `require('@herald-push/herald')` is this package, already loaded by helpers.mjs).
 */
function loadWithExpress(file, express) {
  const loaded = new Map();
  const load = (filename) => {
    if (loaded.has(filename)) return loaded.get(filename).exports;
    const m = new Module(filename, null);
    m.filename = filename;
    m.paths = Module._nodeModulePaths(path.dirname(filename));
    loaded.set(filename, m);
    m.require = (id) => {
      if (id === 'express') return express;
      if (id.startsWith('.')) {
        const target = Module._resolveFilename(id, m);
        if (target.startsWith(EXAMPLES) && target.endsWith('.js')) return load(target);
      }
      return Module.prototype.require.call(m, id);
    };
    m._compile(fs.readFileSync(filename, 'utf8'), filename);
    m.loaded = true;
    return m.exports;
  };
  return load(file);
}

const passwords = { alice: 'secret', admin: 'root' };

/** The rabbitmq-auth-backend-http example app, as a team already runs it. */
function authApp(express, log) {
  const app = express();
  app.use(express.urlencoded({ extended: false }));
  const params = (req) => (req.method === 'POST' ? req.body : req.query);
  const route = (path, decide) => {
    const handler = (req, res) => {
      const p = { ...params(req) };
      log.push([path, req.method, p]);
      res.send(decide(p));
    };
    app.get(path, handler);
    app.post(path, handler);
  };
  route('/auth/user', ({ username, password }) => {
    if (passwords[username] !== password) return 'deny';
    return username === 'admin' ? 'allow administrator management' : 'allow';
  });
  route('/auth/vhost', ({ vhost }) => (vhost === '/' ? 'allow' : 'deny'));
  route('/auth/resource', ({ resource, name, permission, tags }) => {
    // only administrators may publish to the feed exchange
    const ok =
      !(resource === 'exchange' && name === 'feed' && permission === 'write') ||
      tags.split(' ').includes('administrator');
    return ok ? 'allow' : 'deny';
  });
  route('/auth/topic', ({ routing_key: key }) => (key.startsWith('private.') ? 'deny' : 'allow'));
  app.get('/broken/user', () => {
    throw new Error('handler bug');
  });
  app.get('/slow/user', (req, res) => setTimeout(() => res.send('allow'), 2000));
  app.listen = () => {
    throw new Error('the app must not listen');
  };
  return app;
}

// Every server socket opened (the engine's listeners are native, so none from it).
let listens = 0;
const realListen = net.Server.prototype.listen;
before(() => {
  net.Server.prototype.listen = function (...args) {
    listens++;
    return realListen.apply(this, args);
  };
});
after(() => {
  net.Server.prototype.listen = realListen;
});

let current;
const cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  if (current) await current.stop();
  current = undefined;
  // every in-process call has ended: no stream pair, parser or timer left behind
  await waitFor('in-process auth calls to end', () => expressAuth.inFlight() === 0, 3000);
});

async function setup(app, paths, timeoutMs) {
  const { engine, port } = await startEngine();
  current = engine;
  engine.useExpressAuth(app, paths, timeoutMs);
  return { engine, port: port('stomp-tcp') };
}

/** A STOMP login's answer: 'CONNECTED' or 'ERROR'. */
async function login(port, user, pass) {
  const c = await RawStomp.open(port);
  try {
    return (await c.connect(user, pass)).command;
  } finally {
    c.close();
  }
}

/** Listens on a free loopback port; the app's own, real HTTP server. */
async function listen(app) {
  const server = http.createServer(app);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${server.address().port}`;
}

async function fetchAll(base, requests) {
  const out = [];
  for (const [p, init] of requests) {
    const r = await fetch(base + p, init);
    out.push({
      path: p,
      status: r.status,
      type: r.headers.get('content-type'),
      extra: r.headers.get('x-extra'),
      body: await r.text(),
    });
  }
  return out;
}

const basic = (user, pass) => ({ authorization: `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}` });

for (const [name, express, version] of VERSIONS) {
  describe(`${name} (${version})`, () => {
    test('the Express under test is the one named', () => {
      assert.equal(version.split('.')[0], name.split(' ')[1]);
    });

    test('logins go to GET /auth/user with username and password; allow/deny decide', T, async () => {
      const log = [];
      const before = listens;
      const { port } = await setup(authApp(express, log));
      const alice = await connectStomp(port, 'alice', 'secret');
      alice.close();
      assert.equal(await login(port, 'alice', 'wrong'), 'ERROR');
      assert.deepEqual(log[0], ['/auth/user', 'GET', { username: 'alice', password: 'secret', ip: '127.0.0.1' }]);
      assert.deepEqual(log[1], ['/auth/vhost', 'GET', { username: 'alice', vhost: '/', ip: '127.0.0.1', tags: '' }]);
      assert.equal(listens, before, 'no listening socket was opened');
    });

    test('tags from `allow <tags>` flow into later checks; a denied SEND gets an ERROR', T, async () => {
      const log = [];
      const { engine, port } = await setup(authApp(express, log));
      const admin = await connectStomp(port, 'admin', 'root');
      const vhostQuery = log.find(([path, , p]) => path === '/auth/vhost' && p.username === 'admin')[2];
      assert.equal(vhostQuery.tags, 'administrator management');
      await admin.subscribe('/exchange/feed/admin');
      admin.send('SEND', { destination: '/exchange/feed/admin', receipt: 'r' }, 'from admin');
      assert.equal((await admin.next('RECEIPT')).headers['receipt-id'], 'r');
      assert.equal((await admin.next('MESSAGE')).body, 'from admin');
      admin.close();
      const writeCheck = log.find(
        ([path, , p]) => path === '/auth/resource' && p.username === 'admin' && p.permission === 'write',
      )[2];
      assert.deepEqual(writeCheck, {
        username: 'admin',
        vhost: '/',
        resource: 'exchange',
        name: 'feed',
        permission: 'write',
        tags: 'administrator management',
      });
      // alice has no administrator tag: the resource handler denies her SEND
      const alice = await connectStomp(port, 'alice', 'secret');
      await alice.subscribe('/exchange/feed/alice');
      alice.send('SEND', { destination: '/exchange/feed/alice' }, 'not allowed');
      const err = await alice.next('ERROR');
      assert.match(`${err.headers.message} ${err.body}`, /refused/);
      await alice.closed;
      await waitFor('sessions closed', () => engine.stats().sessions === 0);
    });

    test('topic checks send resource=topic, name=<exchange> and routing_key', T, async () => {
      const log = [];
      const { port } = await setup(authApp(express, log));
      const alice = await connectStomp(port, 'alice', 'secret');
      alice.send('SEND', { destination: '/topic/public.news', receipt: 'ok' }, 'hi');
      assert.equal((await alice.next()).command, 'RECEIPT');
      alice.send('SEND', { destination: '/topic/private.news' }, 'hi');
      assert.equal((await alice.next()).command, 'ERROR');
      alice.close();
      const topics = log.filter(([path]) => path === '/auth/topic').map(([, , p]) => p);
      assert.deepEqual(topics[0], {
        username: 'alice',
        vhost: '/',
        resource: 'topic',
        name: 'amq.topic',
        permission: 'write',
        tags: '',
        routing_key: 'public.news',
      });
      assert.equal(topics[1].routing_key, 'private.news');
    });

    test('POST sends the same parameters as a form body (parsed by express.urlencoded)', T, async () => {
      const log = [];
      const { port } = await setup(authApp(express, log), { method: 'POST', user: '/auth/user' });
      const alice = await connectStomp(port, 'alice', 'secret');
      alice.close();
      assert.equal(await login(port, 'alice', 'wr&ng=pass word'), 'ERROR');
      assert.deepEqual(log[0], ['/auth/user', 'POST', { username: 'alice', password: 'secret', ip: '127.0.0.1' }]);
      assert.equal(log[1][1], 'POST');
      const refused = log.find(([p, , q]) => p === '/auth/user' && q.password !== 'secret');
      assert.equal(refused[2].password, 'wr&ng=pass word', 'the form encoding round-trips');
    });

    test(
      'the seed app (js-examples/auth-app.js) verbatim: @stomp/stompjs logins, its real HTTP traffic unchanged',
      T,
      async () => {
        const { createAuthApp, AUTH_PATHS } = loadWithExpress(path.join(EXAMPLES, 'auth-app.js'), express);
        const { engine, listeners } = await startEngine({ http: { listen: '127.0.0.1:0' } });
        current = engine;
        const app = createAuthApp({ engine, onDecision: null });
        app.locals.herald.listeners = listeners;
        engine.useExpressAuth(app, AUTH_PATHS);
        const base = await listen(app);

        const traffic = [
          ['/config.json'],
          ['/auth/user?username=alice&password=secret'],
          ['/auth/user?username=alice&password=nope'],
          [
            '/auth/user',
            {
              method: 'POST',
              headers: { 'content-type': 'application/x-www-form-urlencoded' },
              body: 'username=guest&password=guest',
            },
          ],
          [
            '/auth/topic',
            {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({
                username: 'alice',
                vhost: '/',
                name: 'feed',
                permission: 'read',
                routing_key: 'bob',
              }),
            },
          ],
          ['/publish', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }],
          ['/stomp-sockjs.html'],
          ['/no/such/page'],
        ];
        const beforeLogins = await fetchAll(base, traffic);
        assert.equal(beforeLogins[0].status, 200);
        assert.match(beforeLogins[0].type, /application\/json/);
        assert.ok(JSON.parse(beforeLogins[0].body).listeners['stomp-tcp'].port > 0, 'res.json of app.locals');
        assert.deepEqual(
          beforeLogins.slice(1, 6).map((r) => [r.status, r.body]),
          [
            [200, 'allow'],
            [200, 'deny'],
            [200, 'allow administrator management'],
            [200, 'deny'],
            [400, '{"error":"destination is required"}'],
          ],
        );
        assert.match(beforeLogins[1].type, /^text\/plain/);
        assert.equal(beforeLogins[6].status, 200);
        assert.equal(beforeLogins[7].status, 404);

        // logins with a real STOMP client over WebSocket, decided by the app's handlers
        const ws = `ws://127.0.0.1:${listeners.find((l) => l.name === 'http').port}/ws`;
        const stomp = (login, passcode) => {
          const client = new Client({
            webSocketFactory: () => new WebSocket(ws, ['v12.stomp']),
            connectHeaders: { login, passcode, host: '/' },
            reconnectDelay: 0,
            debug: () => {},
          });
          const outcome = new Promise((resolve) => {
            client.onConnect = () => resolve('connected');
            client.onStompError = (f) => resolve(`refused: ${f.headers.message}`);
            client.onWebSocketClose = () => resolve('closed');
          });
          client.activate();
          return { client, outcome: withTimeout(outcome, 5000, `stompjs ${login}`) };
        };
        const alice = stomp('alice', 'secret');
        assert.equal(await alice.outcome, 'connected');
        const bad = stomp('bob', 'wrong');
        assert.match(await bad.outcome, /^refused/);
        await bad.client.deactivate();

        // the topic handler lets alice read her own feed; /publish (a JSON body) reaches her
        const got = [];
        await new Promise((resolve) => {
          alice.client.subscribe('/exchange/feed/alice', (m) => got.push(m.body), { receipt: 'sub' });
          alice.client.watchForReceipt('sub', resolve);
        });
        const published = await fetch(`${base}/publish`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ destination: '/exchange/feed/alice', body: 'hello alice' }),
        });
        assert.deepEqual(await published.json(), { routed: 1 });
        await waitFor('alice gets the message', () => got.length === 1);
        assert.equal(got[0], 'hello alice');
        await alice.client.deactivate();

        // the in-process questions reached the same handlers (their decision log)
        const decisions = await (await fetch(`${base}/auth/log`)).json();
        const logins = decisions.filter((d) => d.path === '/auth/user').map((d) => [d.username, d.result]);
        assert.deepEqual(logins.slice(-2), [
          ['alice', 'allow'],
          ['bob', 'deny'],
        ]);
        assert.ok(decisions.some((d) => d.path === '/auth/topic' && d.routing_key === 'alice' && d.result === 'allow'));

        const afterLogins = await fetchAll(base, traffic);
        assert.deepEqual(afterLogins, beforeLogins, "the app's own HTTP answers did not change");
      },
    );

    test(
      'the seed demo (js-examples/demo/server.js) verbatim: logins and its API with Basic auth and JSON',
      T,
      async () => {
        const { createDemo } = loadWithExpress(path.join(EXAMPLES, 'demo', 'server.js'), express);
        const env = {
          HERALD_STOMP_PORT: '0',
          HERALD_HTTP_PORT: '0',
          HERALD_ADMIN_PORT: 'off',
          HERALD_DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'herald-express-demo-')),
        };
        const demo = createDemo({ env });
        const { url, listeners, stop } = await demo.start({ port: 0, host: '127.0.0.1' });
        cleanups.push(async () => {
          await stop();
          fs.rmSync(env.HERALD_DATA_DIR, { recursive: true, force: true });
        });
        const stompPort = listeners.find((l) => l.name === 'stomp-tcp').port;
        const api = [
          ['/api/config'],
          ['/api/board'],
          ['/api/board', { headers: basic('bob', 'secret') }],
          ['/api/board', { headers: basic('dave', 'secret') }],
          [
            '/api/cards/nope/move',
            {
              method: 'POST',
              headers: { ...basic('bob', 'secret'), 'content-type': 'application/json' },
              body: '{"column":"done"}',
            },
          ],
          [
            '/api/cards',
            {
              method: 'POST',
              headers: { ...basic('bob', 'secret'), 'content-type': 'application/json' },
              body: '{"column":"todo"}',
            },
          ],
        ];
        const beforeLogins = await fetchAll(url, api);
        assert.deepEqual(
          beforeLogins.map((r) => r.status),
          [200, 401, 200, 403, 404, 400],
        );
        assert.deepEqual(JSON.parse(beforeLogins[4].body), { error: 'no card nope' }, 'the error middleware answered');
        assert.deepEqual(JSON.parse(beforeLogins[5].body), { error: 'a card needs a title' });

        const bob = await connectStomp(stompPort, 'bob', 'secret');
        await bob.subscribe('/exchange/project/p1');
        const created = await fetch(`${url}/api/cards`, {
          method: 'POST',
          headers: { ...basic('alice', 'secret'), 'content-type': 'application/json' },
          body: JSON.stringify({ title: 'in-process auth', assignee: 'bob' }),
        });
        assert.equal(created.status, 201);
        const event = JSON.parse((await bob.next('MESSAGE')).body);
        assert.equal(event.type, 'card-added');
        assert.equal(event.card.title, 'in-process auth');
        bob.close();
        assert.equal(await login(stompPort, 'bob', 'oops'), 'ERROR');
        assert.equal(await login(stompPort, 'mallory', 'secret'), 'ERROR');
        const decisions = await (await fetch(`${url}/api/auth-log`)).json();
        assert.deepEqual(
          decisions.filter((d) => d.path === '/auth/user').map((d) => [d.username, d.result, d.reason]),
          [
            ['bob', 'allow', 'password ok'],
            ['bob', 'deny', 'bad password'],
            ['mallory', 'deny', 'unknown user'],
          ],
        );

        const afterLogins = await fetchAll(url, api);
        // the same answers, but for the board, which has the card added since
        const board = (r) => JSON.parse(r.body).cards.length;
        assert.equal(board(afterLogins[2]), board(beforeLogins[2]) + 1);
        afterLogins[2].body = beforeLogins[2].body;
        assert.deepEqual(afterLogins, beforeLogins);
      },
    );

    test("an app whose real traffic relies on Express's prototypes is the same after logins", T, async () => {
      const app = express();
      const seen = [];
      app.locals.greeting = 'hello';
      app.use(express.urlencoded({ extended: false }));
      app.use(express.json());
      app.use((req, res, next) => {
        res.locals.path = req.path;
        res.set('x-extra', `${req.method} ${req.path}`);
        next();
      });
      app.get('/auth/user', (req, res) => {
        seen.push({ ip: req.ip, host: req.hostname, xhr: req.xhr, query: { ...req.query }, locals: res.locals.path });
        res.type('text').send(req.query.password === 'secret' ? 'allow' : 'deny');
      });
      app.all('/auth/:kind', (req, res) => res.send('allow'));
      app.get('/echo', (req, res) =>
        res.json({ query: req.query, locals: res.locals.path, greeting: req.app.locals.greeting, ip: req.ip }),
      );
      app.post('/echo', (req, res) =>
        res.status(201).json({ body: req.body, type: req.is('json') || req.is('urlencoded') }),
      );
      app.get('/redirect', (req, res) => res.redirect('/echo?from=redirect'));
      app.get('/fail', (req, res, next) => next(Object.assign(new Error('teapot'), { status: 418 })));
      app.get('/throw', () => {
        throw new Error('sync bug');
      });
      app.use((err, req, res, next) =>
        res.status(err.status || 500).json({ error: err.message, path: res.locals.path }),
      );
      const protos = [app.request, app.response].map((p) => [
        Object.getPrototypeOf(p),
        Object.getPrototypeOf(Object.getPrototypeOf(p)),
        Object.keys(Object.getOwnPropertyDescriptors(Object.getPrototypeOf(p))).sort(),
      ]);

      const { port } = await setup(app);
      const base = await listen(app);
      const traffic = [
        ['/echo?a=1&b=two&b=three'],
        ['/echo', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"x":[1,2]}' }],
        [
          '/echo',
          { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'x=1&y=a+b' },
        ],
        ['/redirect', { redirect: 'manual' }],
        ['/fail'],
        ['/throw'],
        ['/missing'],
      ];
      const beforeLogins = await fetchAll(base, traffic);
      assert.deepEqual(
        beforeLogins.map((r) => r.status),
        [200, 201, 201, 302, 418, 500, 404],
      );
      assert.deepEqual(JSON.parse(beforeLogins[0].body), {
        query: { a: '1', b: ['two', 'three'] },
        locals: '/echo',
        greeting: 'hello',
        ip: '127.0.0.1',
      });
      assert.deepEqual(JSON.parse(beforeLogins[1].body), { body: { x: [1, 2] }, type: 'json' });
      assert.deepEqual(JSON.parse(beforeLogins[2].body), { body: { x: '1', y: 'a b' }, type: 'urlencoded' });
      assert.deepEqual(JSON.parse(beforeLogins[4].body), { error: 'teapot', path: '/fail' });
      assert.deepEqual(JSON.parse(beforeLogins[5].body), { error: 'sync bug', path: '/throw' });
      assert.equal(beforeLogins[0].extra, 'GET /echo');

      // logins, some at the same time as the app's real traffic
      const results = await Promise.all([
        login(port, 'alice', 'secret'),
        fetchAll(base, traffic),
        login(port, 'bob', 'nope'),
        fetchAll(base, traffic),
        login(port, 'carol', 'secret'),
      ]);
      assert.deepEqual([results[0], results[2], results[4]], ['CONNECTED', 'ERROR', 'CONNECTED']);
      assert.deepEqual(results[1], beforeLogins);
      assert.deepEqual(results[3], beforeLogins);
      assert.deepEqual(
        seen.find((q) => q.query.username === 'alice'),
        {
          ip: '127.0.0.1',
          host: 'localhost',
          xhr: false,
          query: { username: 'alice', password: 'secret', ip: '127.0.0.1' },
          locals: '/auth/user',
        },
      );

      assert.deepEqual(await fetchAll(base, traffic), beforeLogins, "the app's own HTTP answers did not change");
      const protosAfter = [app.request, app.response].map((p) => [
        Object.getPrototypeOf(p),
        Object.getPrototypeOf(Object.getPrototypeOf(p)),
        Object.keys(Object.getOwnPropertyDescriptors(Object.getPrototypeOf(p))).sort(),
      ]);
      assert.deepEqual(protosAfter, protos, "Express's request/response prototypes are untouched");
      assert.equal(Object.getPrototypeOf(Object.getPrototypeOf(app.request)), http.IncomingMessage.prototype);
      assert.equal(Object.getPrototypeOf(Object.getPrototypeOf(app.response)), http.ServerResponse.prototype);
    });

    test('a handler that throws (HTTP 500), a missing route (404) or a slow one denies', T, async () => {
      for (const [paths, timeout] of [
        [{ user: '/broken/user' }],
        [{ user: '/no/such/route' }],
        [{ user: '/slow/user' }, 200],
      ]) {
        const { port } = await setup(authApp(express, []), paths, timeout);
        const started = Date.now();
        assert.equal(await login(port, 'alice', 'secret'), 'ERROR', JSON.stringify(paths));
        assert.ok(Date.now() - started < 1500, 'denied without waiting for the slow handler');
        await current.stop();
        current = undefined;
      }
    });

    test(
      'a handler that never answers is ended at the timeout: denied, its request closed, nothing left open',
      T,
      async () => {
        const app = express();
        const closed = [];
        app.get('/auth/user', (req, res) => {
          res.on('close', () => closed.push(res.writableEnded));
        });
        const { port } = await setup(app, undefined, 300);
        const started = Date.now();
        const answers = await Promise.all([1, 2, 3].map(() => login(port, 'alice', 'secret')));
        assert.deepEqual(answers, ['ERROR', 'ERROR', 'ERROR']);
        assert.ok(Date.now() - started < 2000, `denied at the timeout (${Date.now() - started} ms)`);
        await waitFor('the hung requests are closed', () => closed.length === 3);
        assert.deepEqual(closed, [false, false, false]);
        assert.equal(expressAuth.inFlight(), 0);
      },
    );

    test(
      'an answer larger than 64 KiB denies, even one that starts with allow; a streaming one is cut off',
      T,
      async () => {
        const app = express();
        let streamed = 0;
        let streamClosed = false;
        app.get('/big/user', (req, res) => res.send(`allow ${'tag '.repeat(20000)}`));
        app.get('/stream/user', (req, res) => {
          res.type('text').write('allow');
          const timer = setInterval(() => {
            streamed += 16384;
            res.write(' x'.repeat(8192));
          }, 1);
          res.on('close', () => {
            streamClosed = true;
            clearInterval(timer);
          });
        });
        app.get('/fits/user', (req, res) => res.send(`allow ${'t '.repeat(1000)}`));
        app.get('/auth/:kind', (req, res) => res.send('allow'));
        for (const [user, answer] of [
          ['/big/user', 'ERROR'],
          ['/stream/user', 'ERROR'],
          ['/fits/user', 'CONNECTED'],
        ]) {
          const { port } = await setup(app, { user }, 3000);
          const started = Date.now();
          assert.equal(await login(port, 'alice', 'secret'), answer, user);
          assert.ok(Date.now() - started < 2000, `${user} answered before the timeout`);
          await current.stop();
          current = undefined;
        }
        await waitFor('the streaming response is closed', () => streamClosed);
        const total = streamed;
        assert.ok(total >= expressAuth.MAX_BODY && total < 64 * expressAuth.MAX_BODY, `streamed ${total} bytes`);
        await sleep(50);
        assert.equal(streamed, total, 'the handler stopped writing once its response was closed');
      },
    );

    test('many logins at once are each answered by the handlers; nothing piles up', T, async () => {
      const log = [];
      const { port } = await setup(authApp(express, log));
      const resourcesBefore = process.getActiveResourcesInfo().filter((r) => r !== 'TCPSocketWrap').length;
      const users = Array.from({ length: 60 }, (_, i) => (i % 3 === 0 ? ['alice', 'wrong'] : ['alice', 'secret']));
      const answers = await Promise.all(users.map(([u, p]) => login(port, u, p)));
      assert.deepEqual(
        answers,
        users.map(([, p]) => (p === 'secret' ? 'CONNECTED' : 'ERROR')),
      );
      assert.equal(log.filter(([p]) => p === '/auth/user').length, 60);
      assert.equal(expressAuth.inFlight(), 0);
      await sleep(50);
      const resourcesAfter = process.getActiveResourcesInfo().filter((r) => r !== 'TCPSocketWrap').length;
      assert.ok(resourcesAfter <= resourcesBefore, `active resources ${resourcesBefore} → ${resourcesAfter}`);
    });

    test('bad arguments are ERR_HERALD_ARGUMENT', T, async () => {
      const { engine } = await setup(authApp(express, []));
      assert.throws(() => engine.useExpressAuth({}), { code: 'ERR_HERALD_ARGUMENT' });
      assert.throws(() => engine.useExpressAuth(express(), { method: 'PUT' }), {
        code: 'ERR_HERALD_ARGUMENT',
        message: /PUT/,
      });
    });
  });
}

describe('any (req, res) listener, not only Express', () => {
  const decide = (req, res) => {
    const q = new URL(req.url, 'http://in-process').searchParams;
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(q.get('password') === 'secret' || !req.url.startsWith('/auth/user') ? 'allow' : 'deny');
  };

  test(
    'an http.createServer callback decides; one that throws or rejects denies and the process carries on',
    T,
    async () => {
      let port = (await setup(decide)).port;
      assert.equal(await login(port, 'alice', 'secret'), 'CONNECTED');
      assert.equal(await login(port, 'alice', 'nope'), 'ERROR');
      await current.stop();

      port = (
        await setup((req, res) => {
          if (req.url.startsWith('/auth/user')) throw new Error('listener bug');
          decide(req, res);
        })
      ).port;
      assert.equal(await login(port, 'alice', 'secret'), 'ERROR');
      await current.stop();

      // Koa's app.callback() shape: an async listener
      port = (
        await setup(async (req, res) => {
          await sleep(1);
          if (req.url.startsWith('/auth/user')) throw new Error('async bug');
          decide(req, res);
        })
      ).port;
      assert.equal(await login(port, 'alice', 'secret'), 'ERROR');
    },
  );

  test('the injector itself: a form POST as rabbitmq-auth-backend-http sends it, timeouts bounded', async () => {
    const got = [];
    const app = (req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        got.push({
          method: req.method,
          url: req.url,
          type: req.headers['content-type'],
          length: req.headers['content-length'],
          body,
        });
        res.end('allow');
      });
    };
    const reply = await expressAuth.inject(app, {
      method: 'POST',
      url: '/auth/user',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: 'username=al%C3%AFce&password=a+b',
    });
    assert.deepEqual(reply, { statusCode: 200, payload: 'allow' });
    assert.deepEqual(got, [
      {
        method: 'POST',
        url: '/auth/user',
        type: 'application/x-www-form-urlencoded',
        length: '32',
        body: 'username=al%C3%AFce&password=a+b',
      },
    ]);
    // an absurd timeout is clamped, not turned into an immediate one
    assert.deepEqual(await expressAuth.inject(app, { method: 'GET', url: '/x', timeoutMs: 4294967295 }), {
      statusCode: 200,
      payload: 'allow',
    });
    await assert.rejects(
      expressAuth.inject(() => {}, { method: 'GET', url: '/hang', timeoutMs: 50 }),
      /within 50 ms/,
    );
    await assert.rejects(
      expressAuth.inject((req) => req.socket.destroy(), { method: 'GET', url: '/reset', timeoutMs: 1000 }),
      /request failed: socket hang up/,
    );
    assert.equal(expressAuth.inFlight(), 0);
  });
});
