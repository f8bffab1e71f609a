"""Publishes across nodes (issue 17 item 2): a STOMP SEND on one herald node reaches
SUBSCRIBEs on the others (stomp.py on 2-3 nodes over a real redis-server): /topic,
/exchange/amq.topic patterns, /exchange/feed/<uid>, the admin API's publish; a node
without bindings is not subscribed; and the Redis-down rule (item 7): a publish is
delivered on its own node only, not refused, counted in /metrics, and routing resumes
after Redis restarts; an XMPP chat from a resource on one node reaches the contact's
resource on another. Ports 64110-64119."""

import json
import urllib.request

from cluster_util import cluster, wait_until
from conftest import Client
from xmpp_util import Xmpp, c2s_port, run, xmpp_extra

TOKEN = "cluster-route-token-0123456789abcdef"
ADMIN = f'[admin]\nlisten = "127.0.0.1:0"\ntokens = ["{TOKEN}"]\n'


def _admin(node, path, body=None):
    port = node.listeners["admin"][1]
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method="POST" if body is not None else "GET",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


def _metric(node, name) -> int:
    # Every series carries the node label: `name{node="n2"} 5`.
    for line in _admin(node, "/metrics").splitlines():
        if line.split("{")[0].split(" ")[0] == name:
            return int(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics of {node.describe()}")


def _numsub(redis, channel) -> int:
    return int(redis.cli("PUBSUB", "NUMSUB", channel).split("\n")[1])


def _prefix(redis) -> str:
    # Every node subscribes the control channel `<prefix>bus:ctl`.
    (ctl,) = [c for c in redis.cli("PUBSUB", "CHANNELS", "*bus:ctl").split("\n") if c]
    return ctl[: -len("bus:ctl")]


def test_a_send_on_one_node_reaches_subscribers_on_the_others_once():
    with cluster(3, 64110, extra=ADMIN) as (redis, nodes):
        n1, n2, n3 = nodes
        alice = Client(n1, login="alice", passcode="secret")
        bob = Client(n1, login="bob", passcode="secret")
        carol = Client(n3, login="carol", passcode="secret")
        sender = Client(n2, login="alice", passcode="secret")
        topic = alice.subscribe("/topic/news.*")
        exact = alice.subscribe("/topic/exact.key")
        pattern = carol.subscribe("/exchange/amq.topic/a.#")
        feed = bob.subscribe("/exchange/feed/bob")
        p = _prefix(redis)
        # Interest-based: the wildcard channel of amq.topic has n1 (news.*) and n3 (a.#),
        # bob's feed key only n1; n2 has no binding and listens to none of them.
        assert _numsub(redis, f"{p}bus:w:1:/:9:amq.topic") == 2
        assert _numsub(redis, f"{p}bus:k:1:/:4:feed:bob") == 1
        assert _numsub(redis, f"{p}bus:k:1:/:9:amq.topic:exact.key") == 1

        sender.send("/topic/news.today", "n1")
        sender.send("/topic/exact.key", "n2")
        sender.send("/exchange/amq.topic/a.b.c", "n3")
        sender.send("/exchange/feed/bob", "hello bob", **{"content-type": "text/plain"})
        got = {}
        for _ in range(2):
            m = alice.message()
            got[m.headers["subscription"]] = (m.headers["destination"], m.body)
        assert got == {topic: ("/topic/news.today", "n1"), exact: ("/topic/exact.key", "n2")}
        m = carol.message()
        assert (m.headers["subscription"], m.headers["destination"], m.body) == (pattern, "/topic/a.b.c", "n3")
        m = bob.message()
        assert (m.headers["subscription"], m.body) == (feed, "hello bob")
        assert m.headers["content-type"] == "text/plain"
        assert m.headers["x-stream-offset"] == "1", "the receiving node numbers its own feed history"
        # Once per node: nothing more arrives.
        alice.no_message()
        carol.no_message(0.1)
        bob.no_message(0.1)
        sender.no_message(0.1)

        # The admin API's publish on n2 goes through the same door.
        _admin(n2, "/api/publish", {"destination": "/topic/news.admin", "body": "from admin"})
        m = alice.message()
        assert (m.headers["destination"], m.body) == ("/topic/news.admin", "from admin")

        # UNSUBSCRIBE: the last binding gone, n1 leaves the channel.
        alice.conn.unsubscribe(exact, headers={"receipt": "r-unsub"})
        alice.receipt("r-unsub")
        wait_until(lambda: _numsub(redis, f"{p}bus:k:1:/:9:amq.topic:exact.key") == 0, what="n1 unsubscribed")
        sender.send("/topic/exact.key", "gone")
        alice.no_message()
        assert _metric(n2, "herald_bus_published_total") >= 5
        assert _metric(n1, "herald_bus_received_total") >= 3
        assert _metric(n2, "herald_bus_connected") == 1
        for c in (alice, bob, carol, sender):
            c.close()


def test_redis_down_a_publish_is_delivered_locally_only_and_routing_resumes_after_restart():
    with cluster(2, 64111, extra=ADMIN) as (redis, nodes):
        n1, n2 = nodes
        local = Client(n1, login="alice", passcode="secret")
        remote = Client(n2, login="bob", passcode="secret")
        local.subscribe("/topic/r.k")
        remote.subscribe("/topic/r.k")
        local.send("/topic/r.k", "before")
        assert local.message().body == "before"
        assert remote.message().body == "before"

        redis.kill()

        def n1_disconnected():
            # A publish makes the connection notice a dead socket sooner.
            local.send("/topic/nobody", "probe")
            return _metric(n1, "herald_bus_connected") == 0

        wait_until(n1_disconnected, timeout=10, what="n1 sees Redis down", every=0.2)
        refused = _metric(n1, "herald_bus_refused_total")
        # The RECEIPT comes (not refused) and the local subscriber has it; n2 does not.
        local.send("/topic/r.k", "during")
        assert local.message().body == "during"
        remote.no_message(1.0, "a publish made while Redis was down")
        assert _metric(n1, "herald_bus_refused_total") == refused + 1
        assert "publishes reach this node's subscribers only" in "".join(n1.stderr_chunks)

        redis.start()
        wait_until(
            lambda: _metric(n1, "herald_bus_connected") == 1 and _metric(n2, "herald_bus_connected") == 1,
            timeout=15,
            what="both nodes reconnect",
            every=0.2,
        )
        # n2's subscription came back with the reconnect (the Bus re-subscribes).
        wait_until(lambda: _numsub(redis, f"{_prefix(redis)}bus:k:1:/:9:amq.topic:r.k") == 2, what="resubscribed")
        local.send("/topic/r.k", "after")
        assert local.message().body == "after"
        assert remote.message().body == "after"
        remote.no_message(0.3)
        local.close()
        remote.close()


def test_an_xmpp_chat_reaches_the_contacts_resource_on_another_node():
    with cluster(2, 64112, extra=xmpp_extra("required")) as (_redis, nodes):
        n1, n2 = nodes

        async def scenario():
            bob = await Xmpp(c2s_port(n2), "bob", resource="b2").online()
            alice = await Xmpp(c2s_port(n1), "alice", resource="a1").online()
            try:
                alice.chat("bob@localhost", "across nodes")
                m = await bob.message(lambda m: m["body"] == "across nodes", what="alice's chat from n1")
                assert m["type"] == "chat"
                assert str(m["from"]).startswith("alice@localhost"), m["from"]
                bob.chat("alice@localhost/a1", "back again")
                m = await alice.message(lambda m: m["body"] == "back again", what="bob's reply from n2")
                await bob.no_message(lambda m: m["body"] == "across nodes", wait=0.3, what="a second copy")
            finally:
                await alice.disconnect()
                await bob.disconnect()

        run(scenario())
