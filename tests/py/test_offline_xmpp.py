"""XEP-0160 offline messages with slixmpp against the real binary (as ejabberd's mod_offline).

A `chat` or `normal` message to a user with no available XMPP resource is kept (in the
data directory) and delivered at the user's next initial presence, oldest first, with an
XEP-0203 `<delay/>`; a `headline` is not kept; over the per-user cap the sender gets
`resource-constraint`; kept messages survive `kill -9`.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import signal
import time

import pytest

from conftest import Client, Herald, build_config, start_herald
from xmpp_util import DOMAIN, Xmpp, c2s_port, run, xmpp_extra

NS_DELAY = "urn:xmpp:delay"
CAP = 3


def offline_extra(**offline) -> str:
    lines = ["[xmpp.offline]"] + [f"{k} = {v}" for k, v in offline.items()]
    return xmpp_extra("required") + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def herald():
    h = start_herald(extra=offline_extra(max_messages_per_user=CAP))
    yield h
    died = h.proc.poll()
    h.stop()
    assert died is None, f"herald exited during the module (code {died})\n{h.describe()}"


@pytest.fixture
def port(herald):
    return c2s_port(herald)


def delay_of(m):
    return m.xml.find(f"{{{NS_DELAY}}}delay")


def parse_stamp(stamp: str) -> datetime.datetime:
    assert stamp.endswith("Z"), stamp
    return datetime.datetime.fromisoformat(stamp[:-1] + "+00:00")


async def barrier(x: Xmpp):
    """A round trip: everything x sent before has been handled by the server."""
    await x.roster()


def body_is(text):
    return lambda m: m["body"] == text and m["type"] != "error"


def test_chats_and_normal_kept_for_an_offline_user_headline_not(port):
    async def scenario():
        a = await Xmpp(port, "alice", resource="a1").online()
        before = datetime.datetime.now(datetime.timezone.utc)
        ids = [a.chat("bob@localhost", "c1"), a.chat("bob@localhost", "c2")]
        ids.append(a.chat("bob@localhost", "n1", mtype="normal"))
        a.chat("bob@localhost", "h1", mtype="headline")
        await barrier(a)
        await a.no_message(lambda m: m["type"] == "error", wait=0.2, what="error for a kept message")
        b = await Xmpp(port, "bob", resource="b1").online()
        try:
            got = [await b.message(lambda m: m["body"] in ("c1", "c2", "n1"), what=f"kept message {i}") for i in range(3)]
            assert [m["body"] for m in got] == ["c1", "c2", "n1"], "oldest first"
            assert [m["id"] for m in got] == ids
            assert [m["type"] for m in got] == ["chat", "chat", "normal"]
            now = datetime.datetime.now(datetime.timezone.utc)
            for m in got:
                assert str(m["from"]) == "alice@localhost/a1"
                d = delay_of(m)
                assert d is not None, f"no <delay/>: {m}"
                assert d.get("from") == DOMAIN
                t = parse_stamp(d.get("stamp"))
                assert before - datetime.timedelta(seconds=1) <= t <= now + datetime.timedelta(seconds=1), (t, before, now)
            await b.no_message(lambda m: m["body"] == "h1", what="headline (not kept)")
        finally:
            await a.disconnect(1.0)
            await b.disconnect(1.0)
        # Delivered means removed: the next login gets nothing again.
        b2 = await Xmpp(port, "bob", resource="b2").online()
        try:
            await b2.no_message(lambda m: m["body"] in ("c1", "c2", "n1"), what="message delivered twice")
        finally:
            await b2.disconnect(1.0)

    run(scenario())


def test_over_the_cap_the_sender_gets_resource_constraint(port):
    async def scenario():
        a = await Xmpp(port, "alice", resource="a2").online()
        try:
            for i in range(CAP):
                a.chat("carol@localhost", f"k{i}")
            over = a.chat("carol@localhost", "over")
            err = await a.message(lambda m: m["type"] == "error" and m["id"] == over, what="error for the message over the cap")
            assert err["error"]["condition"] == "resource-constraint", err
            assert err["error"]["type"] == "wait", err
            assert str(err["from"]) == "carol@localhost"
            await a.no_message(lambda m: m["type"] == "error" and m["id"] != over, wait=0.2, what="error for a kept message")
        finally:
            await a.disconnect(1.0)
        c = await Xmpp(port, "carol", resource="c1").online()
        try:
            got = [await c.message(lambda m: m["body"].startswith("k"), what="kept") for _ in range(CAP)]
            assert [m["body"] for m in got] == [f"k{i}" for i in range(CAP)]
            await c.no_message(lambda m: m["body"] == "over", what="the refused message")
        finally:
            await c.disconnect(1.0)

    run(scenario())


def test_a_user_with_an_available_resource_gets_it_live_not_kept(port):
    async def scenario():
        b = await Xmpp(port, "bob", resource="live").online()
        a = await Xmpp(port, "alice", resource="a3").online()
        try:
            await barrier(b)
            a.chat("bob@localhost", "live-1")
            m = await b.message(body_is("live-1"))
            assert delay_of(m) is None, "a live message has no <delay/>"
        finally:
            await a.disconnect(1.0)
            await b.disconnect(1.0)
        b2 = await Xmpp(port, "bob", resource="later").online()
        try:
            await b2.no_message(lambda m: m["body"] == "live-1", what="a live message kept offline too")
        finally:
            await b2.disconnect(1.0)

    run(scenario())


def test_a_stomp_only_user_sees_it_live_and_it_waits_for_their_xmpp_client(herald, port):
    """Herald's choice: a STOMP session is no XMPP resource, so the message is kept for
    the user's XMPP client, and still routed live to the STOMP subscribers of the feed."""
    s = Client(herald, login="dave", passcode="secret")
    s.subscribe("/exchange/feed/dave")

    async def scenario():
        e = await Xmpp(port, "eve", resource="e1").online()
        try:
            e.chat("dave@localhost", "to-stomp")
            await barrier(e)
        finally:
            await e.disconnect(1.0)
        frame = await asyncio.to_thread(s.message)
        assert frame.body == "to-stomp", frame
        d = await Xmpp(port, "dave", resource="d1").online()
        try:
            m = await d.message(body_is("to-stomp"))
            assert delay_of(m) is not None
        finally:
            await d.disconnect(1.0)

    try:
        run(scenario())
    finally:
        s.close()


def test_kept_messages_survive_kill_9(tmp_path):
    data = str(tmp_path / "data")
    os.makedirs(data)
    config = build_config(data, extra=offline_extra())

    h = Herald(config)
    try:

        async def send():
            a = await Xmpp(c2s_port(h), "alice", resource="k9").online()
            try:
                a.chat("bob@localhost", "before the crash 1")
                a.chat("bob@localhost", "before the crash 2")
                await barrier(a)
            finally:
                await a.kill()

        run(send())
        # The push asks the group commit for a sync at once; give it a moment.
        time.sleep(0.5)
        h.proc.send_signal(signal.SIGKILL)
        h.proc.wait(5)
    finally:
        if h.proc.poll() is None:
            h.proc.kill()
        h._cleanup_dir()

    h2 = Herald(config)
    try:
        async def receive():
            b = await Xmpp(c2s_port(h2), "bob", resource="after").online()
            try:
                got = [await b.message(lambda m: m["body"].startswith("before the crash"), what="kept") for _ in range(2)]
                assert [m["body"] for m in got] == ["before the crash 1", "before the crash 2"]
                assert all(delay_of(m) is not None for m in got)
            finally:
                await b.disconnect(1.0)

        run(receive())
    finally:
        h2.stop()
        shutil.rmtree(data, ignore_errors=True)
