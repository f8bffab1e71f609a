"""Nodes join a cluster over a real Redis (issue 17): the node registry, and a kick
from one node's admin API that closes the user's sessions on every node.
Ports 64010-64019."""

import json
import urllib.request

from cluster_util import cluster, wait_until
from conftest import Client

TOKEN = "cluster-admin-token-0123456789abcdef"
ADMIN = f'[admin]\nlisten = "127.0.0.1:0"\ntokens = ["{TOKEN}"]\n'


def _registry(redis):
    (key,) = [k for k in redis.cli("--scan", "--pattern", "*nodes").split() if k]
    flat = redis.cli("HGETALL", key).split("\n")
    return {name: json.loads(v) for name, v in zip(flat[0::2], flat[1::2])}


def test_nodes_register_and_beat_and_a_stopped_node_expires():
    with cluster(2, 64010, heartbeat_ms=200, ttl_ms=1000) as (redis, nodes):
        reg = wait_until(lambda: len(_registry(redis)) == 2 and _registry(redis), what="both nodes registered")
        assert sorted(reg) == ["n1", "n2"]
        first = reg["n1"]["beatMs"]
        wait_until(lambda: _registry(redis)["n1"]["beatMs"] > first, what="n1 beats again")
        assert sorted(k.rsplit(":", 1)[1] for k in redis.cli("--scan", "--pattern", "*alive:*").split()) == ["n1", "n2"]
        nodes[1].proc.kill()
        nodes[1].proc.wait(5)
        # Redis' expiry decides: n2's alive key is gone within its TTL.
        wait_until(
            lambda: not redis.cli("--scan", "--pattern", "*alive:n2").split(), timeout=3, what="n2's alive key expired"
        )
        assert redis.cli("--scan", "--pattern", "*alive:n1").split(), "n1 still beats"


def test_kick_from_one_node_closes_sessions_on_every_node():
    with cluster(2, 64011, extra=ADMIN) as (_redis, nodes):
        a = Client(nodes[0], login="alice", passcode="secret")
        b = Client(nodes[1], login="alice", passcode="secret")
        bob = Client(nodes[1], login="bob", passcode="secret")
        admin = nodes[0].listeners["admin"][1]
        req = urllib.request.Request(
            f"http://127.0.0.1:{admin}/api/users/alice/kick",
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["kicked"] == 1, "the count is this node's sessions"
        wait_until(lambda: not a.conn.is_connected(), what="alice on n1 closed")
        wait_until(lambda: not b.conn.is_connected(), what="alice on n2 closed by the control message")
        assert bob.conn.is_connected(), "other users are untouched"
        bob.conn.disconnect()
