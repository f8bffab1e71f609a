"""Presence across the nodes of a cluster (issue 17 items 4 and 6), real redis-server,
real slixmpp and stomp.py clients on different nodes:

- users on two nodes see each other's presence (roster contacts = project members),
  changes and unavailability, and chat both ways (routed live, not parked);
- concurrent logins and logouts of many users on three nodes leave the project online
  set exactly the users connected at the end;
- binding a full JID bound on another node replaces that session (`conflict`);
- kill -9 of a node: its users go unavailable for contacts on another node within
  TTL + one heartbeat interval (measured), and the dead node's leftovers are gone;
- a node restarting under the same name clears its own leftovers first.

Ports 64230-64239 (Redis); nodes use port 0."""

from __future__ import annotations

import random
import socket
import threading
import time

from cluster_util import RedisServer, start_node, wait_until
from conftest import Client, uid
from xmpp_util import Xmpp, available_from, c2s_port, run, unavailable_from, xmpp_extra

BIG = [f"u{i:02d}" for i in range(30)]
EXTRA = xmpp_extra() + "".join(f'[[users]]\nname = "{u}"\npassword = "pw"\n\n' for u in BIG)
EXTRA += "[[projects]]\nid = \"big\"\nmembers = [" + ", ".join(f'"{u}"' for u in BIG) + "]\n"


def _nodes(redis, prefix, names, **kw):
    return [start_node(n, redis, prefix, extra=EXTRA, **kw) for n in names]


def _smembers(redis, key) -> set[str]:
    out = redis.cli("SMEMBERS", key)
    return {x for x in out.split("\n") if x}


def _carol(p) -> bool:
    return str(p["from"]).startswith("carol@localhost/")


def _resp(port: int, *args: bytes) -> bytes:
    """One raw RESP command (binary-safe arguments, unlike redis-cli's)."""
    cmd = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(cmd)
        return s.recv(4096)


def test_presence_across_two_nodes():
    redis = RedisServer(64230)
    prefix = uid("c") + ":"
    nodes = []
    try:
        nodes = _nodes(redis, prefix, ["n1", "n2"])

        async def scenario():
            a = await Xmpp(c2s_port(nodes[0]), "alice", resource="pa").online(status="alice on n1")
            b = await Xmpp(c2s_port(nodes[1]), "bob", resource="pb").online(status="bob on n2")
            try:
                # bob's initial presence fetched alice's from Redis; alice hears bob's change.
                p = await b.presence_from(available_from(a.jid), what="alice's presence, from n1")
                assert p["status"] == "alice on n1"
                p = await a.presence_from(available_from(b.jid), what="bob's presence, from n2")
                assert p["status"] == "bob on n2"
                a.presence(show="dnd", status="busy on n1")
                p = await b.presence_from(lambda x: available_from(a.jid)(x) and x["show"] == "dnd", what="alice dnd")
                assert p["status"] == "busy on n1"
                assert _smembers(redis, f"{prefix}online:p1") == {"alice", "bob"}
                assert redis.cli("HGET", f"{prefix}presence:alice", "state") == "dnd"
                # A status over cluster.max_status_bytes (1024) still reaches
                # the other node, cut as the shared presence keeps it.
                a.presence(show="away", status="é" * 1500)
                p = await b.presence_from(lambda x: available_from(a.jid)(x) and x["show"] == "away", what="alice away")
                assert p["status"] == "é" * 512, len(p["status"])
                await a.disconnect()
                await b.presence_from(unavailable_from("alice@localhost/pa"), what="alice unavailable on n2")
                wait_until(lambda: _smembers(redis, f"{prefix}online:p1") == {"bob"}, what="alice out of online:p1")
            finally:
                await a.kill()
                await b.kill()

        run(scenario())
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def test_chat_both_ways_to_a_user_available_on_another_node():
    """Needs publishes to cross the Bus (helper "route", s17-route): the chat is routed
    live because the recipient is available on another node (cluster-wide answer from
    Redis), not parked for offline delivery."""
    redis = RedisServer(64235)
    prefix = uid("c") + ":"
    nodes = []
    try:
        nodes = _nodes(redis, prefix, ["n1", "n2"])

        async def scenario():
            a = await Xmpp(c2s_port(nodes[0]), "alice", resource="pa").online()
            b = await Xmpp(c2s_port(nodes[1]), "bob", resource="pb").online()
            try:
                await a.presence_from(available_from(b.jid), what="bob online on n2")
                # Chat both ways: a chat to a user available on another node is routed live.
                a.chat("bob@localhost", "hello from n1")
                m = await b.message(lambda m: m["body"] == "hello from n1", what="alice's chat via the bus")
                assert str(m["from"]).startswith("alice@localhost")
                b.chat("alice@localhost", "hello from n2")
                await a.message(lambda m: m["body"] == "hello from n2", what="bob's chat via the bus")
                # Nothing was parked: bob's next initial presence brings no offline message.
                await b.disconnect()
                b2 = await Xmpp(c2s_port(nodes[1]), "bob", resource="pb2").online()
                await b2.no_message(lambda m: m["body"] == "hello from n1", what="parked copy of a live chat")
                await b2.kill()
            finally:
                await a.kill()
                await b.kill()

        run(scenario())
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def test_online_set_is_exact_after_concurrent_logins_and_logouts_on_three_nodes():
    redis = RedisServer(64231)
    prefix = uid("c") + ":"
    nodes = []
    try:
        nodes = _nodes(redis, prefix, ["n1", "n2", "n3"])
        rng = random.Random(17)
        plans = []  # (user, node, hold at the end)
        for u in BIG:
            for n in rng.sample(range(3), rng.randint(1, 3)):
                plans.append((u, n, rng.random() < 0.4))
        held: list[Client] = []
        lock = threading.Lock()
        errors: list[str] = []

        def worker(u, n, keep):
            try:
                for _ in range(3):
                    c = Client(nodes[n], login=u, passcode="pw")
                    time.sleep(rng.random() * 0.05)
                    c.conn.disconnect()
                c = Client(nodes[n], login=u, passcode="pw")
                if keep:
                    with lock:
                        held.append(c)
                else:
                    c.conn.disconnect()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{u}@n{n + 1}: {e}")

        threads = [threading.Thread(target=worker, args=p) for p in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        want = {c.login for c in held}
        assert want and want != set(BIG), "the plan holds some users and not others"

        def exact():
            return _smembers(redis, f"{prefix}online:big") == want

        wait_until(exact, timeout=10, what=f"online:big == {sorted(want)}, is {sorted(_smembers(redis, prefix + 'online:big'))}")
        time.sleep(0.5)
        assert exact(), "and it stays exact"
        for u in BIG:
            state = redis.cli("HGET", f"{prefix}presence:{u}", "state")
            assert (state == "online") == (u in want), f"{u}: {state!r}"
        for c in held:
            c.conn.disconnect()
        wait_until(lambda: not _smembers(redis, f"{prefix}online:big"), timeout=10, what="everyone offline")
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def test_full_jid_bound_on_another_node_replaces_the_session():
    redis = RedisServer(64232)
    prefix = uid("c") + ":"
    nodes = []
    try:
        nodes = _nodes(redis, prefix, ["n1", "n2"])

        async def scenario():
            old = await Xmpp(c2s_port(nodes[0]), "alice", resource="same").online()
            other = await Xmpp(c2s_port(nodes[0]), "alice", resource="other").online()
            new = await Xmpp(c2s_port(nodes[1]), "alice", resource="same").online()
            try:
                await old._disconnected.wait()
                assert any("conflict" in str(e) for e in old.stream_errors), old.stream_errors
                assert not other._disconnected.is_set(), "another resource of the user stays"
                assert redis.cli("GET", f"{prefix}jid:alice/same").startswith("n2/")
                p = await other.presence_from(available_from(new.jid), what="the new session's presence")
                assert p is not None
            finally:
                for c in (old, other, new):
                    await c.kill()

        run(scenario())
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def test_killed_node_users_go_unavailable_for_contacts_within_ttl_and_interval():
    heartbeat_ms, ttl_ms = 200, 1000
    redis = RedisServer(64233)
    prefix = uid("c") + ":"
    nodes = []
    try:
        nodes = _nodes(redis, prefix, ["n1", "n2"], heartbeat_ms=heartbeat_ms, ttl_ms=ttl_ms)
        # As if n2 had a wildcard binding (a member of the bus's wildcard set).
        _resp(redis.port, b"SADD", f"{prefix}bus:wild".encode(), b"/\x00amq.topic\x00n2")
        _resp(redis.port, b"SADD", f"{prefix}bus:wild".encode(), b"/\x00amq.topic\x00n1")

        async def scenario():
            b = await Xmpp(c2s_port(nodes[0]), "bob", resource="pb").online()
            a = await Xmpp(c2s_port(nodes[1]), "alice", resource="pa").online()
            c = Client(nodes[1], login="carol", passcode="secret")  # a STOMP session is presence too
            try:
                await b.presence_from(available_from(a.jid), what="alice online on n2")
                await b.presence_from(lambda p: _carol(p) and p.xml.get("type") is None, what="carol online on n2")
                assert _smembers(redis, f"{prefix}online:p1") == {"alice", "bob", "carol"}
                nodes[1].proc.kill()  # SIGKILL: no goodbye
                killed = time.monotonic()
                nodes[1].proc.wait(5)
                await b.presence_from(unavailable_from(a.jid), timeout=10, what="alice unavailable after kill -9 of n2")
                took = time.monotonic() - killed
                await b.presence_from(lambda p: _carol(p) and p.xml.get("type") == "unavailable", what="carol unavailable")
                print(f"kill -9 -> contact sees unavailable: {took * 1000:.0f} ms (ttl {ttl_ms} + interval {heartbeat_ms})")
                # Bound: TTL + one interval, plus 300 ms for a loaded 2-core test machine.
                assert took <= (ttl_ms + heartbeat_ms + 300) / 1000, f"took {took:.3f}s"
                assert _smembers(redis, f"{prefix}online:p1") == {"bob"}
                assert redis.cli("EXISTS", f"{prefix}presence:alice") == "0"
                assert redis.cli("HEXISTS", f"{prefix}nodes", "n2") == "0", "registry entry removed"
                assert redis.cli("EXISTS", f"{prefix}sessions:n2") == "0"
                assert redis.cli("EXISTS", f"{prefix}jid:alice/pa") == "0", "the dead session's full JID is free"
                wild = _resp(redis.port, b"SMEMBERS", f"{prefix}bus:wild".encode())
                assert b"\x00n2" not in wild and b"\x00n1" in wild, wild
            finally:
                await b.kill()
                await a.kill()

        run(scenario())
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def test_node_restarting_under_the_same_name_clears_its_leftovers():
    redis = RedisServer(64234)
    prefix = uid("c") + ":"
    nodes = []
    try:
        # A long TTL: no survivor reaps n2 before it is back.
        nodes = _nodes(redis, prefix, ["n1", "n2"], heartbeat_ms=200, ttl_ms=30000)

        async def scenario():
            b = await Xmpp(c2s_port(nodes[0]), "bob", resource="pb").online()
            a = await Xmpp(c2s_port(nodes[1]), "alice", resource="pa").online()
            try:
                await b.presence_from(available_from(a.jid), what="alice online on n2")
                nodes[1].proc.kill()
                nodes[1].proc.wait(5)
                assert "alice" in _smembers(redis, f"{prefix}online:p1"), "nobody reaped n2 yet"
                nodes[1] = start_node("n2", redis, prefix, extra=EXTRA, heartbeat_ms=200, ttl_ms=30000)
                # Cleared at join, before the node took sessions.
                await b.presence_from(unavailable_from(a.jid), what="alice unavailable once n2 restarted")
                assert _smembers(redis, f"{prefix}online:p1") == {"bob"}
                assert redis.cli("EXISTS", f"{prefix}res:{{alice}}") == "0"
                assert redis.cli("HEXISTS", f"{prefix}nodes", "n2") == "1", "the restarted node is registered"
                a2 = await Xmpp(c2s_port(nodes[1]), "alice", resource="pa").online()
                await b.presence_from(available_from(a2.jid), what="alice back on the restarted n2")
                await a2.kill()
            finally:
                await b.kill()
                await a.kill()

        run(scenario())
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def test_presence_asserted_again_after_redis_restarts_empty():
    """Issue 17 item 7 for presence: Redis killed, a login meanwhile, Redis started again
    without its data; each node finds its beat gone and writes what it holds again."""
    redis = RedisServer(64236)
    prefix = uid("c") + ":"
    nodes = []
    try:
        nodes = _nodes(redis, prefix, ["n1", "n2"], heartbeat_ms=200, ttl_ms=1000)
        a = Client(nodes[0], login="alice", passcode="secret")
        b = Client(nodes[1], login="bob", passcode="secret")
        wait_until(lambda: _smembers(redis, f"{prefix}online:p1") == {"alice", "bob"}, what="both online")
        redis.kill()
        time.sleep(0.5)
        # A login while Redis is out of reach is not held up by its timeouts.
        t0 = time.monotonic()
        c = Client(nodes[0], login="carol", passcode="secret")
        took = time.monotonic() - t0
        assert took < 1.0, f"login with Redis down took {took:.2f}s"
        redis.start()
        wait_until(
            lambda: _smembers(redis, f"{prefix}online:p1") == {"alice", "bob", "carol"},
            timeout=10,
            what="online:p1 asserted again by both nodes, with the login made meanwhile",
        )
        c.conn.disconnect()
        assert redis.cli("HGET", f"{prefix}presence:bob", "state") == "online"
        b.conn.disconnect()
        wait_until(lambda: _smembers(redis, f"{prefix}online:p1") == {"alice"}, what="bob's logout after the restart")
        a.conn.disconnect()
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def test_presence_events_once_per_change_from_the_node_where_the_aggregate_changed():
    """`/exchange/presence/<project>.<uid>` events: one per change of the aggregate,
    whichever node the sessions are on, heard on every node (the Bus carries them:
    needs s17-route)."""
    import json
    import queue

    redis = RedisServer(64237)
    prefix = uid("c") + ":"
    nodes = []
    try:
        nodes = _nodes(redis, prefix, ["n1", "n2", "n3"])
        watchers = [Client(n, login="bob", passcode="secret") for n in nodes]
        for w in watchers:
            w.subscribe("/exchange/presence/p1.alice")
        a1 = Client(nodes[0], login="alice", passcode="secret")
        a2 = Client(nodes[1], login="alice", passcode="secret")  # aggregate unchanged: no event
        a1.conn.disconnect()  # still online on n2: no event
        a2.conn.disconnect()  # offline: one event
        time.sleep(1.0)
        for i, w in enumerate(watchers):
            got = []
            while True:
                try:
                    got.append(json.loads(w.rec.messages.get(timeout=0.2).body)["state"])
                except queue.Empty:
                    break
            assert got == ["online", "offline"], f"watcher on n{i + 1}: {got}"
        for w in watchers:
            w.conn.disconnect()
    finally:
        for n in nodes:
            n.stop()
        redis.stop()
