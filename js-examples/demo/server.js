// Herald demo: a live project board.
//
//   node js-examples/demo/server.js      → Herald demo: http://localhost:3000  users: alice, bob, carol / secret
//
// One Node.js process runs an Express app and Herald (the `herald` addon). The browser
// signs in to Herald directly over STOMP (WebSocket /ws or SockJS /stomp); Herald asks
// this app's own /auth/user handler whether the password is right (useExpressAuth), so
// the app stays the only place that knows users and passwords. Then:
//
//   board      GET /api/board; a move or a new card (POST) updates the in-memory board
//              and is published to /exchange/project/p1 → every member's board updates.
//   presence   GET /api/online (engine.onlineUsers) for the first paint, then live events
//              on /exchange/presence/p1.*; POST /api/presence → engine.setPresence().
//   feed       pushes to one user on /exchange/feed/<uid>: a card of yours moved by
//              someone else, or a poke (POST /api/poke) → engine.sendToUser().
//
// The page's own calls to /api/* carry the same credentials (HTTP Basic), checked
// against the same user map. In memory only; restart = fresh board.
//
// Environment: PORT (3000), HOST (127.0.0.1), HERALD_HTTP_PORT (15674),
// HERALD_STOMP_PORT (61613), HERALD_BIND (127.0.0.1), HERALD_BOSH_PORT / HERALD_XMPP_PORT
// (off; set them to also let XMPP clients in), HERALD_DATA_DIR. Port 0 = any free port.

'use strict';

const path = require('node:path');
const express = require('express');
const { Engine } = require('@herald-push/herald');
const { AUTH_PATHS, createAuthRules, authRoutes, printDecision } = require('../auth-app');
const { DEMO_USERS, DEMO_PROJECTS, heraldConfig, listenerMap, basicCredentials } = require('../lib/config');
const { vendorRouter } = require('../lib/vendor');
const { Board } = require('./board');

const PROJECT = DEMO_PROJECTS.find((p) => p.id === 'p1');
const PRESENCE_STATES = ['online', 'away', 'dnd'];

function createDemo({ env = process.env } = {}) {
  const config = heraldConfig({ env, nodeName: 'herald-demo@localhost', admin: 15672 });
  const engine = new Engine(config);
  const board = new Board({ projectId: PROJECT.id, name: PROJECT.name, members: PROJECT.members });
  const rules = createAuthRules({ users: DEMO_USERS, projects: DEMO_PROJECTS });
  const authLog = [];
  let listeners = [];

  // The engine's own events: who comes, goes and changes state (the pages get the
  // same changes on /exchange/presence/p1.*).
  engine.on('presence', (ev) => console.log(`presence: ${ev.uid} ${ev.state}${ev.status ? ` (${ev.status})` : ''}`));

  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '16kb' }));

  // Herald's auth backend: the rabbitmq-auth-backend-http handlers (see ../auth-app.js).
  app.use(authRoutes({ rules, log: authLog, onDecision: printDecision }));

  // What the page needs before signing in.
  app.get('/api/config', (req, res) => {
    const l = listenerMap(listeners);
    res.json({
      project: { id: PROJECT.id, name: PROJECT.name, members: PROJECT.members },
      herald: { httpPort: l.http ? l.http.port : null, wsPath: '/ws', sockjsPath: '/stomp' },
    });
  });

  // The auth handlers' recent decisions (no passwords): who was allowed or refused, and why.
  app.get('/api/auth-log', (req, res) => res.json(authLog.slice(-100)));

  // Everything below needs a signed-in project member (HTTP Basic, same user map).
  const api = express.Router();
  api.use((req, res, next) => {
    const cred = basicCredentials(req);
    if (!cred || !rules.user(cred.username, cred.password).allow) {
      return res.status(401).json({ error: 'sign in first' });
    }
    if (!PROJECT.members.includes(cred.username)) {
      return res.status(403).json({ error: `${cred.username} is not a member of ${PROJECT.name}` });
    }
    req.uid = cred.username;
    next();
  });

  api.get('/board', (req, res) => res.json(board.snapshot()));

  api.get('/online', async (req, res, next) => {
    try {
      const online = await engine.onlineUsers(PROJECT.id);
      const states = {};
      for (const uid of online) states[uid] = ((await engine.presence(uid)) || { state: 'online' }).state;
      res.json({ online, states });
    } catch (e) {
      next(e);
    }
  });

  api.post('/cards/:id/move', (req, res) => {
    const { card, from } = board.move(req.params.id, String(req.body?.column || ''));
    if (from !== card.column) {
      const event = { type: 'card-moved', by: req.uid, card, from, to: card.column, version: board.version };
      const routed = engine.publish(`/exchange/project/${PROJECT.id}`, JSON.stringify(event), {
        'content-type': 'application/json',
      });
      if (card.assignee && card.assignee !== req.uid) {
        notify(card.assignee, {
          type: 'card-moved',
          from: req.uid,
          card: card.id,
          text: `${req.uid} moved “${card.title}” to ${board.columnTitle(card.column)}`,
        });
      }
      return res.json({ card, routed });
    }
    res.json({ card, routed: 0 });
  });

  api.post('/cards', (req, res) => {
    const { title, assignee, column } = req.body || {};
    const card = board.add({ title, assignee: assignee || null, column: column || 'todo' });
    const event = { type: 'card-added', by: req.uid, card, version: board.version };
    engine.publish(`/exchange/project/${PROJECT.id}`, JSON.stringify(event), { 'content-type': 'application/json' });
    if (card.assignee && card.assignee !== req.uid) {
      notify(card.assignee, {
        type: 'card-added',
        from: req.uid,
        card: card.id,
        text: `${req.uid} assigned “${card.title}” to you`,
      });
    }
    res.status(201).json({ card });
  });

  api.post('/presence', async (req, res, next) => {
    const state = String(req.body?.state || '');
    if (!PRESENCE_STATES.includes(state))
      return res.status(400).json({ error: `state must be one of ${PRESENCE_STATES.join(', ')}` });
    try {
      const applied = await engine.setPresence(req.uid, state);
      res.json({ state, applied });
    } catch (e) {
      next(e);
    }
  });

  api.post('/poke', (req, res) => {
    const to = String(req.body?.to || '');
    if (!PROJECT.members.includes(to)) return res.status(400).json({ error: `${to} is not on this project` });
    const delivered = notify(to, { type: 'poke', from: req.uid, text: `${req.uid} poked you` });
    res.json({ delivered });
  });

  app.use('/api', api);

  // Errors: the board's own (with a status), the engine's (with a code).
  app.use((err, req, res, next) => {
    if (res.headersSent) return next(err);
    const status = err.status || (err.code ? 502 : 500);
    if (status >= 500) console.error('demo:', err);
    res.status(status).json({ error: err.message, code: err.code });
  });

  function notify(uid, payload) {
    return engine.sendToUser(uid, JSON.stringify({ ...payload, at: new Date().toISOString() }), {
      'content-type': 'application/json',
    });
  }

  app.use('/vendor', vendorRouter());
  app.use(express.static(path.join(__dirname, 'public')));

  engine.useExpressAuth(app, AUTH_PATHS);

  async function start({ port = env.PORT ?? 3000, host = env.HOST || '127.0.0.1' } = {}) {
    listeners = await engine.start();
    const server = await new Promise((resolve, reject) => {
      const s = app.listen(Number(port), host, (err) => (err ? reject(err) : resolve(s)));
      s.on('error', reject);
    });
    const shown = host === '127.0.0.1' || host === '0.0.0.0' || host === '::' ? 'localhost' : host;
    const url = `http://${shown}:${server.address().port}`;
    const stop = async () => {
      await new Promise((resolve) => server.close(() => resolve()));
      await engine.stop();
    };
    const adminListener = listeners.find((l) => l.name === 'admin');
    const admin = adminListener
      ? { url: `http://${shown}:${adminListener.port}/admin/`, token: config.admin.tokens[0] }
      : null;
    return { url, server, listeners, admin, stop };
  }

  return { app, engine, board, authLog, start };
}

async function main() {
  const demo = createDemo();
  const { url, listeners, admin, stop } = await demo.start();
  for (const l of listeners) console.log(`herald: listening ${l.name} ${l.addr}`);
  console.log(`Herald demo: ${url}  users: ${PROJECT.members.join(', ')} / secret`);
  if (admin) console.log(`Herald console: ${admin.url}  token: ${admin.token}`);
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    await stop().catch((e) => console.error('demo: stop failed:', e));
    process.exit(0);
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

module.exports = { createDemo };

if (require.main === module) {
  main().catch((e) => {
    console.error(`demo: ${e.code ? `[${e.code}] ` : ''}${e.message}`);
    process.exit(1);
  });
}
