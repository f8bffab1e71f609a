import { XmppClient, RawBosh, httpRequest, childText, ser, Strophe, NS, DOMAIN } from './xmpp-harness.mjs';
import { sleep } from './harness.mjs';
const B = 'http://127.0.0.1:15280/http-bind', W = 'ws://127.0.0.1:15280/xmpp-websocket';
for (const svc of [B, W]) {
  for (const M of [Strophe.SASLPlain, Strophe.SASLSHA1, Strophe.SASLSHA256]) {
    const a = await XmppClient.connect(svc, 'alice', { mechanisms: [M], resource: 'r1' });
    console.log(svc, 'login', a.jid, a.mechanism);
    await a.disconnect();
  }
  const a = await XmppClient.connect(svc, 'alice', { presence: true });
  const b = await XmppClient.connect(svc, 'bob', { presence: true });
  a.chat('bob@localhost', 'hi bob');
  const m = await b.waitMessage((x) => childText(x, 'body') === 'hi bob');
  console.log('chat', ser(m));
  const r = await a.roster(); console.log('roster', r.length);
  const bad = new XmppClient(svc); const e = await bad.login('alice','nope','x').catch(e=>e); bad.kill(); console.log('bad', e.status, bad.traffic.filter(l=>l.includes('failure')));
  await a.disconnect(); await b.disconnect();
}
const rb = new RawBosh(B);
const c = await rb.create({wait: 3});
console.log('create', c.status, c.text.slice(0, 600));
const plain = Buffer.from('\0alice\0secret').toString('base64');
rb.rid += 1;
const xml = rb.bodyXml({ rid: rb.rid, sid: rb.sid, xmlns: NS.HTTPBIND }, `<auth xmlns='${NS.SASL}' mechanism='PLAIN'>${plain}</auth>`);
const r1 = await rb.postRaw(xml); const r2 = await rb.postRaw(xml);
console.log('repeat', r1.text, '|', r2.text, r1.text === r2.text);
const o = new RawBosh(B); await o.create({wait:2}); o.rid += 1000; const or = await o.send(); console.log('oow', or.status, or.text);
const u = new RawBosh(B); u.sid = 'nope'; const ur = await u.send(); console.log('unknown sid', ur.status, ur.text);
const pre = await httpRequest(B, { method: 'OPTIONS', headers: { Origin: 'http://127.0.0.1:1', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' } });
console.log('cors', pre.status, JSON.stringify(pre.headers));
// attach
const bob = await XmppClient.connect(B, 'bob', { presence: true });
const first = await XmppClient.connect(B, 'alice', { resource: 'reload', presence: true });
await sleep(200);
const { sid, rid } = first.conn._proto; const jid = first.jid; first.kill();
const second = new XmppClient(B); await second.attach(jid, sid, rid);
bob.chat(jid, 'after reload');
const m2 = await second.waitMessage((x) => childText(x, 'body') === 'after reload', 8000);
console.log('attach ok', ser(m2));
await second.disconnect(); await bob.disconnect();
console.log('done');
