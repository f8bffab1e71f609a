"""XEP-0160 offline messages in a cluster (docs/cluster.md "Offline messages in a
cluster"): with `[cluster]` the offline store is in Redis, so a message kept for a user
on one node is delivered when the user logs in on another. slixmpp, real redis-server,
two herald nodes. Ports 64305-64309."""

from cluster_util import cluster
from test_offline_xmpp import barrier, delay_of, offline_extra
from xmpp_util import Xmpp, c2s_port, run


def test_a_message_kept_on_node_a_is_delivered_at_login_on_node_b():
    with cluster(2, 64305, extra=offline_extra(max_messages_per_user=3)) as (redis, nodes):
        pa, pb = c2s_port(nodes[0]), c2s_port(nodes[1])

        async def scenario():
            a = await Xmpp(pa, "alice", resource="a1").online()
            try:
                ids = [a.chat("bob@localhost", "k1"), a.chat("bob@localhost", "k2")]
                await barrier(a)
                assert redis.cli("--scan", "--pattern", "*off:{bob}").split(), "kept in Redis"
                # The per-user cap holds cluster-wide: the 4th is refused.
                a.chat("bob@localhost", "k3")
                over = a.chat("bob@localhost", "over")
                err = await a.message(lambda m: m["type"] == "error" and m["id"] == over, what="cap error")
                assert err["error"]["condition"] == "resource-constraint", err
            finally:
                await a.disconnect(1.0)
            b = await Xmpp(pb, "bob", resource="b1").online()
            try:
                got = [await b.message(lambda m: m["body"] in ("k1", "k2", "k3"), what=f"kept {i}") for i in range(3)]
                assert [m["body"] for m in got] == ["k1", "k2", "k3"], "oldest first"
                assert [m["id"] for m in got[:2]] == ids
                assert all(delay_of(m) is not None for m in got)
                await b.no_message(lambda m: m["body"] == "over", what="the refused message")
            finally:
                await b.disconnect(1.0)
            # Delivered on B means removed for every node: nothing again on A.
            b2 = await Xmpp(pa, "bob", resource="b2").online()
            try:
                await b2.no_message(lambda m: m["body"] in ("k1", "k2", "k3"), what="delivered twice")
            finally:
                await b2.disconnect(1.0)

        run(scenario())
