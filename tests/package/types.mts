// Type tests for the installed package, checked with `tsc --noEmit --strict`
// by npm-install.sh: each `@ts-expect-error` line must be an error, so a
// listener typed too loosely (any event for any name) fails the check.
import herald, { Engine, type EngineEvents, type MessageEvent, type PresenceEvent } from '@herald-push/herald';
import { createRequire } from 'node:module';

const engine = new Engine({ stomp: { listen: '127.0.0.1:0' } });

engine.on('presence', (ev) => {
  const p: PresenceEvent = ev;
  const state: 'online' | 'away' | 'dnd' | 'xa' | 'chat' | 'offline' = p.state;
  // @ts-expect-error a presence event has no body
  ev.body;
  return state;
});
const off: () => void = engine.once('message', (ev) => {
  const m: MessageEvent = ev;
  return m.body.length;
});
off();
// @ts-expect-error not an event name
engine.on('messages', () => {});
// @ts-expect-error a session listener does not get a MessageEvent
engine.on('session', (ev: MessageEvent) => ev.body);
const byName: EngineEvents['session']['event'] = 'open';

await using disposed = new Engine();
const listeners: Array<{ name: string; addr: string; port: number }> = await disposed.start();
disposed.publish('/topic/x', Buffer.from('bytes'), { 'content-type': 'text/plain' });

const cjs: typeof herald = createRequire(import.meta.url)('@herald-push/herald');
export { byName, cjs, listeners };
