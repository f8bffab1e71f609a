"""Operators see the cluster (issue 17 item 8): ``GET /api/cluster`` (every answer validated
against core/src/admin/openapi.json), the ``node`` label on ``/metrics``, hostile registry
entries, and ``scripts/cluster up N`` / ``down``. Real redis-server, real herald nodes,
``kill -9``. Ports 64500-64519 (plus the fixed ports of config/cluster/*.toml and 6379 for
the ``scripts/cluster`` smoke test, as a developer runs it)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from admin_util import Api, Spec
from cluster_util import RedisServer, cluster, start_node, wait_until
from conftest import Client, Herald, assert_binary, build_config, uid

TOKEN = "cluster-ops-token-0123456789abcdef"
ADMIN = f'[admin]\nlisten = "127.0.0.1:0"\ntokens = ["{TOKEN}"]\nstream_interval_ms = 200\n'
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "cluster")


@pytest.fixture(scope="module")
def spec():
    return Spec.load()


def api_of(h: Herald, spec: Spec) -> Api:
    return Api(h.listeners["admin"][1], TOKEN, spec)


def by_name(info: dict) -> dict:
    return {n["name"]: n for n in info["nodes"]}


def test_a_single_node_answers_alone_without_redis(spec):
    h = Herald(build_config("@DATA_DIR@", extra=ADMIN, node_name="solo"))
    try:
        api = api_of(h, spec)
        c = Client(h, login="alice", passcode="secret")
        info = wait_until(lambda: (i := api.ok("GET", "/api/cluster"))["sessions"] == 1 and i, what="alice counted")
        assert (info["node"], info["cluster"], info["redis"], info["error"]) == ("solo", False, False, None), info
        [me] = info["nodes"]
        assert me["name"] == "solo" and me["alive"] and me["this"] and me["heartbeat_age_ms"] == 0, me
        assert (me["sessions"], me["users"], info["users_online"], info["nodes_alive"]) == (1, 1, 1, 1), info
        assert me["rss_bytes"] > 0 and me["version"], me
        c.conn.disconnect()
    finally:
        h.stop()


def test_cluster_endpoint_lists_both_nodes_and_a_killed_node_dies(spec):
    with cluster(2, 64500, extra=ADMIN, heartbeat_ms=200, ttl_ms=1000) as (_redis, (n1, n2)):
        api1, api2 = api_of(n1, spec), api_of(n2, spec)
        alice = Client(n1, login="alice", passcode="secret")
        bob = Client(n2, login="bob", passcode="secret")
        carol = [Client(n2, login="carol", passcode="secret") for _ in range(2)]

        def counted():
            info = api1.ok("GET", "/api/cluster")
            n = by_name(info)
            ok = set(n) == {"n1", "n2"} and n["n1"]["sessions"] == 1 and n["n2"]["sessions"] == 3
            return ok and info

        info = wait_until(counted, timeout=5, what="both nodes with their sessions in n1's answer")
        assert (info["node"], info["cluster"], info["redis"], info["error"]) == ("n1", True, True, None), info
        n = by_name(info)
        assert n["n1"]["this"] and not n["n2"]["this"]
        assert n["n1"]["alive"] and n["n2"]["alive"] and info["nodes_alive"] == 2
        assert (n["n1"]["users"], n["n2"]["users"], info["users_online"], info["sessions"]) == (1, 2, 3, 4), info
        for node in n.values():
            assert 0 <= node["heartbeat_age_ms"] < 1000, node
            assert node["rss_bytes"] > 0 and node["version"], node
        # Publishes on n2 show as n2's publish rate (between two heartbeats).
        for i in range(20):
            bob.conn.send("/topic/ops-rate", str(i))
        wait_until(lambda: by_name(api1.ok("GET", "/api/cluster"))["n2"]["publish_rate"] > 0, what="n2's publish rate")
        assert by_name(api2.ok("GET", "/api/cluster"))["n2"]["this"], "n2 answers too, as itself"

        n2.proc.kill()  # kill -9: no goodbye, Redis' expiry decides
        n2.proc.wait(5)
        # Shown dead from its TTL until a survivor reaps it (one heartbeat
        # later), then gone from the registry: either way not alive.
        info = wait_until(
            lambda: not by_name(i := api1.ok("GET", "/api/cluster")).get("n2", {}).get("alive") and i,
            timeout=3,
            what="n2 dead or reaped",
        )
        n = by_name(info)
        assert n["n1"]["alive"] and info["nodes_alive"] == 1, info
        if "n2" in n:
            assert not n["n2"]["alive"] and n["n2"]["heartbeat_age_ms"] > 500, "no beat since it died (every 200 ms)"
        assert (info["users_online"], info["sessions"]) == (1, 1), "dead nodes do not count"
        for c in [alice, *carol]:
            if c.conn.is_connected():
                c.conn.disconnect()


def test_metrics_carry_the_node_label(spec):
    with cluster(2, 64501, extra=ADMIN) as (_redis, nodes):
        for name, h in zip(("n1", "n2"), nodes):
            r = api_of(h, spec).get("/metrics")
            assert r.status == 200, r
            lines = [l for l in r.text.splitlines() if l and not l.startswith("#")]
            assert lines, r.text
            for line in lines:
                assert re.match(r'^[a-z_]+\{node="' + name + r'"[,}]', line), line
            assert f'herald_uptime_seconds{{node="{name}"}} ' in r.text, r.text


def test_hostile_registry_entries_are_skipped_and_redis_down_is_reported(spec):
    redis = RedisServer(64502)
    prefix = uid("c") + ":"
    h = start_node("n1", redis, prefix, extra=ADMIN, heartbeat_ms=200, ttl_ms=1000)
    try:
        api = api_of(h, spec)
        key = f"{prefix}nodes"
        redis.cli("HSET", key, "junk", "not json")
        redis.cli("HSET", key, "liar", '{"name":"n1","address":null,"startedMs":1,"beatMs":1,"sessions":99}')
        redis.cli("HSET", key, "huge", '{"name":"huge","address":"' + "a" * 8000 + '","startedMs":1,"beatMs":1,"sessions":1}')
        redis.cli("HSET", key, "old", '{"name":"old","address":null,"startedMs":1,"beatMs":1,"sessions":5}')
        info = api.ok("GET", "/api/cluster")
        n = by_name(info)
        assert set(n) == {"n1", "old"}, "unparsable, misnamed and oversized entries are not shown"
        assert not n["old"]["alive"] and n["old"]["version"] == "" and n["old"]["sessions"] == 5, n["old"]
        assert n["n1"]["sessions"] == 0, "an entry under another field cannot speak for n1"
        assert info["sessions"] == 0, "a dead node's sessions do not count"

        redis.proc.send_signal(signal.SIGSTOP)  # a stalled Redis: one bounded wait, then this node alone
        try:
            t0 = time.monotonic()
            info = api.ok("GET", "/api/cluster")
            took = time.monotonic() - t0
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        assert info["error"] and [x["name"] for x in info["nodes"]] == ["n1"], info
        assert took < 3.5, f"answered after {took:.1f}s (the Bus' command timeout is 2 s)"

        redis.kill()
        info = wait_until(
            lambda: (i := api.ok("GET", "/api/cluster"))["error"] and not i["redis"] and i, timeout=10, what="Redis down"
        )
        assert [x["name"] for x in info["nodes"]] == ["n1"] and info["nodes"][0]["alive"], info
        c = Client(h, login="alice", passcode="secret")  # the node keeps serving
        c.conn.disconnect()
    finally:
        h.stop()
        redis.stop()


# -- scripts/cluster --------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ports(i: int) -> list[int]:
    return [61700 + i, 15700 + i, 25200 + i, 25800 + i, 15800 + i]


def _script(*args, run_dir: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # The binary the other suites test, so the script never builds one of its own.
    env = dict(os.environ, HERALD_CLUSTER_DIR=run_dir, HERALD_BIN=assert_binary())
    return subprocess.run([SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_node_configs_are_what_the_script_generates():
    run = tempfile.mkdtemp(prefix="herald-cluster-")
    for i in (1, 2, 3):
        out = _script("config", str(i), run_dir=run)
        assert out.returncode == 0, out.stderr
        with open(os.path.join(ROOT, "config", "cluster", f"node{i}.toml")) as f:
            assert f.read() == out.stdout, f"config/cluster/node{i}.toml differs from scripts/cluster config {i}"


def test_scripts_cluster_up_and_down(spec):
    n = 4  # nodes 1-3 from config/cluster/*.toml, node 4 generated in the run directory
    busy = [p for i in range(1, n + 1) for p in _ports(i) if _port_open(p)]
    assert not busy, f"ports of scripts/cluster already in use: {busy}"
    redis_was_up = _port_open(6379)
    run = tempfile.mkdtemp(prefix="herald-cluster-")
    try:
        up = _script("up", str(n), run_dir=run)
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        for i in range(1, n + 1):
            assert f"admin 127.0.0.1:{15800 + i}" in up.stdout, up.stdout
            assert f"stomp-tcp 127.0.0.1:{61700 + i}" in up.stdout, up.stdout
        assert os.path.exists(os.path.join(run, "node4.toml"))
        api = Api(15801, "dev-admin-token", spec)

        def all_alive():
            nodes = by_name(api.ok("GET", "/api/cluster"))
            return all(nodes.get(f"node{i}", {}).get("alive") for i in range(1, n + 1)) and nodes

        nodes = wait_until(all_alive, timeout=10, what="node1-4 alive in node1's view")
        assert nodes["node1"]["this"] and nodes["node2"]["address"] == "127.0.0.1:15702"
        again = _script("up", str(n), run_dir=run)
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    finally:
        down = _script("down", run_dir=run)
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("stopped node") == n, down.stdout
    still = [p for i in range(1, n + 1) for p in _ports(i) if _port_open(p)]
    assert not still, f"ports still open after down: {still}"
    assert _port_open(6379) == redis_was_up, "down stops the Redis that up started, and only that one"
    again = _script("down", run_dir=run)
    assert again.returncode == 0 and again.stdout == "", "down is idempotent"
