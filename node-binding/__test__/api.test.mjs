// The package as Node code sees it: the exports map (import and require give
// one module), listeners removed by the function on/once return, once, the
// engine as an async disposable, and the error when no addon matches.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Engine, T, herald, sleep, waitFor } from './helpers.mjs';

test('import and require of the package name give the same module', T, async () => {
  const esm = await import('@herald-push/herald');
  assert.equal(esm.Engine, Engine);
  assert.equal(esm.default, herald);
});

test('on() returns a function that removes the listener; once() fires once', T, async () => {
  const engine = new Engine();
  const all = [];
  const first = [];
  const removed = [];
  const off = engine.on('message', (ev) => all.push(ev.body));
  engine.once('message', (ev) => first.push(ev.body));
  const cancel = engine.once('message', (ev) => removed.push(ev.body));
  assert.equal(typeof off, 'function');
  cancel();
  await engine.start();
  engine.publish('/topic/a', 'one');
  engine.publish('/topic/a', 'two');
  await waitFor('two events', () => all.length === 2);
  assert.deepEqual(all, ['one', 'two']);
  assert.deepEqual(first, ['one']);
  assert.deepEqual(removed, [], 'a once listener removed before its event never runs');
  off();
  off(); // twice is harmless
  engine.publish('/topic/a', 'three');
  await sleep(100);
  assert.deepEqual(all, ['one', 'two']);
  assert.throws(() => engine.once('nope', () => {}), { code: 'ERR_HERALD_ARGUMENT' });
  await engine.stop();
});

test('Symbol.asyncDispose stops the engine (await using)', T, () => {
  const main = fileURLToPath(new URL('../main.js', import.meta.url));
  const r = spawnSync(
    process.execPath,
    [
      '-e',
      `const { Engine } = require(${JSON.stringify(main)});
       const e = new Engine({ stomp: { listen: '127.0.0.1:0' } });
       e.start().then(() => e[Symbol.asyncDispose]()).then(() => console.log('disposed'));`,
    ],
    { timeout: 10000, encoding: 'utf8' },
  );
  assert.equal(r.stdout.trim(), 'disposed');
  assert.equal(r.status, 0, 'the process exits: the engine no longer holds it');
});

test('without an addon for this platform, loading fails with ERR_HERALD_NO_ADDON naming it', T, async () => {
  // The package's JS files alone: no herald.<triple>.node next to them, and
  // the platform package resolves (workspace link) but holds no addon.
  const dir = await mkdtemp(path.join(tmpdir(), 'herald-no-addon-'));
  try {
    const pkg = fileURLToPath(new URL('..', import.meta.url));
    for (const f of ['main.js', 'index.js']) await cp(path.join(pkg, f), path.join(dir, f));
    const r = spawnSync(
      process.execPath,
      [
        '-e',
        `try { require('./main.js') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`,
      ],
      {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, NODE_PATH: path.join(pkg, '..', 'node_modules'), NAPI_RS_NATIVE_LIBRARY_PATH: '' },
      },
    );
    const e = JSON.parse(r.stdout);
    assert.equal(e.code, 'ERR_HERALD_NO_ADDON');
    assert.match(e.message, new RegExp(`no native addon for ${process.platform}-${process.arch}`));
    assert.match(e.message, /cargo/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
