"""XMPP differential harness: run the flows in tests/xdiff/flows against a server, turn
what comes back into normalised element trees, compare two runs.

Used by `tests/xdiff/record` (against ejabberd, writes transcripts/) and by
tests/py/test_xdiff_xmpp.py (against Herald, compares with transcripts/).

Flow files (`flows/*.flow`) are plain text, one step a line:

    case NAME                 a new case; connections of the previous one are closed
    tcp A | ws A              open a raw c2s TCP connection / an XMPP WebSocket (`/ws`, RFC 7395)
    tls A                     open a raw c2s TCP connection to the listener that requires STARTTLS
    starttls A                send <starttls/>, record the answer, and on <proceed/> do the TLS handshake
    send A XML                send the bytes as written (after substitutions)
    recv A [unordered]        what the server sends until it goes quiet (or closes);
                              `unordered`: the set matters, not the order (presence fan-out)
    login A USER RESOURCE     header, SASL PLAIN, restart, bind: several send/recv steps
    end A                     send the stream close and record everything up to EOF
    http S METHOD PATH CT|- BODY   one BOSH request of session S (CT `-`: no Content-Type)
    sleep SECONDS

Substitutions in XML and BODY: {STREAM} the usual client header to `localhost`,
{OPEN} the WebSocket `<open/>`, {plain:USER:PASS} base64 of PLAIN's `\\0USER\\0PASS`,
{b64:TEXT} base64 of TEXT (`\\0` a NUL), {pad:N} N times `x`,
{sid:S} the sid of BOSH session S, {rid:S} its next rid, {rid:S:+N} last rid + N
(not used up).

Every normalisation is in NORMALISATIONS below, with its reason.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import http.client
import json
import os
import re
import socket
import struct
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
FLOWS = os.path.join(HERE, "flows")
TRANSCRIPTS = os.path.join(HERE, "transcripts")
DIFFERENCES = os.path.join(HERE, "differences.json")

DOMAIN = "localhost"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_BOSH = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_DELAY = "urn:xmpp:delay"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

STREAM = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>"
)
OPEN = f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>"

# Users and rosters both servers get: Herald's test users and projects
# (tests/py/conftest.py); ejabberd gets the same contacts as roster items
# (name = uid, group = project, subscription both), which is what Herald
# derives from project membership.
USERS = ["alice", "bob", "carol", "dave", "eve"]
PASSWORD = "secret"
PROJECTS = {"p1": ["alice", "bob", "carol"], "p2": ["carol", "dave", "eve"]}

# ---------------------------------------------------------------------------
# Normalisations: what is server-specific, and why. `norm_*` below implement them.

NORMALISATIONS = [
    ("stream header: `id` dropped", "a random stream id per connection"),
    ("`xml:lang` dropped everywhere", "ejabberd stamps stanzas it routes with the stream's language; Herald does not; no client reads it from replies"),
    ("`<text/>` of stream, stanza and SASL errors dropped", "free human-readable wording; the condition element is what clients act on"),
    ("stream features: only <mechanisms> (PLAIN only), <bind>, <starttls> kept",
     "the optional extensions each server offers legitimately differ (ejabberd: sm, csi, roster versioning, register, SCRAM-SHA-512…; Herald: SCRAM-SHA-1/256 without SCRAM-SHA-512)"),
    ("an `id` the flow never sent becomes `*`", "ids of server-originated stanzas (roster pushes) are random"),
    ("a JID resource the flow never sent becomes `*`", "a server-generated resource (bind without <resource/>) is random"),
    ("`<delay stamp>` becomes `*`", "a timestamp"),
    ("SASL `<challenge/>` and `<success/>` data become `*`", "SCRAM nonces and salts are random"),
    ("BOSH session attributes `sid`, `authid` become `*`; `inactivity`, `polling`, `requests`, `maxpause`, `hold`, `wait`, `secure` dropped",
     "random ids; limits each server picks within XEP-0124's rules"),
    ("HTTP: only the status and the media type of Content-Type are compared", "Server, Date, CORS and charset spelling are server-specific"),
    ("HTTP: a response that is not a BOSH <body/> (an error or information page) is compared by status only", "each server's own HTML/text page"),
    ("BOSH `ver` dropped", "the XEP-0124 version each server implements (ejabberd 1.11; Herald answers the client's)"),
    ("an error reply's echo of the original payload is dropped", "RFC 6120 §8.3.1 lets a server include it (ejabberd does) or not (Herald never does: an error must not amplify what the client sent)"),
    ("children of <presence/> sorted", "RFC 6120 defines no order among <show/>, <status/>, <priority/>"),
    ("disco#info: identity `name` dropped; only the features both implement kept (disco#info, disco#items); data forms (XEP-0128 serverinfo) dropped",
     "the product name and the module list are each server's; Herald's own list is in the README"),
    ("`recv A unordered`: the received elements are sorted", "presence of several contacts arrives in the order of the server's fan-out"),
]

KEEP_FEATURES = {f"{{{NS_SASL}}}mechanisms", f"{{{NS_BIND}}}bind", f"{{{NS_TLS}}}starttls"}
BOSH_DROP = {"inactivity", "polling", "requests", "maxpause", "hold", "wait", "secure", "ver"}
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
COMMON_FEATURES = {NS_DISCO_INFO, "http://jabber.org/protocol/disco#items"}
BOSH_STAR = {"sid", "authid"}


def tree(e: ET.Element) -> list:
    """An element as [tag, {attrs}, children-or-text]; tags are `{ns}local`."""
    kids = [tree(c) for c in e]
    text = (e.text or "").strip()
    return [e.tag, dict(e.attrib), kids if kids else text]


class Normaliser:
    def __init__(self, sent_text: str):
        # Everything the flow sent in this case: ids and resources in it are the flow's.
        self.sent = sent_text

    def element(self, t: list) -> list | None:
        tag, attrs, body = t
        attrs = {k: v for k, v in attrs.items() if k != XML_LANG}
        if tag in (f"{{{NS_STREAM}}}error", f"{{{NS_SASL}}}failure") or tag.endswith("}error"):
            if isinstance(body, list):
                body = [c for c in body if not c[0].endswith("}text")]
        if tag == f"{{{NS_STREAM}}}features" and isinstance(body, list):
            kept = []
            for c in body:
                if c[0] not in KEEP_FEATURES:
                    continue
                if c[0] == f"{{{NS_SASL}}}mechanisms":
                    c = [c[0], c[1], [m for m in c[2] if m[2] == "PLAIN"]]
                kept.append(c)
            body = kept
        if tag in (f"{{{NS_SASL}}}challenge", f"{{{NS_SASL}}}success") and isinstance(body, str) and body:
            body = "*"
        if attrs.get("type") == "error" and tag.split("}")[-1] in ("iq", "message", "presence") and isinstance(body, list):
            body = [c for c in body if c[0].endswith("}error")]
        if tag.endswith("}presence") and isinstance(body, list):
            body = sorted(body, key=lambda c: c[0])
        if tag == f"{{{NS_DISCO_INFO}}}identity":
            attrs.pop("name", None)
        if tag == f"{{{NS_DISCO_INFO}}}query" and isinstance(body, list):
            body = [c for c in body if c[0].endswith("}identity") or c[0].endswith("}feature") and c[1].get("var") in COMMON_FEATURES]
        if tag == f"{{{NS_DELAY}}}delay" and "stamp" in attrs:
            attrs["stamp"] = "*"
        if tag == f"{{{NS_BOSH}}}body":
            attrs = {k: ("*" if k in BOSH_STAR else v) for k, v in attrs.items() if k not in BOSH_DROP}
        if "id" in attrs and not tag.startswith(f"{{{NS_BOSH}}}") and f"'{attrs['id']}'" not in self.sent and f'"{attrs["id"]}"' not in self.sent:
            attrs["id"] = "*"
        for k in ("from", "to", "jid"):
            if k in attrs:
                attrs[k] = self.jid(attrs[k])
        if tag == f"{{{NS_BIND}}}jid" and isinstance(body, str):
            body = self.jid(body)
        if isinstance(body, list):
            body = [n for n in (self.element(c) for c in body) if n is not None]
        return [tag, attrs, body]

    def jid(self, j: str) -> str:
        if "/" in j:
            bare, res = j.split("/", 1)
            if res not in self.sent:
                return bare + "/*"
        return j

    def header(self, attrs: dict) -> dict:
        return {k: v for k, v in attrs.items() if k not in ("id", XML_LANG)}


# ---------------------------------------------------------------------------
# Flows


@dataclass
class Step:
    verb: str
    conn: str
    args: list
    line: int

    def label(self) -> str:
        return f"line {self.line}: {self.verb} {self.conn} {' '.join(self.args)}".strip()[:160]


@dataclass
class Case:
    name: str
    file: str
    steps: list = field(default_factory=list)
    source: str = ""

    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]


def load_flows() -> list[Case]:
    cases: list[Case] = []
    for fn in sorted(os.listdir(FLOWS)):
        if not fn.endswith(".flow"):
            continue
        cur = None
        with open(os.path.join(FLOWS, fn)) as f:
            for n, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                verb, _, rest = line.partition(" ")
                if verb == "case":
                    cur = Case(rest.strip(), fn)
                    cases.append(cur)
                    cur.source += line + "\n"
                    continue
                if cur is None:
                    raise ValueError(f"{fn}:{n}: step before the first `case`")
                cur.source += line + "\n"
                if verb in ("send",):
                    conn, _, data = rest.partition(" ")
                    cur.steps.append(Step(verb, conn, [data], n))
                elif verb == "http":
                    parts = rest.split(" ", 4)
                    if len(parts) < 4:
                        raise ValueError(f"{fn}:{n}: http S METHOD PATH CT [BODY]")
                    cur.steps.append(Step(verb, parts[0], parts[1:] + ([""] if len(parts) == 4 else []), n))
                elif verb in ("tcp", "ws", "tls", "starttls", "recv", "login", "end", "sleep"):
                    conn, *args = rest.split()
                    cur.steps.append(Step(verb, conn, args, n))
                else:
                    raise ValueError(f"{fn}:{n}: unknown step {verb!r}")
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate case names: {dup}")
    return cases


# ---------------------------------------------------------------------------
# Connections


class StreamReader:
    """Incremental parse of one XML stream: header, top-level elements, close."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root = None

    def feed(self, data: bytes) -> list:
        out = []
        try:
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    if self.depth == 0:
                        self.root = el
                        out.append(["header", el.tag, dict(el.attrib)])
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        out.append(["element", tree(el)])
                        self.root.remove(el)
                    elif self.depth == 0:
                        out.append(["close"])
        except ET.ParseError as e:
            out.append(["unparsable", str(e)])
            self.reset()
        return out


class TcpConn:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = StreamReader()
        self.events: list = []
        self.eof = False

    def send(self, data: str):
        if "<stream:stream" in data:
            self.reader.reset()  # a restart: the server answers with a new document
        try:
            self.sock.sendall(data.encode())
        except OSError:
            pass

    def pump(self, timeout: float) -> bool:
        """Reads what arrives within `timeout`; False when nothing did."""
        if self.eof:
            return False
        d = self._recv(timeout)
        if d is None:
            return False
        if d:
            self.events.extend(self.reader.feed(d))
        return True

    def _recv(self, timeout: float):
        """One read of at most `timeout` seconds: the bytes, None on timeout,
        b"" at the end of the stream (recorded as an "eof" event)."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return None
        except OSError:
            d = b""
        if not d:
            self.eof = True
            self.events.append(["eof"])
        return d

    def send_close(self):
        self.send("</stream:stream>")

    def start_tls(self):
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # both servers use a self-signed certificate
        self.sock.settimeout(5)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.reader.reset()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class WsConn(TcpConn):
    """RFC 6455 by hand (masked client frames), subprotocol `xmpp`, one element per message."""

    def __init__(self, port: int, path: str = "/ws"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.events = []
        self.eof = False
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.sock.recv(4096)
            if not d:
                raise AssertionError(f"WebSocket handshake: connection closed; got {buf!r}")
            buf += d
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise AssertionError(f"WebSocket handshake refused: {head!r}")

    def send(self, data: str):
        self.frame(0x1, data.encode())

    def frame(self, op: int, payload: bytes):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | op])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        try:
            self.sock.sendall(head + mask + masked)
        except OSError:
            pass

    def pump(self, timeout: float) -> bool:
        if self.eof:
            return False
        got = self._parse()
        if got:
            return True
        d = self._recv(timeout)
        if d is None:
            return False
        if not d:
            return True
        self.buf += d
        self._parse()
        return True

    def _parse(self) -> bool:
        got = False
        while len(self.buf) >= 2:
            op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
            i = 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, i = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, i = struct.unpack(">Q", self.buf[2:10])[0], 10
            if len(self.buf) < i + n:
                break
            payload, self.buf = self.buf[i : i + n], self.buf[i + n :]
            got = True
            if op == 0x8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                self.events.append(["ws-close", code])
            elif op in (0x1, 0x2):
                try:
                    self.events.append(["element", tree(ET.fromstring(payload))])
                except ET.ParseError as e:
                    self.events.append(["unparsable", str(e)])
        return got

    def send_close(self):
        self.send(f"<close xmlns='{NS_FRAMING}'/>")


class Bosh:
    def __init__(self):
        self.sid = None
        self.rid = 1_000_000


class Runner:
    """Runs one case against one server. `expect` (the transcript's steps) makes
    receives stop as soon as the expected number of events is there."""

    def __init__(
        self, c2s_port: int, http_port: int, tls_port: int | None = None, quiet: float = 0.6, timeout: float = 3.0, replay_quiet: float = 1.0
    ):
        self.c2s_port, self.http_port, self.tls_port = c2s_port, http_port, tls_port
        self.quiet, self.timeout, self.replay_quiet = quiet, timeout, replay_quiet

    def run(self, case: Case, expect: list | None = None) -> list:
        conns: dict = {}
        boshes: dict = {}
        out: list = []
        sent_text = case.source
        norm = Normaliser(sent_text)
        exp_iter = iter(expect or [])

        def sub(s: str) -> str:
            def one(m):
                k = m.group(1).split(":")
                if k[0] == "STREAM":
                    return STREAM
                if k[0] == "OPEN":
                    return OPEN
                if k[0] == "plain":
                    return base64.b64encode(f"\0{k[1]}\0{k[2]}".encode()).decode()
                if k[0] == "b64":
                    return base64.b64encode(":".join(k[1:]).replace("\\0", "\0").encode()).decode()
                if k[0] == "pad":
                    return "x" * int(k[1])
                b = boshes.setdefault(k[1], Bosh())
                if k[0] == "sid":
                    return b.sid or "no-sid"
                if k[0] == "rid":
                    if len(k) > 2:
                        return str(b.rid + int(k[2]))
                    b.rid += 1
                    return str(b.rid)
                raise ValueError(m.group(0))

            return re.sub(r"\{(STREAM|OPEN|(?:plain|b64|pad|sid|rid):[^}]*)\}", one, s)

        def receive(c, label: str, unordered: bool, until_eof: bool = False):
            want = None
            e = next(exp_iter, None) if expect is not None else None
            if e is not None:
                want = len(e.get("got", []))
            start = len(c.events)
            deadline = time.monotonic() + (self.timeout if not until_eof else self.timeout + 2)
            while True:
                n = len(c.events) - start
                if want is not None and n >= want and (not until_eof or c.eof):
                    # what was expected is there: a short look for extras
                    while c.pump(0.08):
                        pass
                    break
                left = deadline - time.monotonic()
                if left <= 0 or c.eof and not c.pump(0):
                    break
                # Recording: until the server is quiet. Replay: until the
                # expected count, or quiet for `replay_quiet` (an answer missing).
                got = c.pump(min(left, self.quiet if want is None else self.replay_quiet))
                if not got and not until_eof:
                    break
            events = [self.norm_event(norm, ev) for ev in c.events[start:]]
            if unordered:
                events.sort(key=lambda ev: json.dumps(ev, sort_keys=True))
            out.append({"step": label, "got": events})

        try:
            for st in case.steps:
                label = st.label()
                if st.verb in ("tcp", "ws", "tls"):
                    if st.verb == "tls" and not self.tls_port:
                        raise AssertionError("this runner has no STARTTLS-required listener")
                    port = {"tcp": self.c2s_port, "tls": self.tls_port}.get(st.verb)
                    conns[st.conn] = TcpConn(port) if st.verb != "ws" else WsConn(self.http_port)
                elif st.verb == "starttls":
                    c = conns[st.conn]
                    c.send(f"<starttls xmlns='{NS_TLS}'/>")
                    receive(c, label, False)
                    if any(ev[0] == "element" and ev[1][0] == f"{{{NS_TLS}}}proceed" for ev in out[-1]["got"]):
                        c.start_tls()
                elif st.verb == "send":
                    conns[st.conn].send(sub(st.args[0]))
                elif st.verb == "recv":
                    receive(conns[st.conn], label, "unordered" in st.args)
                elif st.verb == "end":
                    c = conns[st.conn]
                    c.send_close()
                    receive(c, label, False, until_eof=True)
                elif st.verb == "sleep":
                    time.sleep(float(st.conn))
                elif st.verb == "login":
                    c = conns[st.conn]
                    user, res = st.args
                    ws = isinstance(c, WsConn)
                    hdr = OPEN if ws else STREAM
                    # RFC 7395 §3.3.3: over WebSocket every stanza names its namespace
                    xmlns = " xmlns='jabber:client'" if ws else ""
                    steps = [
                        hdr,
                        f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{sub('{plain:' + user + ':' + PASSWORD + '}')}</auth>",
                        hdr,
                        f"<iq{xmlns} type='set' id='bind-{res}'><bind xmlns='{NS_BIND}'><resource>{res}</resource></bind></iq>",
                    ]
                    for i, s in enumerate(steps):
                        c.send(s)
                        receive(c, f"{label} [{i + 1}/4]", False)
                elif st.verb == "http":
                    method, path, ctype, body = st.args
                    out.append({"step": label, "got": [self.http(norm, boshes, st.conn, method, path, ctype, sub(body))]})
        finally:
            for c in conns.values():
                c.close()
        return out

    def http(self, norm, boshes, s, method, path, ctype, body) -> list:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=self.timeout + 62)
        headers = {"Host": "localhost"}
        if ctype != "-":
            headers["Content-Type"] = ctype
        try:
            conn.request(method, path, body=body.encode() if body else None, headers=headers)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        ct = (r.getheader("Content-Type") or "").split(";")[0].strip().lower()
        ev = ["http", r.status, ct]
        data_s = data.strip()
        if data_s.startswith(b"<"):
            try:
                t = tree(ET.fromstring(data_s))
                if t[0] == f"{{{NS_BOSH}}}body":
                    if t[1].get("sid"):
                        boshes.setdefault(s, Bosh()).sid = t[1]["sid"]
                    ev.append(norm.element(t))
                    return ev
            except ET.ParseError:
                pass
        # an error or information page: compared by status only
        return ["http", r.status, "", ["text", "(no BOSH body)"]]

    @staticmethod
    def norm_event(norm: Normaliser, ev: list) -> list:
        if ev[0] == "element":
            return ["element", norm.element(ev[1])]
        if ev[0] == "header":
            return ["header", ev[1], norm.header(ev[2])]
        if ev[0] == "unparsable":
            return ["unparsable"]
        if ev[0] == "http":
            if len(ev) > 3 and ev[3][0] != "text":
                return ev[:3] + [norm.element(ev[3])]
            return ["http", ev[1], "", ["text", "(no BOSH body)"]]
        return ev


def renormalise(case: Case, steps: list) -> list:
    """Applies the current normalisations to a recorded transcript (they are
    idempotent), so a new normalisation needs no re-recording."""
    norm = Normaliser(case.source)
    out = []
    for s in steps:
        got = [Runner.norm_event(norm, ev) for ev in s["got"]]
        if "unordered" in s["step"].split(":", 1)[-1].split():
            got.sort(key=lambda ev: json.dumps(ev, sort_keys=True))
        out.append({"step": s["step"], "got": got})
    return out


# ---------------------------------------------------------------------------
# Comparison and rendering


def render(t) -> str:
    """A normalised element as compact XML with sorted attributes."""

    def go(t, parent_ns):
        tag, attrs, body = t
        ns, local = (tag[1:].split("}", 1) if tag.startswith("{") else ("", tag))
        a = "".join(f" {k.replace('{http://www.w3.org/XML/1998/namespace}', 'xml:')}='{v}'" for k, v in sorted(attrs.items()))
        x = f" xmlns='{ns}'" if ns != parent_ns else ""
        if isinstance(body, list) and body:
            inner = "".join(go(c, ns) for c in body)
        elif isinstance(body, str) and body:
            inner = body
        else:
            return f"<{local}{x}{a}/>"
        return f"<{local}{x}{a}>{inner}</{local}>"

    return go(t, "jabber:client")


def render_event(ev: list) -> str:
    k = ev[0]
    if k == "element":
        return render(ev[1])
    if k == "header":
        a = " ".join(f"{n}='{v}'" for n, v in sorted(ev[2].items()))
        return f"<stream:stream {a}> (header)"
    if k == "http":
        return f"HTTP {ev[1]} {ev[2] or '(no content-type)'}" + (f" {render(ev[3]) if ev[3][0] != 'text' else ev[3][1]}" if len(ev) > 3 else "")
    if k == "close":
        return "</stream:stream>"
    if k == "eof":
        return "(connection closed)"
    if k == "ws-close":
        return f"(WebSocket close {ev[1]})"
    return f"({k})"


def diff(expected: list, got: list) -> list[str]:
    """Readable differences between two runs of one case (ejabberd's first)."""
    lines = []
    for i in range(max(len(expected), len(got))):
        e = expected[i] if i < len(expected) else {"step": "(missing)", "got": []}
        g = got[i] if i < len(got) else {"step": "(missing)", "got": []}
        a = [render_event(x) for x in e["got"]]
        b = [render_event(x) for x in g["got"]]
        if a == b:
            continue
        lines.append(f"@ {e['step']}")
        for d in difflib.ndiff(a, b):
            if d[:1] in "-+":
                lines.append(("ejabberd " if d[0] == "-" else "herald   ") + d[2:])
    return lines


def transcript_path(case: Case) -> str:
    return os.path.join(TRANSCRIPTS, case.file.replace(".flow", ".json"))


def load_transcripts() -> dict:
    out = {}
    for fn in sorted(os.listdir(TRANSCRIPTS)):
        if fn.endswith(".json"):
            with open(os.path.join(TRANSCRIPTS, fn)) as f:
                out.update(json.load(f)["cases"])
    return out


def load_differences() -> dict:
    with open(DIFFERENCES) as f:
        return json.load(f)


def show(steps: list) -> str:
    out = []
    for s in steps:
        out.append(f"  {s['step']}")
        out.extend(f"      {render_event(ev)}" for ev in s["got"])
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    recorded = load_transcripts()
    for name, c in recorded.items():
        if len(sys.argv) < 2 or any(a in name for a in sys.argv[1:]):
            print(f"== {name}\n{show(c['steps'])}")
