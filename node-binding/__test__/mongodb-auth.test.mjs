// `auth.mongodb` given to `new Engine({...})`: the same section as the TOML file's
// `[auth.mongodb]`, against a MongoDB-wire server (SecantusDB's secantusd-py) holding
// users hashed by the npm `bcrypt` and `bcryptjs` packages, as a Node app stores them.
// A missing secantusd-py fails (tests/services/install.sh installs it); nothing skips.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import { T, Engine, RawStomp, startEngine, withTimeout, sleep } from './helpers.mjs';

const require = createRequire(import.meta.url);
const bcrypt = require('bcrypt');
const bcryptjs = require('bcryptjs');
const { MongoClient } = require('mongodb');

let mongod;
let client;
let uri;

function secantusd() {
  const venv = process.env.HERALD_VENV || '/var/tmp/herald-venv';
  const dirs = [path.join(venv, 'bin'), ...(process.env.PATH || '').split(path.delimiter)];
  for (const d of dirs) {
    const p = path.join(d, 'secantusd-py');
    if (fs.existsSync(p)) return p;
  }
  throw new Error('secantusd-py not found: run tests/services/install.sh (tests never skip)');
}

async function freePort() {
  const s = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => s.once('listening', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

before(async () => {
  const port = await freePort();
  mongod = spawn(
    secantusd(),
    ['--host', '127.0.0.1', '--port', String(port), '--storage-path', ':memory:', '--log-level', 'WARNING'],
    { stdio: 'ignore' },
  );
  uri = `mongodb://127.0.0.1:${port}/?directConnection=true`;
  client = new MongoClient(uri, { serverSelectionTimeoutMS: 20000 });
  await withTimeout(client.connect(), 30000, 'connect to secantusd-py');
  await client
    .db('app')
    .collection('users')
    .insertMany([
      { username: 'nadia', password: bcrypt.hashSync('nadia-pw', 10), status: 'active' },
      { username: 'jonas', password: bcryptjs.hashSync('jonas-pw', 10), status: 'active' },
      { username: 'gone', password: bcryptjs.hashSync('gone-pw', 4), status: 'banned' },
    ]);
});

after(async () => {
  await client?.close();
  mongod?.kill();
  await sleep(100);
});

async function connectFrame(port, login, passcode) {
  const c = await RawStomp.open(port);
  try {
    return await c.connect(login, passcode);
  } finally {
    c.close();
  }
}

test('users from MongoDB log in over STOMP; wrong, banned and missing ones do not', T, async () => {
  const { engine, port } = await startEngine({
    auth: {
      default_permissions: { '/': { configure: '', write: 'feed', read: 'feed' } },
      mongodb: { uri, database: 'app', disabled_field: 'status', disabled_value: 'banned' },
    },
  });
  try {
    const p = port('stomp-tcp');
    assert.equal((await connectFrame(p, 'nadia', 'nadia-pw')).command, 'CONNECTED');
    assert.equal((await connectFrame(p, 'jonas', 'jonas-pw')).command, 'CONNECTED');
    for (const [login, pw] of [
      ['nadia', 'jonas-pw'],
      ['gone', 'gone-pw'],
      ['nobody', 'x'],
    ]) {
      const f = await connectFrame(p, login, pw);
      assert.equal(f.command, 'ERROR', `${login}: ${JSON.stringify(f)}`);
      assert.match(f.body, /Access refused/);
    }
  } finally {
    await engine.stop();
  }
});

test('a bad auth.mongodb is refused naming the key', T, () => {
  assert.throws(() => new Engine({ auth: { mongodb: { database: 'app' } } }), /auth\.mongodb\.uri/);
});
