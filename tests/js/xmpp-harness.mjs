// XMPP test harness for Herald's Node suites (on top of harness.mjs).
//
// - startXmppHerald(): Herald with [xmpp] (domain localhost, c2s + HTTP on port 0,
//   STARTTLS off unless asked) and optional Redis presence / MongoDB directory; returns
//   the harness server plus boshUrl/boshAltUrl/xmppWsUrl/xmppWsAltUrl/c2sPort.
// - XmppClient: a strophe.js 5 Connection (BOSH or WebSocket, chosen by the URL) with
//   inboxes for messages/presences, promise-based IQs, bounded waits and a record of
//   the raw traffic for failure messages.
// - RawBosh / httpRequest: XEP-0124/0206 over plain HTTP for wire-level checks.
// - Services: startRedis() (redis-server on a free port, with a tiny RESP client) and
//   startMongo() (SecantusDB's secantusd-py, a MongoDB-wire server, seeded with the
//   official `mongodb` driver). A missing service binary is a hard failure.
//
// strophe.js's Node build brings `ws` and `@xmldom/xmldom` but no XMLHttpRequest;
// xhr-shim.mjs provides one with responseXML for BOSH.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import http from 'node:http';
import { once } from 'node:events';
import { Strophe, $pres, $msg, $iq, $build } from 'strophe.js';
import { DOMParser as XmlDomParser, XMLSerializer } from '@xmldom/xmldom';
import { installXHR } from './xhr-shim.mjs';
import { startHerald, withTimeout, sleep, uid, PROJECTS } from './harness.mjs';

installXHR();
Strophe.setLogLevel(process.env.HERALD_XMPP_DEBUG ? Strophe.LogLevel.DEBUG : Strophe.LogLevel.FATAL);

export { Strophe, $pres, $msg, $iq, $build };

export const DOMAIN = 'localhost';
export const PROJECT_DOMAIN = `projects.${DOMAIN}`;
export const NS = {
  CLIENT: 'jabber:client',
  STREAM: 'http://etherx.jabber.org/streams',
  STREAMS_ERR: 'urn:ietf:params:xml:ns:xmpp-streams',
  STANZAS: 'urn:ietf:params:xml:ns:xmpp-stanzas',
  SASL: 'urn:ietf:params:xml:ns:xmpp-sasl',
  BIND: 'urn:ietf:params:xml:ns:xmpp-bind',
  ROSTER: 'jabber:iq:roster',
  DISCO_INFO: 'http://jabber.org/protocol/disco#info',
  PING: 'urn:xmpp:ping',
  HTTPBIND: 'http://jabber.org/protocol/httpbind',
  XBOSH: 'urn:xmpp:xbosh',
  FRAMING: 'urn:ietf:params:xml:ns:xmpp-framing',
};

// ---------------------------------------------------------------------------
// Server

function tomlStr(s) {
  return JSON.stringify(String(s));
}

// `presence`: null | { backend: 'redis', url, prefix }; `directory`: null |
// { backend: 'mongodb', uri, database, collection?, id_field?, name_field?, members_field? }.
export function xmppConfigToml({ starttls = 'off', xmpp = {}, presence = null, directory = null } = {}) {
  const lines = [
    '[xmpp]',
    `domain = ${tomlStr(DOMAIN)}`,
    'listen = "127.0.0.1:0"',
    'http_listen = "127.0.0.1:0"',
    `starttls = ${tomlStr(starttls)}`,
  ];
  for (const [k, v] of Object.entries(xmpp))
    lines.push(`${k} = ${typeof v === 'string' ? tomlStr(v) : JSON.stringify(v)}`);
  lines.push('');
  for (const [section, obj] of [
    ['presence', presence],
    ['directory', directory],
  ]) {
    if (!obj) continue;
    lines.push(`[${section}]`);
    for (const [k, v] of Object.entries(obj)) lines.push(`${k} = ${tomlStr(v)}`);
    lines.push('');
  }
  return lines.join('\n');
}

export async function startXmppHerald({
  starttls = 'off',
  xmpp = {},
  presence = null,
  directory = null,
  projects,
  extra = '',
  limits = null,
  nodeName,
} = {}) {
  const cfg = xmppConfigToml({ starttls, xmpp, presence, directory });
  const server = await startHerald({
    limits,
    nodeName,
    extra: `${cfg}\n${extra}`,
    projects: projects !== undefined ? projects : directory ? [] : PROJECTS,
  });
  const h = server.listeners['xmpp-http'];
  const c2s = server.listeners['xmpp-c2s'];
  if (!h || !c2s) {
    const out = server.output();
    await server.stop();
    throw new Error(
      `herald did not print 'herald: listening xmpp-http ...' and 'xmpp-c2s' listeners; got ${JSON.stringify(server.listeners)}\nstdout:\n${out.stdout}\nstderr:\n${out.stderr.slice(-3000)}`,
    );
  }
  server.xmppHttpPort = h.port;
  server.c2sPort = c2s.port;
  server.boshUrl = `http://127.0.0.1:${h.port}/http-bind`;
  server.boshAltUrl = `http://127.0.0.1:${h.port}/bosh`;
  server.xmppWsUrl = `ws://127.0.0.1:${h.port}/xmpp-websocket`;
  server.xmppWsAltUrl = `ws://127.0.0.1:${h.port}/ws`;
  return server;
}

// ---------------------------------------------------------------------------
// Element helpers (work on xmldom and browser DOM elements alike)

export function ser(el) {
  if (!el) return String(el);
  try {
    return Strophe.serialize(el);
  } catch {
    return new XMLSerializer().serializeToString(el);
  }
}

export function children(el, localName, ns) {
  const out = [];
  if (!el) return out;
  for (let n = el.firstChild; n; n = n.nextSibling) {
    if (n.nodeType !== 1) continue;
    const ln = n.localName || n.nodeName.replace(/^.*:/, '');
    if (localName && ln !== localName) continue;
    if (ns && n.namespaceURI !== ns) continue;
    out.push(n);
  }
  return out;
}

export function child(el, localName, ns) {
  return children(el, localName, ns)[0] || null;
}

export function childText(el, localName) {
  const c = child(el, localName);
  return c ? c.textContent : null;
}

export function bare(jid) {
  return String(jid || '').split('/')[0];
}

export function resourceOf(jid) {
  const s = String(jid || '');
  const i = s.indexOf('/');
  return i < 0 ? null : s.slice(i + 1);
}

// The defined condition of an <error/> (stanza) or <stream:error/>.
export function errorCondition(el) {
  const err = el && (el.localName === 'error' ? el : child(el, 'error'));
  if (!err) return null;
  const c = children(err).find((n) => n.localName !== 'text' && n.localName !== 'appSpecific');
  return c ? c.localName : null;
}

// ---------------------------------------------------------------------------
// Inbox: waits with predicates; unmatched items stay for later waits.

export class Inbox {
  constructor(name = 'stanza') {
    this.name = name;
    this.items = [];
    this.all = [];
    this.waiters = [];
  }
  push(item) {
    this.all.push(item);
    for (const w of this.waiters) {
      if (w.pred(item)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(item);
        return;
      }
    }
    this.items.push(item);
  }
  waitFor(pred = () => true, ms = 5000, what = this.name) {
    const i = this.items.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.items.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const w = { pred };
      w.resolve = (v) => {
        clearTimeout(w.t);
        resolve(v);
      };
      w.t = setTimeout(() => {
        const j = this.waiters.indexOf(w);
        if (j >= 0) this.waiters.splice(j, 1);
        const seen = this.items.map((x) => (x?.nodeType ? ser(x) : JSON.stringify(x))).slice(-8);
        const desc = typeof what === 'function' ? what() : what;
        reject(
          new Error(
            `timed out after ${ms}ms waiting for ${desc}; unmatched ${this.name}s received:\n  ${seen.join('\n  ') || '(none)'}`,
          ),
        );
      }, ms);
      this.waiters.push(w);
    });
  }
  async expectNone(pred = () => true, ms = 700, what = this.name) {
    await sleep(ms);
    const hit = this.items.find(pred);
    if (hit) throw new Error(`unexpected ${what}: ${hit?.nodeType ? ser(hit) : JSON.stringify(hit)}`);
  }
  clear() {
    this.items = [];
  }
}

// ---------------------------------------------------------------------------
// strophe.js client

const STATUS_NAMES = Object.fromEntries(Object.entries(Strophe.Status).map(([k, v]) => [v, k]));

export class XmppError extends Error {}

export class XmppClient {
  // service: a BOSH (http://) or WebSocket (ws://) URL. Resolves once CONNECTED (bound);
  // rejects with XmppError (.status = 'AUTHFAIL' | 'CONNFAIL' | ...) otherwise.
  static async connect(
    service,
    user,
    {
      password = 'secret',
      resource = uid('res').slice(0, 40),
      mechanisms = null,
      timeoutMs = 10000,
      wait = 10,
      presence = null,
    } = {},
  ) {
    const c = new XmppClient(service, { mechanisms });
    await c.login(user, password, resource, { timeoutMs, wait });
    if (presence) c.sendPresence(presence === true ? {} : presence);
    return c;
  }

  constructor(service, { mechanisms = null } = {}) {
    this.service = service;
    const opts = {};
    if (mechanisms) opts.mechanisms = mechanisms;
    this.conn = new Strophe.Connection(service, opts);
    this.messages = new Inbox('message');
    this.presences = new Inbox('presence');
    this.iqs = new Inbox('iq');
    this.statuses = new Inbox('status');
    this.traffic = [];
    this.conn.xmlInput = (el) => this._log('<<', el);
    this.conn.xmlOutput = (el) => this._log('>>', el);
    this.conn.addHandler((m) => (this.messages.push(m), true), null, 'message');
    this.conn.addHandler((p) => (this.presences.push(p), true), null, 'presence');
    this.conn.addHandler((i) => (this.iqs.push(i), true), null, 'iq', 'get');
    this.conn.addHandler((i) => (this.iqs.push(i), true), null, 'iq', 'set');
    this.closed = false;
  }

  _log(dir, el) {
    let s;
    try {
      s = ser(el);
    } catch {
      s = String(el);
    }
    this.traffic.push(`${dir} ${s}`);
    if (this.traffic.length > 200) this.traffic.splice(0, 100);
    if (process.env.HERALD_XMPP_DEBUG) console.error(`[${this.user || '?'}] ${dir} ${s}`);
  }

  dump(n = 30) {
    return this.traffic.slice(-n).join('\n');
  }

  _onStatus(status, condition, elem) {
    const name = STATUS_NAMES[status] || String(status);
    this.statuses.push({ status, name, condition, elem });
    if (this._statusHook) this._statusHook(status, name, condition, elem);
  }

  login(user, password, resource, { timeoutMs = 10000, wait = 10 } = {}) {
    this.user = user;
    const jid = `${user}@${DOMAIN}${resource ? `/${resource}` : ''}`;
    const done = new Promise((resolve, reject) => {
      this._statusHook = (status, name, condition) => {
        if (status === Strophe.Status.CONNECTED || status === Strophe.Status.ATTACHED) {
          resolve();
        } else if (
          [
            Strophe.Status.AUTHFAIL,
            Strophe.Status.CONNFAIL,
            Strophe.Status.ERROR,
            Strophe.Status.DISCONNECTED,
            Strophe.Status.CONNTIMEOUT,
            Strophe.Status.ATTACHFAIL,
          ].includes(status)
        ) {
          const e = new XmppError(
            `${user}: login over ${this.service} failed: ${name}${condition ? ` (${condition})` : ''}\n${this.dump(12)}`,
          );
          e.status = name;
          e.condition = condition;
          reject(e);
        }
      };
    });
    this.conn.connect(jid, password, (s, c, e) => this._onStatus(s, c, e), wait, 1);
    return withTimeout(done, timeoutMs, `${user} to log in over ${this.service}\n${this.dump(12)}`).catch(async (e) => {
      this.kill();
      throw e;
    });
  }

  // Re-attach to an existing BOSH session (Strophe `attach`) after a "page reload".
  attach(jid, sid, rid, { timeoutMs = 5000, wait = 10 } = {}) {
    this.user = bare(jid).split('@')[0];
    const done = new Promise((resolve, reject) => {
      this._statusHook = (status, name) => {
        if (status === Strophe.Status.ATTACHED) resolve();
        else if (status === Strophe.Status.ATTACHFAIL || status === Strophe.Status.DISCONNECTED)
          reject(new XmppError(`attach failed: ${name}`));
      };
    });
    this.conn.attach(jid, sid, rid, (s, c, e) => this._onStatus(s, c, e), wait, 1);
    return withTimeout(done, timeoutMs, 'ATTACHED');
  }

  get jid() {
    return this.conn.jid;
  }

  get bareJid() {
    return bare(this.conn.jid);
  }

  get mechanism() {
    return this.conn._sasl_mechanism ? this.conn._sasl_mechanism.mechname : null;
  }

  send(stanza) {
    this.conn.send(stanza.tree ? stanza.tree() : stanza);
  }

  sendPresence({ show = null, status = null, to = null, type = null, priority = null } = {}) {
    const attrs = {};
    if (to) attrs.to = to;
    if (type) attrs.type = type;
    const p = $pres(attrs);
    if (show) p.c('show').t(show).up();
    if (status) p.c('status').t(status).up();
    if (priority !== null) p.c('priority').t(String(priority)).up();
    this.send(p);
  }

  chat(to, body, { type = 'chat', id = uid('m'), from = null } = {}) {
    const attrs = { to, type, id };
    if (from) attrs.from = from;
    this.send($msg(attrs).c('body').t(body));
    return id;
  }

  // Send an IQ; resolves with the result stanza or rejects with an Error carrying
  // .stanza and .condition for type='error'.
  iq(stanza, ms = 5000) {
    const tree = stanza.tree ? stanza.tree() : stanza;
    const p = new Promise((resolve, reject) => {
      this.conn.sendIQ(
        tree,
        (res) => resolve(res),
        (err) => {
          if (!err) return reject(new Error('IQ timed out inside strophe'));
          const e = new Error(`IQ error: ${ser(err)}`);
          e.stanza = err;
          e.condition = errorCondition(err);
          reject(e);
        },
        ms,
      );
    });
    return withTimeout(p, ms + 500, `IQ response to ${ser(tree)}`);
  }

  async roster() {
    const res = await this.iq($iq({ type: 'get', id: uid('roster') }).c('query', { xmlns: NS.ROSTER }));
    const query = child(res, 'query', NS.ROSTER);
    if (!query) throw new Error(`roster result without <query xmlns='${NS.ROSTER}'>: ${ser(res)}`);
    return children(query, 'item').map((it) => ({
      jid: it.getAttribute('jid'),
      name: it.getAttribute('name'),
      subscription: it.getAttribute('subscription'),
      ask: it.getAttribute('ask'),
      groups: children(it, 'group').map((g) => g.textContent),
      el: it,
    }));
  }

  // `what` is described lazily, so the traffic in a timeout message is the traffic at the timeout.
  waitMessage(pred = () => true, ms = 5000, what = 'message') {
    return this.messages.waitFor(pred, ms, () => `${this.user}: ${what}\ntraffic:\n${this.dump(15)}`);
  }

  waitPresence(pred = () => true, ms = 5000, what = 'presence') {
    return this.presences.waitFor(pred, ms, () => `${this.user}: ${what}\ntraffic:\n${this.dump(15)}`);
  }

  // Graceful: Strophe sends unavailable presence and closes the stream / terminates BOSH.
  async disconnect(ms = 5000) {
    if (this.closed) return;
    this.closed = true;
    const gone = this.statuses.waitFor((s) => s.status === Strophe.Status.DISCONNECTED, ms, 'DISCONNECTED');
    try {
      this.conn.flush();
      this.conn.disconnect('test done');
      await gone;
    } catch (e) {
      this.kill();
      throw e;
    }
  }

  // Abrupt: drop the transport without </stream:stream> or a terminate body.
  kill() {
    this.closed = true;
    const proto = this.conn._proto;
    try {
      if (proto?.socket) {
        const s = proto.socket;
        proto.socket = null;
        if (typeof s.terminate === 'function') s.terminate();
        else s.close();
      }
    } catch {}
    try {
      if (proto && typeof proto._abortAllRequests === 'function') proto._abortAllRequests();
    } catch {}
    try {
      this.conn.reset();
    } catch {}
    try {
      clearTimeout(this.conn._idleTimeout);
      this.conn._idleTimeout = null;
    } catch {}
    this.conn.connected = false;
    this.conn.authenticated = false;
  }

  // Best effort, bounded, never throws: for cleanup.
  async close() {
    if (this.closed) return;
    try {
      await this.disconnect(4000);
    } catch {
      this.kill();
    }
  }
}

// Connect and register cleanup on a node:test context.
export async function track(t, promise) {
  const c = await promise;
  t.after(() => (c && typeof c.close === 'function' ? c.close() : undefined));
  return c;
}

// ---------------------------------------------------------------------------
// Raw HTTP / BOSH

export function httpRequest(url, { method = 'POST', headers = {}, body = null, timeoutMs = 15000 } = {}) {
  const u = new URL(url);
  return withTimeout(
    new Promise((resolve, reject) => {
      const data = body == null ? null : Buffer.from(body, 'utf8');
      const req = http.request(
        {
          method,
          hostname: u.hostname,
          port: u.port,
          path: u.pathname + u.search,
          headers: { Connection: 'close', ...(data ? { 'Content-Length': data.length } : {}), ...headers },
          agent: false,
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`HTTP ${method} ${url} timed out`)));
      if (data) req.write(data);
      req.end();
    }),
    timeoutMs + 1000,
    `HTTP ${method} ${url}`,
  );
}

export function parseXml(text) {
  return new XmlDomParser({
    onError: (level, msg) => {
      if (level === 'fatalError') throw new Error(`XML parse error: ${msg} in ${text.slice(0, 500)}`);
    },
  }).parseFromString(text, 'text/xml').documentElement;
}

function xmlAttr(v) {
  return String(v).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

export function xmlText(v) {
  return String(v).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export class RawBosh {
  constructor(url) {
    this.url = url;
    this.rid = 1000000 + Math.floor(Math.random() * 1000000000);
    this.sid = null;
    this.received = []; // child elements from every response body, in order
    this.responses = [];
  }

  bodyXml(attrs, payload = '') {
    const a = Object.entries(attrs)
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${k}='${xmlAttr(v)}'`)
      .join(' ');
    return payload ? `<body ${a}>${payload}</body>` : `<body ${a}/>`;
  }

  async postRaw(xml, { headers = {}, timeoutMs = 15000 } = {}) {
    const res = await httpRequest(this.url, {
      method: 'POST',
      headers: { 'Content-Type': 'text/xml; charset=utf-8', ...headers },
      body: xml,
      timeoutMs,
    });
    res.body = null;
    if (res.text.trim()) {
      try {
        res.body = parseXml(res.text);
      } catch (e) {
        res.parseError = e;
      }
    }
    this.responses.push(res);
    if (res.body) this.received.push(...children(res.body));
    return res;
  }

  async create({ wait = 3, hold = 1, to = DOMAIN, ver = '1.11', extra = {}, headers = {} } = {}) {
    const xml = this.bodyXml({
      content: 'text/xml; charset=utf-8',
      hold,
      rid: this.rid,
      to,
      ver,
      wait,
      'xml:lang': 'en',
      'xmpp:version': '1.0',
      xmlns: NS.HTTPBIND,
      'xmlns:xmpp': NS.XBOSH,
      ...extra,
    });
    const res = await this.postRaw(xml, { headers });
    if (res.body?.getAttribute('sid')) this.sid = res.body.getAttribute('sid');
    return res;
  }

  // Next request in sequence (rid+1) with optional payload and extra body attributes.
  async send(payload = '', extra = {}, opts = {}) {
    this.rid += 1;
    return this.postRaw(this.bodyXml({ rid: this.rid, sid: this.sid, xmlns: NS.HTTPBIND, ...extra }, payload), opts);
  }

  // Poll (empty bodies) until an element matching pred has been received; returns it.
  async waitFor(pred, ms = 8000, what = 'BOSH payload') {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.received.findIndex(pred);
      if (i >= 0) return this.received.splice(i, 1)[0];
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${what}; received: ${this.received.map(ser).join(' ').slice(0, 1500)}`);
      }
      const res = await this.send();
      if (res.body && res.body.getAttribute('type') === 'terminate') {
        throw new Error(`BOSH session terminated while waiting for ${what}: ${res.text}`);
      }
    }
  }

  // Full login: create, SASL PLAIN, restart, bind. Returns the bound JID.
  async login(user, password = 'secret', resource = uid('raw').slice(0, 30), createOpts = {}) {
    const c = await this.create(createOpts);
    if (!this.sid) throw new Error(`BOSH session creation failed: HTTP ${c.status} ${c.text}`);
    const plain = Buffer.from(`\0${user}\0${password}`).toString('base64');
    await this.send(`<auth xmlns='${NS.SASL}' mechanism='PLAIN'>${plain}</auth>`);
    const r = await this.waitFor((e) => e.localName === 'success' || e.localName === 'failure', 8000, 'SASL result');
    if (r.localName !== 'success') throw new Error(`SASL PLAIN failed: ${ser(r)}`);
    await this.send('', { 'xmpp:restart': 'true', 'xmlns:xmpp': NS.XBOSH, to: DOMAIN, 'xml:lang': 'en' });
    await this.waitFor((e) => e.localName === 'features', 8000, 'stream features after restart');
    await this.send(
      `<iq type='set' id='bind1' xmlns='${NS.CLIENT}'><bind xmlns='${NS.BIND}'><resource>${xmlText(resource)}</resource></bind></iq>`,
    );
    const b = await this.waitFor((e) => e.localName === 'iq' && e.getAttribute('id') === 'bind1', 8000, 'bind result');
    if (b.getAttribute('type') !== 'result') throw new Error(`bind failed: ${ser(b)}`);
    this.jid = childText(child(b, 'bind'), 'jid');
    return this.jid;
  }
}

// ---------------------------------------------------------------------------
// Services for the Redis + MongoDB run

export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

async function waitPort(port, ms, what, proc) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (proc && proc.exitCode !== null)
      throw new Error(`${what} exited (code ${proc.exitCode}) before listening on ${port}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${ms}ms`);
    await sleep(100);
  }
}

function findExecutable(name, extraDirs = []) {
  for (const d of [...extraDirs, ...(process.env.PATH || '').split(':')]) {
    if (!d) continue;
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {}
  }
  return null;
}

function spawnService(cmd, args, what) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const keep = (d) => {
    log += d;
    if (log.length > 50000) log = log.slice(-25000);
  };
  proc.stdout.setEncoding('utf8').on('data', keep);
  proc.stderr.setEncoding('utf8').on('data', keep);
  const exited = once(proc, 'exit');
  return {
    proc,
    log: () => log,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited.catch(() => {});
        clearTimeout(t);
      }
    },
    what,
  };
}

// Minimal RESP2 client for assertions on Redis keys.
export class Redis {
  static async connect(port) {
    const r = new Redis();
    r.sock = net.connect(port, '127.0.0.1');
    r.buf = Buffer.alloc(0);
    r.pending = [];
    r.sock.on('data', (d) => {
      r.buf = Buffer.concat([r.buf, d]);
      r._drain();
    });
    r.sock.on('error', (e) => r.pending.splice(0).forEach((p) => p.reject(e)));
    await withTimeout(once(r.sock, 'connect'), 5000, `redis connect :${port}`);
    return r;
  }
  _parse(buf, i) {
    const eol = buf.indexOf('\r\n', i);
    if (eol < 0) return null;
    const t = String.fromCharCode(buf[i]);
    const line = buf.toString('utf8', i + 1, eol);
    const next = eol + 2;
    if (t === '+') return { v: line, end: next };
    if (t === '-') return { v: new Error(line), end: next };
    if (t === ':') return { v: Number(line), end: next };
    if (t === '$') {
      const n = Number(line);
      if (n < 0) return { v: null, end: next };
      if (buf.length < next + n + 2) return null;
      return { v: buf.toString('utf8', next, next + n), end: next + n + 2 };
    }
    if (t === '*') {
      const n = Number(line);
      if (n < 0) return { v: null, end: next };
      const arr = [];
      let j = next;
      for (let k = 0; k < n; k++) {
        const r = this._parse(buf, j);
        if (!r) return null;
        arr.push(r.v);
        j = r.end;
      }
      return { v: arr, end: j };
    }
    throw new Error(`bad RESP type ${t}`);
  }
  _drain() {
    while (this.pending.length && this.buf.length) {
      const r = this._parse(this.buf, 0);
      if (!r) return;
      this.buf = this.buf.subarray(r.end);
      const p = this.pending.shift();
      if (r.v instanceof Error) p.reject(r.v);
      else p.resolve(r.v);
    }
  }
  cmd(...args) {
    let s = `*${args.length}\r\n`;
    for (const a of args) {
      const b = Buffer.from(String(a), 'utf8');
      s += `$${b.length}\r\n${b.toString('utf8')}\r\n`;
    }
    const p = new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
    this.sock.write(s);
    return withTimeout(p, 5000, `redis ${args.join(' ')}`);
  }
  async hgetall(key) {
    const arr = (await this.cmd('HGETALL', key)) || [];
    const o = {};
    for (let i = 0; i < arr.length; i += 2) o[arr[i]] = arr[i + 1];
    return o;
  }
  async smembers(key) {
    return ((await this.cmd('SMEMBERS', key)) || []).slice().sort();
  }
  close() {
    this.sock.destroy();
  }
}

// Poll until fn() returns a truthy value (or the assertion inside stops throwing).
export async function eventually(fn, ms = 5000, what = 'condition', every = 100) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = new Error(`${what}: got ${JSON.stringify(v)}`);
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms}ms waiting for ${what}: ${last?.message}`);
    await sleep(every);
  }
}

export async function startRedis() {
  const bin = findExecutable('redis-server', ['/usr/bin', '/usr/sbin', '/usr/local/bin']);
  if (!bin)
    throw new Error(
      'redis-server not found: run tests/services/install.sh (apt-get install redis-server). Tests never skip on a missing service.',
    );
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-redis-'));
  const svc = spawnService(
    bin,
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--protected-mode',
      'yes',
    ],
    'redis-server',
  );
  try {
    await waitPort(port, 10000, 'redis-server', svc.proc);
  } catch (e) {
    await svc.stop();
    throw new Error(`${e.message}\n${svc.log()}`);
  }
  const client = await Redis.connect(port);
  const pong = await client.cmd('PING');
  if (pong !== 'PONG') throw new Error(`redis PING answered ${pong}`);
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    client,
    async stop() {
      client.close();
      await svc.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function venvDir() {
  return process.env.HERALD_VENV || '/var/tmp/herald-venv';
}

export async function startMongo() {
  const bin = findExecutable('secantusd-py', [path.join(venvDir(), 'bin')]);
  if (!bin)
    throw new Error(
      `secantusd-py not found in ${venvDir()}/bin or PATH: run tests/services/install.sh (pip install --pre secantusdb). Tests never skip on a missing service.`,
    );
  const port = await freePort();
  const svc = spawnService(
    bin,
    ['--host', '127.0.0.1', '--port', String(port), '--storage-path', ':memory:', '--log-level', 'WARNING'],
    'secantusd-py',
  );
  try {
    await waitPort(port, 30000, 'secantusd-py', svc.proc);
  } catch (e) {
    await svc.stop();
    throw new Error(`${e.message}\n${svc.log()}`);
  }
  const { MongoClient } = await import('mongodb');
  const uri = `mongodb://127.0.0.1:${port}`;
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10000, connectTimeoutMS: 5000 });
  await withTimeout(client.connect(), 15000, 'mongodb driver connect to secantusd-py');
  return {
    port,
    uri,
    client,
    log: svc.log,
    async stop() {
      await withTimeout(client.close(), 5000, 'mongo client close').catch(() => {});
      await svc.stop();
    },
  };
}
