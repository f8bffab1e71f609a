// The Socket.IO 4 side of S6 (bench/README.md): one Node process of a
// Socket.IO "cluster" joined by @socket.io/redis-adapter, the Node team's
// usual answer to "several app processes behind a load balancer".
//   node server.js --port P [--redis redis://127.0.0.1:6379] [--key socket.io]
// Prints "ready" on stdout once it listens. Without --redis: one process,
// the in-memory adapter (the single-node figures).
//
// What a client does (the generator speaks Engine.IO 4 / Socket.IO 5 itself,
// bench/src/sio.rs; check.js does the same with socket.io-client):
//   connect with auth {uid, password}   -> joins the room named after its uid
//   emit("join", room, ack)             -> joins `room`, then acks (a receipt)
//   emit("push", room, body)            -> io.to(room).emit("m", body) on every node
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
}

const port = Number(arg('port', '0'));
const redisUrl = arg('redis', '');
const key = arg('key', 'socket.io');
const password = arg('password', 'pw');

async function main() {
  const httpServer = http.createServer();
  // WebSocket only (as the Herald side), no per-message compression (v4's default).
  const io = new Server(httpServer, { transports: ['websocket'], serveClient: false });
  if (redisUrl) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    for (const c of [pub, sub]) c.on('error', (e) => console.error('redis:', e.message));
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub, { key }));
  }
  // Authentication: a shared password, the same string compare as Herald's
  // bench users; a client without a uid or with a wrong password is refused.
  io.use((socket, next) => {
    const a = socket.handshake.auth || {};
    if (typeof a.uid !== 'string' || a.uid.length === 0 || a.password !== password) {
      return next(new Error('unauthorized'));
    }
    socket.data.uid = a.uid;
    next();
  });
  io.on('connection', (socket) => {
    socket.join(socket.data.uid);
    socket.on('join', (room, ack) => {
      if (typeof room === 'string') socket.join(room);
      if (typeof ack === 'function') ack();
    });
    socket.on('push', (room, body) => {
      if (typeof room === 'string') io.to(room).emit('m', body);
    });
  });
  httpServer.listen(port, '127.0.0.1', () => {
    console.log(`ready ${httpServer.address().port}`);
  });
  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
