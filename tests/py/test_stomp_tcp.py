"""stomp.py over Herald's STOMP TCP listener, for STOMP 1.0, 1.1 and 1.2 (RabbitMQ STOMP semantics)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import Client, RawStomp, build_config, herald_bin, assert_binary, uid, USERS

VERSIONS = ["1.0", "1.1", "1.2"]
# STOMP 1.0 has no client-individual mode; its 'client' mode with one message in flight is equivalent.
INDIVIDUAL = {"1.0": "client", "1.1": "client-individual", "1.2": "client-individual"}


@pytest.fixture(params=VERSIONS)
def version(request):
    return request.param


# ---------------------------------------------------------------------------
# connect / subscribe / receive


def test_connect_negotiates_version(clients, version):
    c = clients(version)
    f = c.connected_frame
    assert f.cmd == "CONNECTED"
    if version == "1.0":
        assert f.headers.get("version", "1.0") == "1.0"
    else:
        assert f.headers["version"] == version


def test_connect_without_host_header_uses_default_vhost(raw):
    r = raw()
    r.send("CONNECT", {"accept-version": "1.2", "login": "guest", "passcode": "guest"})
    f = r.next(5, "CONNECTED")
    assert f.command == "CONNECTED", f
    assert f.headers["version"] == "1.2"


def test_subscribe_and_receive_exchange_destination(clients, version):
    # A user reads her own feed; a contact (p1) writes to it ([access], docs/security.md).
    sub = clients(version, login="alice", passcode="secret")
    pub = clients(version, login="bob", passcode="secret")
    dest = "/exchange/feed/alice"
    sub_id = sub.subscribe(dest)
    pub.send("/exchange/feed/carol", "for carol only")
    body = "hello alice ünïcode ✓"
    pub.send(dest, body, **{"content-type": "text/plain", "x-trace-id": "t-1"})
    m = sub.message()
    assert m.body == body
    assert m.headers["destination"] == dest
    assert m.headers["subscription"] == sub_id
    assert m.headers["message-id"]
    assert m.headers["redelivered"] == "false"
    assert m.headers["content-length"] == str(len(body.encode()))
    assert m.headers["content-type"] == "text/plain"
    assert m.headers["x-trace-id"] == "t-1"
    sub.no_message(0.4, "message for another routing key")


def test_queue_and_amq_queue_name_the_same_queue(clients, version):
    c = clients(version)
    name = uid("q")
    c.send(f"/queue/{name}", "queued before any consumer")  # SEND creates /queue/ queues
    c.subscribe(f"/amq/queue/{name}")
    m = c.message()
    assert m.body == "queued before any consumer"


def test_amq_queue_missing_is_an_error(clients, version):
    c = clients(version)
    name = uid("missing")
    if version == "1.0":
        c.conn.subscribe(f"/amq/queue/{name}", id="s1")
    else:
        c.conn.subscribe(f"/amq/queue/{name}", "s1")
    err = c.error(5, "ERROR for SUBSCRIBE /amq/queue/<missing>")
    assert err.headers.get("message"), err.headers
    c.wait_disconnected(5, "server to close after ERROR")


# ---------------------------------------------------------------------------
# receipts


def test_receipts_on_every_frame_kind(raw, version):
    r = raw()
    assert r.connect(accept_version=version).command == "CONNECTED"
    dest = f"/queue/{uid('rcpt')}"
    id_hdr = "id"
    r.send("SUBSCRIBE", {"destination": dest, id_hdr: "s1", "ack": "client", "receipt": "r1"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "r1"
    r.send("SEND", {"destination": dest, "receipt": "r2"}, b"x")
    frames = [r.next(), r.next()]
    rc = [f for f in frames if f.command == "RECEIPT"]
    msg = [f for f in frames if f.command == "MESSAGE"]
    assert rc and rc[0].headers["receipt-id"] == "r2", frames
    assert msg and msg[0].body == b"x", frames
    m = msg[0]
    if version == "1.2":
        ack_headers = {"id": m.headers["ack"]}
    elif version == "1.1":
        ack_headers = {"message-id": m.headers["message-id"], "subscription": "s1"}
    else:
        ack_headers = {"message-id": m.headers["message-id"]}
    r.send("ACK", dict(ack_headers, receipt="r3"))
    assert r.expect("RECEIPT").headers["receipt-id"] == "r3"
    r.send("BEGIN", {"transaction": "t1", "receipt": "r4"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "r4"
    r.send("ABORT", {"transaction": "t1", "receipt": "r5"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "r5"
    r.send("UNSUBSCRIBE", {id_hdr: "s1", "receipt": "r6"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "r6"
    r.send("DISCONNECT", {"receipt": "r7"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "r7"
    r.wait_closed(3, "server to close after the DISCONNECT receipt")


# ---------------------------------------------------------------------------
# acks, nacks, redelivery


def test_unacked_message_is_redelivered_after_disconnect(herald, clients, version):
    pub = clients(version)
    dest = f"/queue/{uid('redeliver')}"
    c1 = clients(version)
    c1.subscribe(dest, ack=INDIVIDUAL[version])
    pub.send(dest, "m1")
    m = c1.message()
    assert m.body == "m1" and m.headers["redelivered"] == "false"
    if version == "1.2":
        assert m.headers.get("ack"), "STOMP 1.2 MESSAGE in a non-auto ack mode carries an ack header"
    c1.close()
    c2 = clients(version)
    c2.subscribe(dest, ack=INDIVIDUAL[version])
    again = c2.message(what="redelivery to the next consumer")
    assert again.body == "m1"
    assert again.headers["redelivered"] == "true"
    c2.ack(again)
    c2.no_message(0.5, "delivery after ACK")


def test_acked_message_is_not_redelivered(clients, version):
    pub = clients(version)
    dest = f"/queue/{uid('acked')}"
    c1 = clients(version)
    c1.subscribe(dest, ack=INDIVIDUAL[version])
    pub.send(dest, "m1")
    c1.ack(c1.message())
    c1.close()
    c2 = clients(version)
    c2.subscribe(dest, ack=INDIVIDUAL[version])
    c2.no_message(0.7, "redelivery of an acked message")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_requeue(clients, version):
    pub = clients(version)
    c = clients(version)
    dest = f"/queue/{uid('nack')}"
    c.subscribe(dest, ack="client-individual")
    pub.send(dest, "m1")
    m = c.message()
    assert m.headers["redelivered"] == "false"
    c.nack(m)  # requeue defaults to true
    again = c.message(what="redelivery after NACK")
    assert again.body == "m1"
    assert again.headers["redelivered"] == "true"
    c.nack(again, requeue="false")
    c.no_message(0.7, "redelivery after NACK requeue:false")
    pub.send(dest, "m2")
    m2 = c.message()
    assert m2.body == "m2"
    c.ack(m2)


def test_client_ack_is_cumulative(clients, version):
    pub = clients(version)
    dest = f"/queue/{uid('cumul')}"
    c1 = clients(version)
    c1.subscribe(dest, ack="client")
    for b in ("a", "b", "c"):
        pub.send(dest, b)
    ms = [c1.message() for _ in range(3)]
    assert [m.body for m in ms] == ["a", "b", "c"]
    c1.ack(ms[1])  # acknowledges a and b
    c1.close()
    c2 = clients(version)
    c2.subscribe(dest, ack=INDIVIDUAL[version])
    r = c2.message(what="redelivery of c")
    assert r.body == "c" and r.headers["redelivered"] == "true"
    c2.ack(r)
    c2.no_message(0.5, "redelivery of a cumulatively acked message")


def test_prefetch_count_limits_unacked_messages(clients, version):
    pub = clients(version)
    c = clients(version)
    dest = f"/queue/{uid('prefetch')}"
    c.subscribe(dest, ack=INDIVIDUAL[version], **{"prefetch-count": "1"})
    for b in ("p1", "p2", "p3"):
        pub.send(dest, b)
    m1 = c.message()
    assert m1.body == "p1"
    c.no_message(0.8, "a second message while the first is unacked (prefetch-count:1)")
    c.ack(m1)
    m2 = c.message(what="p2 after acking p1")
    assert m2.body == "p2"
    c.no_message(0.5, "p3 while p2 is unacked")
    c.ack(m2)
    m3 = c.message(what="p3 after acking p2")
    assert m3.body == "p3"
    c.ack(m3)


# ---------------------------------------------------------------------------
# transactions


# (RabbitMQ answers receipts of transactional frames only when the transaction is committed,
# so transactional SEND/ACK frames here carry no receipt; COMMIT/ABORT do.)
def test_transaction_commit_delivers_and_abort_discards(clients, version):
    sub = clients(version)
    pub = clients(version)
    dest = f"/exchange/feed/{uid('tx')}"
    sub.subscribe(dest)
    tx = pub.begin()
    pub.send(dest, "tx-1", receipt=False, transaction=tx)
    pub.send(dest, "tx-2", receipt=False, transaction=tx)
    sub.no_message(0.5, "MESSAGE before COMMIT")
    pub.commit(tx)
    assert [sub.message().body, sub.message().body] == ["tx-1", "tx-2"]
    tx2 = pub.begin()
    pub.send(dest, "aborted", receipt=False, transaction=tx2)
    pub.abort(tx2)
    pub.send(dest, "control")
    assert sub.message().body == "control"
    sub.no_message(0.4, "MESSAGE from an aborted transaction")


def test_transaction_covers_ack(clients, version):
    pub = clients(version)
    dest = f"/queue/{uid('txack')}"
    c1 = clients(version)
    c1.subscribe(dest, ack=INDIVIDUAL[version])
    pub.send(dest, "m")
    m = c1.message()
    tx = c1.begin()
    c1.ack(m, receipt=False, transaction=tx)
    c1.abort(tx)  # the ACK is discarded with the transaction
    c1.close()
    c2 = clients(version)
    c2.subscribe(dest, ack=INDIVIDUAL[version])
    m2 = c2.message(what="redelivery: an aborted ACK must not acknowledge")
    assert m2.body == "m" and m2.headers["redelivered"] == "true"
    tx2 = c2.begin()
    c2.ack(m2, receipt=False, transaction=tx2)
    c2.commit(tx2)
    c2.close()
    c3 = clients(version)
    c3.subscribe(dest, ack=INDIVIDUAL[version])
    c3.no_message(0.7, "redelivery after a committed ACK")


# ---------------------------------------------------------------------------
# routing


def test_topic_wildcards(clients, version):
    sub = clients(version)
    pub = clients(version)
    star = sub.subscribe("/topic/a.*.c")
    hash_ = sub.subscribe("/topic/a.#")
    keys = ["a.b.c", "a.b.b.c", "a.c", "a", "a.b", "b.a.c", "a.xyz.c", "x.a.b"]
    for k in keys:
        pub.send(f"/topic/{k}", k)
    got = {star: [], hash_: []}
    for _ in range(8):
        m = sub.message()
        got[m.headers["subscription"]].append(m.body)
        if m.body == "a.b.c":
            assert m.headers["destination"] == "/topic/a.b.c"
    sub.no_message(0.4, "extra wildcard match")
    assert got[star] == ["a.b.c", "a.xyz.c"]
    assert got[hash_] == ["a.b.c", "a.b.b.c", "a.c", "a", "a.b", "a.xyz.c"]


def test_shared_work_queue_round_robin(clients, version):
    w1 = clients(version, login="alice", passcode="secret")
    w2 = clients(version, login="bob", passcode="secret")
    boss = clients(version, login="carol", passcode="secret")
    dest = f"/queue/{uid('jobs')}"
    w1.subscribe(dest)
    w2.subscribe(dest)
    n = 10
    for i in range(n):
        boss.send(dest, f"job-{i}")
    g1 = [w1.message(what=f"worker1 job {i}").body for i in range(n // 2)]
    g2 = [w2.message(what=f"worker2 job {i}").body for i in range(n // 2)]
    w1.no_message(0.3, "more than half of the jobs on worker1")
    w2.no_message(0.1, "more than half of the jobs on worker2")
    assert sorted(g1 + g2) == sorted(f"job-{i}" for i in range(n))
    assert len({int(b.split("-")[1]) % 2 for b in g1}) == 1, f"not round-robin: {g1} / {g2}"


def test_temp_queue_reply_to(clients, version):
    requester = clients(version, login="alice", passcode="secret")
    responder = clients(version, login="bob", passcode="secret")
    service = f"/queue/{uid('rpc')}"
    responder.subscribe(service)
    requester.send(service, "what time is it?", **{"reply-to": "/temp-queue/answers"})
    req = responder.message(what="request on the service queue")
    assert req.body == "what time is it?"
    reply_to = req.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/"), f"reply-to not rewritten: {reply_to!r}"
    responder.send(reply_to, "noon")
    rep = requester.message(what="reply on the temp queue")
    assert rep.body == "noon"
    # a second round-trip over the same temp queue
    requester.send(service, "again?", **{"reply-to": "/temp-queue/answers"})
    req2 = responder.message()
    assert req2.headers["reply-to"] == reply_to, "the same temp-queue name maps to the same reply queue"
    responder.send(req2.headers["reply-to"], "yes")
    assert requester.message().body == "yes"


# ---------------------------------------------------------------------------
# header escaping


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_header_escaping_round_trip(clients, version):
    sub = clients(version)
    pub = clients(version)
    dest = f"/exchange/feed/{uid('esc')}"
    sub.subscribe(dest)
    weird = "a:b\nc\\d:e"
    pub.send(dest, "x", **{"x-weird": weird, "x-url": "http://h:80/p"})
    m = sub.message()
    assert m.headers["x-weird"] == weird
    assert m.headers["x-url"] == "http://h:80/p"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_header_escaping_on_the_wire(raw, version):
    r = raw()
    assert r.connect(accept_version=version).command == "CONNECTED"
    dest = f"/exchange/feed/{uid('escw')}"
    r.send("SUBSCRIBE", {"destination": dest, "id": "s", "receipt": "r"})
    r.expect("RECEIPT")
    # escaped as the spec requires: ':' → \c, '\n' → \n, '\\' → \\
    r.send("SEND", [("destination", dest), ("x-weird", "a\\cb\\nc\\\\d")], b"x")
    m = r.expect("MESSAGE")
    raw_val = dict(m.raw_headers)["x-weird"]
    assert raw_val == "a\\cb\\nc\\\\d", f"wire value {raw_val!r}"
    assert m.headers["x-weird"] == "a:b\nc\\d"


def test_stomp10_header_values_keep_colons(clients):
    sub = clients("1.0")
    pub = clients("1.0")
    dest = f"/exchange/feed/{uid('esc10')}"
    sub.subscribe(dest)
    pub.send(dest, "x", **{"x-url": "http://h:80/p"})
    assert sub.message().headers["x-url"] == "http://h:80/p"


# ---------------------------------------------------------------------------
# heart-beats


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_heartbeats_negotiated_and_kept_alive(clients, version):
    c = clients(version, heartbeats=(1000, 1000))
    assert c.connected_frame.headers["heart-beat"] == "1000,1000"
    dest = f"/exchange/feed/{uid('hb')}"
    c.subscribe(dest)
    time.sleep(3.0)
    assert c.rec.heartbeats >= 1, "no heart-beat received from the server in 3s at 1000ms"
    assert c.rec.heartbeat_timeouts == 0
    assert not c.rec.disconnected.is_set()
    c.send(dest, "alive")
    assert c.message().body == "alive"


def test_silent_client_is_disconnected(raw):
    silent = raw()
    f = silent.connect(heart_beat="1000,0")
    assert f.headers["heart-beat"] == "0,1000"
    t0 = time.monotonic()
    silent.wait_closed(6, "server to drop a client silent for > 2×1000ms")
    assert silent.closed_at - t0 >= 1.5, f"closed after {silent.closed_at - t0:.2f}s: must tolerate 2× the interval"


# ---------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("login,passcode", [("alice", "wrong"), ("mallory", "secret")])
def test_bad_login(herald, version, login, passcode):
    c = Client(herald, version, login=login, passcode=passcode, connect=False)
    try:
        c.connect(expect_error=True)
        err = c.error(5, "ERROR for a bad login")
        assert err.headers["message"] == "Bad CONNECT"
        assert err.body.rstrip("\n") == f"Access refused for user '{login}'"
        c.wait_disconnected(5, "server to close after Bad CONNECT")
        assert c.rec.connected_frames.empty()
    finally:
        c.close()


def test_oversized_frame_errors_and_other_sessions_are_unaffected(clients, version):
    bystander = clients(version)
    dest = f"/exchange/feed/{uid('big')}"
    bystander.subscribe(dest)
    bad = clients(version)
    try:
        bad.conn.send(dest, "x" * (1048576 + 4096))  # default max_frame_bytes: 1 MiB
    except OSError:
        pass  # the server may stop reading and close as soon as it has seen 1 MiB; the ERROR must still arrive
    err = bad.error(5, "ERROR for an oversized frame")
    assert "frame larger than" in err.headers.get("message", ""), err.headers
    bad.wait_disconnected(5)
    bystander.no_message(0.3, "the oversized message must not be routed")
    other = clients(version)
    other.send(dest, "still here")
    assert bystander.message().body == "still here"
    assert not bystander.rec.disconnected.is_set()


def test_configured_max_frame_bytes(herald_factory):
    h = herald_factory(limits={"max_frame_bytes": 65536})
    r = RawStomp(h.stomp_port)
    try:
        assert r.connect().command == "CONNECTED"
        dest = f"/exchange/feed/{uid('lim')}"
        r.send("SUBSCRIBE", {"destination": dest, "id": "s", "receipt": "r"})
        r.expect("RECEIPT")
        r.send("SEND", {"destination": dest}, b"y" * (40 * 1024))
        assert len(r.expect("MESSAGE").body) == 40 * 1024
        r.send("SEND", {"destination": dest}, b"z" * (100 * 1024))
        err = r.expect("ERROR")
        assert "frame larger than" in err.headers.get("message", "")
        r.wait_closed(3)
    finally:
        r.close()


def test_error_in_one_session_does_not_affect_another(clients, version):
    good = clients(version)
    dest = f"/exchange/feed/{uid('iso')}"
    good.subscribe(dest)
    bad = clients(version)
    bad.conn.send_frame("BOGUS", {"x": "y"})
    err = bad.error(5, "ERROR for an unknown command")
    assert err.headers.get("message")
    bad.wait_disconnected(5)
    good.send(dest, "unaffected")
    assert good.message().body == "unaffected"


# ---------------------------------------------------------------------------
# process behaviour


def test_unknown_config_key_fails_startup():
    binary = assert_binary()
    with tempfile.TemporaryDirectory(prefix="herald-badcfg-") as d:
        text = build_config(os.path.join(d, "data"), stomp_extra='listn = "127.0.0.1:0"')
        path = os.path.join(d, "bad.toml")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([binary, "--config", path], capture_output=True, text=True, timeout=15)
    assert p.returncode != 0, f"herald accepted an unknown key; stdout={p.stdout!r}"
    assert "listn" in p.stderr, f"stderr does not name the key: {p.stderr!r}"
    assert "herald: ready" not in p.stdout


def test_sigterm_stops_the_server(herald_factory):
    h = herald_factory()
    r = RawStomp(h.stomp_port)
    assert r.connect().command == "CONNECTED"
    t0 = time.monotonic()
    h.proc.terminate()
    try:
        h.proc.wait(5)
    except subprocess.TimeoutExpired:
        raise AssertionError("herald did not exit within 5s of SIGTERM")
    r.wait_closed(2, "client connection to close on shutdown")
    assert time.monotonic() - t0 < 5
    r.close()


# ---------------------------------------------------------------------------
# fan-out and the built-in exchanges


def test_every_subscriber_of_a_topic_gets_a_copy(clients, version):
    # p1's members all read project/p1 ([access]: members only); guest is the suite's administrator.
    subs = [clients(version, login=u, passcode="secret") for u in ("alice", "bob", "carol")]
    pub = clients(version)
    for s in subs:
        s.subscribe("/exchange/project/p1")
        s.subscribe("/topic/news.sport")
    pub.send("/exchange/project/p1", "to p1")
    pub.send("/topic/news.sport", "goal")
    for s in subs:
        got = sorted([s.message().body, s.message().body])
        assert got == ["goal", "to p1"]
        s.no_message(0.2, "duplicate delivery")


@pytest.mark.parametrize(
    "sub_dest,send_dest,match",
    [
        ("/exchange/amq.direct/k1", "/exchange/amq.direct/k1", True),
        ("/exchange/amq.direct/k1", "/exchange/amq.direct/k2", False),
        ("/exchange/amq.fanout/ignored", "/exchange/amq.fanout/any.key", True),
        ("/exchange/amq.topic/a.*", "/exchange/amq.topic/a.b", True),
        ("/exchange/amq.topic/a.*", "/topic/a.b", True),  # /topic/ is amq.topic
        ("/exchange/project/p1", "/exchange/project/p1", True),
        ("/exchange/project/p1", "/exchange/project/p2", False),
        ("/exchange/presence/#", "/exchange/presence/alice.online", True),
    ],
)
def test_builtin_exchanges(clients, sub_dest, send_dest, match):
    sub = clients("1.2")
    pub = clients("1.2")
    sub.subscribe(sub_dest)
    pub.send(send_dest, "ping")
    if match:
        m = sub.message(what=f"{send_dest} → {sub_dest}")
        assert m.body == "ping"
    else:
        sub.no_message(0.5, f"{send_dest} must not reach {sub_dest}")


def test_missing_exchange_is_an_error(clients):
    c = clients("1.2")
    c.conn.subscribe(f"/exchange/{uid('nope')}/k", "s1")
    err = c.error(5, "ERROR for SUBSCRIBE to a missing exchange")
    assert err.headers.get("message")
    c.wait_disconnected(5)


@pytest.mark.parametrize(
    "frame",
    [
        ("SEND", {}),  # no destination
        ("SUBSCRIBE", {"id": "s"}),  # no destination
        ("SEND", {"destination": "/nonsense/x"}),  # unknown destination kind
        ("COMMIT", {"transaction": "never-begun"}),
    ],
    ids=["send-no-destination", "subscribe-no-destination", "bad-destination", "unknown-transaction"],
)
def test_protocol_errors_send_error_and_close(raw, frame):
    r = raw()
    assert r.connect().command == "CONNECTED"
    cmd, headers = frame
    r.send(cmd, headers, b"x" if cmd == "SEND" else b"")
    err = r.expect("ERROR", 5)
    assert err.headers.get("message"), err
    r.wait_closed(3, "server to close after ERROR")


# ---------------------------------------------------------------------------
# framing over TCP


def test_binary_body_with_nuls_over_tcp(raw):
    r = raw()
    assert r.connect().command == "CONNECTED"
    dest = f"/exchange/feed/{uid('bin')}"
    r.send("SUBSCRIBE", {"destination": dest, "id": "s", "receipt": "r"})
    r.expect("RECEIPT")
    body = bytes(range(256)) * 4 + b"\x00\x00end\x00"
    r.send("SEND", {"destination": dest, "content-type": "application/octet-stream"}, body)
    m = r.expect("MESSAGE")
    assert m.body == body
    assert m.headers["content-length"] == str(len(body))


def test_large_body_under_the_limit(clients):
    sub = clients("1.2")
    pub = clients("1.2")
    dest = f"/queue/{uid('large')}"
    sub.subscribe(dest)
    body = "L" * (900 * 1024)
    pub.send(dest, body)
    m = sub.message(5)
    assert len(m.body) == len(body) and m.body == body


def test_frames_split_across_writes_and_pipelined(raw):
    r = raw()
    assert r.connect().command == "CONNECTED"
    dest = f"/exchange/feed/{uid('split')}"
    # three frames in one write
    r.send_raw(
        b"SUBSCRIBE\nid:s\ndestination:" + dest.encode() + b"\nreceipt:r1\n\n\x00"
        b"SEND\ndestination:" + dest.encode() + b"\n\none\x00\n"
        b"SEND\ndestination:" + dest.encode() + b"\ncontent-length:3\n\ntwo\x00"
    )
    got = [r.next(), r.next(), r.next()]
    assert [f.command for f in got] == ["RECEIPT", "MESSAGE", "MESSAGE"], got
    assert [f.body for f in got[1:]] == [b"one", b"two"]
    # one frame dribbled out in small pieces
    frame = b"SEND\ndestination:" + dest.encode() + b"\ncontent-length:5\n\nthree\x00"
    for i in range(0, len(frame), 7):
        r.send_raw(frame[i : i + 7])
        time.sleep(0.01)
    m = r.expect("MESSAGE")
    assert m.body == b"three"


def test_stomp12_crlf_line_endings(raw):
    r = raw()
    r.send_raw(b"CONNECT\r\naccept-version:1.2\r\nhost:/\r\nlogin:guest\r\npasscode:guest\r\n\r\n\x00")
    f = r.expect("CONNECTED", 5)
    assert f.headers["version"] == "1.2"
    dest = f"/exchange/feed/{uid('crlf')}"
    r.send_raw(b"SUBSCRIBE\r\nid:s\r\ndestination:" + dest.encode() + b"\r\nreceipt:r\r\n\r\n\x00")
    assert r.expect("RECEIPT").headers["receipt-id"] == "r"
    r.send_raw(b"SEND\r\ndestination:" + dest.encode() + b"\r\n\r\ncrlf body\x00")
    assert r.expect("MESSAGE").body == b"crlf body"


def test_connect_without_accept_version_is_stomp10(raw):
    r = raw()
    r.send("CONNECT", {"login": "guest", "passcode": "guest"})
    f = r.expect("CONNECTED", 5)
    assert f.headers.get("version", "1.0") == "1.0"


def test_no_common_version_is_an_error(raw):
    r = raw()
    r.send("CONNECT", {"accept-version": "2.0", "host": "/", "login": "guest", "passcode": "guest"})
    f = r.expect("ERROR", 5)
    assert f.headers.get("message")
    r.wait_closed(3)


# ---------------------------------------------------------------------------
# configured limits


def test_connect_timeout(herald_factory):
    h = herald_factory(limits={"connect_timeout_ms": 500})
    r = RawStomp(h.stomp_port)
    t0 = time.monotonic()
    try:
        r.wait_closed(4, "server to close a connection that never sends CONNECT")
        assert r.closed_at - t0 >= 0.3
    finally:
        r.close()
    # a client that connects in time is not affected
    ok = RawStomp(h.stomp_port)
    try:
        assert ok.connect().command == "CONNECTED"
        time.sleep(1.0)
        assert not ok.closed.is_set()
    finally:
        ok.close()


def test_max_subscriptions(herald_factory):
    h = herald_factory(limits={"max_subscriptions": 2})
    r = RawStomp(h.stomp_port)
    try:
        assert r.connect().command == "CONNECTED"
        for i in (1, 2):
            r.send("SUBSCRIBE", {"id": f"s{i}", "destination": f"/topic/t{i}", "receipt": f"r{i}"})
            assert r.expect("RECEIPT").headers["receipt-id"] == f"r{i}"
        r.send("SUBSCRIBE", {"id": "s3", "destination": "/topic/t3", "receipt": "r3"})
        err = r.expect("ERROR")
        assert err.headers.get("message")
        r.wait_closed(3)
    finally:
        r.close()


@pytest.mark.parametrize("limit,headers", [
    ({"max_headers": 8}, [(f"x-h{i}", "v") for i in range(20)]),
    ({"max_header_bytes": 256}, [("x-long", "v" * 1000)]),
])
def test_header_limits(herald_factory, limit, headers):
    h = herald_factory(limits=limit)
    r = RawStomp(h.stomp_port)
    try:
        assert r.connect().command == "CONNECTED"
        r.send("SEND", [("destination", "/topic/limits")] + headers, b"x")
        err = r.expect("ERROR")
        assert err.headers.get("message")
        r.wait_closed(3)
    finally:
        r.close()


# ---------------------------------------------------------------------------
# interoperability details


def test_stomp_py_default_host_header_is_refused_as_rabbitmq_does(herald):
    # stomp.py 1.2 sends `host:<server host name>` unless told a vhost. RabbitMQ 3.10 refuses it
    # (ERROR message:Bad CONNECT, body `Virtual host '127.0.0.1' access denied`), and so does
    # Herald since issue 18 (it used to fall back to the default vhost): pass vhost="/".
    import stomp

    conn = stomp.Connection12([("127.0.0.1", herald.stomp_port)], reconnect_attempts_max=1)
    rec = __import__("conftest").Recorder()
    conn.set_listener("rec", rec)
    try:
        conn.connect("guest", "guest", wait=False)
        f = rec.errors.get(timeout=5)
        assert f.headers["message"] == "Bad CONNECT", f.headers
        assert f.body == "Virtual host '127.0.0.1' access denied", f.body
        assert rec.connected_frames.empty()
    finally:
        conn.disconnect()
    ok = stomp.Connection12([("127.0.0.1", herald.stomp_port)], reconnect_attempts_max=1, vhost="/")
    rec = __import__("conftest").Recorder()
    ok.set_listener("rec", rec)
    try:
        ok.connect("guest", "guest", wait=False)
        assert rec.connected_frames.get(timeout=5).headers["version"] == "1.2"
    finally:
        ok.disconnect()


def test_header_escaping_follows_each_session_version(raw):
    sub10 = raw()
    assert sub10.connect(accept_version="1.0").command == "CONNECTED"
    pub12 = raw()
    assert pub12.connect(accept_version="1.2").command == "CONNECTED"
    dest = f"/exchange/feed/{uid('xver')}"
    sub10.send("SUBSCRIBE", {"destination": dest, "id": "s", "receipt": "r"})
    sub10.expect("RECEIPT")
    pub12.send("SEND", [("destination", dest), ("x-url", "http\\c//h\\c80/")], b"x")  # 1.2: ':' escaped
    m = sub10.expect("MESSAGE")
    assert dict(m.raw_headers)["x-url"] == "http://h:80/", "a STOMP 1.0 session gets unescaped header values"


def test_pipelined_messages_arrive_in_order(clients, version):
    sub = clients(version)
    pub = clients(version)
    dest = f"/queue/{uid('order')}"
    sub.subscribe(dest)
    n = 300
    for i in range(n):
        pub.send(dest, f"m{i}", receipt=False)
    pub.send(dest, "last")
    got = [sub.message(5).body for _ in range(n + 1)]
    assert got == [f"m{i}" for i in range(n)] + ["last"]


def test_slow_consumer_is_closed_and_others_are_unaffected(herald_factory):
    import socket as _socket

    h = herald_factory(limits={"outbound_queue": 50})
    # a consumer that subscribes and then never reads
    slow = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    slow.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 4096)
    slow.settimeout(5)
    slow.connect(("127.0.0.1", h.stomp_port))
    from conftest import encode_frame

    # bob (slow), alice (fast) and carol (publisher) are p1's members: all may use project/p1 ([access]).
    dest = "/exchange/project/p1"
    slow.sendall(encode_frame("CONNECT", {"accept-version": "1.2", "host": "/", "login": "bob", "passcode": "secret"}))
    slow.sendall(encode_frame("SUBSCRIBE", {"destination": dest, "id": "s", "receipt": "r"}))
    first = b""
    while b"receipt-id:r" not in first:
        first += slow.recv(4096)
    fast = RawStomp(h.stomp_port)
    pub = RawStomp(h.stomp_port)
    try:
        assert fast.connect(login="alice", passcode="secret").command == "CONNECTED"
        fast.send("SUBSCRIBE", {"destination": dest, "id": "s", "receipt": "r"})
        fast.expect("RECEIPT")
        assert pub.connect(login="carol", passcode="secret").command == "CONNECTED"
        n, body = 500, b"z" * (16 * 1024)
        # The fast consumer reads while the publisher sends (a consumer that
        # keeps up). A RECEIPT only says the engine routed the message, not that
        # the reader has taken it, so the publisher also waits for the reader to
        # be within `lead` messages: its outbox then stays well under the limit
        # however busy the machine is, while the slow one's fills.
        import threading

        seqs, reader_error, progress, lead = [], [], threading.Condition(), 10

        def read_fast():
            try:
                for _ in range(n):
                    seq = int(fast.expect("MESSAGE", 10).headers["seq"])
                    with progress:
                        seqs.append(seq)
                        progress.notify_all()
            except Exception as e:  # reported below, with the test's assertion
                reader_error.append(e)
            with progress:
                progress.notify_all()

        reader = threading.Thread(target=read_fast, daemon=True)
        reader.start()
        for i in range(n):
            with progress:
                caught_up = progress.wait_for(lambda: len(seqs) >= i - lead or reader_error, 10)
            assert caught_up and not reader_error, f"the fast consumer stopped at {len(seqs)}: {reader_error!r}"
            pub.send("SEND", {"destination": dest, "seq": str(i), "receipt": f"p{i}"}, body)
            pub.expect("RECEIPT", 5)
        reader.join(30)
        assert not reader_error, f"the fast consumer failed: {reader_error[0]!r}"
        assert seqs == list(range(n)), "the fast consumer must get every message in order"
        # the slow consumer was cut off: draining it ends in EOF with fewer than n messages
        got, deadline = b"", time.monotonic() + 10
        slow.settimeout(1)
        while time.monotonic() < deadline:
            try:
                d = slow.recv(1 << 20)
            except _socket.timeout:
                continue
            except OSError:
                break
            if not d:
                break
            got += d
        else:
            raise AssertionError("the slow consumer was never closed")
        assert got.count(b"MESSAGE\n") < n
    finally:
        slow.close()
        fast.close()
        pub.close()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_in_client_mode_is_cumulative(clients, version):
    # RabbitMQ: in ack:client mode NACK, like ACK, covers every earlier unacked message
    pub = clients(version)
    c = clients(version)
    dest = f"/queue/{uid('cnack')}"
    c.subscribe(dest, ack="client")
    for b in ("a", "b", "c"):
        pub.send(dest, b)
    ms = [c.message() for _ in range(3)]
    assert [m.body for m in ms] == ["a", "b", "c"]
    c.nack(ms[1])  # requeues a and b, not c
    again = sorted(c.message(what="redelivery after cumulative NACK").body for _ in range(2))
    assert again == ["a", "b"]
    c.no_message(0.5, "c must stay unacked, not be redelivered")


def test_duplicate_subscription_id_is_an_error(raw):
    r = raw()
    assert r.connect().command == "CONNECTED"
    r.send("SUBSCRIBE", {"id": "dup", "destination": "/topic/one", "receipt": "r1"})
    r.expect("RECEIPT")
    r.send("SUBSCRIBE", {"id": "dup", "destination": "/topic/two", "receipt": "r2"})
    err = r.expect("ERROR", 5)
    assert err.headers.get("message")
    r.wait_closed(3)


# ---------------------------------------------------------------------------
# RabbitMQ 3.10's answers (issue 18). Each expectation below was observed against
# rabbitmq-server 3.10.8 (Debian) with rabbitmq_stomp, over raw sockets; the RabbitMQ
# frame is quoted in the comment. Where Herald closes after an ERROR, RabbitMQ keeps
# the connection for the "error" answers (Herald's close-on-ERROR is kept, README).


def _msg_id(f):
    return f.headers.get("ack") or f.headers["message-id"]


def _sub_with(r, dest, ack, n=1, sub_id="s1", version="1.2"):
    for i in range(n):
        r.send("SEND", {"destination": dest}, f"m{i}".encode())
    headers = {"destination": dest, "ack": ack, "receipt": "sub"}
    if sub_id is not None:
        headers["id"] = sub_id
    r.send("SUBSCRIBE", headers)
    assert r.expect("RECEIPT").headers["receipt-id"] == "sub"
    return [r.expect("MESSAGE") for _ in range(n)]


@pytest.mark.parametrize(
    "requeue, redelivered",
    # RabbitMQ reads true/false and True/False (rabbit_stomp_frame:boolean_header);
    # anything else is absent, and NACK requeues by default.
    [("False", False), ("false", False), ("True", True), ("FALSE", True), ("garbage", True), (None, True)],
)
def test_nack_requeue_spellings_follow_rabbitmq(raw, requeue, redelivered):
    r = raw()
    assert r.connect().command == "CONNECTED"
    dest = f"/queue/{uid('rq')}"
    (m,) = _sub_with(r, dest, "client-individual")
    headers = {"id": _msg_id(m), "receipt": "n"}
    if requeue is not None:
        headers["requeue"] = requeue
    r.send("NACK", headers)
    assert r.expect("RECEIPT").headers["receipt-id"] == "n"
    if redelivered:
        again = r.expect("MESSAGE")
        assert again.body == b"m0" and again.headers["redelivered"] == "true"
    else:
        with pytest.raises(AssertionError):
            r.next(0.6, "no redelivery after requeue:" + str(requeue))


def test_stomp_py_nack_requeue_false_drops_the_message(clients):
    # stomp.py renders requeue=False as `requeue:False`; RabbitMQ drops the message.
    pub, c = clients("1.2"), clients("1.2")
    dest = f"/queue/{uid('rqpy')}"
    c.subscribe(dest, ack="client-individual")
    pub.send(dest, "m1")
    c.nack(c.message(), requeue=False)
    c.no_message(0.7, "redelivery after NACK requeue=False")


def _error(r, message, body):
    f = r.expect("ERROR")
    assert (f.headers["message"], f.body.decode()) == (message, body), f
    return f


def test_ack_answers_follow_rabbitmq(raw):
    # Unknown delivery tag → RabbitMQ: ERROR message:precondition_failed,
    # body `PRECONDITION_FAILED - unknown delivery tag 99` (the channel closes, so does the connection).
    r = raw()
    r.connect()
    (m,) = _sub_with(r, f"/queue/{uid('ack')}", "client-individual")
    assert re.fullmatch(r"T_s1@@session-[^@]+@@1", _msg_id(m)), m
    r.send("ACK", {"id": _msg_id(m).rsplit("@@", 1)[0] + "@@99"})
    _error(r, "precondition_failed", "PRECONDITION_FAILED - unknown delivery tag 99")
    r.wait_closed(3)

    # Acked twice → the same answer for tag 1.
    r = raw()
    r.connect()
    (m,) = _sub_with(r, f"/queue/{uid('ack')}", "client-individual")
    r.send("ACK", {"id": _msg_id(m), "receipt": "a1"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "a1"
    r.send("ACK", {"id": _msg_id(m)})
    _error(r, "precondition_failed", "PRECONDITION_FAILED - unknown delivery tag 1")

    # ACK on an `ack:auto` subscription: nothing to acknowledge, the same answer.
    r = raw()
    r.connect()
    (m,) = _sub_with(r, f"/queue/{uid('ack')}", "auto")
    r.send("ACK", {"id": m.headers["message-id"]})
    _error(r, "precondition_failed", "PRECONDITION_FAILED - unknown delivery tag 1")

    # `client` mode is cumulative: acking 2 acknowledged 1 too.
    r = raw()
    r.connect()
    ms = _sub_with(r, f"/queue/{uid('ack')}", "client", n=3)
    r.send("ACK", {"id": _msg_id(ms[1]), "receipt": "a2"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "a2"
    r.send("ACK", {"id": _msg_id(ms[0])})
    _error(r, "precondition_failed", "PRECONDITION_FAILED - unknown delivery tag 1")


@pytest.mark.parametrize(
    "headers, message, body",
    [
        # ERROR message:Subscription not found, body `Message with id "T_nosuch@@session-…@@1" has no subscription`
        ({"id": "T_nosuch@@session-x@@1"}, "Subscription not found", 'Message with id "T_nosuch@@session-x@@1" has no subscription'),
        # ERROR message:Invalid header, body `"ACK" must include a valid "id" header\n`
        ({"id": "garbage"}, "Invalid header", '"ACK" must include a valid "id" header\n'),
        # ERROR message:Missing header, body `"ACK" must include the "id" header\n`
        ({}, "Missing header", '"ACK" must include the "id" header\n'),
    ],
)
def test_ack_of_a_bad_id_follows_rabbitmq(raw, headers, message, body):
    r = raw()
    r.connect()
    _sub_with(r, f"/queue/{uid('ackbad')}", "client-individual")
    r.send("ACK", headers)
    _error(r, message, body)


def test_missing_ack_header_is_named_per_version(raw):
    # 1.0/1.1 acknowledge by `message-id`: `"NACK" must include the "message-id" header\n`.
    r = raw()
    r.connect(accept_version="1.1")
    r.send("NACK", {"subscription": "s1"})
    _error(r, "Missing header", '"NACK" must include the "message-id" header\n')


def test_send_receipts_in_a_transaction_come_at_commit(raw):
    # RabbitMQ: no RECEIPT for a transactional SEND until COMMIT; then the COMMIT's
    # receipt and the SENDs' receipts (RabbitMQ writes the MESSAGEs of a subscriber on
    # the same connection before the SEND receipts, Herald after: order across kinds
    # is not compared).
    r = raw()
    r.connect()
    dest = f"/queue/{uid('txr')}"
    r.send("SUBSCRIBE", {"destination": dest, "id": "s"})
    r.send("BEGIN", {"transaction": "t1", "receipt": "b"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "b"
    r.send("SEND", {"destination": dest, "transaction": "t1", "receipt": "s1"}, b"x1")
    r.send("SEND", {"destination": dest, "transaction": "t1", "receipt": "s2"}, b"x2")
    with pytest.raises(AssertionError):
        r.next(0.6, "nothing before COMMIT")
    r.send("COMMIT", {"transaction": "t1", "receipt": "c"})
    frames = [r.next() for _ in range(5)]
    receipts = [f.headers["receipt-id"] for f in frames if f.command == "RECEIPT"]
    assert receipts == ["c", "s1", "s2"], frames
    assert [f.body for f in frames if f.command == "MESSAGE"] == [b"x1", b"x2"], frames


def test_abort_drops_send_receipts_and_ack_receipts_are_immediate(raw):
    # RabbitMQ: an aborted SEND is never receipted; ACK/NACK in a transaction are receipted at once.
    r = raw()
    r.connect()
    dest = f"/queue/{uid('txa')}"
    (m,) = _sub_with(r, dest, "client-individual")
    r.send("BEGIN", {"transaction": "t1"})
    r.send("SEND", {"destination": dest, "transaction": "t1", "receipt": "s1"}, b"x")
    r.send("ACK", {"id": _msg_id(m), "transaction": "t1", "receipt": "a1"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "a1"
    r.send("ABORT", {"transaction": "t1", "receipt": "ab"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "ab"
    # The aborted ACK did not acknowledge: acking now succeeds.
    r.send("ACK", {"id": _msg_id(m), "receipt": "a2"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "a2"
    with pytest.raises(AssertionError):
        r.next(0.5, "no receipt or message of the aborted SEND")


@pytest.mark.parametrize(
    "command, headers, message, body",
    [
        # ERROR message:Bad transaction, body `Invalid transaction identifier: "nope"\n`
        ("COMMIT", {"transaction": "nope"}, "Bad transaction", 'Invalid transaction identifier: "nope"\n'),
        ("ABORT", {"transaction": "nope"}, "Bad transaction", 'Invalid transaction identifier: "nope"\n'),
        ("SEND", {"transaction": "nope", "destination": "/queue/x"}, "Bad transaction", 'Invalid transaction identifier: "nope"\n'),
        # ERROR message:Missing transaction, body `"BEGIN" must include a 'transaction' header\n`
        ("BEGIN", {}, "Missing transaction", "\"BEGIN\" must include a 'transaction' header\n"),
        ("COMMIT", {}, "Missing transaction", "\"COMMIT\" must include a 'transaction' header\n"),
        ("ABORT", {}, "Missing transaction", "\"ABORT\" must include a 'transaction' header\n"),
    ],
)
def test_transaction_errors_follow_rabbitmq(raw, command, headers, message, body):
    r = raw()
    r.connect()
    r.send(command, headers)
    _error(r, message, body)


def test_begin_of_an_open_transaction_starts_it_afresh(raw):
    # RabbitMQ: a second BEGIN t1 is receipted, no ERROR, and drops what t1 held.
    r = raw()
    r.connect()
    dest = f"/queue/{uid('txb')}"
    r.send("BEGIN", {"transaction": "t1"})
    r.send("SEND", {"destination": dest, "transaction": "t1"}, b"first")
    r.send("BEGIN", {"transaction": "t1", "receipt": "b2"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "b2"
    r.send("SEND", {"destination": dest, "transaction": "t1"}, b"second")
    r.send("COMMIT", {"transaction": "t1", "receipt": "c"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "c"
    r.send("SUBSCRIBE", {"destination": dest, "id": "s"})
    assert r.expect("MESSAGE").body == b"second"
    with pytest.raises(AssertionError):
        r.next(0.5, "the message dropped by the second BEGIN")


@pytest.mark.parametrize("version", ["1.0", "1.2"])
def test_subscribe_without_id_is_named_by_its_destination(raw, version):
    # RabbitMQ (any version): consumer tag Q_<destination>; MESSAGE has no `subscription`,
    # message-id `Q_/queue/…@@session-…@@1`; ACK takes it; UNSUBSCRIBE names the destination.
    r = raw()
    r.connect(accept_version=version)
    dest = f"/queue/{uid('noid')}"
    (m,) = _sub_with(r, dest, "client", sub_id=None)
    assert "subscription" not in m.headers, m
    assert re.fullmatch(rf"Q_{re.escape(dest)}@@session-[^@]+@@1", m.headers["message-id"]), m
    r.send("ACK", {("id" if version == "1.2" else "message-id"): _msg_id(m), "receipt": "a"})
    assert r.expect("RECEIPT").headers["receipt-id"] == "a"
    r.send("UNSUBSCRIBE", {"id": dest, "receipt": "u0"})
    # An `id` is not a destination: ERROR message:No subscription found, body
    # `UNSUBSCRIBE must refer to an existing subscription.\nSubscription to "id='<dest>'" not found.\n`
    _error(
        r,
        "No subscription found",
        f"UNSUBSCRIBE must refer to an existing subscription.\nSubscription to \"id='{dest}'\" not found.\n",
    )
    r2 = raw()
    r2.connect(accept_version=version)
    _sub_with(r2, dest, "auto", n=0, sub_id=None)
    r2.send("UNSUBSCRIBE", {"destination": dest, "receipt": "u"})
    assert r2.expect("RECEIPT").headers["receipt-id"] == "u"
    r2.send("UNSUBSCRIBE", {"receipt": "u2"})
    # ERROR message:Missing destination or id, body `UNSUBSCRIBE must include a 'destination' or 'id' header`
    _error(r2, "Missing destination or id", "UNSUBSCRIBE must include a 'destination' or 'id' header")


@pytest.mark.parametrize("command", ["SUBSCRIBE", "UNSUBSCRIBE"])
@pytest.mark.parametrize("flag", ["durable", "persistent"])
def test_durable_without_id_is_refused_as_rabbitmq_does(raw, command, flag):
    # ERROR message:Missing Header, body `Header 'id' is required for durable subscriptions`
    r = raw()
    r.connect()
    r.send(command, {"destination": f"/topic/{uid('dur')}", flag: "true"})
    _error(r, "Missing Header", "Header 'id' is required for durable subscriptions")


@pytest.mark.parametrize("flag, value", [("persistent", "true"), ("durable", "true"), ("persistent", "True"), (None, None)])
def test_unsubscribe_with_durable_or_persistent_deletes_the_durable_topic_queue(raw, flag, value):
    # RabbitMQ: a durable topic subscription (id, durable:true, auto-delete:false) keeps
    # messages while away; UNSUBSCRIBE with durable:true or the legacy persistent:true
    # (true or True) deletes its queue, a plain UNSUBSCRIBE keeps it.
    dest = f"/topic/{uid('durq')}"
    sub = {"destination": dest, "id": "d1", "durable": "true", "auto-delete": "false", "receipt": "s"}
    a = raw()
    a.connect()
    a.send("SUBSCRIBE", sub)
    assert a.expect("RECEIPT").headers["receipt-id"] == "s"
    a.send("DISCONNECT", {"receipt": "bye"})
    a.expect("RECEIPT")
    pub = raw()
    pub.connect()
    pub.send("SEND", {"destination": dest, "receipt": "p1"}, b"while-away")
    pub.expect("RECEIPT")
    b = raw()
    b.connect()
    b.send("SUBSCRIBE", sub)
    b.expect("RECEIPT")
    assert b.expect("MESSAGE").body == b"while-away"
    unsub = {"id": "d1", "receipt": "u"}
    if flag:
        unsub[flag] = value
    b.send("UNSUBSCRIBE", unsub)
    assert b.expect("RECEIPT").headers["receipt-id"] == "u"
    pub.send("SEND", {"destination": dest, "receipt": "p2"}, b"after-unsubscribe")
    pub.expect("RECEIPT")
    c = raw()
    c.connect()
    c.send("SUBSCRIBE", sub)
    c.expect("RECEIPT")
    if flag:
        with pytest.raises(AssertionError):
            c.next(0.6, "a message kept by a deleted queue")
    else:
        assert c.expect("MESSAGE").body == b"after-unsubscribe"


def test_unsubscribe_durable_never_deletes_a_named_queue(raw):
    # RabbitMQ deletes durable subscription queues of /topic/ only: an unacked message of a
    # /queue/ survives `UNSUBSCRIBE durable:true` and is redelivered to the next consumer
    # (observed: MESSAGE redelivered:true body `kept`).
    dest = f"/queue/{uid('keep')}"
    a = raw()
    a.connect()
    _sub_with(a, dest, "client", n=1, sub_id="q1")
    a.send("UNSUBSCRIBE", {"id": "q1", "durable": "true", "receipt": "u"})
    assert a.expect("RECEIPT").headers["receipt-id"] == "u"
    a.send("DISCONNECT", {"receipt": "d"})
    a.expect("RECEIPT")
    b = raw()
    b.connect()
    b.send("SUBSCRIBE", {"destination": dest, "id": "q2"})
    m = b.expect("MESSAGE")
    assert (m.body, m.headers["redelivered"]) == (b"m0", "true"), m


@pytest.mark.parametrize("host", ["nosuch", "localhost", ""])
def test_unknown_vhost_is_refused_as_rabbitmq_does(raw, host):
    # ERROR message:Bad CONNECT, body `Virtual host 'nosuch' access denied` (RabbitMQ checks
    # the vhost first: the same answer with a wrong password).
    for passcode in ("guest", "wrong"):
        r = raw()
        f = r.connect(host=host, passcode=passcode)
        assert (f.command, f.headers["message"], f.body.decode()) == (
            "ERROR",
            "Bad CONNECT",
            f"Virtual host '{host}' access denied",
        ), f
        r.wait_closed(3)


def test_websocket_subprotocol_is_the_highest_version_offered(herald):
    # RabbitMQ Web-STOMP (cowboy): `v10.stomp, v11.stomp` → v11.stomp; `v12.stomp` → v12.stomp;
    # `stomp`, `foo` or nothing → 101 without Sec-WebSocket-Protocol.
    cases = [
        ("v10.stomp, v11.stomp", "v11.stomp"),
        ("v10.stomp,v12.stomp,v11.stomp", "v12.stomp"),
        ("v13.stomp, v11.stomp", "v11.stomp"),
        ("v12.stomp", "v12.stomp"),
        ("stomp", None),
        ("foo", None),
        (None, None),
    ]
    for offer, chosen in cases:
        s = socket.create_connection(("127.0.0.1", herald.http_port), timeout=5)
        req = (
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        if offer is not None:
            req += f"Sec-WebSocket-Protocol: {offer}\r\n"
        s.sendall((req + "\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(4096)
            assert d, head
            head += d
        s.close()
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), (offer, lines)
        got = [l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("sec-websocket-protocol:")]
        assert got == ([chosen] if chosen else []), (offer, lines)


def test_a_16_mib_send_passes_with_max_frame_bytes_raised(herald_factory):
    # RabbitMQ 3.10 takes a 16 MiB SEND (observed: MESSAGE content-length:16777216, then the
    # RECEIPT). Herald's default (1 MiB) refuses it on purpose (docs/security.md, "Memory");
    # with limits.max_frame_bytes = 18 MiB, as docs/config.md says, it goes through whole.
    n = 16 * 1024 * 1024
    h = herald_factory(limits={"max_frame_bytes": 18 * 1024 * 1024})
    r = RawStomp(h.stomp_port)
    try:
        r.connect()
        dest = f"/queue/{uid('big')}"
        r.send("SUBSCRIBE", {"destination": dest, "id": "s", "receipt": "sub"})
        r.expect("RECEIPT")
        r.send("SEND", {"destination": dest, "receipt": "big"}, b"x" * n)
        got = [r.next(30, "the 16 MiB MESSAGE and its RECEIPT") for _ in range(2)]
        assert {f.command for f in got} == {"MESSAGE", "RECEIPT"}, [f.command for f in got]
        m = next(f for f in got if f.command == "MESSAGE")
        assert len(m.body) == n and m.headers["content-length"] == str(n)
    finally:
        r.close()
