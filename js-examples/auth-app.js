// An Express app that is Herald's authentication and authorization backend, with
// Herald running inside the same Node.js process.
//
// The four handlers have exactly the shape of RabbitMQ's rabbitmq-auth-backend-http
// (the same URLs, query parameters and `allow` / `deny` text answers), so an app that
// already serves them for RabbitMQ keeps them unchanged. `engine.useExpressAuth(app)`
// makes Herald call them in-process, without a socket:
//
//   GET /auth/user?username=&password=                 → "allow [tag ...]" | "deny"
//   GET /auth/vhost?username=&vhost=&ip=               → "allow" | "deny"
//   GET /auth/resource?username=&vhost=&resource=&name=&permission=
//                                                      → "allow" | "deny"
//   GET /auth/topic?username=&vhost=&resource=topic&name=&permission=&routing_key=
//                                                      → "allow" | "deny"
// (POST with the same fields as a form or JSON body works too.)
//
// The rules (`createAuthRules`), kept deliberately small:
//   user      the password must match the app's user map; tags come from it
//             (guest/guest is an administrator, alice..eve/secret are plain users).
//   vhost     known users may open "/" only.
//   resource  administrators may do anything. Others:
//             - exchanges `feed`, `project`, `amq.topic`: read and write (the topic
//               rules below decide which routing keys);
//             - exchange `presence`: read only — only Herald publishes presence;
//             - the default exchange (`amq.default`): write (SEND to /queue/...);
//             - queues named `<username>.<anything>` (the user's own work queues)
//               and server-named queues (`stomp-…`, `amq.gen-…`): everything;
//             - anything else, and `configure` on exchanges: deny.
//   topic     administrators may do anything. Others:
//             - `feed`: read (subscribe) only your own key — /exchange/feed/<you>;
//               write (send) to any known user's key (a direct message);
//             - `project`: read and write keys of projects you are a member of;
//             - `presence`: read `<project>.<uid or *>` of your projects;
//             - `amq.topic`: any key; anything else: deny.
//
// It also serves the example browser pages (public/) with the client libraries from
// node_modules, GET /config.json (where Herald listens) and POST /publish
// ({ destination, body, headers } → engine.publish). /publish is open to whoever
// reaches the port: an example. A real app checks who is calling it.
// What /publish sends to a feed or a project the app also keeps (the last 100 per
// destination, each with an `x-app-id` header on the message): GET /messages hands
// them to a signed-in reader (HTTP Basic), which is where recovery.html reloads from
// when Herald's history cannot fill a gap.
//
// Run: node js-examples/auth-app.js   (PORT, HOST and the HERALD_* variables of lib/config.js)

'use strict';

const path = require('node:path');
const express = require('express');
const { DEMO_USERS, DEMO_PROJECTS, heraldConfig, listenerMap, basicCredentials } = require('./lib/config');
const { vendorRouter } = require('./lib/vendor');

/** Where the handlers live; the same object is handed to engine.useExpressAuth(). */
const AUTH_PATHS = { user: '/auth/user', vhost: '/auth/vhost', resource: '/auth/resource', topic: '/auth/topic' };

/**
 * The decisions, as plain functions: `{ allow: boolean, tags?: string[], reason: string }`.
 * `users`: `{ name: { password, tags } }`; `projects`: `[{ id, members }]`
 * (read on every call, so an app may change them at run time).
 */
function createAuthRules({ users = DEMO_USERS, projects = DEMO_PROJECTS } = {}) {
  const isAdmin = (u) => !!users[u] && (users[u].tags || []).includes('administrator');
  const projectsOf = (u) => projects.filter((p) => p.members.includes(u)).map((p) => p.id);
  const allow = (reason, extra) => ({ allow: true, reason, ...extra });
  const deny = (reason) => ({ allow: false, reason });
  const SERVER_NAMED = /^(stomp-|amq\.gen-)/;

  return {
    user(username, password) {
      const u = users[username];
      if (!u) return deny('unknown user');
      if (u.password !== password) return deny('bad password');
      return allow('password ok', { tags: [...(u.tags || [])] });
    },

    vhost(username, vhost) {
      if (!users[username]) return deny('unknown user');
      return vhost === '/' ? allow('vhost /') : deny(`no access to vhost ${vhost}`);
    },

    resource(username, vhost, resource, name, permission) {
      if (!users[username]) return deny('unknown user');
      if (vhost !== '/') return deny(`no access to vhost ${vhost}`);
      if (isAdmin(username)) return allow('administrator');
      if (resource === 'exchange') {
        if (permission === 'configure') return deny('exchanges are not configurable by users');
        if (['feed', 'project', 'amq.topic'].includes(name)) return allow(`${permission} on ${name}`);
        if (name === 'presence')
          return permission === 'read' ? allow('read presence') : deny('only Herald publishes presence');
        if (name === 'amq.default' || name === '')
          return permission === 'write' ? allow('send to queues') : deny('default exchange');
        return deny(`no access to exchange ${name}`);
      }
      if (resource === 'queue') {
        if (name.startsWith(`${username}.`)) return allow('own queue');
        if (SERVER_NAMED.test(name)) return allow('server-named queue');
        return deny(`queue ${name} belongs to someone else`);
      }
      return deny(`unknown resource ${resource}`);
    },

    topic(username, vhost, exchange, permission, routingKey) {
      if (!users[username]) return deny('unknown user');
      if (vhost !== '/') return deny(`no access to vhost ${vhost}`);
      if (isAdmin(username)) return allow('administrator');
      const key = routingKey || '';
      switch (exchange) {
        case 'feed':
          if (permission === 'read') return key === username ? allow('own feed') : deny(`feed ${key} is not yours`);
          return users[key] ? allow(`message to ${key}`) : deny(`no user ${key}`);
        case 'project':
          return projectsOf(username).includes(key)
            ? allow(`member of ${key}`)
            : deny(`not a member of project ${key}`);
        case 'presence': {
          if (permission !== 'read') return deny('only Herald publishes presence');
          const project = key.split('.')[0];
          return projectsOf(username).includes(project)
            ? allow(`presence of ${project}`)
            : deny(`not a member of project ${project}`);
        }
        case 'amq.topic':
          return allow('public topic');
        default:
          return deny(`no access to exchange ${exchange}`);
      }
    },
  };
}

/**
 * Express router with the four handlers. Every decision is appended to `log`
 * (an array, trimmed to the last 200) and passed to `onDecision` (e.g. to print it).
 */
function authRoutes({ rules = createAuthRules(), log = [], onDecision = null } = {}) {
  const router = express.Router();
  const params = (req) => ({ ...req.query, ...(req.body && typeof req.body === 'object' ? req.body : {}) });
  const answer = (req, res, kind, p, d) => {
    const entry = {
      at: new Date().toISOString(),
      path: AUTH_PATHS[kind],
      username: String(p.username ?? ''),
      result: d.allow ? 'allow' : 'deny',
      reason: d.reason,
    };
    for (const k of ['vhost', 'resource', 'name', 'permission', 'routing_key'])
      if (p[k] !== undefined) entry[k] = String(p[k]);
    log.push(entry);
    if (log.length > 200) log.splice(0, log.length - 200);
    if (onDecision) onDecision(entry);
    const text = d.allow ? ['allow', ...(d.tags || [])].join(' ') : 'deny';
    res.type('text/plain').send(text);
  };

  const handlers = {
    user: (req, res) => {
      const p = params(req);
      answer(req, res, 'user', p, rules.user(String(p.username ?? ''), String(p.password ?? '')));
    },
    vhost: (req, res) => {
      const p = params(req);
      answer(req, res, 'vhost', p, rules.vhost(String(p.username ?? ''), String(p.vhost ?? '')));
    },
    resource: (req, res) => {
      const p = params(req);
      answer(
        req,
        res,
        'resource',
        p,
        rules.resource(
          String(p.username ?? ''),
          String(p.vhost ?? ''),
          String(p.resource ?? ''),
          String(p.name ?? ''),
          String(p.permission ?? ''),
        ),
      );
    },
    topic: (req, res) => {
      const p = params(req);
      answer(
        req,
        res,
        'topic',
        p,
        rules.topic(
          String(p.username ?? ''),
          String(p.vhost ?? ''),
          String(p.name ?? ''),
          String(p.permission ?? ''),
          String(p.routing_key ?? ''),
        ),
      );
    },
  };
  for (const [kind, handler] of Object.entries(handlers)) {
    router.get(AUTH_PATHS[kind], handler);
    router.post(AUTH_PATHS[kind], handler);
  }
  return router;
}

/** One line per decision that matters: logins, and every denial. */
function printDecision(entry) {
  if (entry.path !== AUTH_PATHS.user && entry.result === 'allow') return;
  const what =
    entry.path === AUTH_PATHS.user
      ? ''
      : ` ${entry.resource ?? ''} ${entry.name ?? entry.vhost ?? ''} ${entry.permission ?? ''}${entry.routing_key !== undefined ? ` key=${entry.routing_key}` : ''}`;
  console.log(
    `auth: ${entry.path} ${entry.username}${what.replace(/\s+/g, ' ').trimEnd()} → ${entry.result} (${entry.reason})`,
  );
}

/** The destinations with history in Herald (and kept by the app): exchange, routing key. */
const STREAM = /^\/exchange\/(feed|project)\/([^/]+)$/;
const KEPT_PER_DESTINATION = 100;

/**
 * The example app: auth handlers, POST /publish, GET /config.json, the pages.
 * `engine`: a Herald Engine (optional: without it the app only answers auth questions).
 */
function createAuthApp({
  engine = null,
  users = DEMO_USERS,
  projects = DEMO_PROJECTS,
  onDecision = printDecision,
  pages = true,
} = {}) {
  const app = express();
  const log = [];
  app.locals.authLog = log;
  app.locals.herald = { listeners: [] };
  app.use(express.urlencoded({ extended: false }));
  app.use(express.json());
  app.use(authRoutes({ rules: createAuthRules({ users, projects }), log, onDecision }));

  // Where Herald listens (the pages connect there).
  app.get('/config.json', (req, res) => {
    res.json({ listeners: listenerMap(app.locals.herald.listeners), projects });
  });

  // The auth decisions so far (what the handlers above answered), newest last.
  app.get('/auth/log', (req, res) => res.json(log));

  if (engine) {
    // The app's own record of what it pushed to feeds and projects (a real app has it
    // in its database): destination → [{ id, body, at }], oldest first.
    const kept = new Map();
    let lastId = 0;
    const rules = createAuthRules({ users, projects });

    app.post('/publish', (req, res) => {
      const { destination, body = '', headers = {} } = req.body || {};
      if (typeof destination !== 'string' || !destination)
        return res.status(400).json({ error: 'destination is required' });
      const text = typeof body === 'string' ? body : JSON.stringify(body);
      const h = { ...headers };
      if (typeof body !== 'string' && !h['content-type']) h['content-type'] = 'application/json';
      const stream = STREAM.test(destination);
      // The id lets a page merge what it reloads with what it already got.
      const id = stream ? String(lastId + 1) : null;
      if (id) h['x-app-id'] = id;
      try {
        const routed = engine.publish(destination, text, h);
        if (id) {
          lastId++;
          const list = kept.get(destination) || [];
          list.push({ id, body: text, at: new Date().toISOString() });
          if (list.length > KEPT_PER_DESTINATION) list.shift();
          kept.set(destination, list);
        }
        res.json({ routed });
      } catch (e) {
        res.status(400).json({ error: e.message, code: e.code });
      }
    });

    // What the app published to a feed or project, for a user who may read it (the
    // same topic rule Herald applies to a SUBSCRIBE there).
    app.get('/messages', (req, res) => {
      const cred = basicCredentials(req);
      if (!cred || !rules.user(cred.username, cred.password).allow)
        return res.status(401).set('www-authenticate', 'Basic').json({ error: 'sign in first' });
      const destination = String(req.query.destination || '');
      const m = STREAM.exec(destination);
      if (!m)
        return res.status(400).json({ error: 'destination must be /exchange/feed/<uid> or /exchange/project/<id>' });
      const decision = rules.topic(cred.username, '/', m[1], 'read', m[2]);
      if (!decision.allow) return res.status(403).json({ error: decision.reason });
      res.json({ destination, messages: kept.get(destination) || [] });
    });
  }

  if (pages) {
    app.use('/vendor', vendorRouter());
    app.use(express.static(path.join(__dirname, 'public')));
  }
  return app;
}

/**
 * Builds the engine, installs the app as its auth backend, starts both.
 * Returns `{ app, engine, server, listeners, url, stop }`.
 */
async function startAuthApp({
  env = process.env,
  port = env.PORT ?? 3000,
  host = env.HOST || '127.0.0.1',
  config = null,
  quiet = false,
} = {}) {
  const { Engine } = require('@herald-push/herald');
  const engine = new Engine(config || heraldConfig({ env, xmppHttp: 5280 }));
  const app = createAuthApp({ engine, onDecision: quiet ? null : printDecision });
  engine.useExpressAuth(app, AUTH_PATHS);
  const listeners = await engine.start();
  app.locals.herald.listeners = listeners;
  const server = await new Promise((resolve, reject) => {
    const s = app.listen(Number(port), host, (err) => (err ? reject(err) : resolve(s)));
    s.on('error', reject);
  });
  const url = `http://${host === '127.0.0.1' || host === '0.0.0.0' ? 'localhost' : host}:${server.address().port}`;
  const stop = async () => {
    await new Promise((resolve) => server.close(() => resolve()));
    await engine.stop();
  };
  return { app, engine, server, listeners, url, stop };
}

async function main() {
  const { url, listeners, stop } = await startAuthApp();
  for (const l of listeners) console.log(`herald: listening ${l.name} ${l.addr}`);
  console.log(
    `Herald examples: ${url}  (pages: /stomp-sockjs.html /stompjs-ws.html /strophe-bosh.html /recovery.html)`,
  );
  console.log(`users: alice, bob, carol, dave, eve / secret; guest / guest (administrator)`);
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    await stop().catch((e) => console.error('stop failed:', e));
    process.exit(0);
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

module.exports = { AUTH_PATHS, createAuthRules, authRoutes, createAuthApp, startAuthApp, printDecision };

if (require.main === module) {
  main().catch((e) => {
    console.error(`auth-app: ${e.code ? `[${e.code}] ` : ''}${e.message}`);
    process.exit(1);
  });
}
