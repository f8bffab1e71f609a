"""XEP-0198 Stream Management against the real binary: slixmpp with its
``xep_0198`` plugin over c2s TCP, and raw RFC 7395 frames over WebSocket.

- A client whose TCP connection is cut (socket aborted, no stream close)
  resumes: every message sent meanwhile arrives exactly once and in order,
  and its contacts never see it go unavailable.
- Another user cannot resume someone's session with its id.
- Past ``resume_timeout_secs`` the session ends as a normal disconnect
  (unavailable to contacts) and the unacknowledged chat messages wait in
  offline storage: the next login gets them (XEP-0160, ``<delay/>``).
"""

from __future__ import annotations

import asyncio
import base64
import re

import pytest
import websockets

from conftest import start_herald
from xmpp_util import WAIT, Xmpp, available_from, c2s_port, http_port, run, unavailable_from, xmpp_extra

pytestmark = pytest.mark.timeout(120)

NS_SM = "urn:xmpp:sm:3"


@pytest.fixture(scope="module")
def herald_sm():
    h = start_herald(extra=xmpp_extra(starttls="off", resume_timeout_secs=60))
    yield h
    h.stop()


def sm_client(port: int, user: str, resource: str | None = None) -> tuple[Xmpp, dict]:
    """A plaintext slixmpp client with xep_0198, and events for its SM life."""
    x = Xmpp(port, user, resource=resource, plaintext=True)
    x.c.register_plugin("xep_0198")
    ev = {name: asyncio.Event() for name in ("sm_enabled", "session_resumed", "sm_failed", "session_start")}
    for name, e in ev.items():
        x.c.add_event_handler(name, lambda *_, e=e: e.set())
    # A resumed stream is a started session too (no session_start for it).
    x.c.add_event_handler("session_resumed", x._on_start)
    return x, ev


async def drop(x: Xmpp):
    """Cuts the TCP connection without a stream close (RST), as a phone losing its network."""
    x._disconnected.clear()
    x.c.transport.abort()
    await asyncio.wait_for(x._disconnected.wait(), WAIT)


async def reconnect(x: Xmpp):
    x.c.connect(host="127.0.0.1", port=x.port)


def drain(q: asyncio.Queue) -> list:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


async def bodies(x: Xmpp, prefix: str, n: int) -> list[str]:
    got = []
    for _ in range(n):
        m = await x.message(lambda m: str(m["body"]).startswith(prefix), what=f"message {prefix}*")
        got.append(str(m["body"]))
    return got


def test_a_dropped_connection_resumes_with_every_message_once_and_in_order(herald_sm):
    async def scenario():
        port = c2s_port(herald_sm)
        alice = await Xmpp(port, "alice", plaintext=True).online()
        bob, ev = sm_client(port, "bob", resource="phone")
        await bob.online()
        await asyncio.wait_for(ev["sm_enabled"].wait(), WAIT)
        sm = bob.c.plugin["xep_0198"]
        assert sm.sm_id, "<enabled/> carried a resumption id"
        bob_jid = bob.jid
        await alice.presence_from(available_from(bob_jid), what="bob available")
        # Some traffic acknowledged before the drop.
        alice.chat("bob@localhost", "before")
        assert (await bob.message(lambda m: str(m["body"]) == "before"))["body"] == "before"

        await drop(bob)
        await asyncio.sleep(0.3)
        sent = [f"while-away-{i}" for i in range(10)]
        for b in sent:
            alice.chat("bob@localhost", b)
        await asyncio.sleep(0.5)

        await reconnect(bob)
        await asyncio.wait_for(ev["session_resumed"].wait(), 10)
        assert not ev["sm_failed"].is_set()
        assert bob.jid == bob_jid, "the same full JID after resumption"
        assert await bodies(bob, "while-away-", len(sent)) == sent
        # Exactly once: nothing repeated after a pause (acks went both ways).
        await bob.no_message(lambda m: str(m["body"]).startswith(("while-away-", "before")), wait=1.0)
        # Still a working session both ways.
        bob.chat("alice@localhost", "back")
        assert (await alice.message(lambda m: str(m["body"]) == "back"))["from"] == bob_jid
        # Alice never saw bob go away, nor a second initial presence.
        seen = alice._kept_pres + drain(alice.presences)
        assert not [p for p in seen if unavailable_from(bob_jid)(p)], "alice saw bob unavailable"
        assert len([p for p in seen if available_from(bob_jid)(p)]) == 0, "bob's presence was broadcast again"

        await bob.disconnect()
        await alice.disconnect()

    run(scenario(), 60)


def test_another_user_cannot_resume_someones_session(herald_sm):
    async def scenario():
        port = c2s_port(herald_sm)
        alice = await Xmpp(port, "alice", plaintext=True).online()
        bob, bev = sm_client(port, "bob", resource="desk")
        await bob.online()
        await asyncio.wait_for(bev["sm_enabled"].wait(), WAIT)
        bob_id = bob.c.plugin["xep_0198"].sm_id

        carol, cev = sm_client(port, "carol")
        carol.c.plugin["xep_0198"].sm_id = bob_id
        await carol.start()  # <failed/> to the resume, then an ordinary bind
        assert cev["sm_failed"].is_set(), "resuming another user's id must fail"
        assert not cev["session_resumed"].is_set()
        assert carol.jid.startswith("carol@localhost/")
        # Bob's session is untouched: still connected, still receiving.
        alice.chat(bob.jid, "still-bob")
        assert (await bob.message(lambda m: str(m["body"]) == "still-bob"))["body"] == "still-bob"
        await carol.no_message(lambda m: str(m["body"]) == "still-bob", wait=0.5)

        # An unknown id fails the same way.
        dave, dev = sm_client(port, "dave")
        dave.c.plugin["xep_0198"].sm_id = "0" * 32
        await dave.start()
        assert dev["sm_failed"].is_set()

        for x in (alice, bob, carol, dave):
            await x.disconnect()

    run(scenario(), 60)


def test_resuming_a_session_still_connected_takes_it_over(herald_sm):
    async def scenario():
        port = c2s_port(herald_sm)
        alice = await Xmpp(port, "alice", plaintext=True).online()
        old, oev = sm_client(port, "bob", resource="laptop")
        await old.online()
        await asyncio.wait_for(oev["sm_enabled"].wait(), WAIT)
        bob_jid = old.jid
        await alice.presence_from(available_from(bob_jid), what="bob available")
        alice.chat(bob_jid, "one")
        await old.message(lambda m: str(m["body"]) == "one")
        await asyncio.sleep(0.3)  # the ack for it reaches the server

        # The same user on a new connection, with the old stream's SM state.
        new, nev = sm_client(port, "bob", resource="laptop")
        p_old, p_new = old.c.plugin["xep_0198"], new.c.plugin["xep_0198"]
        p_new.sm_id, p_new.handled, p_new.seq, p_new.last_ack = p_old.sm_id, p_old.handled, p_old.seq, p_old.last_ack
        new.c.connect(host="127.0.0.1", port=port)
        await asyncio.wait_for(nev["session_resumed"].wait(), 10)
        # The old connection is closed with `conflict`.
        await asyncio.wait_for(old._disconnected.wait(), WAIT)
        assert any("conflict" in str(e) for e in old.stream_errors), old.stream_errors
        alice.chat(bob_jid, "two")
        assert (await new.message(lambda m: str(m["body"]) == "two"))["to"] == bob_jid
        seen = alice._kept_pres + drain(alice.presences)
        assert not [p for p in seen if unavailable_from(bob_jid)(p)], "alice saw bob unavailable"
        await new.disconnect()
        await alice.presence_from(unavailable_from(bob_jid), what="bob unavailable after a clean close")
        await alice.disconnect()

    run(scenario(), 60)


def test_past_the_resume_timeout_the_session_ends_and_messages_wait_offline():
    h = start_herald(extra=xmpp_extra(starttls="off", resume_timeout_secs=1))
    try:

        async def scenario():
            port = c2s_port(h)
            alice = await Xmpp(port, "alice", plaintext=True).online()
            bob, ev = sm_client(port, "bob", resource="phone")
            await bob.online()
            await asyncio.wait_for(ev["sm_enabled"].wait(), WAIT)
            bob_jid = bob.jid
            await alice.presence_from(available_from(bob_jid), what="bob available")

            await drop(bob)
            await asyncio.sleep(0.2)
            sent = [f"late-{i}" for i in range(3)]
            for b in sent:
                alice.chat("bob@localhost", b)
            # The session ends as a normal disconnect once the second passes.
            await alice.presence_from(unavailable_from(bob_jid), timeout=6, what="bob unavailable after the timeout")

            # Resuming now fails; the messages come from offline storage at
            # the next initial presence, stamped with <delay/>.
            bob._disconnected.clear()
            ev["session_start"].clear()
            await reconnect(bob)
            await asyncio.wait_for(ev["sm_failed"].wait(), 10)
            assert not ev["session_resumed"].is_set()
            # After <failed/>, an ordinary bind: a new session.
            await asyncio.wait_for(ev["session_start"].wait(), 10)
            bob.presence()
            got = []
            for _ in sent:
                m = await bob.message(lambda m: str(m["body"]).startswith("late-"), what="offline message")
                assert m.xml.find("{urn:xmpp:delay}delay") is not None, f"no <delay/>: {m}"
                got.append(str(m["body"]))
            assert got == sent
            await bob.no_message(lambda m: str(m["body"]).startswith("late-"), wait=0.8)
            await bob.disconnect()
            await alice.disconnect()

        run(scenario(), 60)
    finally:
        h.stop()


# ---------------------------------------------------------------------------
# WebSocket (RFC 7395): enable and resume with raw frames


class WsXmpp:
    def __init__(self, ws):
        self.ws = ws

    async def send(self, s: str):
        await self.ws.send(s)

    async def until(self, pattern: str, timeout: float = WAIT) -> str:
        """Reads frames until one matches; returns it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no frame matching {pattern!r}")
            frame = await asyncio.wait_for(self.ws.recv(), left)
            if re.search(pattern, frame):
                return frame

    async def login(self, user: str):
        opener = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
        await self.send(opener)
        await self.until("<mechanism>PLAIN</mechanism>")
        token = base64.b64encode(f"\0{user}\0secret".encode()).decode()
        await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        await self.until("<success")
        await self.send(opener)
        features = await self.until("<stream:features|<features")
        assert NS_SM in features, f"no <sm/> stream feature: {features}"


def test_websocket_enable_and_resume(herald_sm):
    url = f"ws://127.0.0.1:{http_port(herald_sm)}/xmpp-websocket"

    async def scenario():
        port = c2s_port(herald_sm)
        carol = await Xmpp(port, "carol", plaintext=True).online()
        async with websockets.connect(url, subprotocols=["xmpp"]) as ws1:
            a = WsXmpp(ws1)
            await a.login("eve")
            await a.send("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>ws</resource></bind></iq>")
            await a.until("eve@localhost/ws")
            await a.send(f"<enable xmlns='{NS_SM}' resume='true' max='30'/>")
            enabled = await a.until("<enabled")
            sm_id = re.search(r"id=['\"]([^'\"]+)", enabled).group(1)
            assert re.search(r"max=['\"]30['\"]", enabled), enabled
            assert len(sm_id) >= 32, "a random id, not a counter"
            # Two server stanzas; ack only the first.
            await a.send("<presence xmlns='jabber:client'/>")
            await a.until("<presence")
            await a.send(f"<r xmlns='{NS_SM}'/>")
            assert re.search(r"h=['\"]1['\"]", await a.until("<a ")), "one stanza handled"
            await a.send(f"<a xmlns='{NS_SM}' h='1'/>")
            # Cut the connection without <close/>: the TCP transport goes.
            ws1.transport.abort()
        # carol and eve share project p2: contacts may chat.
        for i in range(3):
            carol.chat("eve@localhost", f"ws-{i}")
        await asyncio.sleep(0.5)
        async with websockets.connect(url, subprotocols=["xmpp"]) as ws2:
            b = WsXmpp(ws2)
            await b.login("eve")
            await b.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='1'/>")
            resumed = await b.until("<resumed|<failed")
            assert "<resumed" in resumed and sm_id in resumed, resumed
            got = []
            while len(got) < 3:
                frame = await b.until("ws-\\d")
                got += re.findall(r"ws-\d", frame)
            assert got == ["ws-0", "ws-1", "ws-2"]
            # An ack beyond what was sent is a stream error.
            await b.send(f"<a xmlns='{NS_SM}' h='999'/>")
            err = await b.until("handled-count-too-high")
            assert "undefined-condition" in err
        await carol.disconnect()

    run(scenario(), 60)
