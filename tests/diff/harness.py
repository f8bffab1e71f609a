"""STOMP differential harness: runs frame scripts against a server over raw sockets.

A *case* is a name and a list of steps (see ``dsl.py``); ``run_case`` plays the steps against
one server (RabbitMQ when recording, Herald when replaying) and returns a transcript: one
event per step with what was sent and what came back (frames, closes, WebSocket handshake
answers). ``compare`` diffs two transcripts after ``normalise`` (the only place where
server-specific header values are hidden, each with its reason in ``NORMALISED``).

Raw sockets on purpose: every byte a case sends is under the script's control, and every
byte the server answers is seen (no client library fixes up or hides anything).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import time

RECV_TIMEOUT = float(os.environ.get("STOMP_DIFF_TIMEOUT", "3.0"))
BIG = 4096  # bodies/sends longer than this are kept as length + sha256 in transcripts

# Header values that are server-specific. Each is replaced by a placeholder numbered in order
# of first appearance within a case, so "the same id again" (e.g. `ack` == `message-id`) is
# still compared; only the spelling of the id is not.
NORMALISED = {
    "server": "the product name and version: Herald names itself (kept on purpose, see README)",
    "session": "an opaque per-connection id chosen by the server",
    "message-id": "an opaque per-delivery id chosen by the server (RabbitMQ: T_<sub>@@<session>@@<n>)",
    "ack": "STOMP 1.2 ack id, opaque like message-id",
}
# Headers only Herald sends, on ERROR frames; dropped before comparing when RabbitMQ's frame has
# none (a kept difference, listed in the README).
HERALD_ONLY_ERROR_HEADERS = {
    "code": "Herald's numeric close code (crate::error::CloseCode) so clients can tell errors apart "
    "without parsing the message text",
    "receipt-id": "the receipt of the frame that failed, as STOMP 1.2 says an ERROR should carry; "
    "RabbitMQ sends none",
}
# Kept difference applied to every case: Herald closes the connection after every ERROR, as the
# STOMP spec says a server must; RabbitMQ keeps it open after most errors (not after channel
# errors or a duplicated subscription id). Where RabbitMQ sent an ERROR and kept the connection,
# Herald must have sent the same ERROR and closed; what RabbitMQ answered later on that
# connection is not compared, and Herald must send nothing more on it.
CLOSE_AFTER_ERROR = "Herald closes the connection after every ERROR frame (STOMP: 'the server MUST then close the connection')"
# Generated queue names inside header values (reply-to, destination of a temp queue).
GENERATED_NAME = re.compile(r"amq\.gen-[A-Za-z0-9_\-]+")


# ---------------------------------------------------------------------------------------------
# wire helpers


def _text(b: bytes):
    """A byte string as it goes into a transcript: text when UTF-8, else base64, long ones hashed."""
    if len(b) > BIG:
        return {"len": len(b), "sha256": hashlib.sha256(b).hexdigest()}
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(b).decode()}


class StompParser:
    """Splits a byte stream into frames; EOLs between frames (heart-beats) are counted, not kept."""

    def __init__(self):
        self.buf = b""
        self.heartbeats = 0

    def feed(self, data: bytes):
        self.buf += data
        out = []
        while True:
            while self.buf[:1] == b"\n" or self.buf[:2] == b"\r\n":
                self.buf = self.buf[2:] if self.buf[:1] == b"\r" else self.buf[1:]
                self.heartbeats += 1
            if not self.buf:
                return out
            m = re.search(rb"\r?\n\r?\n", self.buf)
            if not m:
                return out
            lines = self.buf[: m.start()].split(b"\n")
            command = lines[0].rstrip(b"\r").decode("utf-8", "replace")
            headers = []
            for line in lines[1:]:
                k, _, v = line.rstrip(b"\r").partition(b":")
                headers.append([k.decode("utf-8", "replace"), v.decode("utf-8", "replace")])
            cl = next((v for k, v in headers if k == "content-length"), None)
            start = m.end()
            if cl is not None and cl.isdigit():
                end = start + int(cl)
                if len(self.buf) < end + 1:
                    return out
            else:
                end = self.buf.find(b"\x00", start)
                if end < 0:
                    return out
            body = self.buf[start:end]
            self.buf = self.buf[end + 1 :]
            out.append({"command": command, "headers": headers, "body": _text(body)})


class TcpConn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=RECV_TIMEOUT)
        self.parser = StompParser()
        self.frames: list = []
        self.messages: list = []  # MESSAGE frames taken so far, for @ack:N references
        self.closed = False
        self.handshake = None

    def send(self, data: bytes):
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def _read(self, timeout) -> bool:
        """One read of at most `timeout` seconds; False on timeout."""
        if self.closed:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            d = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except OSError:
            d = b""
        if not d:
            self.closed = True
            return True
        self._received(d)
        return True

    def _received(self, data: bytes):
        self.frames += self.parser.feed(data)

    def pump(self, n: int, until_close: bool, timeout: float):
        """Reads until `n` frames are queued (and the peer closed, if `until_close`) or timeout."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if len(self.frames) >= n and not until_close:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._read(left)

    def poll_closed(self, wait=0.05):
        """Notices a close the peer already made (without waiting for frames)."""
        deadline = time.monotonic() + wait
        while not self.closed and time.monotonic() < deadline:
            if not self._read(deadline - time.monotonic()):
                break

    def take(self, n):
        got, self.frames = self.frames[:n], self.frames[n:]
        self.messages += [f for f in got if f["command"] == "MESSAGE"]
        return got

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


class WsConn(TcpConn):
    """A minimal RFC 6455 client: handshake with offered subprotocols, masked text frames out."""

    def __init__(self, host, port, path, protocols):
        super().__init__(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        req = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
               f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if protocols:
            req.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        self.sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        raw = b""
        deadline = time.monotonic() + RECV_TIMEOUT
        while b"\r\n\r\n" not in raw and time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                d = self.sock.recv(4096)
            except socket.timeout:
                break
            if not d:
                break
            raw += d
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1]) if lines and lines[0].startswith("HTTP/") else 0
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        self.handshake = {"status": status, "protocol": hdrs.get("sec-websocket-protocol")}
        self.wsbuf = rest
        self.closed = status != 101
        self.close_code = None
        if not self.closed:
            self._frames_from_ws(b"")

    def send(self, data: bytes):
        self._send_ws(0x1, data)

    def _send_ws(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 65536 else _mask_big(payload, mask)
        try:
            self.sock.sendall(head + mask + masked)
        except OSError:
            self.closed = True

    def _frames_from_ws(self, data):
        self.wsbuf += data
        while len(self.wsbuf) >= 2:
            b0, b1 = self.wsbuf[0], self.wsbuf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(self.wsbuf) < 4:
                    return
                n, off = int.from_bytes(self.wsbuf[2:4], "big"), 4
            elif n == 127:
                if len(self.wsbuf) < 10:
                    return
                n, off = int.from_bytes(self.wsbuf[2:10], "big"), 10
            if len(self.wsbuf) < off + n:
                return
            payload, self.wsbuf = self.wsbuf[off : off + n], self.wsbuf[off + n :]
            op = b0 & 0x0F
            if op in (0x0, 0x1, 0x2):
                self.frames += self.parser.feed(payload)
            elif op == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.closed = True
                return
            elif op == 0x9:
                self._send_ws(0xA, payload)

    def _received(self, data: bytes):
        self._frames_from_ws(data)


def _mask_big(payload, mask):
    full = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(full, "big")).to_bytes(len(payload), "big")


# ---------------------------------------------------------------------------------------------
# running a case

REF = re.compile(rb"@(ack|message-id):(\d+)")


def _ref(conn, m):
    name, n = m.group(1).decode(), int(m.group(2))
    if n >= len(conn.messages):
        return b"no-such-message"
    return next((v for k, v in conn.messages[n]["headers"] if k == name), "no-such-header").encode()



class Target:
    """Where a case runs: host, STOMP TCP port, WebSocket port and path."""

    def __init__(self, host, stomp_port, ws_port, ws_path="/ws"):
        self.host, self.stomp_port, self.ws_port, self.ws_path = host, stomp_port, ws_port, ws_path


def run_case(case, target: Target, recorded=None):
    """Plays `case` against `target`. With `recorded` (the RabbitMQ transcript of the same case),
    each receive waits for exactly what RabbitMQ answered, so replays do not sit in timeouts."""
    conns: dict = {}
    events = []
    rec_events = recorded["events"] if recorded else None

    def rec_event(i):
        return rec_events[i] if rec_events is not None and i < len(rec_events) else None

    for i, step in enumerate(case["steps"]):
        op = step["op"]
        if op == "open":
            if step["kind"] == "tcp":
                c = TcpConn(target.host, target.stomp_port)
            else:
                c = WsConn(target.host, target.ws_port, target.ws_path, step.get("protocols"))
            conns[step["conn"]] = c
            ev = {"op": "open", "conn": step["conn"], "kind": step["kind"]}
            if c.handshake is not None:
                ev["handshake"] = c.handshake
                ev["closed"] = c.closed
            events.append(ev)
        elif op == "send":
            data = step["data"]
            c = conns[step["conn"]]
            c.send(REF.sub(lambda m: _ref(c, m), data))
            events.append({"op": "send", "conn": step["conn"], "data": _text(data), "frames": step.get("frames", 1),
                           "sha256": hashlib.sha256(data).hexdigest()})
        elif op == "recv":
            c = conns[step["conn"]]
            r = rec_event(i)
            if r is not None:
                n, until_close = len(r["frames"]), r["closed"]
            else:
                n, until_close = step["n"], step.get("close", False)
            c.pump(n, until_close, step.get("timeout", RECV_TIMEOUT))
            if r is None and any(f["command"] == "ERROR" for f in c.frames[:n]):
                # STOMP closes after an ERROR: record the close too, not a race with it.
                until_close = True
                c.pump(n, True, 1.0)
            if not until_close:
                c.poll_closed(0.02 if r is not None else 0.1)
            frames = c.take(n if not until_close else len(c.frames))
            ev = {"op": "recv", "conn": step["conn"], "frames": frames, "closed": c.closed}
            if step.get("unordered"):
                ev["unordered"] = True
            events.append(ev)
        elif op == "pause":
            time.sleep(step["seconds"])
            events.append({"op": "pause", "seconds": step["seconds"]})
        elif op == "close":
            conns[step["conn"]].close()
            events.append({"op": "close", "conn": step["conn"]})
        else:
            raise ValueError(f"unknown step {op!r} in case {case['name']}")
    # End of case: every connection still open says DISCONNECT with a receipt and is read to its
    # close, so frames a server sent that the script did not wait for still show up.
    ends = [e for e in rec_events if e["op"] == "end"] if rec_events is not None else None
    for name, c in conns.items():
        if c.closed:
            events.append({"op": "end", "conn": name, "frames": c.take(len(c.frames)), "closed": True})
            continue
        c.send(b"DISCONNECT\nreceipt:end-of-case\n\n\x00")
        r = next((e for e in ends if e["conn"] == name), None) if ends is not None else None
        if r is not None and not r["closed"]:
            # RabbitMQ answered and kept the connection open: wait for as many frames, not a close.
            c.pump(len(r["frames"]), False, RECV_TIMEOUT)
            c.poll_closed(0.05)
        else:
            c.pump(0, True, RECV_TIMEOUT)
        events.append({"op": "end", "conn": name, "frames": c.take(len(c.frames)), "closed": c.closed})
        c.close()
    return {"name": case["name"], "doc": case.get("doc", ""), "events": events}


# ---------------------------------------------------------------------------------------------
# normalising and comparing


def normalise(transcript):
    """A copy of `transcript` with server-specific values replaced by numbered placeholders."""
    ids: dict = {}

    def ph(kind, v):
        key = (kind, v)
        if key not in ids:
            ids[key] = f"<{kind}-{sum(1 for k in ids if k[0] == kind) + 1}>"
        return ids[key]

    out = []
    for ev in transcript["events"]:
        ev = dict(ev)
        if "frames" in ev and ev["op"] != "send":
            frames = []
            for f in ev["frames"]:
                hs = []
                for k, v in f["headers"]:
                    if k == "server":
                        v = "<server>"
                    elif k in ("message-id", "ack"):
                        v = ph("id", v)
                    elif k == "session":
                        v = ph("session", v)
                    v = GENERATED_NAME.sub(lambda m: ph("gen", m.group(0)), v)
                    hs.append([k, v])
                frames.append({"command": f["command"], "headers": hs, "body": f["body"]})
            ev["frames"] = frames
        out.append(ev)
    return out


def _label(ev, i):
    return f"step {i} ({ev['op']} {ev.get('conn', '')})".replace(" )", ")")


def _order(f):
    return (f["command"], json.dumps(f["body"]), json.dumps(f["headers"]))


def compare(recorded, replayed, kept=None):
    """Differences as a list of (path, rabbitmq_value, herald_value); empty when they agree.
    Differences covered by the rules above (CLOSE_AFTER_ERROR) go to `kept` instead."""
    a, b = normalise(recorded), normalise(replayed)
    kept = [] if kept is None else kept
    diffs = []
    cut = set()  # connections Herald closed after an ERROR where RabbitMQ kept them open
    if len(a) != len(b):
        diffs.append(("events.count", len(a), len(b)))
    for i, (ea, eb) in enumerate(zip(a, b)):
        p = f"s{i}"
        if ea["op"] == "send":
            if ea["sha256"] != eb["sha256"]:
                diffs.append((f"{p}.sent", "script changed since recording: re-record", eb["sha256"]))
            continue
        if ea.get("conn") in cut and ea["op"] != "open":
            if eb.get("frames"):
                diffs.append((f"{p}.frames", "<nothing after ERROR and close>", [f["command"] for f in eb["frames"]]))
            elif ea.get("frames") or not ea.get("closed"):
                kept.append((f"{p}", "close-after-error"))
            continue
        if "handshake" in ea:
            for k in ("status", "protocol"):
                if ea["handshake"].get(k) != eb.get("handshake", {}).get(k):
                    diffs.append((f"{p}.handshake.{k}", ea["handshake"].get(k), eb.get("handshake", {}).get(k)))
        fa, fb = ea.get("frames", []), eb.get("frames", [])
        if ea.get("unordered") or eb.get("unordered"):
            fa, fb = sorted(fa, key=_order), sorted(fb, key=_order)
        if "closed" in ea and ea["closed"] != eb.get("closed"):
            if (not ea["closed"] and fa and fa[-1]["command"] == "ERROR" and fb
                    and fb[-1]["command"] == "ERROR" and len(fa) == len(fb)):
                kept.append((f"{p}.closed", "close-after-error"))
                cut.add(ea["conn"])
            else:
                diffs.append((f"{p}.closed", ea["closed"], eb.get("closed")))
        if len(fa) != len(fb):
            diffs.append((f"{p}.frames", [f["command"] for f in fa], [f["command"] for f in fb]))
        for j, (x, y) in enumerate(zip(fa, fb)):
            q = f"{p}.f{j}"
            if x["command"] != y["command"]:
                diffs.append((f"{q}.command", x["command"], y["command"]))
                continue
            hx, hy = x["headers"], y["headers"]
            if y["command"] == "ERROR":
                hy = [[k, v] for k, v in hy if k not in HERALD_ONLY_ERROR_HEADERS or any(k == kk for kk, _ in hx)]
            kx, ky = [k for k, _ in hx], [k for k, _ in hy]
            for k in sorted(set(kx) | set(ky)):
                vx = [v for kk, v in hx if kk == k]
                vy = [v for kk, v in hy if kk == k]
                if vx != vy:
                    diffs.append((f"{q}.header.{k}", vx[0] if len(vx) == 1 else (vx or None),
                                  vy[0] if len(vy) == 1 else (vy or None)))
            if x["body"] != y["body"]:
                diffs.append((f"{q}.body", x["body"], y["body"]))
    return diffs


def count_frames(transcript):
    sent = sum(ev.get("frames", 1) for ev in transcript["events"] if ev["op"] == "send")
    received = sum(len(ev.get("frames", [])) for ev in transcript["events"] if ev["op"] != "send")
    return sent, received
