"""Issue 19, item 4, against the real peer: the client address behind a real nginx.

Browsers reach BOSH and WebSocket through a reverse proxy. Herald takes the
client's address from `X-Forwarded-For` / `Forwarded` only when the TCP peer
is in `connections.trusted_proxies`, and uses it for the per-address caps,
the auth sources and the admin API's session `peer` (docs/security.md,
"Connections"). test_hostile_conn.py checks that with hand-written headers;
this file puts Debian's nginx (1.22, started unprivileged in a temp prefix)
in front of Herald, with the usual proxy configuration:

- one server block sets `X-Forwarded-For $proxy_add_x_forwarded_for`, the
  other `Forwarded: for="$remote_addr:$remote_port"`;
- `/http-bind` (BOSH) and `/xmpp-websocket` go to the XMPP HTTP listener,
  `/ws` (STOMP over WebSocket) and `/stomp` (SockJS) to the STOMP HTTP
  listener, WebSockets with the `Upgrade` / `Connection` headers.

Clients connect to nginx from their own loopback addresses (127.0.0.7,
127.0.0.8); nginx connects to Herald from 127.0.0.1. The address Herald saw
is read from the admin API (`GET /api/sessions`, `peer`) and from an
`[auth.http]` backend (rabbitmq-auth-backend-http protocol) in this process
that records the `ip` of each question.

nginx is a dependency (tests/services/install.sh installs it); a missing
nginx fails these tests, it never skips them.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import USERS, Herald, build_config
from xmpp_util import xmpp_extra

TOKEN = "proxy-test-token"
CLIENT = "127.0.0.7"  # the browser behind the proxy
OTHER = "127.0.0.8"  # another browser behind the same proxy
PROXY = "127.0.0.1"  # nginx's address as Herald sees it
SPOOF = "203.0.113.9"  # what a client claims in its own headers

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
PASSWORDS = {u["name"]: u["password"] for u in USERS}


# ---- nginx -------------------------------------------------------------------


def nginx_bin() -> str:
    path = os.environ.get("HERALD_NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"nginx not found ({path}): these tests need a real nginx in front of Herald. "
            "Install it: sudo bash tests/services/install.sh (apt-get install nginx). Never skipped.",
            pytrace=False,
        )
    return path


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _location(path: str, upstream: int, forward: str, websocket: bool) -> str:
    # proxy_set_header in a location replaces every inherited one: all of them here.
    lines = [
        f"        location {path} {{",
        f"            proxy_pass http://127.0.0.1:{upstream};",
        "            proxy_http_version 1.1;",
        "            proxy_set_header Host $host;",
        forward,
        "            proxy_buffering off;",
        "            proxy_read_timeout 30s;",
    ]
    if websocket:
        lines += [
            "            proxy_set_header Upgrade $http_upgrade;",
            "            proxy_set_header Connection $connection_upgrade;",
        ]
    else:
        lines.append('            proxy_set_header Connection "";')
    lines.append("        }")
    return "\n".join(lines)


class Nginx:
    """nginx in its own prefix: `xff_port` forwards with X-Forwarded-For, `fwd_port` with Forwarded."""

    def __init__(self, xmpp_http: int, stomp_http: int):
        self.bin = nginx_bin()
        self.dir = tempfile.mkdtemp(prefix="herald-nginx-")
        os.chmod(self.dir, 0o755)  # workers run as nobody when the tests run as root
        self.xff_port = free_port()
        self.fwd_port = free_port()
        d = self.dir
        forwards = {
            self.xff_port: "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            self.fwd_port: '            proxy_set_header Forwarded "for=\\"$remote_addr:$remote_port\\"";',
        }
        servers = []
        for port, fwd in forwards.items():
            locs = [
                _location("/http-bind", xmpp_http, fwd, websocket=False),
                _location("/xmpp-websocket", xmpp_http, fwd, websocket=True),
                _location("/ws", stomp_http, fwd, websocket=True),
                _location("/stomp", stomp_http, fwd, websocket=True),
            ]
            servers.append(f"    server {{\n        listen 127.0.0.1:{port};\n" + "\n".join(locs) + "\n    }")
        conf = f"""
worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
{chr(10).join(servers)}
}}
"""
        self.conf = os.path.join(d, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(
            [self.bin, "-p", d + "/", "-c", self.conf, "-e", os.path.join(d, "error.log"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 5
        while True:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                self._cleanup()
                pytest.fail(f"nginx exited at start (code {self.proc.returncode}):\n{out}\n{self.log()}", pytrace=False)
            if all(self._listening(p) for p in forwards):
                break
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"nginx did not listen on {list(forwards)} within 5 s\n{self.log()}", pytrace=False)
            time.sleep(0.02)

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return "nginx error.log:\n" + f.read()[-3000:]
        except OSError:
            return "(no nginx error.log)"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._cleanup()

    def _cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- an [auth.http] backend that records the client address -------------------


class AuthBackend:
    """rabbitmq-auth-backend-http: allows the dev users with their passwords; records every question."""

    def __init__(self):
        self.questions: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                owner.questions.append((url.path, q))
                ok = url.path != "/auth/user" or PASSWORDS.get(q.get("username")) == q.get("password")
                body = b"allow" if ok else b"deny"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def config(self) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return f'[auth.http]\nuser_path = "{base}/auth/user"\nvhost_path = "{base}/auth/vhost"\ncache_ttl_ms = 0\n\n'

    def ips(self, path: str, username: str) -> list[str]:
        return [q.get("ip", "") for p, q in list(self.questions) if p == path and q.get("username") == username]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---- Herald + nginx --------------------------------------------------------------


class Stack:
    def __init__(self, trusted: bool, max_per_ip: int | None = None, header: str | None = None):
        self.auth = AuthBackend()
        conns = []
        if trusted:
            conns.append('trusted_proxies = ["127.0.0.1/32"]')
        if header is not None:
            conns.append(f'forwarded_header = "{header}"')
        if max_per_ip is not None:
            conns.append(f"max_per_ip = {max_per_ip}")
        extra = xmpp_extra(starttls="off") + "\n"
        extra += f'[admin]\nlisten = "127.0.0.1:0"\ntokens = ["{TOKEN}"]\n\n'
        extra += self.auth.config()
        if conns:
            extra += "[connections]\n" + "\n".join(conns) + "\n"
        self.nginx = None
        try:
            self.herald = Herald(build_config("@DATA_DIR@", extra=extra))
        except BaseException:
            self.auth.close()
            raise
        try:
            if "xmpp-http" not in self.herald.listeners:
                pytest.fail(f"herald did not announce xmpp-http: {self.herald.listeners}", pytrace=False)
            self.nginx = Nginx(self.herald.listeners["xmpp-http"][1], self.herald.http_port)
        except BaseException:
            self.close()
            raise
        self.port = self.nginx.xff_port
        self.fwd_port = self.nginx.fwd_port
        self.admin_port = self.herald.listeners["admin"][1]

    def sessions(self) -> list[dict]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}/api/sessions?per_page=100", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=3) as r:
            body = json.loads(r.read())
        return body["items"] if isinstance(body, dict) else body

    def peers(self, uid: str) -> list[str]:
        """The client addresses (without port) of uid's sessions, per the admin API."""
        return sorted((s.get("peer") or "").rsplit(":", 1)[0] for s in self.sessions() if s.get("uid") == uid)

    def wait_peers(self, uid: str, n: int = 1, limit: float = 3.0) -> list[str]:
        deadline = time.monotonic() + limit
        while True:
            p = self.peers(uid)
            if len(p) >= n or time.monotonic() > deadline:
                return p
            time.sleep(0.05)

    def describe(self) -> str:
        return self.herald.describe() + "\n" + (self.nginx.log() if self.nginx else "")

    def close(self):
        if self.nginx:
            self.nginx.stop()
        self.herald.stop()
        self.auth.close()


@pytest.fixture
def stacks():
    made: list[Stack] = []

    def make(**kw) -> Stack:
        s = Stack(**kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


# ---- WebSocket client (RFC 6455, from a given source address) ----------------


class WsRefused(AssertionError):
    def __init__(self, status: int, response: bytes):
        super().__init__(f"WebSocket handshake answered {status}: {response[:400]!r}")
        self.status = status
        self.response = response


class Ws:
    def __init__(self, src: str, port: int, path: str, protocol: str, extra_headers: str = ""):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.bind((src, 0))
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n"
                f"{extra_headers}\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        if status != 101:
            # Read the rest of the refusal (its body names the limit).
            try:
                self.sock.settimeout(1)
                while True:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        break
                    self.buf += chunk
            except OSError:
                pass
            self.sock.close()
            raise WsRefused(status, head + b"\r\n\r\n" + self.buf)

    def send_text(self, text: str):
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = bytes([0x81, 0x80 | n])
        elif n < 65536:
            head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _need(self, n: int, deadline: float):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"WebSocket closed by the server; buffered {self.buf!r}")
            self.buf += chunk

    def recv_text(self, limit: float = 5.0) -> str:
        deadline = time.monotonic() + limit
        while True:
            self._need(2, deadline)
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                self._need(4, deadline)
                n, off = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                self._need(10, deadline)
                n, off = int.from_bytes(self.buf[2:10], "big"), 10
            self._need(off + n, deadline)
            payload, self.buf = self.buf[off : off + n], self.buf[off + n :]
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise AssertionError(f"WebSocket close frame: {payload!r}")
            if opcode in (0x1, 0x2, 0x0):
                return payload.decode()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stomp_ws_login(src: str, port: int, login: str, extra_headers: str = "") -> Ws:
    """STOMP over /ws through nginx, from `src`, logged in as `login` (CONNECTED checked)."""
    ws = Ws(src, port, "/ws", "v12.stomp", extra_headers)
    ws.send_text(f"CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\npasscode:{PASSWORDS[login]}\n\n\0")
    got = ""
    deadline = time.monotonic() + 5
    while not got.startswith("CONNECTED") and time.monotonic() < deadline:
        got = ws.recv_text(deadline - time.monotonic()).lstrip("\n")
    assert got.startswith("CONNECTED"), f"STOMP over /ws through nginx as {login}: {got!r}"
    return ws


def xmpp_ws_login(src: str, port: int, login: str) -> Ws:
    """XMPP over /xmpp-websocket (RFC 7395) through nginx: SASL PLAIN and a bound resource."""
    ws = Ws(src, port, "/xmpp-websocket", "xmpp")

    def until(pred, what):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            e = ET.fromstring(ws.recv_text(deadline - time.monotonic()))
            if pred(e):
                return e
        raise AssertionError(f"XMPP WebSocket: no {what}")

    ws.send_text(f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>")
    until(lambda e: e.tag.endswith("features"), "stream features")
    ws.send_text(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain(login)}</auth>")
    e = until(lambda e: e.tag in (f"{{{NS_SASL}}}success", f"{{{NS_SASL}}}failure"), "SASL answer")
    assert e.tag == f"{{{NS_SASL}}}success", f"XMPP WebSocket SASL PLAIN as {login}: {ET.tostring(e)!r}"
    ws.send_text(f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>")
    until(lambda e: e.tag.endswith("features"), "stream features after SASL")
    ws.send_text(f"<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>nginx</resource></bind></iq>")
    e = until(lambda e: e.tag.endswith("iq") and e.get("id") == "b1", "bind result")
    assert e.get("type") == "result", ET.tostring(e)
    return ws


def plain(login: str) -> str:
    return base64.b64encode(f"\0{login}\0{PASSWORDS[login]}".encode()).decode()


# ---- BOSH (XEP-0124/0206) through nginx, from a given source address ---------


class Bosh:
    def __init__(self, src: str, port: int, path: str = "/http-bind"):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(src, 0))
        self.path = path
        self.rid = 1_000_000 + int.from_bytes(os.urandom(2), "big")
        self.sid: str | None = None
        self.pending: list[ET.Element] = []

    def post(self, attrs: str = "", payload: str = "") -> ET.Element:
        self.rid += 1
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = f"<body xmlns='{NS_HTTPBIND}' rid='{self.rid}'{sid} {attrs}>{payload}</body>"
        self.conn.request("POST", self.path, body=body.encode(), headers={"Content-Type": "text/xml; charset=utf-8"})
        r = self.conn.getresponse()
        data = r.read()
        assert r.status == 200, f"BOSH through nginx answered {r.status}: {data[:400]!r}"
        e = ET.fromstring(data)
        self.pending.extend(list(e))
        return e

    def create(self) -> ET.Element:
        e = self.post("to='localhost' xml:lang='en' wait='5' hold='1' ver='1.6' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'")
        if e.get("type") != "terminate":
            self.sid = e.get("sid")
        return e

    def until(self, pred, what: str) -> ET.Element:
        deadline = time.monotonic() + 8
        while True:
            for i, x in enumerate(self.pending):
                if pred(x):
                    return self.pending.pop(i)
            if time.monotonic() > deadline:
                raise AssertionError(f"BOSH: no {what}; got {[ET.tostring(x) for x in self.pending]!r}")
            e = self.post()
            assert e.get("type") != "terminate", f"BOSH session ended while waiting for {what}: {ET.tostring(e)!r}"

    def login(self, login: str):
        e = self.create()
        assert self.sid, f"BOSH session creation through nginx: {ET.tostring(e)!r}"
        self.until(lambda x: x.tag.endswith("features"), "stream features")
        self.post(payload=f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain(login)}</auth>")
        x = self.until(lambda x: x.tag in (f"{{{NS_SASL}}}success", f"{{{NS_SASL}}}failure"), "SASL answer")
        assert x.tag == f"{{{NS_SASL}}}success", f"BOSH SASL PLAIN as {login}: {ET.tostring(x)!r}"
        self.post("xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh' to='localhost'")
        self.until(lambda x: x.tag.endswith("features"), "stream features after SASL")
        self.post(payload=f"<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>bosh</resource></bind></iq>")
        x = self.until(lambda x: x.tag.endswith("iq") and x.get("id") == "b1", "bind result")
        assert x.get("type") == "result", ET.tostring(x)

    def close(self):
        self.conn.close()


# ---- SockJS (xhr transport) through nginx ------------------------------------


class SockJs:
    def __init__(self, src: str, port: int, sid: str | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(src, 0))
        self.sid = sid or uuid.uuid4().hex[:12]

    def request(self, what: str, body: str = "") -> tuple[int, str]:
        self.conn.request("POST", f"/stomp/000/{self.sid}/{what}", body=body.encode(), headers={"Content-Type": "text/plain"})
        r = self.conn.getresponse()
        return r.status, r.read().decode()

    def send_frame(self, frame: str) -> int:
        return self.request("xhr_send", json.dumps([frame]))[0]

    def login(self, login: str):
        status, body = self.request("xhr")
        assert status == 200 and body.startswith("o"), f"SockJS open through nginx: {status} {body!r}"
        status = self.send_frame(f"CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\npasscode:{PASSWORDS[login]}\n\n\0")
        assert status == 204, f"SockJS xhr_send through nginx: {status}"
        status, body = self.request("xhr")
        assert status == 200 and "CONNECTED" in body, f"SockJS CONNECT as {login} through nginx: {status} {body!r}"

    def close(self):
        self.conn.close()


# ---- the tests ----------------------------------------------------------------


def test_herald_sees_the_client_behind_nginx(stacks):
    """Trusted nginx: BOSH, XMPP WebSocket, STOMP WebSocket and SockJS logins through it are
    the client's (127.0.0.7), for the auth backend and the admin API; a client's own
    X-Forwarded-For is not believed (nginx appends the real address, Herald takes the
    nearest untrusted hop); Forwarded from nginx works too."""
    st = stacks(trusted=True)
    held = []
    try:
        b = Bosh(CLIENT, st.port)
        b.login("alice")
        held.append(b)
        held.append(xmpp_ws_login(CLIENT, st.port, "carol"))
        # A client claiming another address in its own X-Forwarded-For: nginx appends the real one.
        held.append(stomp_ws_login(CLIENT, st.port, "bob", f"X-Forwarded-For: {SPOOF}\r\n"))
        s = SockJs(CLIENT, st.port)
        s.login("dave")
        held.append(s)

        for uid, transport in [("alice", "BOSH"), ("carol", "XMPP WebSocket"), ("bob", "STOMP /ws"), ("dave", "SockJS")]:
            ips = st.auth.ips("/auth/user", uid)
            assert ips and set(ips) == {CLIENT}, f"{transport}: the auth backend got ip={ips} for {uid}, want {CLIENT}\n{st.describe()}"
            peers = st.wait_peers(uid)
            assert peers == [CLIENT], f"{transport}: admin API peer of {uid} is {peers}, want {CLIENT}"
        for uid in ("bob", "dave"):  # STOMP logins also ask vhost_path, with the ip
            ips = st.auth.ips("/auth/vhost", uid)
            assert ips and set(ips) == {CLIENT}, f"vhost_path ip for {uid}: {ips}"

        # SockJS sessions belong to their client: another browser behind the same nginx
        # cannot drive dave's session (without the forwarded address both would be 127.0.0.1).
        thief = SockJs(OTHER, st.port, sid=s.sid)
        assert thief.send_frame("SEND\ndestination:/queue/x\n\nhi\0") == 404, "another client behind nginx drove the SockJS session"
        assert thief.request("xhr")[0] == 404
        thief.close()
    finally:
        for h in held:
            h.close()


def test_herald_configured_for_forwarded_reads_only_forwarded(stacks):
    """`forwarded_header = "forwarded"`: the nginx block that sets `Forwarded: for="ip:port"`
    gives the client's address and port; a client's own X-Forwarded-For, which that block
    passes through untouched, is not read."""
    st = stacks(trusted=True, header="forwarded")
    ws = None
    try:
        ws = stomp_ws_login(CLIENT, st.fwd_port, "eve", f"X-Forwarded-For: {SPOOF}\r\n")
        for path in ("/auth/user", "/auth/vhost"):
            ips = st.auth.ips(path, "eve")
            assert ips and set(ips) == {CLIENT}, f"{path} ip for eve: {ips}, want {CLIENT}\n{st.describe()}"
        eve = [x for x in st.sessions() if x.get("uid") == "eve"]
        assert re.fullmatch(r"127\.0\.0\.7:\d+", eve[0]["peer"]) and not eve[0]["peer"].endswith(":0"), (
            f"Forwarded for=\"ip:port\" keeps the client's port: {eve}"
        )
    finally:
        if ws:
            ws.close()


def test_a_client_cannot_pick_its_address_with_forwarded_through_an_xff_proxy(stacks):
    """nginx configured the common way sets only X-Forwarded-For and passes the client's
    other headers through. A `Forwarded: for=` header written by the client must not
    become its address (it would pick its per-address cap bucket and what auth sources see)."""
    st = stacks(trusted=True)  # forwarded_header defaults to "x-forwarded-for"
    ws = None
    try:
        ws = stomp_ws_login(CLIENT, st.port, "bob", f"Forwarded: for={SPOOF}\r\n")
        ips = st.auth.ips("/auth/user", "bob")
        peers = st.wait_peers("bob")
        assert ips == [CLIENT] and peers == [CLIENT], (
            f"a client-written Forwarded header through nginx (which set X-Forwarded-For: {CLIENT}) "
            f"chose the address: auth ip={ips}, admin peer={peers}, want {CLIENT}"
        )
    finally:
        if ws:
            ws.close()


def test_the_per_ip_cap_applies_to_the_forwarded_address(stacks):
    """max_per_ip = 3 behind a trusted nginx: 127.0.0.7's fourth session is refused (429 on
    the WebSocket upgrade, resource-constraint for BOSH) while 127.0.0.8 through the same
    nginx gets in; nginx's own connections (all from 127.0.0.1, more than 3 at once) are not
    capped; a freed place is usable again."""
    st = stacks(trusted=True, max_per_ip=3)
    held = []
    try:
        t0 = time.monotonic()
        for _ in range(3):
            held.append(stomp_ws_login(CLIENT, st.port, "alice"))
        with pytest.raises(WsRefused) as refused:
            held.append(stomp_ws_login(CLIENT, st.port, "alice"))
        assert refused.value.status == 429 and b"connections.max_per_ip" in refused.value.response, refused.value.response
        b = Bosh(CLIENT, st.port)
        e = b.create()
        if e.get("type") != "terminate":
            # The refusal may come with the first poll (the session's stream closes).
            e = b.post()
        b.close()
        text = ET.tostring(e).decode()
        assert e.get("type") == "terminate" and "resource-constraint" in text and "connections.max_per_ip" in text, text
        # SockJS opens ("o"), then the session's first frame is the STOMP ERROR naming the cap.
        sj = SockJs(CLIENT, st.port)
        got = []
        for _ in range(3):
            status, body = sj.request("xhr")
            got.append((status, body))
            if "connections.max_per_ip" in body or status != 200:
                break
        sj.close()
        assert any("ERROR" in b and "connections.max_per_ip" in b for _, b in got), f"a SockJS session from a capped client behind nginx: {got}"

        # Another client behind the same nginx: its own count. 4 and more sessions through nginx now.
        held.append(stomp_ws_login(OTHER, st.port, "bob"))
        ob = Bosh(OTHER, st.port)
        ob.login("carol")
        held.append(ob)
        held.append(xmpp_ws_login(OTHER, st.port, "dave"))
        assert st.peers("bob") == [OTHER] and st.peers("carol") == [OTHER]

        # A place given back by 127.0.0.7 is its own again.
        held.pop(0).close()
        deadline = time.monotonic() + 3
        while True:
            try:
                held.append(stomp_ws_login(CLIENT, st.port, "alice"))
                break
            except WsRefused:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert st.peers("alice") == [CLIENT] * 3
        assert time.monotonic() - t0 < 10
    finally:
        for h in held:
            h.close()


def test_without_trusted_proxies_the_forwarded_headers_are_ignored(stacks):
    """The same nginx, Herald without trusted_proxies: every client is nginx's 127.0.0.1,
    for the auth backend, the admin API and the per-address cap (127.0.0.8 is refused
    once 127.0.0.7 filled nginx's bucket)."""
    st = stacks(trusted=False, max_per_ip=3)
    held = []
    try:
        b = Bosh(CLIENT, st.port)
        b.login("alice")
        held.append(b)
        held.append(stomp_ws_login(CLIENT, st.port, "bob"))
        held.append(stomp_ws_login(CLIENT, st.fwd_port, "eve"))
        for uid in ("alice", "bob", "eve"):
            ips = st.auth.ips("/auth/user", uid)
            assert ips and set(ips) == {PROXY}, f"untrusted nginx: auth ip for {uid} is {ips}, want {PROXY}"
            assert st.wait_peers(uid) == [PROXY], f"untrusted nginx: admin peer of {uid}: {st.peers(uid)}"
        # 3 sessions from nginx's address: the next client, whoever it is, is refused.
        with pytest.raises(WsRefused) as refused:
            held.append(stomp_ws_login(OTHER, st.port, "carol"))
        assert refused.value.status == 429, refused.value.response
    finally:
        for h in held:
            h.close()
