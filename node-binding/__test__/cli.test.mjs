// The package's `herald` bin (bin/herald.js -> runCli): the `herald` binary's
// command line run inside Node. Each test spawns `node bin/herald.js` as npx
// would and talks to it with a raw STOMP client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RawStomp, T, connectStomp, withTimeout } from './helpers.mjs';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
const BIN = path.join(pkgDir, pkg.bin.herald);

function tmpDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'herald-cli-'));
}

/** Runs the bin; `child.done` resolves with { code, signal, stdout, stderr }. */
function herald(args, { input, env } = {}) {
  const child = spawn(process.execPath, [BIN, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => {
    stdout += d;
    child.emit('stdout');
  });
  child.stderr.setEncoding('utf8').on('data', (d) => {
    stderr += d;
  });
  if (input !== undefined) child.stdin.end(input);
  child.done = new Promise((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  child.out = () => stdout;
  child.err = () => stderr;
  return child;
}

/** Waits for `herald: ready`; returns { name: port } from the `herald: listening` lines. */
async function ready(child) {
  await withTimeout(
    new Promise((resolve, reject) => {
      const check = () => {
        if (/^herald: ready$/m.test(child.out())) resolve();
      };
      child.on('stdout', check);
      child.on('close', (code) => reject(new Error(`herald exited ${code}: ${child.err()}`)));
      check();
    }),
    20000,
    'herald: ready',
  );
  const ports = {};
  for (const m of child.out().matchAll(/^herald: listening (\S+) \S+:(\d+)$/gm)) ports[m[1]] = Number(m[2]);
  return ports;
}

function config(dir, extra = '') {
  const file = path.join(dir, 'herald.toml');
  fs.writeFileSync(
    file,
    `[node]
data_dir = "${path.join(dir, 'data')}"
[stomp]
listen = "127.0.0.1:0"
[http]
listen = "off"
[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }
${extra}`,
  );
  return file;
}

async function hashPassword(password) {
  const r = await herald(['hash-password'], { input: `${password}\n` }).done;
  assert.equal(r.code, 0, r.stderr);
  const hash = r.stdout.trim();
  assert.match(hash, /^\$argon2id\$v=19\$/);
  return hash;
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  test(`--config runs the broker; a hash-password hash logs in; ${sig} stops it gracefully (exit 0)`, T, async () => {
    const dir = tmpDir();
    const hash = await hashPassword('cli-secret');
    const file = config(dir, `[[users]]\nname = "alice"\npassword_hash = "${hash}"\n`);
    const child = herald(['--config', file]);
    try {
      const ports = await ready(child);
      assert.deepEqual(Object.keys(ports), ['stomp-tcp']);
      // The hash the bin printed verifies: the right password logs in, a wrong one does not.
      const c = await connectStomp(ports['stomp-tcp'], 'alice', 'cli-secret');
      await c.subscribe('/queue/cli');
      c.send('SEND', { destination: '/queue/cli' }, 'from npx');
      assert.equal((await c.next('MESSAGE')).body, 'from npx');
      const bad = await RawStomp.open(ports['stomp-tcp']);
      assert.equal((await bad.connect('alice', 'wrong')).command, 'ERROR');
      bad.close();

      child.kill(sig);
      // As the binary: sessions are told the server is shutting down, then exit 0.
      assert.match((await c.next('ERROR')).headers.message, /shutting down/);
      const r = await withTimeout(child.done, 15000, 'exit after the signal');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /shutting down/);
      assert.ok(!r.stderr.includes('\u001b['), 'no colour codes on a non-terminal');
    } finally {
      child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('check-config: a good config exits 0; a bad one exits 2 naming the key', T, async () => {
  const dir = tmpDir();
  try {
    const good = config(dir);
    let r = await herald(['--config', good, 'check-config']).done;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `herald: config ${good} is valid`);

    const bad = path.join(dir, 'bad.toml');
    fs.writeFileSync(bad, '[stomp]\nlisten = "127.0.0.1:0"\nlisten_typo = 1\n');
    r = await herald(['--config', bad, 'check-config']).done;
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^herald: invalid config/);
    assert.match(r.stderr, /unknown field `listen_typo`/);
    assert.equal(r.stdout, '');

    r = await herald(['--config', path.join(dir, 'missing.toml'), 'check-config']).done;
    assert.equal(r.code, 2);
    assert.match(r.stderr, /missing\.toml/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a config whose listener cannot bind exits 1 with the address', T, async () => {
  const dir = tmpDir();
  const first = herald(['--config', config(dir)]);
  try {
    const { 'stomp-tcp': port } = await ready(first);
    const taken = path.join(dir, 'taken.toml');
    fs.writeFileSync(taken, `[stomp]\nlisten = "127.0.0.1:${port}"\n[http]\nlisten = "off"\n`);
    const r = await herald(['--config', taken]).done;
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${port}`));
  } finally {
    first.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--help, --version and a usage error behave as the binary (clap)', T, async () => {
  let r = await herald(['--help']).done;
  assert.equal(r.code, 0);
  assert.match(r.stdout, /Usage: herald/);
  assert.match(r.stdout, /check-config/);
  assert.match(r.stdout, /hash-password/);
  r = await herald(['--version']).done;
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^herald \d+\.\d+\.\d+/);
  r = await herald(['--no-such-flag']).done;
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--no-such-flag/);
});
