// Shared test harness for Herald's Node test suites.
//
// - startHerald(): writes a temp config (loopback, port 0 listeners, temp data_dir),
//   spawns the `herald` binary, parses its "herald: listening ..." lines, waits for
//   "herald: ready", and returns ports/URLs plus stop().
// - AsyncQueue / withTimeout: bounded waits for everything.
// - RawStomp: a minimal STOMP client over a raw `ws` WebSocket or a TCP socket, for
//   tests that must control or inspect the exact frames on the wire.
// - stompConnect()/subscribeWithReceipt(): @stomp/stompjs helpers.
//
// The binary is HERALD_BIN, or ${CARGO_TARGET_DIR:-/var/tmp/herald-target}/debug/herald.
// A missing binary is a hard failure, never a skip.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';

export { WebSocket };

export function heraldBin() {
  if (process.env.HERALD_BIN) return process.env.HERALD_BIN;
  const target = process.env.CARGO_TARGET_DIR || '/var/tmp/herald-target';
  return path.join(target, 'debug', 'herald');
}

export function assertBinary() {
  const bin = heraldBin();
  let st;
  try {
    st = fs.statSync(bin);
  } catch {
    throw new Error(
      `herald binary not found at ${bin}: build it (cargo build -p herald-server) ` +
        `or point HERALD_BIN at it. Tests never skip on a missing binary.`,
    );
  }
  if (!st.isFile()) throw new Error(`${bin} is not a file`);
  fs.accessSync(bin, fs.constants.X_OK);
  return bin;
}

export const USERS = [
  { name: 'guest', password: 'guest', tags: ['administrator'] },
  { name: 'alice', password: 'secret' },
  { name: 'bob', password: 'secret' },
  { name: 'carol', password: 'secret' },
  { name: 'dave', password: 'secret' },
  { name: 'eve', password: 'secret' },
];

function tomlStr(s) {
  return JSON.stringify(String(s)); // TOML basic strings accept JSON escapes for our inputs
}

// Build a config with the same shape as config/dev.toml.
export const PROJECTS = [
  { id: 'p1', members: ['alice', 'bob', 'carol'] },
  { id: 'p2', members: ['carol', 'dave', 'eve'] },
];

// `projects`: the in-memory directory's [[projects]] (default PROJECTS; [] or null for none,
// e.g. when `extra` configures `[directory] backend = "mongodb"`).
// `nodeName`: `node.name` (a cluster's nodes need distinct names).
export function buildConfig({
  dataDir,
  users = USERS,
  limits = null,
  extra = '',
  projects = PROJECTS,
  nodeName = 'herald-test@localhost',
} = {}) {
  const lines = [
    '[node]',
    `name = ${tomlStr(nodeName)}`,
    `data_dir = ${tomlStr(dataDir)}`,
    '',
    '[stomp]',
    'listen = "127.0.0.1:0"',
    'default_vhost = "/"',
    '',
    '[http]',
    'listen = "127.0.0.1:0"',
    '',
    '[[vhosts]]',
    'name = "/"',
    '',
    '[auth]',
    'default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }',
    '',
  ];
  for (const u of users) {
    lines.push('[[users]]', `name = ${tomlStr(u.name)}`, `password = ${tomlStr(u.password)}`);
    if (u.tags) lines.push(`tags = [${u.tags.map(tomlStr).join(', ')}]`);
    lines.push('');
  }
  for (const p of projects || []) {
    lines.push('[[projects]]', `id = ${tomlStr(p.id)}`);
    if (p.name !== undefined) lines.push(`name = ${tomlStr(p.name)}`);
    lines.push(`members = [${p.members.map(tomlStr).join(', ')}]`, '');
  }
  if (limits && Object.keys(limits).length) {
    lines.push('[limits]');
    for (const [k, v] of Object.entries(limits)) lines.push(`${k} = ${v}`);
    lines.push('');
  }
  if (extra) lines.push(extra);
  return lines.join('\n');
}

// Start herald. Returns { stompPort, httpPort, wsUrl, sockjsUrl, listeners, stop(), output() }.
export async function startHerald({
  limits = null,
  users = USERS,
  extra = '',
  projects = PROJECTS,
  readyTimeoutMs = 20000,
  nodeName,
} = {}) {
  const bin = assertBinary();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-test-'));
  const dataDir = path.join(dir, 'data');
  fs.mkdirSync(dataDir);
  const cfgPath = path.join(dir, 'herald.toml');
  fs.writeFileSync(cfgPath, buildConfig({ dataDir, users, limits, extra, projects, nodeName }));

  const proc = spawn(bin, ['--config', cfgPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_BACKTRACE: '1' },
  });
  let stdout = '';
  let stderr = '';
  const listeners = {};
  let exited = null;
  let stopping = false;
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 200000) stderr = stderr.slice(-100000);
  });

  const ready = new Promise((resolve, reject) => {
    let buf = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (d) => {
      stdout += d;
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        const m = /^herald: listening (\S+) (\S+):(\d+)\s*$/.exec(line);
        if (m) listeners[m[1]] = { host: m[2], port: Number(m[3]) };
        if (/^herald: ready\s*$/.test(line)) resolve();
      }
    });
    proc.on('exit', (code, signal) => {
      exited = { code, signal };
      if (!stopping) {
        // make an unexpected death visible next to whatever test fails because of it
        console.error(
          `herald (pid ${proc.pid}) exited unexpectedly: code=${code} signal=${signal}\nstderr tail:\n${stderr.slice(-2000)}`,
        );
      }
      reject(
        new Error(
          `herald exited before ready (code=${code} signal=${signal})\nstdout:\n${stdout}\nstderr:\n${stderr.slice(-4000)}`,
        ),
      );
    });
    proc.on('error', reject);
  });

  const exitPromise = once(proc, 'exit');
  async function stop() {
    stopping = true;
    if (exited === null && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exitPromise.catch(() => {});
      clearTimeout(t);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }

  try {
    await withTimeout(ready, readyTimeoutMs, 'herald: ready');
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\nstdout:\n${stdout}\nstderr:\n${stderr.slice(-4000)}`);
  }
  const st = listeners['stomp-tcp'];
  const http = listeners.http;
  if (!st || !http) {
    await stop();
    throw new Error(`herald did not print both listeners; got ${JSON.stringify(listeners)}\nstdout:\n${stdout}`);
  }
  return {
    proc,
    configPath: cfgPath,
    dataDir,
    stompPort: st.port,
    httpPort: http.port,
    wsUrl: `ws://127.0.0.1:${http.port}/ws`,
    sockjsUrl: `http://127.0.0.1:${http.port}/stomp`,
    listeners, // every "herald: listening NAME HOST:PORT" line, e.g. listeners['xmpp-http'].port
    output: () => ({ stdout, stderr }),
    exited: () => exited,
    stop,
  };
}

// ---------------------------------------------------------------------------
// Bounded waiting

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

export function withTimeout(promise, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

export class AsyncQueue {
  constructor() {
    this.items = [];
    this.waiters = [];
  }
  push(item) {
    const w = this.waiters.shift();
    if (w) w.resolve(item);
    else this.items.push(item);
  }
  get length() {
    return this.items.length;
  }
  next(ms = 3000, what = 'queue item') {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (v) => {
          clearTimeout(w.t);
          resolve(v);
        },
      };
      w.t = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`timed out after ${ms}ms waiting for ${what}`));
      }, ms);
      this.waiters.push(w);
    });
  }
  // Assert that nothing arrives within ms; returns what is queued (should be empty).
  async expectNone(ms = 500, what = 'queue item') {
    await sleep(ms);
    if (this.items.length) {
      const item = this.items[0];
      throw new Error(`unexpected ${what}: ${describe(item)}`);
    }
  }
}

function describe(item) {
  if (item?.command) {
    return `${item.command} ${JSON.stringify(item.headers)} body=${JSON.stringify(String(item.body ?? '').slice(0, 200))}`;
  }
  try {
    return JSON.stringify(item).slice(0, 500);
  } catch {
    return String(item);
  }
}

let uidCounter = 0;
export function uid(prefix = 'x') {
  uidCounter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${uidCounter}`;
}

// ---------------------------------------------------------------------------
// Raw STOMP codec

function escapeHeader(s, version) {
  if (version === '1.0') return String(s);
  let out = String(s).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/:/g, '\\c');
  if (version === '1.2') out = out.replace(/\r/g, '\\r');
  return out;
}

export function unescapeHeader(s) {
  return s.replace(/\\(.)/g, (m, c) => ({ n: '\n', r: '\r', c: ':', '\\': '\\' })[c] ?? m);
}

// Encode a frame. headers: object or array of [k, v]. body: string | Buffer | Uint8Array.
export function encodeFrame(
  command,
  headers = {},
  body = '',
  { version = '1.2', contentLength = true, escape: escapeHeaders = true } = {},
) {
  const bodyBuf = Buffer.isBuffer(body)
    ? body
    : typeof body === 'string'
      ? Buffer.from(body, 'utf8')
      : Buffer.from(body);
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  let head = `${command}\n`;
  const escOk = escapeHeaders && command !== 'CONNECT' && command !== 'STOMP';
  let hasCl = false;
  for (const [k, v] of entries) {
    if (k === 'content-length') hasCl = true;
    head += `${escOk ? escapeHeader(k, version) : k}:${escOk ? escapeHeader(v, version) : v}\n`;
  }
  if (contentLength && !hasCl && bodyBuf.length > 0) head += `content-length:${bodyBuf.length}\n`;
  head += '\n';
  return Buffer.concat([Buffer.from(head, 'utf8'), bodyBuf, Buffer.from([0])]);
}

// Incremental decoder. Frames: { command, headers (last occurrence wins... no: first wins per spec),
// rawHeaders: [[k,v],...] (still escaped), body: Buffer }. Heart-beat EOLs counted in `heartbeats`.
export class FrameDecoder {
  constructor() {
    this.buf = Buffer.alloc(0);
    this.heartbeats = 0;
    this.lastHeartbeatAt = 0;
  }
  feed(chunk) {
    this.buf = Buffer.concat([this.buf, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)]);
    const frames = [];
    for (;;) {
      // heart-beats: EOLs between frames
      while (this.buf.length && (this.buf[0] === 0x0a || (this.buf[0] === 0x0d && this.buf[1] === 0x0a))) {
        this.buf = this.buf.subarray(this.buf[0] === 0x0d ? 2 : 1);
        this.heartbeats += 1;
        this.lastHeartbeatAt = Date.now();
      }
      if (!this.buf.length) break;
      const headEnd = findHeaderEnd(this.buf);
      if (headEnd < 0) break;
      const headText = this.buf.subarray(0, headEnd.start).toString('utf8');
      const lines = headText.split('\n').map((l) => l.replace(/\r$/, ''));
      const command = lines.shift();
      const rawHeaders = [];
      for (const l of lines) {
        const i = l.indexOf(':');
        if (i < 0) rawHeaders.push([l, '']);
        else rawHeaders.push([l.slice(0, i), l.slice(i + 1)]);
      }
      const headers = {};
      for (const [k, v] of rawHeaders) {
        const uk = command === 'CONNECTED' ? k : unescapeHeader(k);
        if (!(uk in headers)) headers[uk] = command === 'CONNECTED' ? v : unescapeHeader(v);
      }
      const bodyStart = headEnd.end;
      let bodyEnd;
      if (headers['content-length'] !== undefined) {
        const n = parseInt(headers['content-length'], 10);
        if (this.buf.length < bodyStart + n + 1) break;
        bodyEnd = bodyStart + n;
      } else {
        bodyEnd = this.buf.indexOf(0, bodyStart);
        if (bodyEnd < 0) break;
      }
      const body = Buffer.from(this.buf.subarray(bodyStart, bodyEnd));
      const nul = this.buf[bodyEnd];
      this.buf = this.buf.subarray(bodyEnd + 1);
      frames.push({ command, headers, rawHeaders, body, bodyText: body.toString('utf8'), nulTerminated: nul === 0 });
    }
    return frames;
  }
}

function findHeaderEnd(buf) {
  // header block ends at "\n\n" or "\r\n\r\n" (or mixed "\n\r\n")
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== 0x0a) continue;
    if (buf[i + 1] === 0x0a) return { start: i, end: i + 2 };
    if (buf[i + 1] === 0x0d && buf[i + 2] === 0x0a) return { start: i, end: i + 3 };
  }
  return -1;
}

// A raw STOMP connection over ws (url) or TCP ({host, port}).
export class RawStomp {
  static async ws(url, protocols = ['v12.stomp', 'v11.stomp', 'v10.stomp'], { binary = false } = {}) {
    const r = new RawStomp();
    const sock = new WebSocket(url, protocols);
    r.kind = 'ws';
    r.sock = sock;
    r.binary = binary;
    sock.binaryType = 'nodebuffer';
    sock.on('message', (data, isBinary) => {
      r.wsMessages.push({ isBinary, length: data.length });
      r._feed(data);
    });
    sock.on('close', (code, reason) => r._closed({ code, reason: reason.toString() }));
    sock.on('error', (e) => r.errors.push(e));
    await withTimeout(
      new Promise((resolve, reject) => {
        sock.once('open', resolve);
        sock.once('error', reject);
        sock.once('unexpected-response', (req, res) => reject(new Error(`ws upgrade refused: HTTP ${res.statusCode}`)));
      }),
      5000,
      `websocket open ${url}`,
    );
    r.protocol = sock.protocol;
    return r;
  }

  static async tcp(port, host = '127.0.0.1') {
    const r = new RawStomp();
    const sock = net.connect(port, host);
    r.kind = 'tcp';
    r.sock = sock;
    sock.on('data', (d) => r._feed(d));
    sock.on('close', () => r._closed({ code: null, reason: 'tcp close' }));
    sock.on('error', (e) => r.errors.push(e));
    await withTimeout(once(sock, 'connect'), 5000, `tcp connect ${host}:${port}`);
    return r;
  }

  constructor() {
    this.decoder = new FrameDecoder();
    this.frames = new AsyncQueue();
    this.errors = [];
    this.wsMessages = [];
    this.closeInfo = null;
    this.closedAt = null;
    this.closed = new Promise((resolve) => (this._resolveClosed = resolve));
  }

  _feed(data) {
    let frames;
    try {
      frames = this.decoder.feed(data);
    } catch (e) {
      this.errors.push(e);
      return;
    }
    for (const f of frames) this.frames.push(f);
  }

  _closed(info) {
    if (this.closeInfo) return;
    this.closeInfo = info;
    this.closedAt = Date.now();
    this._resolveClosed(info);
  }

  get isClosed() {
    return this.closeInfo !== null;
  }

  sendRaw(bufOrString) {
    if (this.kind === 'ws') {
      const data = typeof bufOrString === 'string' ? bufOrString : bufOrString;
      this.sock.send(data, { binary: this.binary || (Buffer.isBuffer(data) && !isUtf8(data)) });
    } else {
      this.sock.write(bufOrString);
    }
  }

  send(command, headers = {}, body = '', opts = {}) {
    const buf = encodeFrame(command, headers, body, opts);
    if (this.kind === 'ws' && !this.binary && isUtf8(buf)) this.sendRaw(buf.toString('utf8'));
    else this.sendRaw(buf);
  }

  async connect({
    login = 'guest',
    passcode = 'guest',
    host = '/',
    acceptVersion = '1.2',
    heartBeat = null,
    command = 'CONNECT',
  } = {}) {
    const h = { 'accept-version': acceptVersion, host, login, passcode };
    if (heartBeat) h['heart-beat'] = heartBeat;
    this.send(command, h);
    return this.next(5000, 'CONNECTED');
  }

  next(ms = 3000, what = 'frame') {
    return this.frames.next(ms, what);
  }

  async expectFrame(command, ms = 3000) {
    const f = await this.next(ms, command);
    if (f.command !== command) {
      throw new Error(`expected ${command}, got ${f.command} ${JSON.stringify(f.headers)} ${f.bodyText.slice(0, 300)}`);
    }
    return f;
  }

  async waitClosed(ms = 3000, what = 'server to close the connection') {
    return withTimeout(this.closed, ms, what);
  }

  close() {
    if (this.kind === 'ws') {
      try {
        this.sock.terminate();
      } catch {}
    } else {
      this.sock.destroy();
    }
  }
}

function isUtf8(buf) {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(buf);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// @stomp/stompjs helpers

export async function stompConnect(
  server,
  {
    login = 'guest',
    passcode = 'guest',
    host = '/',
    protocols = ['v12.stomp', 'v11.stomp', 'v10.stomp'],
    heartbeatIncoming = 0,
    heartbeatOutgoing = 0,
    timeoutMs = 5000,
  } = {},
) {
  const errors = new AsyncQueue();
  const closes = new AsyncQueue();
  let socket = null;
  const client = new Client({
    webSocketFactory: () => (socket = new WebSocket(server.wsUrl, protocols)),
    connectHeaders: { login, passcode, host },
    reconnectDelay: 0,
    heartbeatIncoming,
    heartbeatOutgoing,
    debug: () => {},
  });
  client.onStompError = (f) => errors.push(f);
  client.onWebSocketClose = (e) => closes.push(e);
  client.onWebSocketError = () => {};
  const connected = new Promise((resolve, reject) => {
    client.onConnect = resolve;
    const fail = (why) => reject(new Error(`STOMP connect failed: ${why}`));
    client.onStompError = (f) => {
      errors.push(f);
      fail(`ERROR ${JSON.stringify(f.headers)} ${f.body}`);
    };
    client.onWebSocketClose = (e) => {
      closes.push(e);
      fail(`websocket closed (${e.code} ${e.reason})`);
    };
  });
  client.activate();
  let frame;
  try {
    frame = await withTimeout(connected, timeoutMs, 'CONNECTED');
  } catch (e) {
    await client.deactivate({ force: true }).catch(() => {});
    throw e;
  }
  client.onStompError = (f) => errors.push(f);
  client.onWebSocketClose = (e) => closes.push(e);
  return { client, connected: frame, errors, closes, socket: () => socket };
}

// Subscribe and wait for the server's RECEIPT so the binding exists before anyone sends.
export async function subscribeWithReceipt(client, destination, headers = {}, ms = 3000) {
  const q = new AsyncQueue();
  const receipt = uid('sub');
  const got = new Promise((resolve) => client.watchForReceipt(receipt, resolve));
  const sub = client.subscribe(destination, (m) => q.push(m), { ...headers, receipt });
  await withTimeout(got, ms, `RECEIPT for SUBSCRIBE ${destination}`);
  return { sub, q };
}

// Publish with a receipt and wait for it.
export async function publishWithReceipt(client, params, ms = 3000) {
  const receipt = uid('pub');
  const got = new Promise((resolve) => client.watchForReceipt(receipt, resolve));
  client.publish({ ...params, headers: { ...(params.headers || {}), receipt } });
  return withTimeout(got, ms, `RECEIPT for SEND ${params.destination}`);
}

export async function closeAll(...clients) {
  await Promise.all(
    clients.filter(Boolean).map((c) => {
      if (c instanceof RawStomp) return c.close();
      const client = c.client || c;
      return withTimeout(client.deactivate({ force: true }), 3000, 'deactivate').catch(() => {});
    }),
  );
}
