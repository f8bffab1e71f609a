"""Helpers for the admin API suite (test_admin_api.py).

- ``Spec``: core/src/admin/openapi.json loaded as a JSON Schema 2020-12 registry; finds the
  operation of a request and validates response bodies (and SSE event data) against the
  documented schemas, ``$ref`` into ``components`` resolved.
- ``Api``: a small HTTP client (stdlib ``http.client``) for the admin listener that checks
  every answer against the document: the status must be documented for the operation, the
  content type must be one it lists, and a JSON body must match the schema.
- ``SseStream``: an open ``GET /api/stream`` read event by event with bounded waits.
- ``LoopThread``: an asyncio loop in a thread, so slixmpp clients stay connected while the
  (blocking) HTTP calls run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import http.client
import json
import os
import re
import socket
import threading
import time
from functools import lru_cache

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OPENAPI_PATH = os.path.join(ROOT, "core", "src", "admin", "openapi.json")
ROUTER_PATH = os.path.join(ROOT, "core", "src", "admin", "mod.rs")
BASE_URI = "urn:herald:admin:openapi"
HTTP_TIMEOUT = 5.0


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens) -> str:
    return "".join("/" + _escape(str(t)) for t in tokens)


def router_routes() -> list[tuple[str, str]]:
    """(method, OpenAPI-style path) of every `.route("...", get|post(...))` in the router."""
    with open(ROUTER_PATH) as f:
        src = f.read()
    found = re.findall(r'\.route\(\s*"([^"]+)"\s*,\s*(get|post|put|patch|delete)\(', src)
    if not found:
        raise AssertionError(f"no .route(...) found in {ROUTER_PATH}")
    return sorted({(m, re.sub(r"\{\*(\w+)\}", r"{\1}", p)) for p, m in found})


class Spec:
    def __init__(self, doc: dict):
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(BASE_URI, resource)
        self._routes = []
        for template in doc["paths"]:
            rx = ""
            for part in re.split(r"(\{\w+\})", template):
                if part.startswith("{"):
                    # /admin/{path} is a wildcard (`{*path}` in the router)
                    rx += ".+" if template == "/admin/{path}" else "[^/]+"
                else:
                    rx += re.escape(part)
            self._routes.append((re.compile("^" + rx + "$"), template))

    @classmethod
    def load(cls) -> "Spec":
        with open(OPENAPI_PATH) as f:
            return cls(json.load(f))

    # -- lookups
    def resolve(self, node: dict) -> tuple[dict, str | None]:
        """Follows a local `$ref`; returns (target, its pointer or None)."""
        if "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            target = self.doc
            for tok in ref[2:].split("/"):
                target = target[tok.replace("~1", "/").replace("~0", "~")]
            return target, ref[1:]
        return node, None

    def template(self, path: str) -> str:
        path = path.split("?", 1)[0]
        exact = [t for rx, t in self._routes if t == path]
        if exact:
            return exact[0]
        hits = [t for rx, t in self._routes if rx.match(path)]
        assert len(hits) == 1, f"{path} matches {hits} in openapi.json paths"
        return hits[0]

    def operation(self, method: str, path: str) -> tuple[str, dict]:
        t = self.template(path)
        op = self.doc["paths"][t].get(method.lower())
        assert op is not None, f"{method} {t} is not in openapi.json"
        return t, op

    def operations(self):
        for t, item in self.doc["paths"].items():
            for m, op in item.items():
                if m in ("get", "post", "put", "patch", "delete"):
                    yield m.upper(), t, op

    def response(self, method: str, path: str, status: int) -> tuple[dict, str]:
        t, op = self.operation(method, path)
        rs = op["responses"]
        key = str(status) if str(status) in rs else None
        assert key, f"{method} {t} answered {status}, which openapi.json does not document (has {sorted(rs)})"
        resp, ref = self.resolve(rs[key])
        base = ref or pointer("paths", t, method.lower(), "responses", key)
        return resp, base

    # -- validation
    @lru_cache(maxsize=None)
    def validator(self, ptr: str) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator({"$ref": f"{BASE_URI}#{ptr}"}, registry=self.registry)

    def validate(self, ptr: str, instance, what: str = ""):
        errors = sorted(self.validator(ptr).iter_errors(instance), key=lambda e: list(e.absolute_path))
        if errors:
            lines = [f"- at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10]]
            raise AssertionError(f"{what or ptr}: does not match openapi.json ({ptr}):\n" + "\n".join(lines) + f"\ninstance: {json.dumps(instance)[:1500]}")

    def schema_pointer(self, name: str) -> str:
        assert name in self.doc["components"]["schemas"], name
        return pointer("components", "schemas", name)

    def validate_schema(self, name: str, instance, what: str = ""):
        self.validate(self.schema_pointer(name), instance, what or name)

    def is_valid(self, name: str, instance) -> bool:
        return self.validator(self.schema_pointer(name)).is_valid(instance)

    def sse_event_pointer(self, event: str) -> str:
        _, op = self.operation("GET", "/api/stream")
        resp, _ = self.resolve(op["responses"]["200"])
        events = resp["content"]["text/event-stream"]["x-sse-events"]
        assert event in events, f"SSE event {event!r} is not documented (x-sse-events: {sorted(events)})"
        _, ref = self.resolve(events[event])
        return ref


class Response:
    def __init__(self, method, path, status, headers, body: bytes):
        self.method, self.path, self.status, self.headers, self.body = method, path, status, headers, body

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip()

    @property
    def json(self):
        assert self.content_type == "application/json", f"{self.method} {self.path}: {self.status} {self.content_type!r} {self.body[:300]!r}"
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def __repr__(self):
        return f"<{self.method} {self.path} -> {self.status} {self.content_type} {self.body[:300]!r}>"


class Api:
    """HTTP to the admin listener; every answer is checked against `spec`."""

    def __init__(self, port: int, token: str | None, spec: Spec, host: str = "127.0.0.1"):
        self.host, self.port, self.token, self.spec = host, port, token, spec

    def request(self, method: str, path: str, body=None, *, token="default", auth: str | None = None, headers=None, raw: bytes | None = None, check: bool = True) -> Response:
        h = dict(headers or {})
        token = self.token if token == "default" else token
        if auth is not None:
            h["Authorization"] = auth
        elif token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = None
        if raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            resp = Response(method, path, r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()
        if check:
            self.check(resp)
        return resp

    def check(self, resp: Response):
        """The status is documented for the operation, the content type is listed, JSON matches."""
        doc_resp, base = self.spec.response(resp.method, resp.path, resp.status)
        content = doc_resp.get("content")
        if not content:
            return
        ctype = resp.content_type
        if ctype not in content and "*/*" not in content:
            raise AssertionError(f"{resp!r}: content type {ctype!r} is not documented ({sorted(content)})")
        if ctype == "application/json":
            self.spec.validate(base + pointer("content", "application/json", "schema"), json.loads(resp.body), f"{resp.method} {resp.path} -> {resp.status}")

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> Response:
        return self.request("POST", path, body, **kw)

    def ok(self, method: str, path: str, body=None, **kw):
        r = self.request(method, path, body, **kw)
        assert r.status == 200, r
        return r.json

    def error(self, method: str, path: str, status: int, kind: str, body=None, **kw) -> dict:
        r = self.request(method, path, body, **kw)
        assert r.status == status, f"expected {status}: {r!r}"
        e = r.json
        assert e["error"] == kind, e
        assert e["message"], e
        return e


def poll(fn, pred, timeout: float = 3.0, interval: float = 0.05, what: str = "condition"):
    """Calls fn() until pred(value) holds; returns the value, fails with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if pred(v):
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {str(v)[:1500]}")
        time.sleep(interval)


class SseStream:
    """`GET /api/stream` held open; events are (name, data) with data parsed as JSON."""

    def __init__(self, api: Api, token="default"):
        self.api = api
        self.conn = http.client.HTTPConnection(api.host, api.port, timeout=HTTP_TIMEOUT)
        token = api.token if token == "default" else token
        h = {"Accept": "text/event-stream"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        self.conn.request("GET", "/api/stream", headers=h)
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.comments: list[str] = []
        self.seen: list[tuple[str, object]] = []
        if self.status != 200:
            body = self.resp.read()
            api.check(Response("GET", "/api/stream", self.status, self.headers, body))
            self.error_body = json.loads(body)
            self.close()

    def next_event(self, timeout: float) -> tuple[str, object]:
        deadline = time.monotonic() + timeout
        name, data = "message", []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no SSE event within {timeout}s; seen: {[n for n, _ in self.seen][-20:]}")
            self.sock.settimeout(left)
            try:
                line = self.resp.readline()
            except (socket.timeout, TimeoutError):
                raise AssertionError(f"no SSE event within {timeout}s; seen: {[n for n, _ in self.seen][-20:]}") from None
            if not line:
                raise AssertionError("the SSE stream ended")
            line = line.decode().rstrip("\r\n")
            if line == "":
                if data:
                    ev = (name, json.loads("\n".join(data)))
                    self.api.spec.validate(self.api.spec.sse_event_pointer(ev[0]), ev[1], f"SSE event {ev[0]}")
                    self.seen.append(ev)
                    return ev
                name, data = "message", []
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)

    def mark(self) -> int:
        """A position in the events seen so far, for `wait_for(since=...)`."""
        return len(self.seen)

    def wait_for(self, pred, timeout: float = 3.0, what: str = "event", since: int | None = None):
        """The next event matching pred(name, data); with `since`, events already read from that
        position count too (for events whose relative order is not defined)."""
        if since is not None:
            for ev in self.seen[since:]:
                if pred(*ev):
                    return ev
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for SSE {what}; seen: {[(n, d) for n, d in self.seen if n != 'overview'][-10:]}")
            try:
                ev = self.next_event(left)
            except AssertionError as e:
                if "within" in str(e):
                    raise AssertionError(f"timed out after {timeout}s waiting for SSE {what}; seen: {[(n, d) for n, d in self.seen if n != 'overview'][-10:]}") from None
                raise
            if pred(*ev):
                return ev

    def close(self):
        try:
            if self.sock is not None:
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.resp.close()
        except Exception:
            pass
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LoopThread:
    """An asyncio loop on a daemon thread; `run(coro)` waits for the result with a bound."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="admin-test-loop", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 15.0):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise AssertionError(f"async step did not finish within {timeout}s") from None

    def call(self, fn, *args, timeout: float = 10.0):
        """Runs a plain function on the loop (slixmpp is not thread-safe) and returns its result."""

        async def wrapper():
            return fn(*args)

        return self.run(wrapper(), timeout)

    def close(self):
        async def cancel_rest():
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            gc.collect()  # slixmpp's XMLStream.__del__ schedules on its loop: let it, while it runs

        try:
            self.run(cancel_rest(), 5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        # Not closed: a client collected later still calls loop.call_soon in __del__.
        _STOPPED_LOOPS.append(self.loop)


_STOPPED_LOOPS: list = []
