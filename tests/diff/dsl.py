"""The little language the frame scripts in cases/ are written in.

A case is ``case(name, doc, *steps)``; steps:

- ``tcp(conn)`` / ``ws(conn, protocols)``: open a STOMP connection (TCP, or WebSocket offering
  the given subprotocols, None for no Sec-WebSocket-Protocol header);
- ``send(conn, data)``: raw bytes; build them with ``frame(...)`` or write them by hand;
  ``@ack:N`` / ``@message-id:N`` in them stand for that header of the N-th MESSAGE (from 0)
  the connection received;
- ``recv(conn, n, close=False)``: expect `n` frames (and the server to close, with close=True);
  when recording, this waits up to the timeout; the transcript keeps what really came;
  ``unordered=True`` when the server may send them in either order (a RECEIPT and a MESSAGE);
- ``pause(seconds)``, ``close(conn)``.

Shortcuts: ``connect(conn, ...)`` = open TCP + CONNECT + expect one frame.
Every connection still open at the end is sent DISCONNECT (receipt ``end-of-case``) and read to
its close, so frames nobody waited for are compared too.
"""

from __future__ import annotations


def case(name, doc, *steps):
    flat = []

    def add(s):
        if isinstance(s, list):
            for x in s:
                add(x)
        else:
            flat.append(s)

    add(list(steps))
    return {"name": name, "doc": doc, "steps": flat}


def frame(command, headers=(), body=b"", nul=True, content_length=False) -> bytes:
    if isinstance(body, str):
        body = body.encode()
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    if content_length:
        items.append(("content-length", str(len(body))))
    head = command + "\n" + "".join(f"{k}:{v}\n" for k, v in items) + "\n"
    return head.encode() + body + (b"\x00" if nul else b"")


def tcp(conn="c"):
    return {"op": "open", "conn": conn, "kind": "tcp"}


def ws(conn="w", protocols=None):
    return {"op": "open", "conn": conn, "kind": "ws", "protocols": protocols}


def send(conn, data, frames=1):
    return {"op": "send", "conn": conn, "data": data, "frames": frames}


def recv(conn="c", n=1, close=False, timeout=None, unordered=False):
    s = {"op": "recv", "conn": conn, "n": n, "close": close, "unordered": unordered}
    if timeout is not None:
        s["timeout"] = timeout
    return s


def pause(seconds):
    return {"op": "pause", "seconds": seconds}


def close(conn="c"):
    return {"op": "close", "conn": conn}


GUEST = [("login", "guest"), ("passcode", "guest")]


def connect_frame(version="1.2", extra=(), command="CONNECT", host="/"):
    h = []
    if version is not None:
        h.append(("accept-version", version))
    if host is not None:
        h.append(("host", host))
    return frame(command, h + GUEST + list(extra))


def connect(conn="c", version="1.2", extra=(), kind="tcp", protocols=None):
    """Open + CONNECT as guest + expect CONNECTED."""
    opener = tcp(conn) if kind == "tcp" else ws(conn, protocols)
    return [opener, send(conn, connect_frame(version, extra)), recv(conn, 1)]


def sub(conn, dest, sid, receipt=None, ack=None, extra=()):
    h = [("destination", dest)]
    if sid is not None:
        h.append(("id", sid))
    if ack:
        h.append(("ack", ack))
    h += list(extra)
    if receipt:
        h.append(("receipt", receipt))
    return send(conn, frame("SUBSCRIBE", h))


def pub(conn, dest, body, receipt=None, extra=()):
    h = [("destination", dest)] + list(extra)
    if receipt:
        h.append(("receipt", receipt))
    return send(conn, frame("SEND", h, body))
