#!/usr/bin/env node
'use strict';
// S3 in-process: Herald embedded in this Node process (the npm package
// `herald`), STOMP on 127.0.0.1:<port> for the generator's subscribers, and
// pushes with engine.sendToUser(uid, body) at a fixed rate. Driven by
// `herald-bench run --publisher node --spawn-server 'exec node bench/node/inproc.js ...'`
// over stdin/stdout:
//   prints  "ready <addresses>"            once the engine listens
//   reads   "push <rate> <secs> <nusers> <bytes>"  →  prints "sent <n> <secs>"
//   reads   "quit"                          →  stops the engine and exits
// Bodies carry the send time from process.hrtime.bigint() (CLOCK_MONOTONIC,
// the clock the Rust generator reads), as "~T<ns>~<seq> xxx…".

const path = require('node:path');
const readline = require('node:readline');

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .map((a, i, all) => (a.startsWith('--') ? [a.slice(2), all[i + 1]] : null))
    .filter(Boolean),
);
const users = Number(args.users || 10000);
const listen = args.stomp || '127.0.0.1:62613';
const password = args.password || 'pw';
const pkg = process.env.HERALD_NODE_PKG || path.join(__dirname, '..', '..', 'node-binding');
const { Engine } = require(pkg);

const config = {
  node: { name: 'herald-bench-node@localhost', ...(args.data ? { data_dir: args.data } : {}) },
  stomp: { listen },
  limits: { max_connections: 100000 },
  vhosts: [{ name: '/' }],
  auth: { default_permissions: { '/': { configure: '.*', write: '.*', read: '.*' } } },
  users: [{ name: 'upub', password }].concat(Array.from({ length: users }, (_, i) => ({ name: `u${i}`, password }))),
};

function body(seq, size) {
  let s = `~T${process.hrtime.bigint()}~${seq} `;
  if (s.length < size) s += 'x'.repeat(size - s.length);
  return s;
}

// Calls sendToUser for random users at `rate` per second for `secs`,
// catching up every millisecond (setTimeout's floor) like the Rust publisher.
function push(engine, rate, secs, n, size) {
  return new Promise((resolve) => {
    const total = Math.floor(rate * secs);
    const start = process.hrtime.bigint();
    let sent = 0;
    const tick = () => {
      const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
      const due = Math.min(total, Math.floor(elapsed * rate));
      while (sent < due) {
        engine.sendToUser(`u${Math.floor(Math.random() * n)}`, body(sent, size));
        sent++;
      }
      if (sent >= total) resolve([sent, Number(process.hrtime.bigint() - start) / 1e9]);
      else setTimeout(tick, 1);
    };
    tick();
  });
}

async function main() {
  const engine = new Engine(config);
  const listeners = await engine.start();
  console.log(`ready ${JSON.stringify(listeners)}`);
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, ...rest] = line.trim().split(/\s+/);
    if (cmd === 'push') {
      const [rate, secs, n, size] = rest.map(Number);
      const [sent, took] = await push(engine, rate, secs, n, size || 100);
      console.log(`sent ${sent} ${took}`);
    } else if (cmd === 'quit') {
      break;
    }
  }
  await engine.stop();
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
