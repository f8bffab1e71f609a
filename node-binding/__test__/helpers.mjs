// Shared helpers for the addon's tests: the package, a raw STOMP 1.2 client over
// TCP (frames asserted as they come off the wire), and small waiting utilities.
// Every engine binds 127.0.0.1 port 0.
import { createRequire } from 'node:module';
import net from 'node:net';

const require = createRequire(import.meta.url);
// Through the package entry point, as an application loads it.
export const herald = require('../main.js');
export const { Engine } = herald;

export const T = { timeout: 30000 };

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function waitFor(what, predicate, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Config users need permissions (RabbitMQ rule: none by default). */
export const ALL_PERMISSIONS = { '/': { configure: '.*', write: '.*', read: '.*' } };

/** An engine with a STOMP/TCP listener (and more from `extra`), started. */
export async function startEngine(extra = {}) {
  const engine = new Engine({ stomp: { listen: '127.0.0.1:0' }, ...extra });
  const listeners = await engine.start();
  const port = (name) => listeners.find((l) => l.name === name).port;
  return { engine, listeners, port };
}

/** Collects engine events of one kind. */
export function collect(engine, kind) {
  const events = [];
  engine.on(kind, (ev) => {
    events.push(ev);
  });
  return events;
}

function parseFrames(buffer) {
  const frames = [];
  let rest = buffer;
  for (;;) {
    // heart-beats and the EOLs between frames
    while (rest.length && (rest[0] === 0x0a || rest[0] === 0x0d)) rest = rest.subarray(1);
    const nul = rest.indexOf(0);
    if (nul < 0) break;
    const text = rest.subarray(0, nul).toString('utf8');
    rest = rest.subarray(nul + 1);
    const sep = text.indexOf('\n\n');
    const head = (sep < 0 ? text : text.slice(0, sep)).split('\n');
    const headers = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(':');
      const k = line.slice(0, i);
      if (!(k in headers)) headers[k] = line.slice(i + 1);
    }
    frames.push({ command: head[0], headers, body: sep < 0 ? '' : text.slice(sep + 2) });
  }
  return { frames, rest };
}

/** A raw STOMP client over TCP: write frames, await the frames that arrive. */
export class RawStomp {
  static open(port) {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawStomp(socket)));
      socket.once('error', reject);
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.frames = [];
    this.waiters = [];
    this.closed = new Promise((resolve) => socket.once('close', resolve));
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      const { frames, rest } = parseFrames(Buffer.concat([this.buffer, chunk]));
      this.buffer = rest;
      this.frames.push(...frames);
      this.wake();
    });
    socket.on('close', () => this.wake());
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  send(command, headers = {}, body = '') {
    const lines = [command, ...Object.entries(headers).map(([k, v]) => `${k}:${v}`)];
    this.socket.write(`${lines.join('\n')}\n\n${body}\0`);
  }

  /** The next frame (optionally of one command), or an error after `ms`. */
  async next(command, ms = 5000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.frames.findIndex((f) => !command || f.command === command);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (this.socket.destroyed || this.socket.readyState === 'closed') {
        throw new Error(`connection closed before ${command || 'a frame'}; got ${JSON.stringify(this.frames)}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${command || 'frame'} within ${ms} ms; got ${JSON.stringify(this.frames)}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** CONNECT; resolves with CONNECTED or ERROR. */
  async connect(login, passcode, host = '/') {
    this.send('CONNECT', { 'accept-version': '1.2', host, login, passcode, 'heart-beat': '0,0' });
    const f = await this.next();
    return f;
  }

  /** SUBSCRIBE with a receipt; resolves once the server confirmed it. */
  async subscribe(destination, id = 'sub-0') {
    const receipt = `r-${id}`;
    this.send('SUBSCRIBE', { id, destination, ack: 'auto', receipt });
    const f = await this.next();
    if (f.command !== 'RECEIPT')
      throw new Error(`SUBSCRIBE ${destination}: ${f.command} ${f.headers.message || ''} ${f.body}`);
    return f;
  }

  close() {
    this.socket.destroy();
  }
}

/** Opens a STOMP session and asserts CONNECTED. */
export async function connectStomp(port, login, passcode = 'secret') {
  const c = await RawStomp.open(port);
  const f = await c.connect(login, passcode);
  if (f.command !== 'CONNECTED') {
    c.close();
    throw new Error(`CONNECT ${login}: ${f.command} ${f.headers.message || ''} ${f.body}`);
  }
  return c;
}
