"""Shared pytest fixtures for Herald's Python suites.

- ``herald``: a module-scoped Herald started from a temp config (loopback, port 0 listeners,
  temp data_dir) with the dev users; yields a ``Herald`` with ``stomp_port``/``http_port``.
- ``herald_factory``: start extra servers with other limits/keys; all stopped at teardown.
- ``Client``: a stomp.py connection of a given STOMP version with a recording listener and
  bounded waits.
- ``RawStomp``: a raw STOMP-over-TCP socket for wire-level checks.

The binary is $HERALD_BIN or ${CARGO_TARGET_DIR:-/var/tmp/herald-target}/debug/herald.
A missing binary fails every test loudly; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import stomp

USERS = [
    {"name": "guest", "password": "guest", "tags": ["administrator"]},
    {"name": "alice", "password": "secret"},
    {"name": "bob", "password": "secret"},
    {"name": "carol", "password": "secret"},
    {"name": "dave", "password": "secret"},
    {"name": "eve", "password": "secret"},
]

WAIT = 3.0  # default bound for any single wait, seconds


def herald_bin() -> str:
    if os.environ.get("HERALD_BIN"):
        return os.environ["HERALD_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or "/var/tmp/herald-target"
    return os.path.join(target, "debug", "herald")


def assert_binary() -> str:
    path = herald_bin()
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(
            f"herald binary not found or not executable at {path}: build it or set HERALD_BIN "
            "(tests never skip on a missing binary)",
            pytrace=False,
        )
    return path


def _toml_str(s: str) -> str:
    return json.dumps(str(s))


def build_config(
    data_dir: str,
    users=None,
    limits: dict | None = None,
    stomp_extra: str = "",
    extra: str = "",
    node_name: str = "herald-test@localhost",
) -> str:
    users = USERS if users is None else users
    out = [
        "[node]",
        f"name = {_toml_str(node_name)}",
        f"data_dir = {_toml_str(data_dir)}",
        "",
        "[stomp]",
        'listen = "127.0.0.1:0"',
        'default_vhost = "/"',
    ]
    if stomp_extra:
        out.append(stomp_extra)
    out += [
        "",
        "[http]",
        'listen = "127.0.0.1:0"',
        "",
        "[[vhosts]]",
        'name = "/"',
        "",
        "[auth]",
        'default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }',
        "",
    ]
    for u in users:
        out += ["[[users]]", f"name = {_toml_str(u['name'])}", f"password = {_toml_str(u['password'])}"]
        if u.get("tags"):
            out.append("tags = [" + ", ".join(_toml_str(t) for t in u["tags"]) + "]")
        out.append("")
    out += [
        "[[projects]]",
        'id = "p1"',
        'members = ["alice", "bob", "carol"]',
        "",
        "[[projects]]",
        'id = "p2"',
        'members = ["carol", "dave", "eve"]',
        "",
    ]
    if limits:
        out.append("[limits]")
        for k, v in limits.items():
            out.append(f"{k} = {v}")
        out.append("")
    if extra:
        out.append(extra)
    return "\n".join(out) + "\n"


class Herald:
    def __init__(self, config_text: str, ready_timeout: float = 20.0):
        self.bin = assert_binary()
        self.dir = tempfile.mkdtemp(prefix="herald-pytest-")
        self.config_path = os.path.join(self.dir, "herald.toml")
        with open(self.config_path, "w") as f:
            f.write(config_text.replace("@DATA_DIR@", os.path.join(self.dir, "data")))
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        self.stdout_lines: list[str] = []
        self.stderr_chunks: list[str] = []
        self.listeners: dict[str, tuple[str, int]] = {}
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [self.bin, "--config", self.config_path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, RUST_BACKTRACE="1"),
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        deadline = time.monotonic() + ready_timeout
        while not self._ready.is_set():
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the readers drain
                self._cleanup_dir()
                pytest.fail(f"herald exited before ready (code {self.proc.returncode})\n{self.describe()}", pytrace=False)
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"herald did not print 'herald: ready' within {ready_timeout}s\n{self.describe()}", pytrace=False)
            self._ready.wait(0.05)
        if "stomp-tcp" not in self.listeners or "http" not in self.listeners:
            self.stop()
            pytest.fail(f"herald did not announce both listeners: {self.listeners}\n{self.describe()}", pytrace=False)
        self.stomp_port = self.listeners["stomp-tcp"][1]
        self.http_port = self.listeners["http"][1]

    def _read_stdout(self):
        for line in self.proc.stdout:
            line = line.rstrip("\r\n")
            self.stdout_lines.append(line)
            m = re.match(r"^herald: listening (\S+) (\S+):(\d+)\s*$", line)
            if m:
                self.listeners[m.group(1)] = (m.group(2), int(m.group(3)))
            if re.match(r"^herald: ready\s*$", line):
                self._ready.set()

    def _read_stderr(self):
        for chunk in self.proc.stderr:
            self.stderr_chunks.append(chunk)
            if len(self.stderr_chunks) > 5000:
                del self.stderr_chunks[:2500]

    def describe(self) -> str:
        return "stdout:\n" + "\n".join(self.stdout_lines[-50:]) + "\nstderr:\n" + "".join(self.stderr_chunks)[-4000:]

    def stop(self, timeout: float = 5.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._cleanup_dir()
        return self.proc.returncode

    def _cleanup_dir(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def start_herald(limits=None, users=None, stomp_extra="", extra="") -> Herald:
    return Herald(build_config("@DATA_DIR@", users=users, limits=limits, stomp_extra=stomp_extra, extra=extra))


@pytest.fixture(scope="module")
def herald():
    h = start_herald()
    yield h
    died = h.proc.poll()
    h.stop()
    if died is not None:
        pytest.fail(f"herald exited unexpectedly during the module (code {died})\n{h.describe()}", pytrace=False)


@pytest.fixture(autouse=True)
def _herald_alive(request):
    """Fail fast, with the server's output, when the shared server has died."""
    if "herald" in request.fixturenames:
        h = request.getfixturevalue("herald")
        if h.proc.poll() is not None:
            pytest.fail(f"herald is not running (exit code {h.proc.returncode})\n{h.describe()}", pytrace=False)
    yield


@pytest.fixture
def herald_factory():
    started: list[Herald] = []

    def make(**kw) -> Herald:
        h = start_herald(**kw)
        started.append(h)
        return h

    yield make
    for h in started:
        h.stop()


def uid(prefix="x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------
# stomp.py client with a recording listener


class Recorder(stomp.ConnectionListener):
    def __init__(self):
        self.messages: "queue.Queue" = queue.Queue()
        self.receipts: "queue.Queue" = queue.Queue()
        self.errors: "queue.Queue" = queue.Queue()
        self.connected_frames: "queue.Queue" = queue.Queue()
        self.disconnected = threading.Event()
        self.heartbeat_timeouts = 0
        self.heartbeats = 0

    def on_connected(self, frame):
        self.connected_frames.put(frame)

    def on_message(self, frame):
        self.messages.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)

    def on_disconnected(self):
        self.disconnected.set()

    def on_heartbeat_timeout(self):
        self.heartbeat_timeouts += 1

    def on_heartbeat(self):
        self.heartbeats += 1


def _get(q: "queue.Queue", timeout: float, what: str):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


class Client:
    """A stomp.py connection for STOMP ``version`` ('1.0' | '1.1' | '1.2')."""

    def __init__(self, herald: Herald, version: str = "1.2", login="guest", passcode="guest", heartbeats=(0, 0), connect=True):
        self.version = version
        hp = [("127.0.0.1", herald.stomp_port)]
        common = dict(reconnect_attempts_max=1, timeout=WAIT)
        if version == "1.0":
            self.conn = stomp.Connection10(hp, **common)
        elif version == "1.1":
            self.conn = stomp.Connection11(hp, heartbeats=heartbeats, vhost="/", **common)
        elif version == "1.2":
            self.conn = stomp.Connection12(hp, heartbeats=heartbeats, vhost="/", **common)
        else:
            raise ValueError(version)
        self.rec = Recorder()
        self.conn.set_listener("rec", self.rec)
        self.login, self.passcode = login, passcode
        self._n = 0
        self.connected_frame = None
        if connect:
            self.connect()

    def connect(self, expect_error=False):
        self.conn.connect(self.login, self.passcode, wait=False)
        if expect_error:
            return
        deadline = time.monotonic() + 5
        while True:
            try:
                self.connected_frame = self.rec.connected_frames.get(timeout=0.05)
                return self.connected_frame
            except queue.Empty:
                pass
            if not self.rec.errors.empty():
                err = self.rec.errors.get()
                raise AssertionError(f"CONNECT failed: ERROR {err.headers} {err.body!r}")
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for CONNECTED")

    # -- waits
    def message(self, timeout=WAIT, what="MESSAGE"):
        return _get(self.rec.messages, timeout, what)

    def error(self, timeout=WAIT, what="ERROR"):
        return _get(self.rec.errors, timeout, what)

    def no_message(self, wait=0.5, what="MESSAGE"):
        try:
            m = self.rec.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected {what}: {m.headers} {m.body!r}")

    def receipt(self, rid, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for RECEIPT {rid}")
            f = _get(self.rec.receipts, left, f"RECEIPT {rid}")
            if f.headers.get("receipt-id") == rid:
                return f

    def wait_disconnected(self, timeout=WAIT, what="server to close the connection"):
        if not self.rec.disconnected.wait(timeout):
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    # -- frames
    def next_id(self, prefix):
        self._n += 1
        return f"{prefix}-{self._n}-{uuid.uuid4().hex[:6]}"

    def subscribe(self, destination, ack="auto", sub_id=None, **headers):
        sub_id = sub_id or self.next_id("sub")
        rid = self.next_id("r-sub")
        if self.version == "1.0":
            self.conn.subscribe(destination, id=sub_id, ack=ack, headers=dict(headers, receipt=rid))
        else:
            self.conn.subscribe(destination, sub_id, ack=ack, headers=dict(headers, receipt=rid))
        self.receipt(rid)
        return sub_id

    def send(self, destination, body, receipt=True, **headers):
        if receipt:
            rid = self.next_id("r-send")
            headers["receipt"] = rid
        self.conn.send(destination, body, headers=headers)
        if receipt:
            self.receipt(rid)

    def ack(self, frame, receipt=True, transaction=None):
        rid = self.next_id("r-ack") if receipt else None
        if self.version == "1.0":
            self.conn.ack(frame.headers["message-id"], transaction=transaction, receipt=rid)
        elif self.version == "1.1":
            self.conn.ack(frame.headers["message-id"], frame.headers["subscription"], transaction=transaction, receipt=rid)
        else:
            self.conn.ack(frame.headers["ack"], transaction=transaction, receipt=rid)
        if rid:
            self.receipt(rid)

    def nack(self, frame, receipt=True, **headers):
        rid = self.next_id("r-nack") if receipt else None
        if self.version == "1.1":
            self.conn.nack(frame.headers["message-id"], frame.headers["subscription"], receipt=rid, **headers)
        elif self.version == "1.2":
            self.conn.nack(frame.headers["ack"], receipt=rid, **headers)
        else:
            raise AssertionError("NACK does not exist in STOMP 1.0")
        if rid:
            self.receipt(rid)

    def begin(self):
        return self.conn.begin()

    def commit(self, tx):
        rid = self.next_id("r-commit")
        self.conn.commit(tx, headers={"receipt": rid})
        self.receipt(rid)

    def abort(self, tx):
        rid = self.next_id("r-abort")
        self.conn.abort(tx, headers={"receipt": rid})
        self.receipt(rid)

    def close(self):
        try:
            if self.conn.is_connected():
                self.conn.disconnect()
        except Exception:
            pass
        try:
            self.conn.transport.stop()
        except Exception:
            pass


@pytest.fixture
def clients(herald):
    """Factory: clients(version, **kw) -> Client, all closed at teardown."""
    made: list[Client] = []

    def make(version="1.2", **kw) -> Client:
        c = Client(herald, version, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# ---------------------------------------------------------------------------
# Raw STOMP over TCP (wire-level)


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "c": ":", "\\": "\\"}.get(m.group(1), m.group(0)), s)


def encode_frame(command: str, headers=None, body: bytes | str = b"", content_length=True) -> bytes:
    if isinstance(body, str):
        body = body.encode()
    head = command + "\n"
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    for k, v in items:
        head += f"{k}:{v}\n"
    if content_length and body and not any(k == "content-length" for k, _ in items):
        head += f"content-length:{len(body)}\n"
    return head.encode() + b"\n" + body + b"\x00"


class RawFrame:
    def __init__(self, command, raw_headers, body):
        self.command = command
        self.raw_headers = raw_headers  # list of (key, value) exactly as on the wire
        self.body = body
        self.headers = {}
        for k, v in raw_headers:
            k2, v2 = (k, v) if command == "CONNECTED" else (_unescape(k), _unescape(v))
            self.headers.setdefault(k2, v2)

    def __repr__(self):
        return f"RawFrame({self.command} {self.raw_headers} {self.body[:200]!r})"


class RawStomp:
    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.sock.settimeout(None)
        self.frames: "queue.Queue" = queue.Queue()
        self.closed = threading.Event()
        self.closed_at = None
        self.heartbeats = 0
        self._buf = b""
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    break
                self._buf += d
                self._parse()
        except OSError:
            pass
        finally:
            self.closed_at = time.monotonic()
            self.closed.set()

    def _parse(self):
        while True:
            while self._buf[:1] == b"\n" or self._buf[:2] == b"\r\n":
                self._buf = self._buf[2:] if self._buf[:1] == b"\r" else self._buf[1:]
                self.heartbeats += 1
            if not self._buf:
                return
            m = re.search(rb"\r?\n\r?\n", self._buf)
            if not m:
                return
            head = self._buf[: m.start()].decode()
            lines = [l.rstrip("\r") for l in head.split("\n")]
            command, raw = lines[0], []
            for l in lines[1:]:
                k, _, v = l.partition(":")
                raw.append((k, v))
            cl = next((v for k, v in raw if k == "content-length"), None)
            start = m.end()
            if cl is not None:
                end = start + int(cl)
                if len(self._buf) < end + 1:
                    return
            else:
                end = self._buf.find(b"\x00", start)
                if end < 0:
                    return
            body = self._buf[start:end]
            self._buf = self._buf[end + 1 :]
            self.frames.put(RawFrame(command, raw, body))

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send(self, command, headers=None, body=b"", content_length=True):
        self.send_raw(encode_frame(command, headers, body, content_length))

    def next(self, timeout=WAIT, what="frame") -> RawFrame:
        return _get(self.frames, timeout, what)

    def expect(self, command, timeout=WAIT) -> RawFrame:
        f = self.next(timeout, command)
        assert f.command == command, f"expected {command}, got {f!r}"
        return f

    def connect(self, login="guest", passcode="guest", accept_version="1.2", heart_beat=None, host="/"):
        h = {"accept-version": accept_version, "host": host, "login": login, "passcode": passcode}
        if heart_beat:
            h["heart-beat"] = heart_beat
        self.send("CONNECT", h)
        return self.next(5, "CONNECTED")

    def wait_closed(self, timeout=WAIT, what="server to close the connection"):
        if not self.closed.wait(timeout):
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def raw(herald):
    made: list[RawStomp] = []

    def make(port=None) -> RawStomp:
        r = RawStomp(port or herald.stomp_port)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
