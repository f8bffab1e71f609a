"""History and recovery on the `feed` and `project` exchanges (docs/history.md), with
stomp.py against the real binary: server-stamped offsets and epochs, SUBSCRIBE with
`x-stream-offset` / `x-stream-epoch` replaying then going live without gap or duplicate
while publishers keep publishing, `x-recovered` true and false (too old, other epoch,
after the TTL, after restarts with and without a data directory, after kill -9),
permissions and bad values."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time

import pytest

from conftest import Client, Herald, build_config, uid

WAIT = 10.0


def offset(frame) -> int:
    return int(frame.headers["x-stream-offset"])


def recover(c: Client, destination: str, since, epoch: str | None = None, sub_id=None):
    """SUBSCRIBE with x-stream-offset (and x-stream-epoch); returns the RECEIPT frame."""
    rid = c.next_id("r-rec")
    headers = {"x-stream-offset": str(since), "receipt": rid}
    if epoch is not None:
        headers["x-stream-epoch"] = epoch
    c.conn.subscribe(destination, sub_id or c.next_id("sub"), ack="auto", headers=headers)
    return c.receipt(rid, timeout=WAIT)


def collect(c: Client, n: int, timeout=WAIT):
    return [c.message(timeout=timeout, what=f"MESSAGE {i + 1} of {n}") for i in range(n)]


def publish(herald: Herald, destination: str, bodies, **headers):
    p = Client(herald)
    try:
        for i, b in enumerate(bodies):
            p.send(destination, b, receipt=(i == len(bodies) - 1), **headers)
    finally:
        p.close()


def config(data_dir: str | None, extra: str = "") -> str:
    text = build_config(data_dir or "@DATA_DIR@", extra=extra)
    if data_dir is None:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("data_dir")) + "\n"
    return text


@pytest.fixture
def servers():
    started: list[Herald] = []

    def make(data_dir=None, extra="", keep_dir=False) -> Herald:
        h = Herald(config(data_dir, extra))
        started.append(h)
        return h

    yield make
    for h in started:
        if h.proc.poll() is None:
            h.stop()


def test_offsets_increase_per_key_and_epochs_hold(herald, clients):
    k1, k2 = uid("k"), uid("k")
    sub = clients()
    sub.subscribe(f"/exchange/feed/{k1}")
    sub.subscribe(f"/exchange/project/{k2}")
    # A publisher's own stream headers are replaced by the server's.
    publish(herald, f"/exchange/feed/{k1}", ["a", "b", "c"], **{"x-stream-offset": "999", "x-stream-epoch": "fake"})
    publish(herald, f"/exchange/project/{k2}", ["x", "y"])
    got = collect(sub, 5)
    feed = [m for m in got if m.headers["destination"].startswith("/exchange/feed/")]
    proj = [m for m in got if m.headers["destination"].startswith("/exchange/project/")]
    assert [offset(m) for m in feed] == [1, 2, 3]
    assert [m.body for m in feed] == ["a", "b", "c"]
    assert [offset(m) for m in proj] == [1, 2]
    assert len({m.headers["x-stream-epoch"] for m in feed}) == 1
    assert feed[0].headers["x-stream-epoch"] != "fake" and len(feed[0].headers["x-stream-epoch"]) == 16
    assert feed[0].headers["x-stream-epoch"] != proj[0].headers["x-stream-epoch"], "each key its own epoch"
    # Other exchanges carry no offsets.
    sub.subscribe(f"/topic/{k1}")
    publish(herald, f"/topic/{k1}", ["t"])
    assert "x-stream-offset" not in sub.message().headers


def test_replay_then_live_with_concurrent_publishers(servers):
    """Three subscribers join at 20 %, 50 % and 80 % of a burst of two publishers
    (2 × 3000 messages to one key): each sees consecutive offsets from where it asked,
    up to the last, exactly once, though publishing never paused at the seam."""
    h = servers(extra="[history]\nsize = 10000\n")
    key = uid("hot")
    dest = f"/exchange/feed/{key}"
    per_publisher, publishers = 3000, 2
    total = per_publisher * publishers
    marks = {per_publisher * k // 10: threading.Event() for k in (2, 5, 8)}
    errors: list[BaseException] = []

    def pump(tag):
        try:
            p = Client(h)
            for i in range(per_publisher):
                p.conn.send(dest, f"{tag}-{i}")
                if i in marks:
                    marks[i].set()
                if i % 3 == 0:
                    time.sleep(0.001)  # a burst of a few seconds: SUBSCRIBEs land inside it
            p.send(dest, f"{tag}-done")  # with a receipt: everything before it is routed
            p.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            for m in marks.values():
                m.set()

    readers = [Client(h) for _ in marks]  # connected before: only the SUBSCRIBE lands in the burst
    threads = [threading.Thread(target=pump, args=(f"p{n}",)) for n in range(publishers)]
    subs = []

    def join(since, mark, c):
        try:
            assert mark.wait(WAIT)
            r = recover(c, dest, since)
            assert r.headers["x-recovered"] == "true", r.headers
            subs.append((since, c, int(r.headers["x-stream-offset"])))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    joiners = [threading.Thread(target=join, args=a) for a in zip(["first", 10, "next"], marks.values(), readers)]
    for t in joiners + threads:
        t.start()
    for t in joiners + threads:
        t.join(60)
    assert not errors, errors
    assert len(subs) == 3
    last = total + publishers  # the two "done" messages
    for since, c, top in subs:
        assert 0 < top < last, f"{since}: joined at offset {top}, not during the burst"
        start = {"first": 1, "next": top + 1}.get(since, since)
        got = collect(c, last - start + 1, timeout=30)
        offs = [offset(m) for m in got]
        bad = next(((a, b) for a, b in zip(offs, offs[1:]) if b != a + 1), None)
        assert offs == list(range(start, last + 1)), f"{since}: gap or duplicate at {bad}"
        assert len({m.headers["x-stream-epoch"] for m in got}) == 1
        # Per publisher, bodies arrive in the order they were sent.
        for tag in ("p0", "p1"):
            nums = [int(m.body.split("-")[1]) for m in got if m.body.startswith(tag + "-") and not m.body.endswith("done")]
            assert nums == sorted(nums)
        c.no_message(0.3)
        c.close()


def test_recovered_true_and_false(servers):
    h = servers(extra="[history]\nsize = 10\n")
    key = uid("r")
    dest = f"/exchange/project/{key}"
    publish(h, dest, [f"m{i}" for i in range(1, 21)])
    probe = Client(h)
    r = recover(probe, dest, "next")
    epoch, top = r.headers["x-stream-epoch"], int(r.headers["x-stream-offset"])
    assert (r.headers["x-recovered"], top) == ("true", 20)
    probe.no_message(0.2)
    probe.close()

    # Within the window: from 15 on, recovered.
    c = Client(h)
    r = recover(c, dest, 15, epoch)
    assert r.headers["x-recovered"] == "true"
    assert [offset(m) for m in collect(c, 6)] == [15, 16, 17, 18, 19, 20]
    c.no_message(0.2)
    c.close()
    # Caught up: nothing to replay, recovered.
    c = Client(h)
    assert recover(c, dest, 21, epoch).headers["x-recovered"] == "true"
    c.no_message(0.2)
    c.close()
    # Too old (only the last 10 are kept): not recovered, what is kept is delivered.
    c = Client(h)
    r = recover(c, dest, 5, epoch)
    assert r.headers["x-recovered"] == "false"
    assert [offset(m) for m in collect(c, 10)] == list(range(11, 21))
    c.no_message(0.2)
    c.close()
    # Another epoch: not recovered either.
    c = Client(h)
    r = recover(c, dest, 15, "0123456789abcdef")
    assert (r.headers["x-recovered"], r.headers["x-stream-epoch"]) == ("false", epoch)
    assert [offset(m) for m in collect(c, 10)] == list(range(11, 21))
    c.close()
    # `last` replays the last one; live ones follow.
    c = Client(h)
    assert recover(c, dest, "last").headers["x-recovered"] == "true"
    assert offset(c.message()) == 20
    publish(h, dest, ["live"])
    m = c.message()
    assert (offset(m), m.body) == (21, "live")
    c.close()


def test_recovered_false_after_the_ttl(servers):
    h = servers(extra="[history]\nttl_ms = 400\n")
    dest = f"/exchange/feed/{uid('t')}"
    publish(h, dest, ["a", "b", "c"])
    c = Client(h)
    r = recover(c, dest, "next")
    epoch = r.headers["x-stream-epoch"]
    c.close()
    time.sleep(0.8)
    c = Client(h)
    r = recover(c, dest, 2, epoch)
    assert (r.headers["x-recovered"], r.headers["x-stream-epoch"], r.headers["x-stream-offset"]) == ("false", epoch, "3")
    c.no_message(0.3)
    publish(h, dest, ["d"])
    assert offset(c.message()) == 4, "offsets go on after expiry"
    c.close()


def _epoch_and_top(h: Herald, dest: str):
    c = Client(h)
    r = recover(c, dest, "next")
    c.close()
    return r.headers["x-stream-epoch"], int(r.headers["x-stream-offset"])


def test_restart_without_data_dir_changes_the_epoch(servers):
    dest = "/exchange/feed/alice"
    h = servers(data_dir=None)
    publish(h, dest, ["a", "b"])
    epoch, top = _epoch_and_top(h, dest)
    assert top == 2
    h.stop()
    h2 = servers(data_dir=None)
    c = Client(h2)
    r = recover(c, dest, 3, epoch)
    assert r.headers["x-recovered"] == "false"
    assert r.headers["x-stream-epoch"] != epoch and r.headers["x-stream-offset"] == "0"
    c.close()


def test_restart_with_data_dir_keeps_the_epoch_unless_killed(servers):
    data = tempfile.mkdtemp(prefix="herald-history-")
    try:
        dest = "/exchange/project/p1"
        h = servers(data_dir=data)
        publish(h, dest, ["a", "b", "c"])
        epoch, top = _epoch_and_top(h, dest)
        assert top == 3
        assert h.stop() == 0
        h = servers(data_dir=data)
        c = Client(h)
        r = recover(c, dest, 2, epoch)
        assert (r.headers["x-recovered"], r.headers["x-stream-epoch"]) == ("true", epoch)
        got = collect(c, 2)
        assert [(offset(m), m.body, m.headers["x-stream-epoch"]) for m in got] == [(2, "b", epoch), (3, "c", epoch)]
        c.close()
        publish(h, dest, ["d"])
        h.proc.send_signal(signal.SIGKILL)
        h.proc.wait(5)
        h = servers(data_dir=data)
        c = Client(h)
        r = recover(c, dest, 4, epoch)
        assert r.headers["x-recovered"] == "false", "an unclean start changes the epoch"
        assert r.headers["x-stream-epoch"] != epoch
        c.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_permissions_are_those_of_subscribe(herald, clients):
    alice = clients(login="alice", passcode="secret")
    r = recover(alice, "/exchange/feed/alice", "first")
    assert r.headers["x-recovered"] == "true"
    eve = clients(login="eve", passcode="secret")
    eve.conn.subscribe("/exchange/feed/alice", "s1", headers={"x-stream-offset": "first"})
    assert "refused" in eve.error().body
    dave = clients(login="dave", passcode="secret")
    dave.conn.subscribe("/exchange/project/p1", "s1", headers={"x-stream-offset": "1"})
    assert "refused" in dave.error().body


@pytest.mark.parametrize(
    "destination,headers,expect",
    [
        ("/exchange/feed/guest", {"x-stream-offset": "abc"}, "invalid x-stream-offset"),
        ("/exchange/feed/guest", {"x-stream-offset": "-1"}, "invalid x-stream-offset"),
        ("/exchange/feed/guest", {"x-stream-offset": "1.5"}, "invalid x-stream-offset"),
        ("/exchange/feed/guest", {"x-stream-epoch": "abc"}, "x-stream-epoch needs an x-stream-offset"),
        ("/topic/news", {"x-stream-offset": "first"}, "x-stream-offset is for"),
        ("/exchange/amq.topic/x", {"x-stream-offset": "first"}, "x-stream-offset is for"),
        ("/exchange/feed/*", {"x-stream-offset": "first"}, "needs one routing key"),
        ("/exchange/feed/guest", {"x-stream-offset": "first", "durable": "true"}, "private subscription"),
    ],
)
def test_bad_values_get_an_error(herald, clients, destination, headers, expect):
    c = clients()
    c.conn.subscribe(destination, "s1", headers=headers)
    e = c.error()
    assert expect in e.body or expect in e.headers.get("message", ""), (e.headers, e.body)
