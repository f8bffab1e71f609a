"""XMPP helpers for Herald's Python suites: slixmpp clients and raw c2s sockets.

- ``xmpp_extra()``: the ``[xmpp]`` config section (STARTTLS required by default).
- ``Xmpp``: a slixmpp ``ClientXMPP`` over c2s TCP (STARTTLS, certificate checks off for
  Herald's generated self-signed certificate), with asyncio queues for messages,
  presences and auth failures, and bounded waits.
- ``RawC2S``: a blocking socket that speaks the stream by hand (STARTTLS included) for
  wire-level checks such as malformed XML.
- ``run()``: run one async scenario with a hard bound.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import time
import uuid
import xml.etree.ElementTree as ET

import slixmpp

DOMAIN = "localhost"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_ROSTER = "jabber:iq:roster"
WAIT = 5.0


def xmpp_extra(starttls: str = "required", **kw) -> str:
    lines = [
        "[xmpp]",
        f'domain = "{DOMAIN}"',
        'listen = "127.0.0.1:0"',
        'http_listen = "127.0.0.1:0"',
        f'starttls = "{starttls}"',
    ]
    for k, v in kw.items():
        lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


def c2s_port(herald) -> int:
    if "xmpp-c2s" not in herald.listeners:
        raise AssertionError(f"herald did not print 'herald: listening xmpp-c2s ...': {herald.listeners}\n{herald.describe()}")
    return herald.listeners["xmpp-c2s"][1]


def http_port(herald) -> int:
    if "xmpp-http" not in herald.listeners:
        raise AssertionError(f"herald did not print 'herald: listening xmpp-http ...': {herald.listeners}\n{herald.describe()}")
    return herald.listeners["xmpp-http"][1]


def run(coro, timeout: float = 45.0):
    """Run one async scenario with a hard bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def rid() -> str:
    return uuid.uuid4().hex[:10]


class AuthFailed(AssertionError):
    def __init__(self, msg, failures):
        super().__init__(msg)
        self.failures = failures


async def _get(q: asyncio.Queue, pred, timeout: float, what: str, keep: list):
    """Next item of q matching pred; unmatched items are kept in `keep` (and re-checked)."""
    for i, item in enumerate(keep):
        if pred(item):
            return keep.pop(i)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            seen = "\n  ".join(str(x)[:300] for x in keep[-8:]) or "(none)"
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; unmatched:\n  {seen}")
        try:
            item = await asyncio.wait_for(q.get(), left)
        except asyncio.TimeoutError:
            continue
        if pred(item):
            return item
        keep.append(item)


class Xmpp:
    """A slixmpp client over Herald's c2s listener."""

    def __init__(self, port: int, user: str, password: str = "secret", resource: str | None = None, mech: str | None = None, plaintext: bool = False):
        self.user = user
        self.port = port
        jid = f"{user}@{DOMAIN}/{resource or 'py-' + rid()}"
        self.c = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
        c = self.c
        c.enable_direct_tls = False  # c2s port speaks STARTTLS, not direct TLS
        c.enable_starttls = not plaintext
        c.enable_plaintext = plaintext
        c.ssl_context.check_hostname = False
        c.ssl_context.verify_mode = ssl.CERT_NONE  # Herald's generated self-signed certificate
        c.whitespace_keepalive = False
        if plaintext:
            # Allow SASL over an unencrypted loopback stream (starttls = "off").
            c.plugin["feature_mechanisms"].unencrypted_plain = True
            c.plugin["feature_mechanisms"].unencrypted_scram = True
        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        self.failures: list = []
        self.stream_errors: list = []
        self._kept_msgs: list = []
        self._kept_pres: list = []
        self.tls = False
        self.cert_pem = None
        self._started = asyncio.get_running_loop().create_future()
        self._disconnected = asyncio.Event()
        c.add_event_handler("session_start", self._on_start)
        c.add_event_handler("failed_auth", lambda st: self.failures.append(st))
        c.add_event_handler("failed_all_auth", lambda *_: self._fail("all SASL mechanisms failed"))
        c.add_event_handler("no_auth", lambda *_: self._fail("no usable SASL mechanism"))
        c.add_event_handler("stream_error", lambda e: self.stream_errors.append(e))
        c.add_event_handler("tls_success", self._on_tls)
        c.add_event_handler("ssl_cert", lambda pem: setattr(self, "cert_pem", pem))
        c.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        c.add_event_handler("message_error", lambda m: self.messages.put_nowait(m))  # type='error'
        c.add_event_handler("presence", lambda p: self.presences.put_nowait(p))
        c.add_event_handler("disconnected", self._on_disconnected)
        c.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))

    def _on_tls(self, *_):
        self.tls = True

    def _on_start(self, *_):
        if not self._started.done():
            self._started.set_result(True)

    def _fail(self, why):
        if not self._started.done():
            self._started.set_exception(AuthFailed(f"{self.user}: {why}; failures: {[str(f) for f in self.failures]}", self.failures))

    def _on_disconnected(self, *_):
        self._disconnected.set()
        self._fail("disconnected before session start")

    @property
    def jid(self) -> str:
        return str(self.c.boundjid.full)

    @property
    def mechanism(self) -> str | None:
        m = getattr(self.c.plugin["feature_mechanisms"], "mech", None)
        return getattr(m, "name", None) if m else None

    async def start(self, timeout: float = 10.0):
        self.c.connect(host="127.0.0.1", port=self.port)
        try:
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            raise AssertionError(f"{self.user}: no session_start within {timeout}s (failures: {[str(f) for f in self.failures]})") from None
        except AuthFailed:
            await self.kill()
            raise
        return self

    async def online(self, **kw):
        await self.start()
        self.presence(**kw)
        return self

    def presence(self, show: str | None = None, status: str | None = None, ptype: str | None = None):
        p = self.c.make_presence(pshow=show, pstatus=status, ptype=ptype)
        p.send()

    def chat(self, to: str, body: str, mtype: str = "chat", mid: str | None = None, mfrom: str | None = None):
        m = self.c.make_message(mto=to, mbody=body, mtype=mtype)
        m["id"] = mid or rid()
        if mfrom:
            m["from"] = mfrom
        m.send()
        return m["id"]

    async def roster(self):
        iq = self.c.make_iq_get(queryxmlns=NS_ROSTER)
        res = await iq.send(timeout=WAIT)
        items = {}
        q = res.xml.find(f"{{{NS_ROSTER}}}query")
        assert q is not None, str(res)
        for it in q.findall(f"{{{NS_ROSTER}}}item"):
            items[it.get("jid")] = {
                "subscription": it.get("subscription"),
                "name": it.get("name"),
                "groups": [g.text for g in it.findall(f"{{{NS_ROSTER}}}group")],
            }
        return items

    async def message(self, pred=lambda m: True, timeout=WAIT, what="message"):
        return await _get(self.messages, pred, timeout, f"{self.user}: {what}", self._kept_msgs)

    async def no_message(self, pred, wait=0.6, what="message"):
        await asyncio.sleep(wait)
        while not self.messages.empty():
            self._kept_msgs.append(self.messages.get_nowait())
        hit = [m for m in self._kept_msgs if pred(m)]
        assert not hit, f"{self.user}: unexpected {what}: {hit[0]}"

    async def presence_from(self, pred=lambda p: True, timeout=WAIT, what="presence"):
        return await _get(self.presences, pred, timeout, f"{self.user}: {what}", self._kept_pres)

    async def disconnect(self, wait: float = 2.0):
        if self.c.transport is None:
            return
        try:
            await asyncio.wait_for(self.c.disconnect(wait=wait), wait + 3)
        except Exception:
            await self.kill()

    async def kill(self):
        t = self.c.transport
        if t is not None:
            t.abort()
        try:
            await asyncio.wait_for(self._disconnected.wait(), 3)
        except asyncio.TimeoutError:
            pass
        self.c.cancel_connection_attempt()


def ptype(p) -> str | None:
    """The raw type attribute (None for available)."""
    return p.xml.get("type")


def available_from(jid):
    return lambda p: str(p["from"]) == jid and ptype(p) is None


def unavailable_from(jid):
    return lambda p: str(p["from"]) == jid and ptype(p) == "unavailable"


# ---------------------------------------------------------------------------
# Raw c2s socket


STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>"
)


class RawC2S:
    def __init__(self, port: int, timeout: float = WAIT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.eof = False
        self.peer_cert_der = None

    def send(self, data: str | bytes):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def read_until(self, pattern: bytes, timeout: float = WAIT) -> bytes:
        """Read until `pattern` (regex) matches the buffer; returns and consumes up to the match end."""
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                out, self.buf = self.buf[: m.end()], self.buf[m.end():]
                return out
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(f"no {pattern!r} within {timeout}s (eof={self.eof}); got {self.buf[-2000:]!r}")
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ssl.SSLError, OSError):
                d = b""
            if not d:
                self.eof = True
            self.buf += d

    def read_to_eof(self, timeout: float = WAIT) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"server did not close the stream within {timeout}s; got {self.buf[-2000:]!r}")
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ssl.SSLError, ConnectionResetError, OSError):
                d = b""
            if not d:
                self.eof = True
            self.buf += d
        out, self.buf = self.buf, b""
        return out

    def open_stream(self) -> bytes:
        self.send(STREAM_HEADER)
        return self.read_until(rb"</(?:stream:)?features>")

    def starttls(self) -> bytes:
        feats = self.open_stream()
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in feats, f"STARTTLS not offered: {feats!r}"
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        self.read_until(rb"<proceed[^>]*/>")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.peer_cert_der = self.sock.getpeercert(binary_form=True)
        return feats

    def auth_plain(self, user: str, password: str = "secret") -> bytes:
        v = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{v}</auth>")
        return self.read_until(rb"<(success|failure)\b.*?(/>|</(success|failure)>)")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stream_error_condition(data: bytes) -> str | None:
    """The defined condition inside <stream:error> in raw stream bytes."""
    m = re.search(rb"<(?:stream:)?error\b[^>]*>(.*?)</(?:stream:)?error>", data, re.S)
    if not m:
        return None
    frag = b"<e xmlns:stream='http://etherx.jabber.org/streams'>" + m.group(1) + b"</e>"
    root = ET.fromstring(frag)
    for el in root:
        tag = el.tag
        if tag.startswith("{" + NS_STREAMS_ERR + "}") and not tag.endswith("}text"):
            return tag.split("}", 1)[1]
    return None
