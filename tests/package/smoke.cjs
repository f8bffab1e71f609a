'use strict';
// require() of the installed package: start an engine, publish, see the
// message event, stop. Run by npm-install.sh in a fresh project.
const assert = require('node:assert/strict');
const herald = require('@herald-push/herald');
const { Engine } = herald;

async function main() {
  // The addon came from the platform package, not from a build
  // (linux-x64-gnu here, linux-arm64-gnu under arm64-smoke.sh).
  assert.equal(herald.__napiBindingTarget, 'native');
  require.resolve(`@herald-push/herald-linux-${process.arch}-gnu`);

  assert.throws(
    () => new Engine({ no_such_key: 1 }),
    (e) => e instanceof Error && e.code === 'ERR_HERALD_CONFIG',
  );

  const engine = new Engine({ stomp: { listen: '127.0.0.1:0' } });
  const seen = [];
  const off = engine.on('message', (ev) => seen.push(ev));
  const firstOnly = [];
  engine.once('message', (ev) => firstOnly.push(ev.body));
  const listeners = await engine.start();
  assert.equal(listeners[0].name, 'stomp-tcp');
  engine.publish('/topic/news', 'one');
  engine.publish('/topic/news', 'two');
  for (let i = 0; seen.length < 2 && i < 500; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(
    seen.map((ev) => [ev.type, ev.destination, ev.body]),
    [
      ['message', '/topic/news', 'one'],
      ['message', '/topic/news', 'two'],
    ],
  );
  assert.deepEqual(firstOnly, ['one']);
  off();
  engine.publish('/topic/news', 'three');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(seen.length, 2, 'no event after unsubscribing');
  // A started engine keeps Node alive: this script ending at all shows it stopped.
  await engine[Symbol.asyncDispose]();
  console.log('require: started, published, stopped');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
