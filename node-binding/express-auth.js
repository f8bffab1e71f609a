'use strict';
// The injector behind engine.useExpressAuth(app): each auth question the engine
// asks (GET /auth/user?username=…, or the same fields as a form POST, as
// rabbitmq-auth-backend-http sends them) is answered by the app's own handlers,
// in this process, without a listening socket.
//
// Why real HTTP over an in-memory stream rather than fake request/response objects:
// Express puts its own prototypes on every req/res it is handed (Express 4 in the
// `expressInit` middleware at the head of its router, Express 5 in app.handle), so
// look-alike objects (light-my-request's) are either undone by the app or need
// Express's internals copied, which tied the old injector to one Express version
// and put the app's real traffic at risk. Here Node itself parses the request and
// builds a genuine IncomingMessage and ServerResponse, as for a TCP client: a
// private http.Server that never listens is handed one end of an in-memory stream
// pair as its connection, and http.request writes to the other end. The app is
// called exactly as Node calls it, so any `(req, res)` listener works the same
// (Express 4 or 5, Koa's app.callback(), an http.createServer callback); nothing
// of the app is patched, and the app's own listening server is another object.
//
// What the engine needs from a call, and how it is kept:
// - bounded time: `timeoutMs` (the engine's authTimeoutMs) ends a call whose
//   handler never answers; the engine denies on its side at the same bound.
// - bounded size: more than MAX_BODY bytes of answer end the call (a handler
//   streaming without end cannot grow memory); the same bound as [auth.http].
// - failing closed: a handler that throws or rejects, a missing answer, a broken
//   stream all reject, and the engine denies (and logs the reason).
// - nothing left behind: every way a call ends destroys its stream pair, which
//   closes the app's req/res ('close' fires, as for a client that went away) and
//   frees the parser; the only long-lived object is one http.Server per app, held
//   weakly by the app.

const http = require('node:http');
const { Duplex } = require('node:stream');

const DEFAULT_TIMEOUT_MS = 5000;
/** Largest answer read, as core's HTTP auth transport (core/src/auth/http.rs MAX_BODY). */
const MAX_BODY = 64 * 1024;
/** setTimeout's largest delay; a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const kCall = Symbol('herald.expressAuth.call');

/**
 * One end of an in-memory byte stream pair: what one end writes, the other reads,
 * with backpressure (a write completes once the reader has room). Ending one side
 * ends the other's reading; destroying one destroys both, as a reset TCP connection.
 * (stream.duplexPair is Node 22+; the package supports Node 20.)
 */
class End extends Duplex {
  #peer = null;
  /** The peer's write callback, held until this side's reader wants more. */
  #blocked = null;

  static pair(serverAddress) {
    const client = new End();
    const server = new End();
    client.#peer = server;
    server.#peer = client;
    // In-process, so the app sees a loopback peer (req.ip, req.socket.remoteAddress),
    // which is where the question comes from.
    Object.assign(server, serverAddress);
    return [client, server];
  }

  _read() {
    const resume = this.#blocked;
    if (resume) {
      this.#blocked = null;
      resume();
    }
  }

  _write(chunk, _encoding, callback) {
    const peer = this.#peer;
    if (peer.destroyed) return callback();
    if (peer.push(chunk)) callback();
    else peer.#blocked = callback;
  }

  _final(callback) {
    if (!this.#peer.destroyed) this.#peer.push(null);
    callback();
  }

  _destroy(error, callback) {
    this.#blocked = null;
    if (!this.#peer.destroyed) this.#peer.destroy();
    callback(error);
  }

  // net.Socket's tuning calls, which apps and middleware may make through
  // req.socket / req.setTimeout(): they mean nothing in memory, and the call's
  // own timeout bounds it, so they are accepted and ignored rather than throwing.
  setTimeout(_ms, callback) {
    if (callback) this.once('timeout', callback);
    return this;
  }
  setNoDelay() {
    return this;
  }
  setKeepAlive() {
    return this;
  }
  ref() {
    return this;
  }
  unref() {
    return this;
  }
  address() {
    return { address: this.localAddress, family: this.localFamily, port: this.localPort };
  }
}

const LOOPBACK = {
  remoteAddress: '127.0.0.1',
  remoteFamily: 'IPv4',
  remotePort: 0,
  localAddress: '127.0.0.1',
  localFamily: 'IPv4',
  localPort: 0,
};

/** The never-listening server of each app; weak, so an app dropped by the engine goes. */
const servers = new WeakMap();

function serverOf(app) {
  let server = servers.get(app);
  if (!server) {
    server = http.createServer((req, res) => dispatch(app, req, res));
    servers.set(app, server);
  }
  return server;
}

function dispatch(app, req, res) {
  const call = req.socket[kCall];
  try {
    const out = app(req, res);
    // Koa-style listeners return a promise; a rejection is the app failing.
    if (out && typeof out.then === 'function') {
      out.then(undefined, (e) => call?.fail(`the app's handler rejected: ${reason(e)}`));
    }
  } catch (e) {
    // A plain listener that throws would take the process down from a real
    // server; here it is one failed answer.
    call?.fail(`the app's handler threw: ${reason(e)}`);
  }
}

function reason(e) {
  return e instanceof Error ? e.message : String(e);
}

function timeoutOf(ms) {
  return typeof ms === 'number' && ms > 0 ? Math.min(Math.ceil(ms), MAX_TIMER_MS) : DEFAULT_TIMEOUT_MS;
}

/** Calls in flight (for tests: 0 once every call has ended). */
let inFlight = 0;

/**
 * `inject(app, { method, url, headers?, payload?, timeoutMs? })` →
 * `Promise<{ statusCode, payload }>` (payload as UTF-8 text); rejects when the
 * call fails, times out or the answer is larger than MAX_BODY.
 */
function inject(app, options) {
  return new Promise((resolve, reject) => {
    const timeoutMs = timeoutOf(options.timeoutMs);
    const [client, serverEnd] = End.pair(LOOPBACK);
    inFlight++;
    let done = false;
    let timer = null;
    const finish = (error, reply) => {
      if (done) return;
      done = true;
      inFlight--;
      clearTimeout(timer);
      client.destroy();
      // The engine's log line names the method and path (never the query: it holds the password).
      if (error) reject(new Error(error));
      else resolve(reply);
    };
    const fail = (why) => finish(why);
    serverEnd[kCall] = { fail };
    timer = setTimeout(() => fail(`the app did not answer within ${timeoutMs} ms`), timeoutMs);
    try {
      serverOf(app).emit('connection', serverEnd);
      const body = options.payload == null ? null : Buffer.from(String(options.payload));
      const headers = { ...options.headers, connection: 'close' };
      if (body) headers['content-length'] = String(body.length);
      const req = http.request({
        method: options.method,
        path: options.url,
        headers,
        createConnection: () => client,
      });
      req.on('error', (e) => fail(`request failed: ${e.message}`));
      req.on('response', (res) => {
        const chunks = [];
        let size = 0;
        res.on('data', (chunk) => {
          size += chunk.length;
          if (size > MAX_BODY) fail(`the app answered more than ${MAX_BODY} bytes`);
          else chunks.push(chunk);
        });
        res.on('error', (e) => fail(`answer failed: ${e.message}`));
        res.on('end', () =>
          finish(null, { statusCode: res.statusCode, payload: Buffer.concat(chunks).toString('utf8') }),
        );
        // closed before its end: the app destroyed the response
        res.on('close', () => fail('the app closed the connection before answering'));
      });
      req.end(body ?? undefined);
    } catch (e) {
      fail(reason(e));
    }
  });
}

module.exports = { inject, MAX_BODY, DEFAULT_TIMEOUT_MS, inFlight: () => inFlight };
