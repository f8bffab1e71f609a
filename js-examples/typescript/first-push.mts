// Herald from TypeScript: an engine with Web-STOMP on :15674, a user `alice`,
// and a push to her feed every second. Open push.html (next to this file) in a
// browser to see the pushes arrive. Type-checked in the tests (tests/package/
// npm-install.sh runs `tsc --noEmit --strict` on it against the packed package).
//
//   npm install @herald-push/herald
//   node --experimental-strip-types first-push.mts   (Node >= 22.6; or compile with tsc)
import { Engine, type PresenceEvent, type SessionEvent } from '@herald-push/herald';

// `await using`: the engine stops when this scope ends (Symbol.asyncDispose).
await using engine = new Engine({
  http: { listen: '127.0.0.1:15674' }, // /ws: STOMP over WebSocket; /stomp: SockJS
  users: [{ name: 'alice', password: 'secret', permissions: { '/': { configure: '.*', write: '.*', read: '.*' } } }],
});

// Each listener gets its event's type: `ev` is a PresenceEvent here ...
engine.on('presence', (ev: PresenceEvent) => console.log(`${ev.uid} is ${ev.state}`));
// ... and a SessionEvent here; `on` returns the function that removes it.
const stopLogging = engine.on('session', (ev: SessionEvent) => console.log(`${ev.uid} ${ev.event} (${ev.transport})`));

const [http] = await engine.start();
console.log(`Web-STOMP on ws://${http.addr}/ws`);

try {
  for (let i = 1; i <= 60; i++) {
    engine.sendToUser('alice', JSON.stringify({ n: i, at: new Date().toISOString() }), {
      'content-type': 'application/json',
    });
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
} catch (e) {
  // Engine errors are Errors with a string `code` (ERR_HERALD_*).
  if (e instanceof Error && 'code' in e) console.error(e.code, e.message);
  throw e;
} finally {
  stopLogging();
}
