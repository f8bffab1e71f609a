// XMPP scenarios shared by the BOSH, WebSocket and Redis+Mongo suites: strophe.js
// clients against Herald, with STOMP (raw TCP) on the other side where the contract
// joins the two worlds.
//
// defineXmppScenarios(ctx) registers node:test tests; ctx is filled in a `before` hook:
//   ctx.server      startXmppHerald() result
//   ctx.service     BOSH or WebSocket URL the clients use; ctx.altService the alias path
//   ctx.transport   'bosh' | 'websocket' (names only)
//   ctx.groups      { p1: <roster group for p1>, p2: ... } (the project names)
//   ctx.redis       optional { client: Redis, prefix } to check presence keys directly

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RawStomp, uid, sleep } from './harness.mjs';
import {
  XmppClient,
  XmppError,
  Strophe,
  $iq,
  track,
  child,
  children,
  childText,
  bare,
  ser,
  errorCondition,
  eventually,
  DOMAIN,
  PROJECT_DOMAIN,
  NS,
} from './xmpp-harness.mjs';

export const jidOf = (u) => `${u}@${DOMAIN}`;

const isAvailableFrom = (jid) => (p) => p.getAttribute('from') === jid && !p.getAttribute('type');
const isUnavailableFrom = (jid) => (p) => p.getAttribute('from') === jid && p.getAttribute('type') === 'unavailable';
const fromBare = (u) => (p) => bare(p.getAttribute('from')) === jidOf(u);

export async function stompGuest(server, login = 'guest', passcode = 'guest') {
  const s = await RawStomp.tcp(server.stompPort);
  const f = await s.connect({ login, passcode });
  assert.equal(f.command, 'CONNECTED', `STOMP CONNECT as ${login}: ${f.command} ${f.bodyText}`);
  s.n = 0;
  s.subscribe = async (destination, headers = {}) => {
    const id = `sub-${++s.n}`;
    const receipt = uid('r');
    s.send('SUBSCRIBE', { id, destination, ack: 'auto', receipt, ...headers });
    const r = await s.expectFrame('RECEIPT', 5000);
    assert.equal(r.headers['receipt-id'], receipt);
    return id;
  };
  s.publish = async (destination, body, headers = {}) => {
    const receipt = uid('r');
    s.send('SEND', { destination, 'content-type': 'text/plain', receipt, ...headers }, body);
    const r = await s.expectFrame('RECEIPT', 5000);
    assert.equal(r.headers['receipt-id'], receipt, `RECEIPT for SEND ${destination}`);
  };
  // Next MESSAGE matching pred; other MESSAGEs are dropped (and listed on timeout).
  s.waitMessage = async (pred, ms = 5000, what = 'MESSAGE') => {
    const deadline = Date.now() + ms;
    const skipped = [];
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for STOMP ${what}; skipped: ${skipped.join(' | ')}`);
      let f;
      try {
        f = await s.next(left, what);
      } catch {
        throw new Error(`timed out waiting for STOMP ${what}; skipped: ${skipped.join(' | ') || '(none)'}`);
      }
      if (f.command === 'MESSAGE' && pred(f)) return f;
      skipped.push(`${f.command} ${JSON.stringify(f.headers)} ${f.bodyText.slice(0, 200)}`);
    }
  };
  return s;
}

function trackStomp(t, s) {
  t.after(() => {
    try {
      s.send('DISCONNECT', {});
    } catch {}
    s.close();
  });
  return s;
}

export function defineXmppScenarios(ctx) {
  const T = () => ctx.transport;
  const connect = (t, user, opts = {}) => track(t, XmppClient.connect(ctx.service, user, opts));
  const online = (t, user, opts = {}) => connect(t, user, { presence: true, ...opts });

  async function redisCheck(what, fn) {
    if (!ctx.redis) return;
    await eventually(fn, 5000, `redis: ${what}`);
  }
  const rkey = (k) => `${ctx.redis.prefix}${k}`;

  // --- login ------------------------------------------------------------------

  test(`login: alice authenticates and binds a full JID (${T()})`, async (t) => {
    const alice = await connect(t, 'alice', { resource: 'desk' });
    assert.match(alice.jid, /^alice@localhost\/.+/, `bound JID ${alice.jid}`);
    assert.equal(alice.jid, 'alice@localhost/desk', 'requested resource is granted');
    assert.equal(alice.mechanism, 'SCRAM-SHA-256', 'strophe picks the strongest offered mechanism');
  });

  test(`login on the alias endpoint ${ctx.altPath || ''} (${T()})`, async (t) => {
    const bob = await track(t, XmppClient.connect(ctx.altService, 'bob'));
    assert.match(bob.jid, /^bob@localhost\/.+/);
  });

  for (const mech of ['PLAIN', 'SCRAM-SHA-1', 'SCRAM-SHA-256']) {
    test(`login with SASL ${mech} (${T()})`, async (t) => {
      const M = { PLAIN: Strophe.SASLPlain, 'SCRAM-SHA-1': Strophe.SASLSHA1, 'SCRAM-SHA-256': Strophe.SASLSHA256 }[
        mech
      ];
      const c = await connect(t, 'carol', { mechanisms: [M] });
      assert.equal(c.mechanism, mech);
      assert.equal(c.bareJid, 'carol@localhost');
    });
  }

  for (const mech of ['PLAIN', 'SCRAM-SHA-256']) {
    test(`bad password is refused with <not-authorized/> (${mech}, ${T()})`, async () => {
      const M = mech === 'PLAIN' ? Strophe.SASLPlain : Strophe.SASLSHA256;
      const c = new XmppClient(ctx.service, { mechanisms: [M] });
      const err = await c.login('alice', 'wrong-password', 'x').then(
        () => null,
        (e) => e,
      );
      c.kill();
      assert.ok(err instanceof XmppError, `login must fail, got ${err}`);
      assert.equal(err.status, 'AUTHFAIL', err.message);
      const failure = c.traffic.find(
        (l) => l.startsWith('<<') && /<failure[^>]*xmlns=["']urn:ietf:params:xml:ns:xmpp-sasl["']/.test(l),
      );
      assert.ok(failure, `no SASL <failure/> seen:\n${c.dump()}`);
      assert.match(failure, /<not-authorized\/>/, failure);
    });
  }

  test(`unknown user is refused (${T()})`, async () => {
    const c = new XmppClient(ctx.service, { mechanisms: [Strophe.SASLPlain] });
    const err = await c.login('mallory', 'secret', 'x').then(
      () => null,
      (e) => e,
    );
    c.kill();
    assert.equal(err?.status, 'AUTHFAIL', String(err?.message));
  });

  // --- roster -----------------------------------------------------------------

  test(`roster: alice sees bob and carol (subscription both, group = project name) (${T()})`, async (t) => {
    const alice = await connect(t, 'alice');
    const items = await alice.roster();
    const byJid = Object.fromEntries(items.map((i) => [i.jid, i]));
    assert.deepEqual(
      Object.keys(byJid).sort(),
      ['bob@localhost', 'carol@localhost'],
      `roster: ${items.map((i) => ser(i.el)).join(' ')}`,
    );
    for (const j of ['bob@localhost', 'carol@localhost']) {
      assert.equal(byJid[j].subscription, 'both', ser(byJid[j].el));
      assert.deepEqual(byJid[j].groups, [ctx.groups.p1], ser(byJid[j].el));
    }
  });

  test(`roster: carol (in p1 and p2) sees alice, bob, dave, eve with their groups (${T()})`, async (t) => {
    const carol = await connect(t, 'carol');
    const items = await carol.roster();
    const byJid = Object.fromEntries(items.map((i) => [i.jid, i]));
    assert.deepEqual(Object.keys(byJid).sort(), [
      'alice@localhost',
      'bob@localhost',
      'dave@localhost',
      'eve@localhost',
    ]);
    assert.deepEqual(byJid['alice@localhost'].groups, [ctx.groups.p1]);
    assert.deepEqual(byJid['dave@localhost'].groups, [ctx.groups.p2]);
    for (const i of items) assert.equal(i.subscription, 'both');
  });

  test(`roster set is refused with not-allowed (${T()})`, async (t) => {
    const alice = await connect(t, 'alice');
    const err = await alice
      .iq(
        $iq({ type: 'set', id: uid('rs') })
          .c('query', { xmlns: NS.ROSTER })
          .c('item', { jid: 'mallory@localhost', name: 'M' }),
      )
      .then(
        () => null,
        (e) => e,
      );
    assert.ok(err?.stanza, `roster set must fail: ${err}`);
    assert.equal(err.condition, 'not-allowed', ser(err.stanza));
  });

  // --- presence ---------------------------------------------------------------

  test(`presence both ways: initial presence reaches contacts, newcomer gets current presence (${T()})`, async (t) => {
    const alice = await connect(t, 'alice', { resource: 'pres-a' });
    alice.sendPresence({ status: 'alice here' });
    const eve = await online(t, 'eve'); // not a contact of alice
    await redisCheck('alice in online:p1 after initial presence', async () =>
      (await ctx.redis.client.smembers(rkey('online:p1'))).includes('alice'),
    );
    const bob = await connect(t, 'bob', { resource: 'pres-b' });
    bob.sendPresence({ status: 'bob here' });
    const fromBob = await alice.waitPresence(isAvailableFrom(bob.jid), 5000, `available presence from ${bob.jid}`);
    assert.equal(childText(fromBob, 'status'), 'bob here', ser(fromBob));
    const fromAlice = await bob.waitPresence(isAvailableFrom(alice.jid), 5000, `current presence of ${alice.jid}`);
    assert.equal(childText(fromAlice, 'status'), 'alice here', ser(fromAlice));
    await eve.presences.expectNone(fromBare('alice'), 500, 'presence of alice at eve (not a contact)');
    await redisCheck('bob in online:p1', async () =>
      (await ctx.redis.client.smembers(rkey('online:p1'))).includes('bob'),
    );
  });

  for (const show of ['away', 'dnd', 'xa', 'chat']) {
    test(`presence <show>${show}</show> with <status> reaches the contact (${T()})`, async (t) => {
      const bob = await online(t, 'bob');
      const alice = await online(t, 'alice');
      await bob.waitPresence(isAvailableFrom(alice.jid), 5000, 'alice online');
      const status = `status ${show} ✓ <&>`;
      alice.sendPresence({ show, status });
      const p = await bob.waitPresence(
        (x) => isAvailableFrom(alice.jid)(x) && childText(x, 'show') === show,
        5000,
        `alice ${show}`,
      );
      assert.equal(childText(p, 'status'), status, ser(p));
      await redisCheck(`presence hash state=${show}`, async () => {
        const h = await ctx.redis.client.hgetall(rkey('presence:alice'));
        return h.state === show && h.status === status;
      });
    });
  }

  test(`graceful disconnect is seen as unavailable by the contact (${T()})`, async (t) => {
    const bob = await online(t, 'bob');
    const alice = await online(t, 'alice');
    await bob.waitPresence(isAvailableFrom(alice.jid), 5000, 'alice online');
    const aliceJid = alice.jid;
    await alice.disconnect(); // strophe sends <presence type='unavailable'/>, then closes
    await bob.waitPresence(isUnavailableFrom(aliceJid), 5000, `unavailable from ${aliceJid}`);
    // the server adds its own unavailable only for a session that ends while available
    // (RFC 6121 §4.5.3); ejabberd sends exactly one here
    await bob.presences.expectNone(isUnavailableFrom(aliceJid), 700, `a second unavailable from ${aliceJid}`);
    await redisCheck(
      'alice removed from online:p1',
      async () => !(await ctx.redis.client.smembers(rkey('online:p1'))).includes('alice'),
    );
    await redisCheck('presence hash gone or offline', async () => {
      const h = await ctx.redis.client.hgetall(rkey('presence:alice'));
      return Object.keys(h).length === 0 || h.state === 'offline';
    });
  });

  test(`per-resource presence: a second resource comes and goes while the first stays available (${T()})`, async (t) => {
    const bob = await online(t, 'bob');
    const a1 = await online(t, 'alice', { resource: 'one' });
    await bob.waitPresence(isAvailableFrom(a1.jid), 5000, 'alice/one');
    const a2 = await online(t, 'alice', { resource: 'two' });
    await bob.waitPresence(isAvailableFrom(a2.jid), 5000, 'alice/two');
    await a2.disconnect();
    await bob.waitPresence(isUnavailableFrom('alice@localhost/two'), 5000, 'alice/two unavailable');
    // alice/one is still available: nothing claims she is gone
    await bob.presences.expectNone(isUnavailableFrom(a1.jid), 400, 'unavailable for alice/one');
  });

  // --- messages ---------------------------------------------------------------

  test(`chat both ways: type, id and server-stamped from preserved (${T()})`, async (t) => {
    const alice = await online(t, 'alice');
    const bob = await online(t, 'bob');
    const id = alice.chat('bob@localhost', 'hello bob ✓ <&>', { id: 'chat-1' });
    const m = await bob.waitMessage((x) => childText(x, 'body') === 'hello bob ✓ <&>', 5000, 'chat from alice');
    assert.equal(m.getAttribute('type'), 'chat');
    assert.equal(m.getAttribute('id'), id);
    assert.equal(m.getAttribute('from'), alice.jid);
    assert.equal(bare(m.getAttribute('to')), 'bob@localhost');
    bob.chat(m.getAttribute('from'), 'hi alice', { id: 'chat-2' });
    const r = await alice.waitMessage((x) => childText(x, 'body') === 'hi alice', 5000, 'reply from bob');
    assert.equal(r.getAttribute('type'), 'chat');
    assert.equal(r.getAttribute('id'), 'chat-2');
    assert.equal(r.getAttribute('from'), bob.jid);
  });

  test(`chat to a bare JID reaches every resource; to a full JID only that one (${T()})`, async (t) => {
    const alice = await online(t, 'alice');
    const b1 = await online(t, 'bob', { resource: 'b1' });
    const b2 = await online(t, 'bob', { resource: 'b2' });
    alice.chat('bob@localhost', 'to all of bob');
    await b1.waitMessage((x) => childText(x, 'body') === 'to all of bob', 5000, 'bare chat at b1');
    await b2.waitMessage((x) => childText(x, 'body') === 'to all of bob', 5000, 'bare chat at b2');
    alice.chat(b2.jid, 'only b2');
    const m = await b2.waitMessage((x) => childText(x, 'body') === 'only b2', 5000, 'full-JID chat at b2');
    assert.equal(m.getAttribute('from'), alice.jid);
    await b1.messages.expectNone((x) => childText(x, 'body') === 'only b2', 600, 'full-JID chat at b1');
  });

  test(`a client-supplied from is replaced by the server (${T()})`, async (t) => {
    const alice = await online(t, 'alice');
    const bob = await online(t, 'bob');
    alice.chat('bob@localhost', 'spoof attempt', { from: 'carol@localhost/forged' });
    const m = await bob.waitMessage((x) => childText(x, 'body') === 'spoof attempt', 5000, 'spoofed chat');
    assert.equal(m.getAttribute('from'), alice.jid, ser(m));
  });

  // --- STOMP <-> XMPP ---------------------------------------------------------

  test(`STOMP SEND to /exchange/feed/bob reaches bob's strophe.js as a headline (${T()})`, async (t) => {
    const bob = await online(t, 'bob');
    const g = trackStomp(t, await stompGuest(ctx.server));
    const body = `feed item ${uid('f')} ✓`;
    await g.publish('/exchange/feed/bob', body);
    const m = await bob.waitMessage((x) => childText(x, 'body') === body, 5000, 'headline from STOMP');
    assert.equal(m.getAttribute('type'), 'headline', ser(m));
    assert.equal(m.getAttribute('from'), 'guest@localhost', ser(m));
    assert.equal(bare(m.getAttribute('to')), 'bob@localhost', ser(m));
  });

  test(`XMPP chat to bob reaches STOMP subscribers of /exchange/feed/bob (${T()})`, async (t) => {
    const alice = await online(t, 'alice');
    const g = trackStomp(t, await stompGuest(ctx.server));
    await g.subscribe('/exchange/feed/bob');
    const body = `xmpp->stomp ${uid('c')}`;
    alice.chat('bob@localhost', body, { id: 'x2s-1' });
    const f = await g.waitMessage((m) => m.bodyText === body, 5000, 'MESSAGE on feed/bob');
    assert.equal(f.headers['x-xmpp-type'], 'chat', JSON.stringify(f.headers));
    assert.equal(bare(f.headers['x-xmpp-from']), 'alice@localhost', JSON.stringify(f.headers));
  });

  test(`presence changes are published on /exchange/presence/p1.* as JSON (${T()})`, async (t) => {
    await sleep(300); // let the previous tests' sessions of alice finish closing
    const g = trackStomp(t, await stompGuest(ctx.server));
    await g.subscribe('/exchange/presence/p1.*');
    const g2 = trackStomp(t, await stompGuest(ctx.server));
    await g2.subscribe('/exchange/presence/p1.alice');
    const isAlice = (state) => (m) => {
      try {
        const j = JSON.parse(m.bodyText);
        return j.uid === 'alice' && j.project === 'p1' && j.state === state;
      } catch {
        return false;
      }
    };
    const alice = await online(t, 'alice');
    const on = await g.waitMessage(isAlice('online'), 5000, 'alice online on p1.*');
    const j = JSON.parse(on.bodyText);
    assert.deepEqual(
      Object.keys(j)
        .sort()
        .filter((k) => ['uid', 'project', 'state'].includes(k)),
      ['project', 'state', 'uid'],
    );
    await g2.waitMessage(isAlice('online'), 5000, 'alice online on p1.alice');
    alice.sendPresence({ show: 'dnd', status: 'in a meeting' });
    const dnd = await g.waitMessage(isAlice('dnd'), 5000, 'alice dnd');
    assert.equal(JSON.parse(dnd.bodyText).status, 'in a meeting');
    alice.sendPresence({ show: 'away', status: 'lunch' });
    const away = await g.waitMessage(isAlice('away'), 5000, 'alice away');
    assert.equal(JSON.parse(away.bodyText).status, 'lunch');
    await alice.disconnect();
    await g.waitMessage(isAlice('offline'), 5000, 'alice offline');
  });

  test(`a STOMP connection counts as the user being online (${T()})`, async (t) => {
    const g = trackStomp(t, await stompGuest(ctx.server));
    await g.subscribe('/exchange/presence/p2.*');
    const isDave = (state) => (m) => {
      try {
        const j = JSON.parse(m.bodyText);
        return j.uid === 'dave' && j.project === 'p2' && j.state === state;
      } catch {
        return false;
      }
    };
    const d = await stompGuest(ctx.server, 'dave', 'secret');
    await g.waitMessage(isDave('online'), 5000, 'dave online via STOMP');
    await redisCheck('dave in online:p2 via STOMP', async () =>
      (await ctx.redis.client.smembers(rkey('online:p2'))).includes('dave'),
    );
    d.send('DISCONNECT', {});
    d.close();
    await g.waitMessage(isDave('offline'), 5000, 'dave offline after STOMP disconnect');
  });

  // --- projects ---------------------------------------------------------------

  test(`a message to p1@projects.localhost fans out to every online member (${T()})`, async (t) => {
    const alice = await online(t, 'alice');
    const bob = await online(t, 'bob');
    const carol = await online(t, 'carol');
    const eve = await online(t, 'eve');
    const body = `project hello ${uid('p')}`;
    alice.chat(`p1@${PROJECT_DOMAIN}`, body, { type: 'groupchat', id: 'proj-1' });
    for (const c of [alice, bob, carol]) {
      const m = await c.waitMessage((x) => childText(x, 'body') === body, 5000, `project message at ${c.user}`);
      assert.equal(m.getAttribute('from'), `p1@${PROJECT_DOMAIN}/alice`, ser(m));
      assert.equal(m.getAttribute('type'), 'groupchat', ser(m));
    }
    await eve.messages.expectNone((x) => childText(x, 'body') === body, 500, 'project p1 message at eve');
  });

  test(`a message to a project from a non-member is refused with forbidden (${T()})`, async (t) => {
    const dave = await online(t, 'dave');
    const alice = await online(t, 'alice');
    const body = `intrusion ${uid('p')}`;
    dave.chat(`p1@${PROJECT_DOMAIN}`, body, { type: 'groupchat', id: 'proj-x' });
    const e = await dave.waitMessage(
      (x) => x.getAttribute('type') === 'error' && x.getAttribute('id') === 'proj-x',
      5000,
      'error for the project message',
    );
    assert.equal(errorCondition(e), 'forbidden', ser(e));
    await alice.messages.expectNone((x) => childText(x, 'body') === body, 500, 'non-member project message at alice');
  });

  // --- IQ ---------------------------------------------------------------------

  test(`IQ: ping, disco#info and an unknown IQ (${T()})`, async (t) => {
    const alice = await connect(t, 'alice');
    const pong = await alice.iq($iq({ type: 'get', to: DOMAIN, id: uid('ping') }).c('ping', { xmlns: NS.PING }));
    assert.equal(pong.getAttribute('type'), 'result', ser(pong));
    assert.equal(pong.getAttribute('from'), DOMAIN, ser(pong));
    const info = await alice.iq(
      $iq({ type: 'get', to: DOMAIN, id: uid('disco') }).c('query', { xmlns: NS.DISCO_INFO }),
    );
    const q = child(info, 'query', NS.DISCO_INFO);
    assert.ok(q, ser(info));
    const ids = children(q, 'identity').map((i) => `${i.getAttribute('category')}/${i.getAttribute('type')}`);
    assert.ok(ids.includes('server/im'), `identities ${ids}`);
    const features = children(q, 'feature').map((f) => f.getAttribute('var'));
    for (const f of [NS.DISCO_INFO, NS.PING]) assert.ok(features.includes(f), `feature ${f} missing: ${features}`);
    for (const type of ['get', 'set']) {
      const err = await alice
        .iq($iq({ type, to: DOMAIN, id: uid('unk') }).c('query', { xmlns: 'urn:example:nothing' }))
        .then(
          () => null,
          (e) => e,
        );
      assert.ok(err?.stanza, `unknown IQ ${type} must fail`);
      assert.equal(err.condition, 'service-unavailable', ser(err.stanza));
    }
  });
}
