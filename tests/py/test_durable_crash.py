"""Issue 15: durable queues on disk survive ``kill -9`` (docs/durability.md).

Real ``herald`` processes on one data directory, driven by stomp.py:

- crash cycles: a publisher pipelines persistent SENDs with receipts (to ``/queue/``,
  ``/amq/queue/``, a durable ``/topic/`` subscription's queue and a durable
  ``/exchange/amq.direct/<key>`` subscription's queue) and the server is killed with
  SIGKILL in the middle of the burst, then restarted on the same data directory. After
  the cycles (and one clean restart on top) every receipted message is there exactly
  once, nothing is duplicated, and an unreceipted one at most once; messages a consumer
  held unacked at a kill come back with ``redelivered:true``;
- transient messages, and persistent ones in a non-durable queue, are gone after a
  restart; a clean restart keeps what was there, and then only what was delivered is
  flagged ``redelivered``;
- a second ``herald`` on a data directory in use refuses to start, saying why;
- group commit: pipelined confirmed throughput beats one-at-a-time, and ``/metrics``
  shows fewer journal syncs than tickets.

CI runs 20 crash cycles (~30 s). A longer run: ``HERALD_CRASH_CYCLES=500`` (any number),
e.g. ``cd tests && HERALD_CRASH_CYCLES=500 python -m pytest py/test_durable_crash.py``.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
import stomp

from conftest import Herald, build_config, uid

CYCLES = int(os.environ.get("HERALD_CRASH_CYCLES", "20"))
TOKEN = "durable-crash-token"
ADMIN = f'[admin]\nlisten = "127.0.0.1:0"\ntokens = ["{TOKEN}"]\n'
PERSISTENT = {"persistent": "true"}
# stomp.py logs every send on a connection the kill broke: expected here.
logging.getLogger("stomp.py").setLevel(logging.CRITICAL)


class Node:
    """One ``herald`` process on a data directory that outlives it."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.h: Herald | None = None

    def start(self) -> Herald:
        self.h = Herald(build_config(self.data_dir, extra=ADMIN))
        return self.h

    def kill9(self):
        self.h.proc.kill()  # SIGKILL: no shutdown code runs
        self.h.proc.wait(10)
        self.h._cleanup_dir()  # the config's temp dir, not the data directory

    def stop(self):
        assert self.h.stop(timeout=10) == 0, self.h.describe()

    def metrics(self) -> dict[str, float]:
        host, port = self.h.listeners["admin"]
        req = urllib.request.Request(f"http://{host}:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        text = urllib.request.urlopen(req, timeout=5).read().decode()
        # Series without labels of their own carry only `node` (admin/metrics.rs).
        return {m[1]: float(m[2]) for m in re.finditer(r'^(\w+)(?:\{node="[^"]*"\})? ([0-9.e+]+)$', text, re.M)}


class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.receipts: set[str] = set()
        self.receipt_q: "queue.Queue[str]" = queue.Queue()
        self.messages: "queue.Queue" = queue.Queue()
        self.errors: list = []
        self.connected = threading.Event()
        self.gone = threading.Event()

    def on_connected(self, frame):
        self.connected.set()

    def on_receipt(self, frame):
        rid = frame.headers["receipt-id"]
        self.receipts.add(rid)
        self.receipt_q.put(rid)

    def on_message(self, frame):
        self.messages.put(frame)

    def on_error(self, frame):
        self.errors.append(frame)

    def on_disconnected(self):
        self.gone.set()


def connect(h: Herald) -> tuple[stomp.Connection12, Listener]:
    c = stomp.Connection12([("127.0.0.1", h.stomp_port)], heartbeats=(0, 0), vhost="/", reconnect_attempts_max=1)
    lis = Listener()
    c.set_listener("l", lis)
    c.connect("guest", "guest", wait=False)
    assert lis.connected.wait(5), "no CONNECTED"
    return c, lis


def wait_receipt(lis: Listener, rid: str, timeout=5.0):
    deadline = time.monotonic() + timeout
    while rid not in lis.receipts:
        assert time.monotonic() < deadline, f"no RECEIPT {rid} (errors: {[e.headers for e in lis.errors]})"
        time.sleep(0.005)


def drain(lis: Listener, quiet=1.0, limit=60.0) -> list:
    """Every MESSAGE until none came for `quiet` seconds."""
    out, deadline = [], time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            out.append(lis.messages.get(timeout=quiet))
        except queue.Empty:
            return out
    raise AssertionError(f"still receiving after {limit}s ({len(out)} so far)")


def subscribe(c, lis, dest, sub_id, ack="client-individual", **headers):
    rid = f"sub-{sub_id}-{uid()}"
    c.subscribe(dest, sub_id, ack=ack, headers={"receipt": rid, "prefetch-count": "0", **headers})
    wait_receipt(lis, rid)


def consume_all(c, lis, quiet=1.5) -> list:
    """Drains `ack:client` subscriptions with a prefetch window, acking as it goes."""
    out, last = [], {}
    while True:
        try:
            m = lis.messages.get(timeout=quiet)
        except queue.Empty:
            break
        out.append(m)
        sub = m.headers["subscription"]
        last[sub] = last.get(sub, 0) + 1
        if last[sub] % 100 == 0:
            c.ack(m.headers["ack"])  # cumulative in client mode
    return out


# Where the burst publishes, each a durable queue by the end: the durable subscriptions'
# queues are named by RabbitMQ's rule for a durable SUBSCRIBE without x-queue-name.
DESTS = {
    "q": "/queue/crash",
    "amq": "/amq/queue/crash",
    "topic": "/topic/crash.t",
    "direct": "/exchange/amq.direct/crash-key",
}


BURST = 1500  # most SENDs per cycle: the queue stays far below limits.max_queue_messages


def publish_burst(h: Herald, tag: str, sent: set, receipted: set, stop: threading.Event):
    """Pipelines persistent SENDs with receipts until the connection dies (or BURST)."""
    try:
        c, lis = connect(h)
    except Exception:
        return
    kinds = list(DESTS)
    i = 0
    try:
        while not stop.is_set() and not lis.gone.is_set() and i < BURST:
            kind = kinds[i % len(kinds)] if i % 5 == 0 else "q"
            body = f"{kind}:{tag}:{i}"
            sent.add(body)
            c.send(DESTS[kind], body, headers={**PERSISTENT, "receipt": body})
            i += 1
    except Exception:
        pass  # the server was killed under us
    finally:
        lis.gone.wait(2)  # the receiver thread has read what arrived before the kill
        receipted.update(lis.receipts)
        try:
            c.disconnect()
        except Exception:
            pass


@pytest.mark.timeout(120 + CYCLES * 5)
def test_receipted_persistent_messages_survive_kill_9_cycles():
    data = tempfile.mkdtemp(prefix="herald-crash-")
    node = Node(os.path.join(data, "data"))
    sent: set[str] = set()
    receipted: set[str] = set()
    try:
        # Durable subscriptions (queues bound to amq.topic and amq.direct), a durable
        # /queue/, transient messages and a non-durable queue; then the first kill.
        h = node.start()
        c, lis = connect(h)
        subscribe(c, lis, "/topic/crash.t", "dt", durable="true", **{"auto-delete": "false"})
        subscribe(c, lis, DESTS["direct"], "dx", durable="true", **{"auto-delete": "false"})
        c.unsubscribe("dt")
        c.unsubscribe("dx")
        for i in range(5):
            c.send("/queue/crash", f"transient:{i}", headers={"receipt": f"transient-{i}"})
            c.send("/queue/nd", f"nd:{i}", headers={**PERSISTENT, "durable": "false", "receipt": f"nd-{i}"})
        wait_receipt(lis, "transient-4")
        wait_receipt(lis, "nd-4")
        # Held unacked by a consumer at the kill: must come back flagged.
        for i in range(3):
            c.send("/queue/held", f"held:{i}", headers={**PERSISTENT, "receipt": f"held-{i}"})
        wait_receipt(lis, "held-2")
        subscribe(c, lis, "/queue/held", "h")
        held = [lis.messages.get(timeout=5) for _ in range(3)]
        assert [m.headers["redelivered"] for m in held] == ["false"] * 3
        node.kill9()

        h = node.start()
        c, lis = connect(h)
        subscribe(c, lis, "/queue/held", "h")
        back = drain(lis, quiet=0.5)
        assert sorted(m.body for m in back) == [f"held:{i}" for i in range(3)]
        assert all(m.headers["redelivered"] == "true" for m in back), [m.headers for m in back]
        subscribe(c, lis, "/queue/nd", "nd")
        assert drain(lis, quiet=0.3) == [], "a non-durable queue is gone after a restart"
        c.disconnect()
        node.kill9()

        # The crash cycles: kill -9 in the middle of a pipelined burst.
        t0 = time.monotonic()
        rng = random.Random(15)
        starts = []
        for cycle in range(CYCLES):
            ts = time.monotonic()
            h = node.start()
            starts.append(time.monotonic() - ts)
            stop = threading.Event()
            t = threading.Thread(target=publish_burst, args=(h, f"c{cycle}", sent, receipted, stop))
            t.start()
            time.sleep(rng.uniform(0.05, 0.4))
            node.kill9()
            stop.set()
            t.join(10)
            assert not t.is_alive()
        assert len(receipted) > CYCLES * 10, f"only {len(receipted)} receipts over {CYCLES} cycles"

        t1 = time.monotonic()
        # A clean restart on top keeps everything.
        node.start()
        node.stop()
        h = node.start()
        c, lis = connect(h)
        window = {"prefetch-count": "400"}
        subscribe(c, lis, "/queue/crash", "all", ack="client", **window)
        durable = {"durable": "true", "auto-delete": "false", **window}
        subscribe(c, lis, "/topic/crash.t", "dt", ack="client", **durable)
        subscribe(c, lis, DESTS["direct"], "dx", ack="client", **durable)
        got = consume_all(c, lis)
        bodies = [m.body for m in got]
        dupes = {b for b in bodies if bodies.count(b) > 1} if len(bodies) != len(set(bodies)) else set()
        assert not dupes, f"duplicated: {sorted(dupes)[:10]}"
        missing = receipted - set(bodies)
        assert not missing, f"{len(missing)} receipted messages lost, e.g. {sorted(missing)[:10]}"
        assert set(bodies) <= sent, f"unknown messages: {sorted(set(bodies) - sent)[:10]}"
        assert not any(b.startswith("transient:") for b in bodies), "a transient message survived a restart"
        by_sub = {m.headers["subscription"]: 0 for m in got}
        for m in got:
            by_sub[m.headers["subscription"]] += 1
            kind = m.body.split(":")[0]
            expect = {"q": "all", "amq": "all", "topic": "dt", "direct": "dx"}[kind]
            assert m.headers["subscription"] == expect, (m.body, m.headers)
        for kind in DESTS:
            assert any(b.startswith(kind + ":") for b in receipted & set(bodies)), f"nothing receipted via {kind}"
        print(
            f"\n{CYCLES} kill -9 cycles in {t1 - t0:.1f} s: {len(receipted)} receipted, {len(bodies)} recovered "
            f"({len(set(bodies) - receipted)} unreceipted ones among them), checked in {time.monotonic() - t1:.1f} s; "
            f"restarts took {min(starts):.2f}-{max(starts):.2f} s"
        )
        c.disconnect()
        node.stop()
    finally:
        if node.h and node.h.proc.poll() is None:
            node.kill9()
        shutil.rmtree(data, ignore_errors=True)


def test_clean_restart_flags_only_what_was_delivered():
    data = tempfile.mkdtemp(prefix="herald-clean-")
    node = Node(os.path.join(data, "data"))
    try:
        node.start()
        node.stop()  # from here on the data directory was shut down cleanly
        h = node.start()
        c, lis = connect(h)
        for i in range(6):
            c.send("/queue/clean", f"m{i}", headers={**PERSISTENT, "receipt": f"r{i}"})
        wait_receipt(lis, "r5")
        subscribe(c, lis, "/queue/clean", "s", **{"prefetch-count": "2"})
        first = [lis.messages.get(timeout=5) for _ in range(2)]
        assert [m.body for m in first] == ["m0", "m1"]
        c.disconnect()
        node.stop()

        h = node.start()
        c, lis = connect(h)
        subscribe(c, lis, "/queue/clean", "s")
        got = drain(lis, quiet=0.5)
        assert [(m.body, m.headers["redelivered"]) for m in got] == [
            ("m0", "true"),
            ("m1", "true"),
            ("m2", "false"),
            ("m3", "false"),
            ("m4", "false"),
            ("m5", "false"),
        ]
        # Acked messages are gone for good.
        for m in got:
            c.ack(m.headers["ack"])
        rid = "acked"
        c.send("/queue/clean", "after", headers={**PERSISTENT, "receipt": rid})
        wait_receipt(lis, rid)
        assert lis.messages.get(timeout=5).body == "after"
        c.disconnect()
        node.stop()
        h = node.start()
        c, lis = connect(h)
        subscribe(c, lis, "/queue/clean", "s")
        assert [m.body for m in drain(lis, quiet=0.5)] == ["after"], "acked messages stay acked"
        c.disconnect()
        node.stop()
    finally:
        if node.h and node.h.proc.poll() is None:
            node.kill9()
        shutil.rmtree(data, ignore_errors=True)


def test_a_second_herald_on_the_same_data_dir_is_refused():
    data = tempfile.mkdtemp(prefix="herald-lock-")
    node = Node(os.path.join(data, "data"))
    try:
        node.start()
        cfg = os.path.join(data, "second.toml")
        with open(cfg, "w") as f:
            f.write(build_config(node.data_dir))
        p = subprocess.run([node.h.bin, "--config", cfg], capture_output=True, text=True, timeout=20)
        assert p.returncode != 0, p
        assert "herald: ready" not in p.stdout
        err = p.stderr
        assert node.data_dir in err and "in use" in err, err
        node.stop()
    finally:
        if node.h and node.h.proc.poll() is None:
            node.kill9()
        shutil.rmtree(data, ignore_errors=True)


def confirmed_rate(h: Herald, n: int, pipelined: bool) -> float:
    c, lis = connect(h)
    dest = f"/queue/rate-{uid()}"
    start = time.monotonic()
    for i in range(n):
        c.send(dest, "x" * 100, headers={**PERSISTENT, "receipt": f"r{i}"})
        if not pipelined:
            wait_receipt(lis, f"r{i}")
    wait_receipt(lis, f"r{n - 1}", timeout=30)
    elapsed = time.monotonic() - start
    assert len(lis.receipts) == n
    c.disconnect()
    return n / elapsed


def test_group_commit_pipelined_beats_one_at_a_time():
    data = tempfile.mkdtemp(prefix="herald-rate-")
    node = Node(os.path.join(data, "data"))
    try:
        h = node.start()
        before = node.metrics()
        one = confirmed_rate(h, 200, pipelined=False)
        mid = node.metrics()
        piped = confirmed_rate(h, 2000, pipelined=True)
        after = node.metrics()
        syncs = after["herald_disk_syncs_total"] - mid["herald_disk_syncs_total"]
        tickets = after["herald_disk_tickets_total"] - mid["herald_disk_tickets_total"]
        one_syncs = mid["herald_disk_syncs_total"] - before["herald_disk_syncs_total"]
        print(
            f"\nconfirmed persistent msgs/s (debug build): one at a time {one:.0f} ({one_syncs:.0f} syncs for 200), "
            f"pipelined {piped:.0f} ({syncs:.0f} syncs for {tickets:.0f} tickets, {tickets / max(syncs, 1):.1f} per sync)"
        )
        assert tickets >= 2000
        # How many share a sync depends on the machine's load; one each means no group commit.
        assert syncs < tickets, f"{syncs} syncs for {tickets} tickets: no group commit"
        assert piped > one, (piped, one)
        node.stop()
    finally:
        if node.h and node.h.proc.poll() is None:
            node.kill9()
        shutil.rmtree(data, ignore_errors=True)
