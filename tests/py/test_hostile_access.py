"""Issue 19, findings 2 and 3: least privilege on the addressing model, and the server
stamps identity (docs/security.md "Access" and "Identity").

Each test fails on a server without the `[access]` rules (every user read every feed,
project and presence key; any STOMP SEND could carry `x-xmpp-from`/`x-xmpp-payload`).

The server runs the dev users as config/dev.toml ships them: guest is a plain user,
alice/bob/carol share p1, carol/dave/eve share p2; `ops` is the one administrator.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import RawStomp, start_herald
from xmpp_util import Xmpp, c2s_port, rid, run, xmpp_extra

USERS = [
    {"name": "guest", "password": "guest"},
    {"name": "alice", "password": "secret"},
    {"name": "bob", "password": "secret"},
    {"name": "carol", "password": "secret"},
    {"name": "dave", "password": "secret"},
    {"name": "eve", "password": "secret"},
    {"name": "ops", "password": "secret", "tags": ["administrator"]},
]


@pytest.fixture(scope="module")
def herald():
    h = start_herald(users=USERS, extra=xmpp_extra("required"))
    yield h
    h.stop()


def password(login):
    return "guest" if login == "guest" else "secret"


@pytest.fixture
def stomp(herald):
    """stomp(login) -> a connected RawStomp; all closed at teardown."""
    made = []

    def make(login):
        r = RawStomp(herald.stomp_port)
        made.append(r)
        f = r.connect(login=login, passcode=password(login))
        assert f.command == "CONNECTED", f"{login}: {f!r}"
        return r

    yield make
    for r in made:
        r.close()


def subscribe(r: RawStomp, destination: str, sub_id: str | None = None):
    """SUBSCRIBE with a receipt; returns the RECEIPT or ERROR frame."""
    sid = sub_id or "s-" + rid()
    r.send("SUBSCRIBE", {"id": sid, "destination": destination, "ack": "auto", "receipt": "r-" + sid})
    return r.next(what=f"RECEIPT or ERROR for SUBSCRIBE {destination}")


def send(r: RawStomp, destination: str, body: str, headers=None):
    h = {"destination": destination, "receipt": "r-" + rid()}
    h.update(headers or {})
    r.send("SEND", h, body)
    return r.next(what=f"RECEIPT or ERROR for SEND {destination}")


def assert_refused(f, what):
    assert f.command == "ERROR", f"{what} should be refused, got {f!r}"
    assert f.headers.get("message") == "access_refused", f"{what}: {f!r}"


def assert_ok(f, what):
    assert f.command == "RECEIPT", f"{what} should be allowed, got {f!r}"


def message(r: RawStomp, what="MESSAGE"):
    f = r.next(what=what)
    assert f.command == "MESSAGE", f"{what}: {f!r}"
    return f


def no_message(r: RawStomp, wait=0.5, what="MESSAGE"):
    try:
        f = r.frames.get(timeout=wait)
    except Exception:
        return
    raise AssertionError(f"unexpected {what}: {f!r}")


# ---------------------------------------------------------------------------
# Finding 2: reading other users' traffic


@pytest.mark.parametrize("login", ["guest", "alice"])
def test_others_cannot_read_a_users_feed(stomp, login):
    assert_refused(subscribe(stomp(login), "/exchange/feed/bob"), f"{login} reading feed/bob")


def test_a_user_reads_their_own_feed_and_contacts_write_to_it(stomp):
    bob = stomp("bob")
    assert_ok(subscribe(bob, "/exchange/feed/bob"), "bob reading his feed")
    alice = stomp("alice")
    assert_ok(send(alice, "/exchange/feed/bob", "hi bob"), "alice (p1) writing to bob's feed")
    assert message(bob, "alice's message on bob's feed").body == b"hi bob"
    # dave shares no project with bob: access.chat_policy = "contacts" refuses.
    assert_refused(send(stomp("dave"), "/exchange/feed/bob", "spam"), "dave writing to bob's feed")
    no_message(bob, what="dave's message")


@pytest.mark.parametrize("dest", ["/exchange/feed/#", "/exchange/feed/*", "/exchange/project/#", "/exchange/presence/#", "/exchange/presence/*.bob"])
def test_no_wildcard_reads_on_the_addressing_exchanges(stomp, dest):
    assert_refused(subscribe(stomp("alice"), dest), f"alice reading {dest}")


def test_feed_wildcard_does_not_see_xmpp_chats_between_others(herald, stomp):
    """The finding: `/exchange/feed/#` received everyone's pushes, XMPP chats included."""
    spy = stomp("eve")
    assert_refused(subscribe(spy, "/exchange/feed/#"), "eve reading feed/#")

    async def scenario():
        a = await Xmpp(c2s_port(herald), "alice").online()
        b = await Xmpp(c2s_port(herald), "bob").online()
        try:
            body = "private " + rid()
            a.chat("bob@localhost", body)
            await b.message(lambda m: m["body"] == body, what="alice's chat")
        finally:
            await a.disconnect(1.0)
            await b.disconnect(1.0)

    run(scenario())


def test_administrator_reads_everything(stomp):
    ops = stomp("ops")
    assert_ok(subscribe(ops, "/exchange/feed/#"), "an administrator reading feed/#")
    assert_ok(send(stomp("dave"), "/exchange/feed/dave", "own feed"), "dave writing to his own feed")
    assert message(ops, "dave's push seen by the administrator").body == b"own feed"


def test_projects_and_presence_are_for_members(stomp):
    dave = stomp("dave")
    assert_refused(subscribe(dave, "/exchange/project/p1"), "dave reading project p1")
    dave = stomp("dave")
    assert_refused(subscribe(dave, "/exchange/presence/p1.*"), "dave reading presence/p1.*")
    alice = stomp("alice")
    assert_ok(subscribe(alice, "/exchange/project/p1"), "alice (member) reading project p1")
    assert_ok(subscribe(alice, "/exchange/presence/p1.*"), "alice (member) reading presence/p1.*")
    stomp("carol")  # carol (used nowhere else) comes online: an event for p1's members
    f = message(alice, "carol's presence on presence/p1.*")
    assert f.headers["destination"] == "/exchange/presence/p1.carol", f
    assert_refused(send(stomp("alice"), "/exchange/presence/p1.alice", '{"state":"offline"}'), "a client publishing presence")


def test_users_queues_are_their_own(stomp):
    alice = stomp("alice")
    assert_refused(subscribe(alice, "/queue/bob-inbox"), "alice consuming /queue/bob-inbox")
    bob = stomp("bob")
    assert_ok(subscribe(bob, "/queue/bob-inbox"), "bob consuming his queue")
    assert_refused(subscribe(stomp("alice"), "/amq/queue/bob-inbox"), "alice consuming /amq/queue/bob-inbox")
    assert_refused(send(stomp("alice"), "/queue/bob-inbox", "x"), "alice writing to bob's queue")
    assert_ok(send(stomp("bob"), "/queue/bob-inbox", "note to self"), "bob writing to his queue")
    assert message(bob, "bob's own message").body == b"note to self"
    # Queues that belong to no user follow the resource permissions.
    assert_ok(subscribe(stomp("alice"), "/queue/jobs-" + rid()), "a shared work queue")


# ---------------------------------------------------------------------------
# Finding 3: impersonation


FORGED = {
    "x-xmpp-from": "carol@localhost/pa",
    "x-xmpp-type": "chat",
    "x-xmpp-id": "forged-1",
    "x-xmpp-payload": "<x xmlns='jabber:x:oob'><url>http://evil.example/</url></x>",
    "X-XMPP-Payload": "<x xmlns='jabber:x:oob'><url>http://evil2.example/</url></x>",
}


@pytest.mark.parametrize("in_transaction", [False, True], ids=["send", "transaction"])
def test_stomp_send_cannot_speak_for_an_xmpp_user(herald, stomp, in_transaction):
    async def scenario():
        b = await Xmpp(c2s_port(herald), "bob").online()
        try:
            alice = stomp("alice")
            body = "forged " + rid()
            if in_transaction:
                alice.send("BEGIN", {"transaction": "t1"})
                alice.send("SEND", dict(FORGED, destination="/exchange/feed/bob", transaction="t1"), body)
                alice.send("COMMIT", {"transaction": "t1", "receipt": "c1"})
                assert_ok(await asyncio.to_thread(alice.next), "COMMIT")
            else:
                assert_ok(await asyncio.to_thread(send, alice, "/exchange/feed/bob", body, FORGED), "alice's SEND")
            m = await b.message(lambda m: m["body"] == body, what="alice's STOMP message")
            assert str(m["from"]).split("/")[0] == "alice@localhost", f"stamped with the real sender: {m}"
            assert m["id"] != "forged-1", str(m)
            xml = str(m)
            assert "evil" not in xml and "jabber:x:oob" not in xml, f"injected payload delivered: {xml}"
        finally:
            await b.disconnect(1.0)

    run(scenario())


def test_stomp_subscribers_see_no_forged_headers(stomp):
    bob = stomp("bob")
    assert_ok(subscribe(bob, "/exchange/feed/bob"), "bob reading his feed")
    assert_ok(send(stomp("alice"), "/exchange/feed/bob", "hdr", FORGED), "alice's SEND")
    f = message(bob, "alice's message")
    assert not [k for k in f.headers if k.lower().startswith("x-xmpp-")], f"client x-xmpp-* headers relayed: {f!r}"


def test_non_member_cannot_post_to_a_project(herald, stomp):
    watcher = stomp("alice")
    assert_ok(subscribe(watcher, "/exchange/project/p1"), "alice reading p1")
    assert_refused(send(stomp("dave"), "/exchange/project/p1", "let me in", {"x-xmpp-from": "p1@projects.localhost/alice"}), "dave posting to p1 over STOMP")

    async def scenario():
        a = await Xmpp(c2s_port(herald), "alice").online()
        d = await Xmpp(c2s_port(herald), "dave").online()
        try:
            d.chat("p1@projects.localhost", "let me in", mtype="groupchat", mid="nope-1")
            e = await d.message(lambda m: m["type"] == "error" and m["id"] == "nope-1", what="forbidden error")
            assert e["error"]["condition"] == "forbidden", str(e)
            await a.no_message(lambda m: m["body"] == "let me in", what="dave's post in p1")
        finally:
            await a.disconnect(1.0)
            await d.disconnect(1.0)

    run(scenario())
    no_message(watcher, what="dave's post on project/p1")
