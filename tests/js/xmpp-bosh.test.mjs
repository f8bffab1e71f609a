// strophe.js 5 over BOSH (XEP-0124/0206) at Herald's /http-bind (and /bosh), plus
// raw-HTTP BOSH checks: session creation attributes, repeated and out-of-window rids,
// unknown sid, CORS preflight, terminate without presence, inactivity, re-attach.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { uid, sleep } from './harness.mjs';
import {
  startXmppHerald,
  XmppClient,
  RawBosh,
  httpRequest,
  track,
  child,
  children,
  childText,
  ser,
  DOMAIN,
  NS,
} from './xmpp-harness.mjs';
import { defineXmppScenarios } from './xmpp-scenarios.mjs';

const ctx = { transport: 'bosh', altPath: '/bosh', groups: { p1: 'p1', p2: 'p2' } };

// POST a body on a fresh connection and destroy the connection after `ms` (a browser
// aborting a held BOSH request when the page unloads).
async function rawPostThenDrop(url, xml, ms) {
  const u = new URL(url);
  const req = http.request({
    method: 'POST',
    hostname: u.hostname,
    port: u.port,
    path: u.pathname,
    headers: { 'Content-Type': 'text/xml; charset=utf-8', 'Content-Length': Buffer.byteLength(xml) },
    agent: false,
  });
  req.on('error', () => {});
  req.on('response', (res) => res.resume());
  req.end(xml);
  await sleep(ms);
  req.destroy();
}

before(async () => {
  ctx.server = await startXmppHerald();
  ctx.service = ctx.server.boshUrl;
  ctx.altService = ctx.server.boshAltUrl;
});

after(async () => {
  if (ctx.server) await ctx.server.stop();
});

describe('strophe.js over BOSH', () => {
  defineXmppScenarios(ctx);
});

describe('BOSH over raw HTTP', () => {
  test('session creation response carries the XEP-0124/0206 attributes and stream features', async () => {
    const b = new RawBosh(ctx.server.boshUrl);
    const res = await b.create({ wait: 5, hold: 1 });
    assert.equal(res.status, 200, res.text);
    assert.match(String(res.headers['content-type']), /^text\/xml/, `content-type ${res.headers['content-type']}`);
    const body = res.body;
    assert.ok(body, `unparsable creation response: ${res.text}`);
    assert.equal(body.localName, 'body');
    assert.equal(body.namespaceURI, NS.HTTPBIND, res.text);
    assert.notEqual(body.getAttribute('type'), 'terminate', res.text);
    for (const a of ['sid', 'wait', 'requests', 'hold', 'inactivity', 'polling', 'ver', 'authid', 'from']) {
      assert.ok(body.getAttribute(a), `creation response lacks ${a}: ${res.text}`);
    }
    assert.equal(body.getAttribute('from'), DOMAIN);
    assert.ok(
      Number(body.getAttribute('wait')) <= 5 && Number(body.getAttribute('wait')) > 0,
      `wait ${body.getAttribute('wait')}`,
    );
    assert.equal(body.getAttribute('hold'), '1');
    assert.ok(Number(body.getAttribute('requests')) >= 2, `requests ${body.getAttribute('requests')}`);
    assert.ok(Number(body.getAttribute('inactivity')) > 0);
    assert.match(body.getAttribute('ver'), /^1\.\d+$/);
    assert.equal(body.getAttributeNS(NS.XBOSH, 'version'), '1.0', `xmpp:version missing: ${res.text}`);
    const features = child(body, 'features', NS.STREAM);
    assert.ok(features, `no <stream:features> in the creation response: ${res.text}`);
    const mechs = child(features, 'mechanisms', NS.SASL);
    assert.ok(mechs, res.text);
    const names = children(mechs, 'mechanism').map((m) => m.textContent);
    for (const m of ['PLAIN', 'SCRAM-SHA-1', 'SCRAM-SHA-256'])
      assert.ok(names.includes(m), `mechanism ${m} not offered: ${names}`);
    assert.equal(child(features, 'starttls'), null, 'BOSH must not offer STARTTLS');
  });

  test('the requested wait is capped by the server', async () => {
    const b = new RawBosh(ctx.server.boshUrl);
    const res = await b.create({ wait: 3600 });
    assert.equal(res.status, 200, res.text);
    const w = Number(res.body.getAttribute('wait'));
    assert.ok(w > 0 && w <= 60, `wait=${w} for a request of 3600`);
  });

  test('/bosh is an alias of /http-bind', async () => {
    const b = new RawBosh(ctx.server.boshAltUrl);
    const res = await b.create();
    assert.equal(res.status, 200, res.text);
    assert.ok(res.body?.getAttribute('sid'), res.text);
  });

  test('a repeated rid returns the same response again', async () => {
    const b = new RawBosh(ctx.server.boshUrl);
    await b.create({ wait: 3 });
    const plain = Buffer.from('\0alice\0secret').toString('base64');
    const xml = b.bodyXml(
      { rid: b.rid + 1, sid: b.sid, xmlns: NS.HTTPBIND },
      `<auth xmlns='${NS.SASL}' mechanism='PLAIN'>${plain}</auth>`,
    );
    b.rid += 1;
    const first = await b.postRaw(xml);
    assert.equal(first.status, 200, first.text);
    assert.ok(child(first.body, 'success', NS.SASL), `expected <success/> in the response to auth: ${first.text}`);
    const again = await b.postRaw(xml);
    assert.equal(again.status, 200, again.text);
    assert.equal(again.text, first.text, 'a retransmitted rid must get the same response');
    // and the session goes on with the next rid
    const next = await b.send('', { 'xmpp:restart': 'true', 'xmlns:xmpp': NS.XBOSH, to: DOMAIN });
    assert.notEqual(next.body?.getAttribute('type'), 'terminate', next.text);
  });

  test('a rid far outside the window terminates with item-not-found', async () => {
    const b = new RawBosh(ctx.server.boshUrl);
    await b.create({ wait: 2 });
    b.rid += 1000;
    const res = await b.send();
    assert.equal(res.status, 200, `XEP-0124 §17: 200 with a terminate body, got HTTP ${res.status} ${res.text}`);
    assert.equal(res.body?.getAttribute('type'), 'terminate', res.text);
    assert.equal(res.body.getAttribute('condition'), 'item-not-found', res.text);
  });

  test('an unknown sid terminates with item-not-found', async () => {
    const b = new RawBosh(ctx.server.boshUrl);
    b.sid = `no-such-sid-${uid('s')}`;
    const res = await b.send();
    assert.equal(res.status, 200, `HTTP ${res.status} ${res.text}`);
    assert.equal(res.body?.getAttribute('type'), 'terminate', res.text);
    assert.equal(res.body.getAttribute('condition'), 'item-not-found', res.text);
  });

  test('CORS: preflight from another origin is answered, and POSTs carry Access-Control-Allow-Origin', async () => {
    const origin = 'http://127.0.0.1:1'; // a page on another origin
    const pre = await httpRequest(ctx.server.boshUrl, {
      method: 'OPTIONS',
      headers: {
        Origin: origin,
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'content-type',
      },
    });
    assert.ok(pre.status === 200 || pre.status === 204, `preflight HTTP ${pre.status} ${pre.text}`);
    const acao = pre.headers['access-control-allow-origin'];
    assert.ok(acao === '*' || acao === origin, `Access-Control-Allow-Origin: ${acao}`);
    assert.match(String(pre.headers['access-control-allow-methods'] || ''), /POST/i, JSON.stringify(pre.headers));
    const allowHeaders = String(pre.headers['access-control-allow-headers'] || '');
    assert.ok(
      allowHeaders === '*' || /content-type/i.test(allowHeaders),
      `Access-Control-Allow-Headers: ${allowHeaders}`,
    );
    const b = new RawBosh(ctx.server.boshUrl);
    const res = await b.create({ headers: { Origin: origin } });
    assert.equal(res.status, 200);
    const acao2 = res.headers['access-control-allow-origin'];
    assert.ok(acao2 === '*' || acao2 === origin, `POST Access-Control-Allow-Origin: ${acao2}`);
  });

  test('GET on /http-bind does not create a session', async () => {
    const res = await httpRequest(ctx.server.boshUrl, { method: 'GET' });
    assert.ok(res.status !== 200 || !/sid=/.test(res.text), `GET answered ${res.status} ${res.text}`);
  });

  test('malformed BOSH body is refused', async () => {
    const b = new RawBosh(ctx.server.boshUrl);
    const res = await b.postRaw('<body rid="1" xmlns="http://jabber.org/protocol/httpbind"><unclosed></body>');
    const terminated = res.body && res.body.getAttribute('type') === 'terminate';
    assert.ok(res.status === 400 || terminated, `HTTP ${res.status} ${res.text}`);
  });

  test('a raw BOSH client logs in (PLAIN, restart, bind) and chats with strophe.js', async (t) => {
    const alice = await track(t, XmppClient.connect(ctx.server.boshUrl, 'alice', { presence: true }));
    const b = new RawBosh(ctx.server.boshUrl);
    const jid = await b.login('bob', 'secret', 'rawbosh');
    assert.equal(jid, 'bob@localhost/rawbosh');
    await b.send(`<presence xmlns='jabber:client'/>`);
    await b.send(
      `<message xmlns='jabber:client' to='alice@localhost' type='chat' id='rb1'><body>from raw bosh</body></message>`,
    );
    const m = await alice.waitMessage((x) => childText(x, 'body') === 'from raw bosh', 5000, 'raw BOSH chat');
    assert.equal(m.getAttribute('from'), jid);
    alice.chat(jid, 'back to raw bosh');
    const got = await b.waitFor(
      (e) => e.localName === 'message' && childText(e, 'body') === 'back to raw bosh',
      8000,
      'chat at the raw BOSH client',
    );
    assert.equal(got.getAttribute('from'), alice.jid);
    await b.send('', { type: 'terminate' });
  });

  test('terminate without unavailable presence: contacts still get unavailable', async (t) => {
    const alice = await track(t, XmppClient.connect(ctx.server.boshUrl, 'alice', { presence: true }));
    const b = new RawBosh(ctx.server.boshUrl);
    const jid = await b.login('bob', 'secret', 'term');
    await b.send(`<presence xmlns='jabber:client'/>`);
    await alice.waitPresence((p) => p.getAttribute('from') === jid && !p.getAttribute('type'), 5000, 'bob available');
    const res = await b.send('', { type: 'terminate' });
    assert.equal(res.status, 200, res.text);
    await alice.waitPresence(
      (p) => p.getAttribute('from') === jid && p.getAttribute('type') === 'unavailable',
      5000,
      'bob unavailable after terminate',
    );
    const after = await b.send();
    assert.equal(after.body?.getAttribute('type'), 'terminate', `session must be gone: ${after.text}`);
  });

  test('page reload: strophe attach() with the kept sid and rid resumes the session', async (t) => {
    const bob = await track(t, XmppClient.connect(ctx.server.boshUrl, 'bob', { presence: true }));
    const first = await XmppClient.connect(ctx.server.boshUrl, 'alice', { resource: 'reload', presence: true });
    await bob.waitPresence(
      (p) => p.getAttribute('from') === first.jid && !p.getAttribute('type'),
      5000,
      'alice available',
    );
    await sleep(200); // let strophe put its next poll on the wire
    const { sid } = first.conn._proto;
    const rid = first.conn._proto.rid; // the next rid the page would use
    const jid = first.jid;
    first.kill(); // the page goes away without a terminate (the browser aborts the held request)
    await sleep(500); // the new page loads
    const second = new XmppClient(ctx.server.boshUrl);
    t.after(() => second.close());
    await second.attach(jid, sid, rid);
    bob.chat(jid, 'after reload');
    const m = await second.waitMessage(
      (x) => childText(x, 'body') === 'after reload',
      8000,
      'chat on the re-attached session',
    );
    assert.equal(m.getAttribute('from'), bob.jid);
    second.chat('bob@localhost', 'still here');
    await bob.waitMessage((x) => childText(x, 'body') === 'still here', 5000, 'chat from the re-attached session');
    await bob.presences.expectNone(
      (p) => p.getAttribute('from') === jid && p.getAttribute('type') === 'unavailable',
      300,
      'unavailable for the reloaded page',
    );
  });

  test('a held request dropped by the client (page navigation) does not end the session, and a stanza sent meanwhile is not lost', async () => {
    // XEP-0124 §14.3: the client may repeat the rid of a request whose response it never got;
    // the next rid must not be taken for overactivity/too-fast polling (§11/§12).
    const bob = await XmppClient.connect(ctx.server.boshUrl, 'bob');
    try {
      const b = new RawBosh(ctx.server.boshUrl);
      const jid = await b.login('alice', 'secret', 'navigate', { wait: 5 });
      b.rid += 1;
      const heldXml = b.bodyXml({ rid: b.rid, sid: b.sid, xmlns: NS.HTTPBIND });
      const held = rawPostThenDrop(ctx.server.boshUrl, heldXml, 300); // the page navigates away
      await held;
      await sleep(100);
      bob.chat(jid, 'sent during the reload', { id: 'reload-gap' });
      await sleep(500);
      const next = await b.send();
      assert.notEqual(
        next.body?.getAttribute('type'),
        'terminate',
        `the next request ended the session:\n>> ${b.bodyXml({ rid: b.rid, sid: b.sid, xmlns: NS.HTTPBIND })}\n<< ${next.text}`,
      );
      let got = b.received.find((e) => e.localName === 'message' && childText(e, 'body') === 'sent during the reload');
      if (!got) {
        const again = await b.postRaw(heldXml); // repeat the rid whose response was lost
        assert.notEqual(again.body?.getAttribute('type'), 'terminate', again.text);
        got = b.received.find((e) => e.localName === 'message' && childText(e, 'body') === 'sent during the reload');
      }
      assert.ok(
        got,
        `stanza lost: neither rid ${b.rid} nor a repeat of rid ${b.rid - 1} returned it; received ${b.received.map(ser).join(' ')}`,
      );
      await b.send('', { type: 'terminate' });
    } finally {
      await bob.close();
    }
  });

  test('raw re-attach: the kept sid with the next rid goes on after the old requests are dropped', async () => {
    const b = new RawBosh(ctx.server.boshUrl);
    const jid = await b.login('carol', 'secret', 'raw-reload');
    await b.send(`<presence xmlns='jabber:client'/>`);
    // "reload": a new page with the same sid/rid, no new session creation
    const b2 = new RawBosh(ctx.server.boshUrl);
    b2.sid = b.sid;
    b2.rid = b.rid;
    const r = await b2.send(
      `<iq xmlns='jabber:client' type='get' id='ping-r' to='${DOMAIN}'><ping xmlns='${NS.PING}'/></iq>`,
    );
    assert.notEqual(r.body?.getAttribute('type'), 'terminate', r.text);
    const pong = await b2.waitFor(
      (e) => e.localName === 'iq' && e.getAttribute('id') === 'ping-r',
      8000,
      'ping result after re-attach',
    );
    assert.equal(pong.getAttribute('type'), 'result', ser(pong));
    assert.equal(jid, 'carol@localhost/raw-reload');
    await b2.send('', { type: 'terminate' });
  });
});

describe('BOSH inactivity', () => {
  let server;
  before(async () => {
    server = await startXmppHerald({ xmpp: { bosh_inactivity_secs: 2 } });
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('an abandoned BOSH session times out and contacts get unavailable', async (t) => {
    const alice = await track(t, XmppClient.connect(server.xmppWsUrl, 'alice', { presence: true }));
    const b = new RawBosh(server.boshUrl);
    const jid = await b.login('bob', 'secret', 'gone', { wait: 1 });
    await b.send(`<presence xmlns='jabber:client'/>`);
    await alice.waitPresence((p) => p.getAttribute('from') === jid && !p.getAttribute('type'), 5000, 'bob available');
    // no more requests from bob: inactivity 2 s (+ wait 1 s)
    const p = await alice.waitPresence(
      (x) => x.getAttribute('from') === jid && x.getAttribute('type') === 'unavailable',
      10000,
      'bob unavailable after inactivity',
    );
    assert.ok(p);
    const res = await b.send();
    assert.equal(res.body?.getAttribute('type'), 'terminate', res.text);
  });
});
