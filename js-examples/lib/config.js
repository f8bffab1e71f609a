// Shared bits of the examples: the demo users and projects, the Herald config
// built from environment variables, and a few helpers.
//
// Environment (every one optional):
//   HERALD_BIND        address Herald listens on            (default 127.0.0.1; 0.0.0.0 for the LAN)
//   HERALD_STOMP_PORT  STOMP over TCP                       (default 61613; "off" disables)
//   HERALD_HTTP_PORT   STOMP over WebSocket /ws and SockJS /stomp (default 15674)
//   HERALD_BOSH_PORT   XMPP BOSH /http-bind + XMPP WebSocket (default 5280 where the example uses XMPP; "off")
//   HERALD_XMPP_PORT   XMPP c2s over TCP with STARTTLS      (default off; 5222 is the usual port)
//   HERALD_DATA_DIR    Herald's data directory              (default <tmp>/herald-examples)
//   HERALD_ADMIN_PORT  admin API + console at /admin/       (default 15672 in the demo, off elsewhere)
//   HERALD_ADMIN_TOKEN admin bearer token                   (default: a random one, printed at start)
//   HERALD_HISTORY_TTL_MS how long feed and project messages stay replayable after a
//                      reconnect (history.ttl_ms; default Herald's, 300000 = 5 minutes)
// Port 0 picks a free port; the examples print (and serve at /config.json or
// /api/config) the addresses Herald actually bound.

'use strict';

const path = require('node:path');

/** Demo accounts, kept by the Express app (Herald has no users of its own here). */
const DEMO_USERS = {
  guest: { password: 'guest', tags: ['administrator', 'management'] },
  alice: { password: 'secret', tags: [] },
  bob: { password: 'secret', tags: [] },
  carol: { password: 'secret', tags: [] },
  dave: { password: 'secret', tags: [] },
  eve: { password: 'secret', tags: [] },
};

/** Projects: who belongs where. Herald turns them into XMPP rosters and presence fan-out. */
const DEMO_PROJECTS = [
  { id: 'p1', name: 'Launch board', members: ['alice', 'bob', 'carol'] },
  { id: 'p2', name: 'Mobile app', members: ['carol', 'dave', 'eve'] },
];

function port(env, name, fallback) {
  const v = env[name];
  if (v === undefined || v === '') return fallback;
  if (v === 'off') return 'off';
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name}=${v} is not a port (0-65535 or "off")`);
  return n;
}

/**
 * The Herald config (same schema as config/dev.toml, keys in snake_case).
 * `xmppHttp` / `xmppC2s`: default XMPP ports for this example (a number, or "off").
 */
function heraldConfig({
  env = process.env,
  projects = DEMO_PROJECTS,
  xmppHttp = 'off',
  xmppC2s = 'off',
  admin = 'off',
  nodeName = 'herald-examples@localhost',
} = {}) {
  const bind = env.HERALD_BIND || '127.0.0.1';
  const addr = (p) => (p === 'off' ? 'off' : `${bind}:${p}`);
  const stompPort = port(env, 'HERALD_STOMP_PORT', 61613);
  const httpPort = port(env, 'HERALD_HTTP_PORT', 15674);
  const boshPort = port(env, 'HERALD_BOSH_PORT', xmppHttp);
  const c2sPort = port(env, 'HERALD_XMPP_PORT', xmppC2s);
  const adminPort = port(env, 'HERALD_ADMIN_PORT', admin);

  const config = {
    // In memory unless HERALD_DATA_DIR names a directory (one process per directory).
    node: { name: nodeName, ...(env.HERALD_DATA_DIR ? { data_dir: env.HERALD_DATA_DIR } : {}) },
    stomp: { listen: addr(stompPort), default_vhost: '/' },
    http: { listen: addr(httpPort) },
    vhosts: [{ name: '/' }],
    // Permissions come from the Express app's /auth/vhost, /auth/resource and
    // /auth/topic handlers once useExpressAuth() is installed; these defaults
    // only matter for a config without it.
    auth: { default_permissions: { '/': { configure: '.*', write: '.*', read: '.*' } } },
    users: [],
    projects: projects.map((p) => ({ id: p.id, name: p.name, members: [...p.members] })),
    // The pages come from the app's own port, another origin than Herald's, and
    // sockjs-client's XHR requests (its /info first) ask for credentials: a
    // development setting. In production, list the page origins in
    // connections.cors_origins (docs/security.md, "Connections").
    connections: { cors_credentials: true },
  };
  const ttl = env.HERALD_HISTORY_TTL_MS;
  if (ttl !== undefined && ttl !== '') {
    // 0 would turn history off, and the pages resubscribe with x-stream-offset, which needs it.
    if (!/^[1-9]\d*$/.test(ttl)) throw new Error(`HERALD_HISTORY_TTL_MS=${ttl} is not a number of milliseconds > 0`);
    config.history = { ttl_ms: Number(ttl) };
  }
  if (adminPort !== 'off') {
    // The console is the admin-app build; the token guards the API, not the page.
    config.admin = {
      listen: addr(adminPort),
      tokens: [env.HERALD_ADMIN_TOKEN || require('node:crypto').randomBytes(12).toString('hex')],
      ui_dir: path.join(__dirname, '..', '..', 'admin-app', 'dist'),
    };
  }
  if (boshPort !== 'off' || c2sPort !== 'off') {
    config.xmpp = { domain: 'localhost' };
    if (c2sPort !== 'off') config.xmpp.listen = addr(c2sPort);
    if (boshPort !== 'off') config.xmpp.http_listen = addr(boshPort);
  }
  return config;
}

/** `[{ name, addr }]` from engine.start() → `{ 'stomp-tcp': { host, port }, http: {...}, ... }`. */
function listenerMap(listeners) {
  const out = {};
  for (const l of listeners || []) {
    const i = l.addr.lastIndexOf(':');
    out[l.name] = { addr: l.addr, host: l.addr.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(l.addr.slice(i + 1)) };
  }
  return out;
}

/** Parses `Authorization: Basic …`; returns `{ username, password }` or null. */
function basicCredentials(req) {
  const h = req.headers.authorization || '';
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h);
  if (!m) return null;
  const text = Buffer.from(m[1], 'base64').toString('utf8');
  const i = text.indexOf(':');
  if (i < 0) return null;
  return { username: text.slice(0, i), password: text.slice(i + 1) };
}

module.exports = { DEMO_USERS, DEMO_PROJECTS, heraldConfig, listenerMap, basicCredentials };
