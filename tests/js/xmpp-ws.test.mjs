// strophe.js 5 over XMPP-over-WebSocket (RFC 7395, subprotocol "xmpp") at Herald's
// /xmpp-websocket (and /ws on the XMPP HTTP listener), plus raw-socket framing checks.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket, withTimeout } from './harness.mjs';
import {
  startXmppHerald,
  XmppClient,
  track,
  parseXml,
  child,
  children,
  errorCondition,
  Inbox,
  DOMAIN,
  NS,
} from './xmpp-harness.mjs';
import { defineXmppScenarios } from './xmpp-scenarios.mjs';

const ctx = { transport: 'websocket', altPath: '/ws', groups: { p1: 'p1', p2: 'p2' } };

before(async () => {
  ctx.server = await startXmppHerald();
  ctx.service = ctx.server.xmppWsUrl;
  ctx.altService = ctx.server.xmppWsAltUrl;
});

after(async () => {
  if (ctx.server) await ctx.server.stop();
});

describe('strophe.js over WebSocket', () => {
  defineXmppScenarios(ctx);

  test('abrupt WebSocket drop (no <close/>) is seen as unavailable by the contact', async (t) => {
    const bob = await track(t, XmppClient.connect(ctx.service, 'bob', { presence: true }));
    const alice = await XmppClient.connect(ctx.service, 'alice', { presence: true });
    await bob.waitPresence(
      (p) => p.getAttribute('from') === alice.jid && !p.getAttribute('type'),
      5000,
      'alice available',
    );
    const jid = alice.jid;
    alice.kill();
    await bob.waitPresence(
      (p) => p.getAttribute('from') === jid && p.getAttribute('type') === 'unavailable',
      5000,
      'unavailable after TCP drop',
    );
  });
});

// One raw RFC 7395 connection: each WebSocket message is one XML element.
class RawXmppWs {
  static async open(url, protocols = ['xmpp']) {
    const r = new RawXmppWs();
    r.ws = new WebSocket(url, protocols);
    r.frames = new Inbox('ws frame');
    r.ws.on('message', (d) => {
      const text = d.toString('utf8');
      let el = null;
      try {
        el = parseXml(text);
      } catch {}
      r.frames.push({ text, el });
    });
    r.closed = new Promise((resolve) =>
      r.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    r.ws.on('error', () => {});
    await withTimeout(
      new Promise((resolve, reject) => {
        r.ws.once('open', resolve);
        r.ws.once('error', reject);
        r.ws.once('unexpected-response', (req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
      }),
      5000,
      `ws open ${url}`,
    );
    return r;
  }
  send(xml) {
    this.ws.send(xml);
  }
  next(pred = () => true, ms = 5000, what = 'frame') {
    return this.frames.waitFor((f) => f.el && pred(f.el), ms, what);
  }
  openStream() {
    this.send(`<open xmlns='${NS.FRAMING}' to='${DOMAIN}' version='1.0' xml:lang='en'/>`);
    return this.next((e) => e.localName === 'open', 5000, '<open/>');
  }
  async auth(user, password = 'secret') {
    const plain = Buffer.from(`\0${user}\0${password}`).toString('base64');
    this.send(`<auth xmlns='${NS.SASL}' mechanism='PLAIN'>${plain}</auth>`);
    const r = await this.next((e) => e.localName === 'success' || e.localName === 'failure', 5000, 'SASL result');
    assert.equal(r.el.localName, 'success', r.text);
  }
  close() {
    try {
      this.ws.terminate();
    } catch {}
  }
}

describe('XMPP over WebSocket, raw framing (RFC 7395)', () => {
  for (const pathName of ['/xmpp-websocket', '/ws']) {
    test(`open/features/close framing on ${pathName}`, async (t) => {
      const r = await RawXmppWs.open(`ws://127.0.0.1:${ctx.server.xmppHttpPort}${pathName}`);
      t.after(() => r.close());
      assert.equal(r.ws.protocol, 'xmpp', 'the server must select the "xmpp" subprotocol');
      const open = await r.openStream();
      assert.equal(open.el.namespaceURI, NS.FRAMING, open.text);
      assert.equal(open.el.getAttribute('from'), DOMAIN, open.text);
      assert.equal(open.el.getAttribute('version'), '1.0', open.text);
      assert.ok(open.el.getAttribute('id'), open.text);
      const f = await r.next((e) => e.localName === 'features', 5000, 'stream features');
      assert.equal(f.el.namespaceURI, NS.STREAM, f.text);
      const mechs = children(child(f.el, 'mechanisms', NS.SASL), 'mechanism').map((m) => m.textContent);
      for (const m of ['PLAIN', 'SCRAM-SHA-1', 'SCRAM-SHA-256'])
        assert.ok(mechs.includes(m), `${m} not offered: ${f.text}`);
      r.send(`<close xmlns='${NS.FRAMING}'/>`);
      await r.next((e) => e.localName === 'close', 5000, '<close/> reply');
      await withTimeout(r.closed, 5000, 'server to close the WebSocket');
    });
  }

  test('login, bind and ping over raw frames', async (t) => {
    const r = await RawXmppWs.open(ctx.server.xmppWsUrl);
    t.after(() => r.close());
    await r.openStream();
    await r.next((e) => e.localName === 'features');
    await r.auth('eve');
    await r.openStream();
    const f = await r.next((e) => e.localName === 'features', 5000, 'post-auth features');
    assert.ok(child(f.el, 'bind', NS.BIND), `bind not offered after auth: ${f.text}`);
    r.send(
      `<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='${NS.BIND}'><resource>raw</resource></bind></iq>`,
    );
    const b = await r.next((e) => e.localName === 'iq' && e.getAttribute('id') === 'b1', 5000, 'bind result');
    assert.equal(b.el.getAttribute('type'), 'result', b.text);
    assert.equal(child(child(b.el, 'bind'), 'jid').textContent, 'eve@localhost/raw');
    r.send(`<iq xmlns='jabber:client' type='get' id='p1' to='${DOMAIN}'><ping xmlns='${NS.PING}'/></iq>`);
    const p = await r.next((e) => e.localName === 'iq' && e.getAttribute('id') === 'p1', 5000, 'ping result');
    assert.equal(p.el.getAttribute('type'), 'result', p.text);
  });

  test('a stanza before authentication gets a not-authorized stream error', async (t) => {
    const r = await RawXmppWs.open(ctx.server.xmppWsUrl);
    t.after(() => r.close());
    await r.openStream();
    await r.next((e) => e.localName === 'features');
    r.send(`<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>sneaky</body></message>`);
    const e = await r.next((x) => x.localName === 'error', 5000, 'stream error');
    assert.equal(e.el.namespaceURI, NS.STREAM, e.text);
    assert.equal(errorCondition(e.el), 'not-authorized', e.text);
    await withTimeout(r.closed, 5000, 'server to close the WebSocket after the stream error');
  });

  test('malformed XML gets a not-well-formed stream error', async (t) => {
    const r = await RawXmppWs.open(ctx.server.xmppWsUrl);
    t.after(() => r.close());
    await r.openStream();
    await r.next((e) => e.localName === 'features');
    r.send(`<message to='bob@localhost'><body>broken</mess>`);
    const e = await r.next((x) => x.localName === 'error', 5000, 'stream error');
    assert.equal(errorCondition(e.el), 'not-well-formed', e.text);
    await withTimeout(r.closed, 5000, 'server to close the WebSocket after the stream error');
  });

  test('bad password over raw frames: <failure><not-authorized/>', async (t) => {
    const r = await RawXmppWs.open(ctx.server.xmppWsUrl);
    t.after(() => r.close());
    await r.openStream();
    await r.next((e) => e.localName === 'features');
    r.send(`<auth xmlns='${NS.SASL}' mechanism='PLAIN'>${Buffer.from('\0alice\0nope').toString('base64')}</auth>`);
    const f = await r.next((e) => e.localName === 'failure', 5000, 'SASL failure');
    assert.equal(f.el.namespaceURI, NS.SASL, f.text);
    assert.ok(child(f.el, 'not-authorized'), f.text);
  });
});
