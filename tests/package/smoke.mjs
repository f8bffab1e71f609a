// `import` of the installed package (the exports map's ESM entry): start an
// engine, publish, see the message event, stop. Run by npm-install.sh.
import assert from 'node:assert/strict';
import herald, { Engine } from '@herald-push/herald';

assert.equal(herald.Engine, Engine, 'default and named exports are the same module');
const engine = new Engine({ stomp: { listen: '127.0.0.1:0' } });
const got = new Promise((resolve) => engine.once('message', resolve));
await engine.start();
assert.equal(typeof engine.publish('/topic/news', 'hello'), 'number');
const ev = await got;
assert.equal(ev.body, 'hello');
assert.equal(ev.routingKey, 'news');
// A started engine keeps Node alive: this script ending at all shows it stopped.
await engine.stop();
console.log('import: started, published, stopped');
