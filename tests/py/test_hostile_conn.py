"""Issue 19, finding 4 and part of 6: connections bounded in time and count.

Each test drives the `herald` binary over loopback as a hostile client would:
idle and slow-header HTTP connections, floods of connections that never log
in, forwarded addresses from trusted and untrusted peers, the PROXY protocol,
SockJS session hijacking and CORS. Loopback has 127.0.0.0/8, so "another
address" is 127.0.0.2, .3, ... (docs/security.md, "Connections").

HERALD_HOSTILE_FULL=1 runs the flood with 10,000 connections (the issue's
target) instead of 1,000.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.request

import pytest

from conftest import start_herald

TOKEN = "conn-test-token"
FULL = os.environ.get("HERALD_HOSTILE_FULL") == "1"


def connect_from(src: str, port: int, timeout: float = 3.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_within(s: socket.socket, limit: float) -> bool:
    """Whether the server closes `s` within `limit` seconds (what it sends first is skipped)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def read_all(s: socket.socket, limit: float = 3.0) -> bytes:
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def stomp_login(src: str, port: int, login="alice", passcode="secret", pre: bytes = b"") -> tuple[socket.socket, bytes]:
    s = connect_from(src, port)
    s.sendall(pre + f"CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\npasscode:{passcode}\n\n\0".encode())
    buf = b""
    deadline = time.monotonic() + 3
    while b"\0" not in buf and time.monotonic() < deadline:
        try:
            chunk = s.recv(4096)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        buf += chunk
    return s, buf


def http_response(s: socket.socket, request: bytes, limit: float = 3.0) -> bytes:
    """Sends `request` and reads one response with a content-length."""
    s.sendall(request)
    buf = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep and b"transfer-encoding: chunked" in head.lower():
            if body.endswith(b"0\r\n\r\n"):
                break
            continue
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            if len(body) >= length:
                break
    return buf


def headers_of(resp: bytes) -> dict[str, str]:
    head = resp.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    out = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        out[k.strip().lower()] = v.strip()
    return out


def status_of(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/") else 0


def admin_sessions(port: int) -> list[dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/sessions?per_page=100", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=3) as r:
        body = json.loads(r.read())
    return body["items"] if isinstance(body, dict) else body


def ws_stomp_login(src: str, port: int, extra_headers: str = "") -> socket.socket:
    """STOMP over Herald's /ws from `src`, logged in as alice."""
    s = connect_from(src, port)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n{extra_headers}\r\n"
        ).encode()
    )
    resp = b""
    while b"\r\n\r\n" not in resp:
        chunk = s.recv(4096)
        assert chunk, f"closed during the handshake: {resp!r}"
        resp += chunk
    assert status_of(resp) == 101, resp
    payload = b"CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\npasscode:secret\n\n\0"
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    got = b""
    deadline = time.monotonic() + 3
    while b"CONNECTED" not in got and time.monotonic() < deadline:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    assert b"CONNECTED" in got, got
    return s


def server(connections: str = "", http: str = "", admin: bool = False, limits: dict | None = None):
    """A Herald with these `[connections]` keys (and extra `[http]` keys, an admin listener)."""
    from conftest import Herald, build_config

    extra = ""
    if admin:
        extra += f'[admin]\nlisten = "127.0.0.1:0"\ntokens = ["{TOKEN}"]\n\n'
    if connections:
        extra += f"[connections]\n{connections}\n"
    text = build_config("@DATA_DIR@", limits=limits, extra=extra)
    if http:
        text = text.replace('[http]\nlisten = "127.0.0.1:0"', '[http]\nlisten = "127.0.0.1:0"\n' + http)
    return Herald(text)


def admin_port(h) -> int:
    return h.listeners["admin"][1]


# ---- deadlines ---------------------------------------------------------------


def test_plain_http_then_idle_is_closed_on_the_websocket_sockjs_port():
    """One plain request (handed to hyper), then nothing: closed after the idle deadline,
    max(connections.idle_timeout_ms, 2 x http.sockjs_heartbeat_ms)."""
    h = server("idle_timeout_ms = 600\nheader_timeout_ms = 1000", http="sockjs_heartbeat_ms = 300")
    try:
        s = connect_from("127.0.0.2", h.http_port)
        resp = http_response(s, b"GET /stomp/info HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(resp) == 200, resp
        assert closed_within(s, 5.0), "an idle keep-alive connection handed to hyper must be closed"
        # A connection that never sends a request is closed after the header deadline.
        s2 = connect_from("127.0.0.2", h.http_port)
        assert closed_within(s2, 5.0)
    finally:
        h.stop()


def test_slow_header_on_the_admin_listener_is_closed():
    """Slowloris on the admin listener: a header byte every 0.5 s never completes the head.
    With the default header deadline (10 s), so the base (no deadline) fails behaviourally."""
    h = server(admin=True)
    try:
        s = connect_from("127.0.0.2", admin_port(h))
        s.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n")
        deadline = time.monotonic() + 14
        closed = False
        while time.monotonic() < deadline:
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_within(s, 0.5):
                closed = True
                break
        assert closed, "a dripping request head must be cut off (connections.header_timeout_ms)"
    finally:
        h.stop()


def test_slow_header_on_the_front_server_gets_408():
    h = server("header_timeout_ms = 800")
    try:
        s = connect_from("127.0.0.2", h.http_port)
        s.sendall(b"GET /stomp/info HTTP/1.1\r\n")
        got = b""
        for _ in range(8):
            time.sleep(0.3)
            try:
                s.sendall(b"X-A: b\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        got = read_all(s, 3.0)
        assert status_of(got) == 408, got
    finally:
        h.stop()


# ---- counts ------------------------------------------------------------------


def test_connections_handed_to_hyper_count_against_max_connections():
    """Plain HTTP connections (SockJS info) take slots: with the node full, a STOMP login
    is refused. Base-compatible config: only [limits]."""
    h = start_herald(limits={"max_connections": 4})
    try:
        held = []
        for _ in range(4):
            s = connect_from("127.0.0.2", h.http_port)
            assert status_of(http_response(s, b"GET /stomp/info HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
            held.append(s)
        s, frame = stomp_login("127.0.0.3", h.stomp_port)
        assert not frame.startswith(b"CONNECTED"), f"the node is full, yet a login succeeded: {frame!r}"
        for x in held:
            x.close()
        time.sleep(0.3)
        s, frame = stomp_login("127.0.0.3", h.stomp_port)
        assert frame.startswith(b"CONNECTED"), frame
    finally:
        h.stop()


def test_per_ip_cap_is_answered():
    h = server("max_per_ip = 3")
    try:
        held = [connect_from("127.0.0.2", h.stomp_port) for _ in range(3)]
        time.sleep(0.2)
        s = connect_from("127.0.0.2", h.stomp_port)
        got = read_all(s, 2.0)
        assert got.startswith(b"ERROR\n") and b"connections.max_per_ip" in got, got
        # HTTP: 429 with the reason.
        hs = connect_from("127.0.0.2", h.http_port)
        resp = read_all(hs, 2.0)
        assert status_of(resp) == 429 and b"connections.max_per_ip" in resp, resp
        # Another address is not affected.
        _, frame = stomp_login("127.0.0.3", h.stomp_port)
        assert frame.startswith(b"CONNECTED"), frame
        for x in held:
            x.close()
    finally:
        h.stop()


def test_logged_in_connections_do_not_count_as_unauthenticated():
    h = server("max_unauthenticated_per_ip = 2")
    try:
        logged = []
        for _ in range(4):
            s, frame = stomp_login("127.0.0.2", h.stomp_port)
            assert frame.startswith(b"CONNECTED"), frame
            logged.append(s)
        idle = [connect_from("127.0.0.2", h.stomp_port) for _ in range(2)]
        time.sleep(0.2)
        s = connect_from("127.0.0.2", h.stomp_port)
        got = read_all(s, 2.0)
        assert b"connections.max_unauthenticated_per_ip" in got, got
        for x in logged + idle:
            x.close()
    finally:
        h.stop()


def test_an_unauthenticated_flood_from_one_address_does_not_stop_logins_from_another():
    n = 10_000 if FULL else 1_000
    h = server("max_unauthenticated_per_ip = 100\nmax_per_ip = 2000", limits={"connect_timeout_ms": 60_000})
    flood = []
    try:
        for i in range(n):
            port = h.stomp_port if i % 2 == 0 else h.http_port
            try:
                s = connect_from("127.0.0.2", port, timeout=2)
                # Half of them drip: one byte of a frame or a request head, never finished.
                s.sendall(b"C" if port == h.stomp_port else b"G")
                flood.append(s)
            except OSError:
                pass
        t0 = time.monotonic()
        s, frame = stomp_login("127.0.0.3", h.stomp_port)
        assert frame.startswith(b"CONNECTED"), frame
        assert time.monotonic() - t0 < 1.0, "a login from another address completes in < 1 s during the flood"
        s.close()
        # XMPP-style check over HTTP: another address still gets an answer.
        hs = connect_from("127.0.0.3", h.http_port)
        assert status_of(http_response(hs, b"GET /stomp/info HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
        assert h.proc.poll() is None
    finally:
        for s in flood:
            s.close()
        h.stop()


# ---- trusted proxies -----------------------------------------------------------


def test_forwarded_for_is_used_only_from_trusted_proxies():
    h = server('trusted_proxies = ["127.0.0.2"]', admin=True)
    try:
        a = ws_stomp_login("127.0.0.2", h.http_port, "X-Forwarded-For: 198.51.100.4\r\n")
        b = ws_stomp_login("127.0.0.3", h.http_port, "X-Forwarded-For: 198.51.100.5\r\n")
        time.sleep(0.2)
        peers = sorted(s["peer"].rsplit(":", 1)[0] for s in admin_sessions(admin_port(h)))
        assert "198.51.100.4" in peers, peers
        assert "127.0.0.3" in peers and "198.51.100.5" not in peers, f"an untrusted peer's header is ignored: {peers}"
        a.close()
        b.close()
    finally:
        h.stop()


def test_proxy_protocol_v1_on_a_configured_tcp_listener():
    h = server('trusted_proxies = ["127.0.0.2"]\nproxy_protocol = ["stomp-tcp"]', admin=True)
    try:
        s, frame = stomp_login("127.0.0.2", h.stomp_port, pre=b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 61613\r\n")
        assert frame.startswith(b"CONNECTED"), frame
        # An untrusted peer's PROXY line is not believed: it is a bad frame.
        u, bad = stomp_login("127.0.0.3", h.stomp_port, pre=b"PROXY TCP4 192.0.2.8 127.0.0.1 5555 61613\r\n")
        assert not bad.startswith(b"CONNECTED"), bad
        time.sleep(0.2)
        peers = [x["peer"] for x in admin_sessions(admin_port(h))]
        assert "192.0.2.7:5555" in peers, peers
        assert not any(p.startswith("192.0.2.8") for p in peers), peers
        s.close()
    finally:
        h.stop()


# ---- SockJS sessions and CORS -------------------------------------------------


def test_sockjs_session_cannot_be_driven_from_another_address():
    h = start_herald()
    try:
        sid = "s" + os.urandom(6).hex()
        owner = connect_from("127.0.0.2", h.http_port)
        resp = http_response(owner, f"POST /stomp/000/{sid}/xhr HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        assert status_of(resp) == 200 and b"\r\no\n" in resp, resp
        body = b'["CONNECT\\naccept-version:1.2\\nlogin:alice\\npasscode:secret\\n\\n\\u0000"]'
        thief = connect_from("127.0.0.3", h.http_port)
        resp = http_response(
            thief,
            f"POST /stomp/000/{sid}/xhr_send HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body,
        )
        assert status_of(resp) == 404, f"another address must not send on the session: {resp!r}"
        resp = http_response(thief, f"POST /stomp/000/{sid}/xhr HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        assert status_of(resp) == 404, f"another address must not receive from the session: {resp!r}"
        # The owner still can.
        resp = http_response(
            owner,
            f"POST /stomp/000/{sid}/xhr_send HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body,
        )
        assert status_of(resp) == 204, resp
    finally:
        h.stop()


def test_cors_without_credentials_by_default():
    h = start_herald()
    try:
        s = connect_from("127.0.0.2", h.http_port)
        resp = http_response(s, b"OPTIONS /stomp/info HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\n\r\n")
        hd = headers_of(resp)
        assert "access-control-allow-credentials" not in hd, hd
        assert hd.get("access-control-allow-origin") == "*", hd
        resp = http_response(s, b"GET /stomp/info HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\r\n")
        assert "access-control-allow-credentials" not in headers_of(resp), resp
    finally:
        h.stop()


def test_cors_allow_list_and_credentials_when_configured():
    h = server('cors_origins = ["https://app.example"]\ncors_credentials = true')
    try:
        s = connect_from("127.0.0.2", h.http_port)
        resp = http_response(s, b"GET /stomp/info HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n")
        hd = headers_of(resp)
        assert hd.get("access-control-allow-origin") == "https://app.example" and hd.get("access-control-allow-credentials") == "true", hd
        # A WebSocket upgrade from another origin is refused.
        w = connect_from("127.0.0.2", h.http_port)
        key = base64.b64encode(os.urandom(16)).decode()
        resp = http_response(
            w,
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n\r\n".encode(),
        )
        assert status_of(resp) == 403, resp
        # SockJS requests from another origin too.
        resp = http_response(s, b"POST /stomp/000/abc/xhr HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nContent-Length: 0\r\n\r\n")
        assert status_of(resp) == 403, resp
    finally:
        h.stop()
