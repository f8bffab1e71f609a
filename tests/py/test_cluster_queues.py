"""Work queues across nodes (issue 17 item 3, docs/cluster.md "Work queues across
nodes"): `/queue/<q>` is one queue cluster-wide, kept in a Redis Stream with a
consumer group. Real redis-server, real herald nodes, stomp.py clients.
Ports 64300-64309."""

import queue
import time

from cluster_util import cluster, start_node, wait_until
from conftest import Client, uid


def _drain(c: Client, got: list, ack=True, wait=0.01, limit=5):
    """Takes up to ``limit`` of what arrived on ``c`` (acking each, without receipts),
    so two consumers drained in turn by one thread both keep acking; returns how many."""
    n = 0
    while n < limit:
        try:
            f = c.rec.messages.get(timeout=wait)
        except queue.Empty:
            return n
        got.append(f)
        if ack:
            c.ack(f, receipt=False)
        n += 1
    return n


def test_two_consumers_on_two_nodes_share_1000_messages_from_a_third():
    with cluster(3, 64300) as (_redis, nodes):
        q = f"/queue/{uid('work')}"
        a = Client(nodes[0])
        b = Client(nodes[1])
        a.subscribe(q, ack="client-individual", **{"prefetch-count": "10"})
        b.subscribe(q, ack="client-individual", **{"prefetch-count": "10"})
        p = Client(nodes[2])
        for i in range(1000):
            p.send(q, f"m{i}", receipt=(i % 100 == 99))
        got_a, got_b = [], []
        deadline = time.monotonic() + 60
        while len(got_a) + len(got_b) < 1000 and time.monotonic() < deadline:
            _drain(a, got_a)
            _drain(b, got_b)
        _drain(a, got_a, wait=0.5, limit=1000)
        _drain(b, got_b, wait=0.5, limit=1000)
        print(f"shared: n1 {len(got_a)}, n2 {len(got_b)}")
        bodies = [f.body for f in got_a + got_b]
        assert len(bodies) == 1000, f"{len(got_a)} + {len(got_b)} delivered"
        assert sorted(bodies) == sorted(f"m{i}" for i in range(1000)), "none lost, none duplicated"
        # Prefetch 10 each and both acking: neither node hoards the queue.
        assert min(len(got_a), len(got_b)) >= 100, f"both consumers got a share ({len(got_a)}, {len(got_b)})"
        assert all(f.headers.get("redelivered") == "false" for f in got_a + got_b)


def test_a_consumer_closed_with_unacked_messages_hands_them_to_the_other_node():
    with cluster(2, 64301) as (_redis, nodes):
        q = f"/queue/{uid('work')}"
        a = Client(nodes[0])
        a.subscribe(q, ack="client-individual", **{"prefetch-count": "5"})
        p = Client(nodes[1])
        for i in range(5):
            p.send(q, f"m{i}")
        held = [a.message() for _ in range(5)]
        assert sorted(f.body for f in held) == [f"m{i}" for i in range(5)]
        b = Client(nodes[1])
        b.subscribe(q, ack="client-individual", **{"prefetch-count": "10"})
        b.no_message(0.5, what="a message a still holds")
        a.conn.disconnect()  # unacked: back to the queue, for n2's consumer
        got = [b.message(timeout=10) for _ in range(5)]
        assert sorted(f.body for f in got) == [f"m{i}" for i in range(5)]
        assert all(f.headers["redelivered"] == "true" for f in got), [f.headers for f in got]
        for f in got:
            b.ack(f)
        b.no_message(0.5)


def test_kill_9_of_a_node_holding_unacked_messages_redelivers_them_elsewhere():
    with cluster(2, 64302, heartbeat_ms=200, ttl_ms=1000) as (redis, nodes):
        q = f"/queue/{uid('work')}"
        a = Client(nodes[0])
        a.subscribe(q, ack="client-individual", **{"prefetch-count": "3"})
        b = Client(nodes[1])
        p = Client(nodes[1])
        for i in range(3):
            p.send(q, f"m{i}")
        assert sorted(a.message().body for _ in range(3)) == ["m0", "m1", "m2"]
        b.subscribe(q, ack="client-individual", **{"prefetch-count": "10"})
        b.no_message(0.3)
        nodes[0].proc.kill()
        nodes[0].proc.wait(5)
        t0 = time.monotonic()
        got = [b.message(timeout=10) for _ in range(3)]
        took = time.monotonic() - t0
        print(f"redelivered {took:.2f}s after kill -9 (ttl_ms 1000)")
        assert sorted(f.body for f in got) == ["m0", "m1", "m2"]
        assert all(f.headers["redelivered"] == "true" for f in got)
        # TTL (1 s) + a claim interval (ttl/2, at least 250 ms) + a read, with room for a slow CI.
        assert took < 4.0, f"redelivered after {took:.2f}s"
        for f in got:
            b.ack(f)
        p.send(q, "after")
        assert b.message().body == "after"


def test_published_with_no_consumer_anywhere_reaches_a_consumer_that_joins_later_elsewhere():
    with cluster(2, 64303) as (redis, nodes):
        q = f"/queue/{uid('work')}"
        p = Client(nodes[0])
        for i in range(20):
            p.send(q, f"m{i}")
        time.sleep(0.3)
        c = Client(nodes[1])
        c.subscribe(q, ack="auto")
        got = [c.message().body for _ in range(20)]
        assert got == [f"m{i}" for i in range(20)], "in publish order for one consumer"
        c.no_message(0.3)
        # Auto acks leave nothing in the stream.
        (key,) = [k for k in redis.cli("--scan", "--pattern", "*q:1:/:*").split() if k]
        wait_until(lambda: redis.cli("XLEN", key) == "0", what="acked entries deleted")


def test_a_node_joining_later_competes_and_private_queues_stay_local():
    with cluster(2, 64304) as (_redis, nodes):
        # /topic/ and /temp-queue/ are exclusive per session: node-local as before.
        t1, t2 = Client(nodes[0]), Client(nodes[1])
        t1.subscribe("/topic/cq.x")
        t2.subscribe("/topic/cq.x")
        t1.send("/topic/cq.x", "to-both-or-local")
        assert t1.message().body == "to-both-or-local"
        # A third node joins the same queue later and takes its share.
        q = f"/queue/{uid('work')}"
        a = Client(nodes[0])
        a.subscribe(q, ack="client-individual", **{"prefetch-count": "1"})
        redis = _redis
        n3 = start_node("n3", redis, _prefix_of(redis), heartbeat_ms=200, ttl_ms=1000)
        try:
            c = Client(n3)
            c.subscribe(q, ack="client-individual", **{"prefetch-count": "1"})
            for i in range(40):
                t2.send(q, f"m{i}", receipt=False)
            got_a, got_c = [], []
            deadline = time.monotonic() + 20
            while len(got_a) + len(got_c) < 40 and time.monotonic() < deadline:
                _drain(a, got_a)
                _drain(c, got_c)
            assert sorted(f.body for f in got_a + got_c) == sorted(f"m{i}" for i in range(40))
            assert got_a and got_c
        finally:
            n3.stop()


def _prefix_of(redis) -> str:
    (key,) = [k for k in redis.cli("--scan", "--pattern", "*nodes").split() if k]
    return key[: -len("nodes")]


def test_max_length_holds_cluster_wide():
    with cluster(2, 64307) as (redis, nodes):
        name = uid("capped")
        q = f"/queue/{name}"
        # drop-head: the queue keeps the newest 3, whichever node published.
        a, b = Client(nodes[0]), Client(nodes[1])
        a.send(q, "a0", **{"x-max-length": "3"})
        b.send(q, "b0", **{"x-max-length": "3"})
        for i in range(1, 4):
            a.send(q, f"a{i}")
        c = Client(nodes[1])
        c.subscribe(q, ack="auto", **{"x-max-length": "3"})
        got = [c.message().body for _ in range(3)]
        assert got == ["a1", "a2", "a3"], got
        c.no_message(0.3)
        # reject-publish: a SEND with a receipt to a full queue gets an ERROR instead.
        r = f"/queue/{uid('full')}"
        p = Client(nodes[0])
        hdr = {"x-max-length": "2", "x-overflow": "reject-publish"}
        p.send(r, "1", **hdr)
        Client(nodes[1]).send(r, "2", **hdr)
        p.conn.send(r, "3", headers={"receipt": "r-full"})
        err = p.error()
        assert "x-max-length" in err.body, err.body
        assert redis.cli("XLEN", [k for k in redis.cli("--scan", "--pattern", f"*{r[7:]}").split()][0]) == "2"
