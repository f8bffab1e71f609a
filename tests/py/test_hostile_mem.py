"""Issue 19, finding 5: memory bounded in bytes, not counts (docs/security.md, "Memory").

Each test fails on the base binary (before the byte budgets) and passes on this one:
- a slow consumer of 512 KiB messages is cut off by bytes, and the server's RSS stays bounded;
- a queue of ~1 MB messages holds at most its x-max-length-bytes (drop-head), reject-publish refuses;
- a transaction over limits.max_transaction_bytes gets an ERROR;
- declaring more queues than limits.max_queues_per_user gets "queue limit reached", and the admin
  DELETE /api/queues/{vhost}/{name} route frees room (401 without a token, 404 when gone);
- the memory alarm refuses STOMP and XMPP publishes above limits.memory_high_watermark and lets
  them through again once the held bytes fall.

Floods are small (tens of MB) so the suite runs in seconds; HERALD_HOSTILE_FULL=1 floods 10x more.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from admin_util import Api, Spec
from conftest import RawStomp, uid
from xmpp_util import Xmpp, c2s_port, run, xmpp_extra

FULL = os.environ.get("HERALD_HOSTILE_FULL") == "1"
TOKEN = "hostile-mem-token"
ADMIN = f'[admin]\nlisten = "127.0.0.1:0"\ntokens = ["{TOKEN}"]\n'


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def connected(port: int, login="guest", passcode="guest") -> RawStomp:
    c = RawStomp(port)
    f = c.connect(login=login, passcode=passcode)
    assert f.command == "CONNECTED", f
    return c


def send_with_receipt(c: RawStomp, dest: str, body: bytes, **headers) -> None:
    c.send("SEND", {"destination": dest, "receipt": "r", **headers}, body)


def receipts_or_error(c: RawStomp, n: int, timeout=10.0):
    """The next n frames must be RECEIPTs; returns the first non-RECEIPT instead (an ERROR)."""
    for _ in range(n):
        f = c.next(timeout)
        if f.command != "RECEIPT":
            return f
    return None


def test_slow_consumer_is_cut_off_by_bytes_and_rss_stays_bounded(herald_factory):
    h = herald_factory()
    pid = h.proc.pid
    # The slow consumer subscribes, then never reads: a small receive buffer so the server's
    # writes block early and the backlog builds in the server, not in the kernel.
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    slow.connect(("127.0.0.1", h.stomp_port))
    slow.settimeout(5)
    slow.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0")
    slow.sendall(b"SUBSCRIBE\nid:0\ndestination:/topic/flood\nreceipt:sub\n\n\0")
    got = b""
    while b"RECEIPT" not in got:
        got += slow.recv(4096)
    pub = connected(h.stomp_port)
    time.sleep(0.2)
    base = peak = rss(pid)
    body = b"x" * (512 * 1024)
    n = 1600 if FULL else 160  # 800 MB / 80 MB
    for i in range(n):
        pub.send("SEND", {"destination": "/topic/flood", "seq": str(i)}, body)
        if i % 8 == 0:
            peak = max(peak, rss(pid))
    send_with_receipt(pub, "/topic/other", b"done")
    assert pub.expect("RECEIPT", timeout=30)
    peak = max(peak, rss(pid))
    # The slow client reads what was written before the cut, then EOF.
    slow.settimeout(3)
    read = b""
    closed = False
    try:
        while True:
            d = slow.recv(1 << 20)
            if not d:
                closed = True
                break
            read += d
    except (socket.timeout, ConnectionResetError):
        closed = False
    slow.close()
    grew = peak - base
    budget = 16 << 20  # limits.outbound_bytes default
    assert closed, f"the slow consumer was not cut off (read {len(read)} bytes, RSS grew {grew >> 20} MiB)"
    assert len(read) < n * len(body) // 2, f"the slow consumer got {len(read)} bytes: most of the flood"
    if b"ERROR" in read:
        err = read[read.index(b"ERROR") :]
        assert b"slow consumer" in err and b"bytes" in err, err[:400]
    assert grew < budget + (24 << 20), f"RSS grew {grew >> 20} MiB under a {n // 2} MiB flood (budget 16 MiB)"
    pub.close()


def test_queue_of_large_messages_holds_at_most_its_byte_limit(herald_factory):
    h = herald_factory()
    c = connected(h.stomp_port)
    q = f"/queue/{uid('big')}"
    body = b"m" * 1_000_000
    for i in range(6):
        send_with_receipt(c, q, body, **{"x-max-length-bytes": "3000000", "seq": str(i)})
    assert receipts_or_error(c, 6) is None
    c.send("SUBSCRIBE", {"id": "s", "destination": q})
    seqs = []
    while True:
        try:
            f = c.next(1.5)
        except AssertionError:
            break
        assert f.command == "MESSAGE", f
        seqs.append(f.headers.get("seq"))
    # drop-head: the newest that fit in 3,000,000 bytes stay.
    assert seqs == ["4", "5"], seqs

    r = f"/queue/{uid('rej')}"
    args = {"x-max-length": "2", "x-overflow": "reject-publish"}
    send_with_receipt(c, r, b"1", **args)
    send_with_receipt(c, r, b"2", **args)
    assert receipts_or_error(c, 2) is None
    send_with_receipt(c, r, b"3", **args)
    f = c.next(5)
    assert f.command == "ERROR", f
    assert f.headers.get("message") == "queue full", f
    assert b"reject-publish" in f.body, f
    c.close()


def test_transaction_over_its_byte_limit_gets_error(herald_factory):
    h = herald_factory()
    c = connected(h.stomp_port)
    c.send("BEGIN", {"transaction": "t"})
    body = b"t" * 1_000_000
    # 17 MB against the 16 MiB default: the 17th SEND is the one refused. Nothing
    # is sent after it, so the server closes on read-out bytes and the ERROR is
    # not lost to a reset (more SENDs raced the close: a broken pipe here).
    for _ in range(17):
        c.send("SEND", {"destination": "/topic/tx", "transaction": "t"}, body)
    f = c.next(10)
    assert f.command == "ERROR", f"a 17 MB transaction was buffered: {f}"
    assert f.headers.get("message") == "transaction too large", f
    assert b"max_transaction_bytes" in f.body, f
    c.wait_closed(5)
    c.close()


def test_queue_limit_per_user_and_admin_delete(herald_factory):
    h = herald_factory(extra=ADMIN)
    api = Api(h.listeners["admin"][1], TOKEN, Spec.load())
    c = connected(h.stomp_port, "alice", "secret")
    prefix = uid("q")
    # limits.max_queues_per_user = 1000 durable queues; the 1001st is refused.
    for i in range(1000):
        c.send("SEND", {"destination": f"/queue/{prefix}-{i}"}, b"")
    send_with_receipt(c, f"/queue/{prefix}-last", b"")
    f = c.next(15)
    assert f.command == "ERROR", f"queue 1001 was declared: {f}"
    assert f.headers.get("message") == "queue limit reached", f
    assert b"max_queues_per_user" in f.body, f
    c.close()

    path = f"/api/queues/%2F/{prefix}-7"
    r = api.request("DELETE", path, token=None)
    assert r.status == 401, r
    r = api.request("DELETE", path)
    assert r.status == 204, r
    assert r.body == b"", r
    r = api.request("DELETE", path)
    assert r.status == 404, r
    assert r.json["error"] == "not_found", r.json
    # The user has room for one more queue again.
    c = connected(h.stomp_port, "alice", "secret")
    send_with_receipt(c, f"/queue/{prefix}-again", b"")
    assert c.next(5).command == "RECEIPT"
    c.close()


def test_memory_alarm_refuses_publishes_until_memory_falls(herald_factory):
    h = herald_factory(limits={"memory_high_watermark": 2_000_000, "memory_check_interval_ms": 50}, extra=xmpp_extra("off"))
    c = connected(h.stomp_port)
    q = f"/queue/{uid('fill')}"
    for _ in range(3):
        send_with_receipt(c, q, b"f" * 1_000_000)
    assert receipts_or_error(c, 3) is None
    time.sleep(0.3)
    send_with_receipt(c, "/topic/x", b"small")
    f = c.next(5)
    assert f.command == "ERROR", f"published above the watermark: {f}"
    assert f.headers.get("message") == "memory alarm: node above its high watermark, publishing refused", f
    c.wait_closed(5)

    async def xmpp_refused():
        a = await Xmpp(c2s_port(h), "alice", plaintext=True).start()
        mid = a.chat("alice@localhost", "hi")
        m = await a.message(lambda m: m["id"] == mid and m["type"] == "error", what="error reply")
        assert m["error"]["condition"] == "resource-constraint", m
        await a.disconnect(1.0)

    run(xmpp_refused())

    # A consumer empties the queue: the held bytes fall, publishing resumes.
    d = connected(h.stomp_port)
    d.send("SUBSCRIBE", {"id": "s", "destination": q})
    for _ in range(3):
        assert d.expect("MESSAGE", timeout=5)
    time.sleep(0.3)
    p = connected(h.stomp_port)
    send_with_receipt(p, "/topic/x", b"small")
    assert p.next(5).command == "RECEIPT"
    for x in (d, p):
        x.close()
