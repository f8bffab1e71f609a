"""The admin API (docs/admin-api.md) against a live Herald with real sessions.

One engine for the module: STOMP/TCP, XMPP c2s (STARTTLS required) and the admin listener with a
fast sampler (200 ms), a small page limit and two live streams at most. alice is connected with
stomp.py, bob with slixmpp (away, "in a meeting"); other users come and go per test.

Every answer goes through ``admin_util.Api``, which fails a test when the status is not
documented for the operation in core/src/admin/openapi.json, when the content type is not one it
lists, or when a JSON body (or an SSE event's data) does not match the documented schema.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time

import pytest
from openapi_spec_validator import validate as validate_openapi

from admin_util import Api, LoopThread, SseStream, Spec, poll, router_routes
from conftest import Client, start_herald, uid
from xmpp_util import Xmpp, c2s_port, xmpp_extra

TOKEN = "admin-test-token-1"
TOKEN2 = "admin-test-token-2"
INTERVAL_MS = 200
MAX_PAGE = 10
MAX_STREAMS = 2
HISTORY = 50


def admin_extra(tokens=(TOKEN, TOKEN2), **kw) -> str:
    cfg = {
        "listen": "127.0.0.1:0",
        "stream_interval_ms": INTERVAL_MS,
        "max_page_size": MAX_PAGE,
        "max_streams": MAX_STREAMS,
        "history_samples": HISTORY,
        **kw,
    }
    lines = ["[admin]", "tokens = [" + ", ".join(json.dumps(t) for t in tokens) + "]"]
    for k, v in cfg.items():
        lines.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
    return "\n".join(lines) + "\n"


def admin_port(h) -> int:
    if "admin" not in h.listeners:
        raise AssertionError(f"herald did not print 'herald: listening admin ...': {h.listeners}\n{h.describe()}")
    return h.listeners["admin"][1]


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def herald():
    h = start_herald(extra=xmpp_extra("required") + admin_extra())
    yield h
    died = h.proc.poll()
    h.stop()
    if died is not None:
        pytest.fail(f"herald exited during the module (code {died})\n{h.describe()}", pytrace=False)


@pytest.fixture(scope="module")
def spec():
    return Spec.load()


@pytest.fixture(scope="module")
def api(herald, spec):
    return Api(admin_port(herald), TOKEN, spec)


@pytest.fixture(scope="module")
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


class World:
    """alice on STOMP/TCP (subscribed to a topic and her feed), bob on XMPP (away)."""

    def __init__(self, herald, api, loop):
        self.herald, self.api, self.loop = herald, api, loop
        self.alice = Client(herald, "1.2", login="alice", passcode="secret")
        self.topic = f"/topic/admin.{uid('t').replace('-', '.')}"
        self.feed = "/exchange/feed/alice"  # her own: others' feeds are refused ([access])
        self.alice.subscribe(self.topic)
        self.alice.subscribe(self.feed)

        async def bob_online():
            b = await Xmpp(c2s_port(herald), "bob", resource="admin-bob").start()
            b.presence(show="away", status="in a meeting")
            return b

        self.bob = loop.run(bob_online())

    def close(self):
        self.alice.close()
        try:
            self.loop.run(self.bob.disconnect(1.0), 10)
        except AssertionError:
            pass


@pytest.fixture(scope="module")
def world(herald, api, loop):
    w = World(herald, api, loop)
    # bob's presence is applied asynchronously; everything below expects it
    poll(lambda: api.get("/api/users/bob"), lambda r: r.status == 200 and r.json["presence"]["state"] == "away", what="bob away")
    yield w
    w.close()


def fill(template: str) -> str:
    """A concrete path for an operation, with parameters that name nothing that exists."""
    return (
        template.replace("{uid}", "nobody-" + uid("u"))
        .replace("{id}", "987654321")
        .replace("{vhost}", "%2F")
        .replace("{name}", "no-such-queue")
        .replace("{path}", "assets/app.js")
    )


def protected(op) -> bool:
    return any("bearerAuth" in s for s in op.get("security", []))


def connected_users(api) -> set[str]:
    return {u["uid"] for u in api.ok("GET", f"/api/users?per_page={MAX_PAGE}")["items"]}


def queue_info(api, name, vhost="/"):
    page = api.ok("GET", f"/api/queues?q={name}&per_page={MAX_PAGE}")
    hits = [q for q in page["items"] if q["name"] == name and q["vhost"] == vhost]
    return hits[0] if hits else None


# ---------------------------------------------------------------------------
# the document


def test_openapi_document_is_valid_openapi_3_1(spec):
    doc = spec.doc
    assert doc["openapi"].startswith("3.1"), doc["openapi"]
    validate_openapi(doc)  # raises with the path of the first problem


def test_openapi_is_served_publicly_and_matches_the_source(api, spec):
    r = api.get("/api/openapi.json", token=None)
    assert r.status == 200, r
    assert r.json == spec.doc, "the binary serves another openapi.json than core/src/admin/openapi.json (rebuild herald)"


def test_every_router_route_is_documented_and_nothing_else(spec):
    routes = router_routes()
    documented = sorted((m.lower(), t) for m, t, _ in spec.operations())
    missing = [r for r in routes if r not in documented]
    stale = [d for d in documented if d not in routes]
    assert not missing, f"routes of core/src/admin/mod.rs missing from openapi.json: {missing}"
    assert not stale, f"openapi.json documents routes the router does not have: {stale}"
    assert ("post", "/api/publish") in routes and ("get", "/admin/{path}") in routes, routes


def test_security_is_declared_per_route(spec):
    scheme = spec.doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer"), scheme
    for method, t, op in spec.operations():
        should = (t.startswith("/api/") and t != "/api/openapi.json") or t == "/metrics"
        assert protected(op) == should, f"{method} {t}: security {op.get('security')}"
        if should:
            assert "401" in op["responses"], f"{method} {t} has no 401"


def test_schemas_are_strict(spec):
    schemas = spec.doc["components"]["schemas"]

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, f"{where}: additionalProperties must be false"
                assert set(node.get("required", [])) <= set(node["properties"]), where
                if not where.startswith("PublishRequest"):
                    assert set(node["required"]) == set(node["properties"]), f"{where}: every field is always present"
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    for name, s in schemas.items():
        walk(s, name)
    # nullability as implemented
    assert schemas["Session"]["properties"]["peer"]["type"] == ["string", "null"]
    assert schemas["Session"]["properties"]["resource"]["type"] == ["string", "null"]
    assert schemas["SessionEvent"]["properties"]["reason"]["type"] == ["string", "null"]
    # and the validator really applies them
    session = {"id": 1, "uid": "a", "vhost": "/", "protocol": "stomp", "transport": "tcp", "peer": None, "connected_at": 1, "resource": None}
    assert spec.is_valid("Session", session)
    assert not spec.is_valid("Session", {**session, "extra": 1}), "unknown field accepted"
    assert not spec.is_valid("Session", {k: v for k, v in session.items() if k != "resource"}), "missing field accepted"
    assert not spec.is_valid("Session", {**session, "peer": 5})
    assert not spec.is_valid("Session", {**session, "protocol": "mqtt"})
    page = {"total": 1, "page": 1, "per_page": 1, "items": [session]}
    assert spec.is_valid("SessionPage", page)
    assert not spec.is_valid("SessionPage", {**page, "items": [{**session, "uid": 7}]}), "$ref into items not followed"
    assert not spec.is_valid("Error", {"error": "nope", "message": "x"})


# ---------------------------------------------------------------------------
# access


AUTH_VARIANTS = [
    ("no header", None),
    ("wrong token", f"Bearer {TOKEN}-wrong"),
    ("token prefix", f"Bearer {TOKEN[:-1]}"),
    ("empty bearer", "Bearer "),
    ("basic", "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()),
    ("bare token", TOKEN),
]


def assert_unauthorized(api, method, path, auth):
    body = {} if method == "POST" else None
    r = api.request(method, path, body, token=None, auth=auth)
    assert r.status == 401, f"{method} {path} with {auth!r}: {r!r}"
    assert (r.header("www-authenticate") or "").startswith("Bearer"), r.headers
    assert r.json["error"] == "unauthorized", r.json


def test_protected_routes_refuse_missing_and_wrong_credentials(api, spec):
    ops = [(m, t) for m, t, op in spec.operations() if protected(op)]
    assert ("GET", "/metrics") in ops and ("GET", "/api/stream") in ops and ("POST", "/api/publish") in ops, ops
    for method, t in ops:
        path = fill(t)
        for _, auth in AUTH_VARIANTS:
            assert_unauthorized(api, method, path, auth)


def test_both_configured_tokens_are_accepted(api):
    for tok in (TOKEN, TOKEN2):
        r = api.get("/api/overview", token=tok)
        assert r.status == 200, r
    # a valid token reaches the handler: POST routes answer their own errors, not 401
    api.error("POST", fill("/api/users/{uid}/kick"), 404, "not_found")
    api.error("POST", "/api/publish", 400, "bad_request", {})


def test_scheme_is_case_insensitive_and_wrong_methods_get_json(api):
    assert api.get("/api/overview", token=None, auth=f"bearer {TOKEN}").status == 200
    r = api.request("DELETE", "/api/overview", check=False)
    assert r.status == 405 and r.json["error"] == "method_not_allowed", r
    r = api.get("/api/no-such-route", check=False)
    assert r.status == 404 and r.json["error"] == "not_found", r


def test_public_routes_need_no_token(api):
    r = api.get("/api/openapi.json", token=None)
    assert r.status == 200 and r.content_type == "application/json", r
    r = api.get("/admin", token=None)
    assert r.status == 308 and r.header("location") == "/admin/", r
    r = api.get("/", token=None)
    assert r.status == 307 and r.header("location") == "/admin/", r
    r = api.get("/admin/", token=None)  # no admin.ui_dir in this config
    assert r.status == 404 and "ui_dir" in r.text, r
    r = api.get("/no/such/route", token=None, check=False)
    assert r.status == 404 and r.json["error"] == "not_found", r
    api.spec.validate_schema("Error", r.json)


def test_cors_preflight_is_answered_without_a_token(api):
    r = api.request("OPTIONS", "/api/users", token=None, check=False, headers={"Origin": "http://console.test", "Access-Control-Request-Method": "GET"})
    assert r.status == 204, r
    assert r.header("access-control-allow-origin") == "*", r.headers
    assert "POST" in r.header("access-control-allow-methods"), r.headers
    assert "authorization" in r.header("access-control-allow-headers").lower(), r.headers
    r = api.get("/api/overview", headers={"Origin": "http://console.test"})
    assert r.status == 200 and r.header("access-control-allow-origin") == "*", r


def test_engine_without_tokens_refuses_everything(herald_factory, spec):
    h = herald_factory(extra=admin_extra(tokens=()))
    a = Api(admin_port(h), None, spec)
    for method, t, op in spec.operations():
        if protected(op):
            for auth in (None, "Bearer ", f"Bearer {TOKEN}", "Bearer " + "x" * 32):
                assert_unauthorized(a, method, fill(t), auth)
    assert a.get("/api/openapi.json").status == 200


def test_metrics_public_serves_metrics_without_a_token_only(herald_factory, spec, tmp_path):
    ui = tmp_path / "ui"
    (ui / "assets").mkdir(parents=True)
    (ui / "index.html").write_text("<!doctype html><title>herald console</title>")
    (ui / "assets" / "app.js").write_text("console.log('herald')")
    h = herald_factory(extra=admin_extra(metrics_public=True, ui_dir=str(ui)))
    a = Api(admin_port(h), None, spec)
    r = a.get("/metrics")
    assert r.status == 200 and "herald_uptime_seconds" in r.text, r
    assert_unauthorized(a, "GET", "/api/overview", None)
    assert_unauthorized(a, "GET", "/api/stream", None)
    # the console from admin.ui_dir
    r = a.get("/admin/")
    assert r.status == 200 and r.content_type == "text/html" and "herald console" in r.text, r
    assert r.header("cache-control") == "no-cache", r.headers
    r = a.get("/admin/assets/app.js")
    assert r.status == 200 and r.content_type == "text/javascript" and r.text == "console.log('herald')", r
    assert a.get("/admin/assets/missing.js").status == 404


# ---------------------------------------------------------------------------
# overview, users, sessions, projects


def test_overview_counts_real_sessions(api, world):
    def get():
        return api.ok("GET", "/api/overview")

    o = poll(get, lambda o: o["sessions_by_protocol"].get("stomp", 0) >= 1 and o["sessions_by_protocol"].get("xmpp", 0) >= 1, what="stomp and xmpp sessions in the overview")
    assert o["node"] == "herald-test@localhost"
    assert o["sessions"] >= 2 and o["users_online"] >= 2, o
    assert sum(o["sessions_by_protocol"].values()) == o["sessions"], o
    assert sum(o["sessions_by_transport"].values()) == o["sessions"], o
    assert o["sessions_by_transport"].get("stomp/tcp", 0) >= 1, o
    assert o["sessions_by_transport"].get("xmpp/tls", 0) >= 1, o  # c2s after STARTTLS
    assert o["exchanges"] >= 5, o  # amq.direct/fanout/topic/headers/match and the addressing exchanges
    assert o["queues"] >= 2, o  # alice's two subscription queues
    sessions = api.ok("GET", f"/api/sessions?per_page={MAX_PAGE}")
    assert sessions["total"] == o["sessions"], (sessions, o)


def test_users_lists_sessions_and_presence(api, world):
    page = api.ok("GET", f"/api/users?per_page={MAX_PAGE}")
    uids = [u["uid"] for u in page["items"]]
    assert uids == sorted(uids), uids
    assert {"alice", "bob"} <= set(uids), uids
    assert page["total"] == len(uids) and page["page"] == 1 and page["per_page"] == MAX_PAGE, page
    users = {u["uid"]: u for u in page["items"]}
    now = time.time() * 1000

    (a,) = users["alice"]["sessions"]
    assert (a["uid"], a["vhost"], a["protocol"], a["transport"], a["resource"]) == ("alice", "/", "stomp", "tcp", None), a
    assert re.fullmatch(r"127\.0\.0\.1:\d+", a["peer"]), a
    assert now - 120_000 < a["connected_at"] <= now + 5_000, a

    bob = users["bob"]
    (b,) = bob["sessions"]
    assert (b["uid"], b["vhost"], b["protocol"], b["transport"], b["resource"]) == ("bob", "/", "xmpp", "tls", "admin-bob"), b
    assert re.fullmatch(r"127\.0\.0\.1:\d+", b["peer"]), b
    assert bob["presence"] == {"state": "away", "status": "in a meeting"}, bob
    # the peer is the client's side of the socket
    local = world.bob.c.transport.get_extra_info("sockname")
    assert int(b["peer"].rsplit(":", 1)[1]) == local[1], (b, local)


def test_user_presence_follows_the_client(api, world, loop):
    loop.call(world.bob.presence, "dnd", "deep work")
    poll(lambda: api.ok("GET", "/api/users/bob")["presence"], lambda p: p == {"state": "dnd", "status": "deep work"}, what="bob dnd")
    loop.call(world.bob.presence, "away", "in a meeting")
    poll(lambda: api.ok("GET", "/api/users/bob")["presence"], lambda p: p == {"state": "away", "status": "in a meeting"}, what="bob back to away")


def test_users_search_project_filter_and_paging(api, world):
    r = api.ok("GET", "/api/users?q=lic")
    assert [u["uid"] for u in r["items"]] == ["alice"] and r["total"] == 1, r
    r = api.ok("GET", "/api/users?q=zz-nobody&per_page=5")
    assert r == {"total": 0, "page": 1, "per_page": 5, "items": []}, r

    online = connected_users(api)
    p1 = api.ok("GET", "/api/users?project=p1")
    assert {u["uid"] for u in p1["items"]} == online & {"alice", "bob", "carol"}, (p1, online)
    p2 = api.ok("GET", "/api/users?project=p2")
    assert {u["uid"] for u in p2["items"]} == online & {"carol", "dave", "eve"}, (p2, online)
    assert api.ok("GET", "/api/users?project=p1&q=bo")["items"][0]["uid"] == "bob"
    api.error("GET", "/api/users?project=no-such-project", 404, "not_found")

    # paging over p1's online members (alice, bob)
    first = api.ok("GET", "/api/users?project=p1&per_page=1")
    second = api.ok("GET", "/api/users?project=p1&per_page=1&page=2")
    past = api.ok("GET", "/api/users?project=p1&per_page=1&page=3")
    assert (first["total"], first["page"], first["per_page"]) == (2, 1, 1), first
    assert (second["total"], second["page"]) == (2, 2), second
    assert [u["uid"] for u in first["items"] + second["items"]] == ["alice", "bob"]
    assert past["items"] == [] and past["total"] == 2, past

    # no per_page: 50, lowered to admin.max_page_size (10 here)
    assert api.ok("GET", "/api/users")["per_page"] == min(50, MAX_PAGE)
    e = api.error("GET", f"/api/users?per_page={MAX_PAGE + 1}", 400, "bad_request")
    assert "max_page_size" in e["message"], e
    api.error("GET", "/api/users?page=0", 400, "bad_request")
    api.error("GET", "/api/users?per_page=0", 400, "bad_request")
    api.error("GET", "/api/users?page=abc", 400, "bad_request")  # a query string that does not parse is JSON too


def test_user_detail_and_404(api, world):
    alice = api.ok("GET", "/api/users/alice")
    assert alice["uid"] == "alice" and len(alice["sessions"]) == 1, alice
    listed = {u["uid"]: u for u in api.ok("GET", f"/api/users?per_page={MAX_PAGE}")["items"]}
    assert alice == listed["alice"]
    e = api.error("GET", "/api/users/dave", 404, "not_found")
    assert "dave" in e["message"], e
    api.error("GET", "/api/users/" + uid("ghost"), 404, "not_found")


def test_sessions_protocol_filter_and_paging(api, world):
    everything = api.ok("GET", f"/api/sessions?per_page={MAX_PAGE}")
    ids = [s["id"] for s in everything["items"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    stomp = api.ok("GET", f"/api/sessions?protocol=stomp&per_page={MAX_PAGE}")
    xmpp = api.ok("GET", f"/api/sessions?protocol=xmpp&per_page={MAX_PAGE}")
    assert stomp["items"] and all(s["protocol"] == "stomp" for s in stomp["items"]), stomp
    assert xmpp["items"] and all(s["protocol"] == "xmpp" for s in xmpp["items"]), xmpp
    assert any(s["uid"] == "alice" for s in stomp["items"]) and any(s["uid"] == "bob" and s["resource"] == "admin-bob" for s in xmpp["items"])
    assert stomp["total"] + xmpp["total"] == everything["total"], (stomp, xmpp, everything)
    assert api.ok("GET", "/api/sessions?protocol=mqtt")["total"] == 0
    assert api.ok("GET", "/api/sessions?protocol=")["total"] == everything["total"]
    second = api.ok("GET", "/api/sessions?per_page=1&page=2")
    assert second["items"][0]["id"] == ids[1] and second["total"] == everything["total"], second
    api.error("GET", f"/api/sessions?per_page={MAX_PAGE + 1}", 400, "bad_request")


def test_projects_online_counts(api, world):
    projects = {p["id"]: p for p in api.ok("GET", "/api/projects")}
    assert set(projects) == {"p1", "p2"}, projects
    online = connected_users(api)
    assert projects["p1"]["members"] == ["alice", "bob", "carol"], projects
    assert projects["p2"]["members"] == ["carol", "dave", "eve"], projects
    for p in projects.values():
        assert p["name"] == p["id"], p  # no display name in the config
        assert p["online"] == len(online & set(p["members"])), (p, online)
    assert projects["p1"]["online"] >= 2


# ---------------------------------------------------------------------------
# queues, exchanges, publish


def test_queues_depth_rates_sort_and_purge(api, world):
    alice = world.alice
    name = uid("adm-q")
    dest = f"/queue/{name}"
    alice.send(dest, "m0")  # declares the queue; nobody consumes
    # the first sample of a new queue has no rate: wait for it, then publish
    q = poll(lambda: queue_info(api, name), lambda q: q is not None and len(q["history"]["publish"]) >= 1, what="a sampler tick over the new queue")
    assert (q["depth"], q["consumers"], q["unacked"], q["exclusive"]) == (1, 0, 0, False), q
    sent = 1
    for i in range(5):
        alice.send(dest, f"m{sent}")
        sent += 1

    def publishing():
        nonlocal sent
        q = queue_info(api, name)
        if q["rates"]["publish"] <= 0:
            alice.send(dest, f"m{sent}")
            sent += 1
        return q

    q = poll(publishing, lambda q: q["rates"]["publish"] > 0, timeout=5, what="a publish rate on the queue")
    q = queue_info(api, name)
    assert q["depth"] == sent and q["totals"]["published"] == sent, (q, sent)
    assert q["totals"]["delivered"] == 0 and q["consumers"] == 0, q
    assert any(x > 0 for x in q["history"]["publish"]), q
    assert len(q["history"]["publish"]) == len(q["history"]["deliver"]), q

    small = uid("adm-q-small")
    alice.send(f"/queue/{small}", "just one")
    desc = api.ok("GET", f"/api/queues?sort=depth&order=desc&per_page={MAX_PAGE}")
    assert desc["items"][0]["name"] == name, [(x["name"], x["depth"]) for x in desc["items"]]
    depths = [x["depth"] for x in desc["items"]]
    assert depths == sorted(depths, reverse=True), depths
    asc = api.ok("GET", f"/api/queues?sort=depth&order=asc&per_page={MAX_PAGE}")
    assert [x["depth"] for x in asc["items"]] == sorted(x["depth"] for x in asc["items"])
    by_name = api.ok("GET", f"/api/queues?per_page={MAX_PAGE}")
    keys = [(x["vhost"], x["name"]) for x in by_name["items"]]
    assert keys == sorted(keys), keys
    assert any(x["exclusive"] and x["consumers"] >= 1 for x in by_name["items"]), "alice's subscription queues are listed"
    assert api.ok("GET", f"/api/queues?q={name}")["total"] == 1
    assert api.ok("GET", "/api/queues?vhost=/&q=" + name)["total"] == 1
    assert api.ok("GET", "/api/queues?vhost=no-such-vhost")["total"] == 0
    api.ok("GET", f"/api/queues?sort=publish_rate&order=desc&per_page={MAX_PAGE}")
    e = api.error("GET", "/api/queues?sort=size", 400, "bad_request")
    assert "size" in e["message"], e
    api.error("GET", "/api/queues?order=up", 400, "bad_request")
    api.error("GET", f"/api/queues?per_page={MAX_PAGE + 1}", 400, "bad_request")

    assert api.ok("POST", f"/api/queues/%2F/{name}/purge") == {"purged": sent}
    q = queue_info(api, name)
    assert q["depth"] == 0, q
    assert api.ok("POST", f"/api/queues/%2F/{name}/purge") == {"purged": 0}
    assert api.ok("POST", f"/api/queues/%2F/{small}/purge") == {"purged": 1}
    api.error("POST", f"/api/queues/%2F/{uid('nope')}/purge", 404, "not_found")
    api.error("POST", f"/api/queues/no-such-vhost/{name}/purge", 404, "not_found")


def test_exchanges_list_and_count_publishes(api, world):
    before = {x["name"]: x for x in api.ok("GET", "/api/exchanges")}
    kinds = {n: x["type"] for n, x in before.items()}
    for n, k in [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"), ("amq.headers", "headers"), ("feed", "topic")]:
        assert kinds.get(n) == k, kinds
    assert all(x["vhost"] == "/" for x in before.values())
    assert before["amq.topic"]["bindings"] >= 1, before["amq.topic"]  # alice's /topic/ subscription
    key = f"/topic/admin.x.{uid('k').replace('-', '.')}"
    for i in range(3):
        world.alice.send(key, f"x{i}")
    after = {x["name"]: x for x in api.ok("GET", "/api/exchanges")}
    assert after["amq.topic"]["published"] == before["amq.topic"]["published"] + 3, (before["amq.topic"], after["amq.topic"])

    def publishing():
        x = {x["name"]: x for x in api.ok("GET", "/api/exchanges")}["amq.topic"]
        if x["rates"]["publish"] <= 0:
            world.alice.send(key, "more")
        return x

    poll(publishing, lambda x: x["rates"]["publish"] > 0, timeout=5, what="a publish rate on amq.topic")
    assert {x["name"] for x in api.ok("GET", "/api/exchanges?vhost=/")} == set(after)
    assert api.ok("GET", "/api/exchanges?vhost=no-such-vhost") == []


def test_publish_delivers_to_a_stomp_subscription(api, world):
    alice = world.alice
    r = api.ok("POST", "/api/publish", {"destination": world.topic, "body": "hello from the API", "headers": {"x-trace": "t-42"}})
    assert r == {"routed": 1}, r
    m = alice.message(what="the API's message on the topic")
    assert m.body == "hello from the API" and m.headers["destination"] == world.topic and m.headers.get("x-trace") == "t-42", (m.headers, m.body)

    r = api.ok("POST", "/api/publish", {"destination": world.feed, "body": "to alice's feed"})
    assert r == {"routed": 1}, r
    m = alice.message(what="the API's message on the feed")
    assert m.body == "to alice's feed" and m.headers["destination"] == world.feed, (m.headers, m.body)

    # nobody listens: routed 0, still a success
    assert api.ok("POST", "/api/publish", {"destination": f"/topic/{uid('nobody')}", "body": "void"}) == {"routed": 0}
    # a /queue/ destination declares the queue, as a STOMP SEND would
    qname = uid("adm-pubq")
    assert api.ok("POST", "/api/publish", {"destination": f"/queue/{qname}", "body": "kept"}) == {"routed": 1}
    q = queue_info(api, qname)
    assert q and q["depth"] == 1 and q["durable"] is True, q
    assert api.ok("POST", "/api/publish", {"destination": f"/amq/queue/{qname}", "body": "kept too"}) == {"routed": 1}
    api.ok("POST", f"/api/queues/%2F/{qname}/purge")

    # As over STOMP, an unprefixed name is a queue; a slash inside a queue name is not.
    api.error("POST", "/api/publish", 400, "bad_request", {"destination": "/queue/a/b", "body": "x"})
    api.error("POST", "/api/publish", 404, "not_found", {"destination": "/exchange/no-such-exchange/k", "body": "x"})
    api.error("POST", "/api/publish", 404, "not_found", {"destination": f"/amq/queue/{uid('missing')}", "body": "x"})
    api.error("POST", "/api/publish", 400, "bad_request", raw=b'{"destination": "/topic/x", "body":', headers={"Content-Type": "application/json"})
    api.error("POST", "/api/publish", 400, "bad_request", {"destination": "/topic/x"})  # no body
    api.error("POST", "/api/publish", 400, "bad_request", {"destination": "/topic/x", "body": "b", "colour": "red"})  # unknown field
    api.error("POST", "/api/publish", 400, "bad_request", {"destination": "/topic/x", "body": "b", "headers": {"n": 1}})
    api.error("POST", "/api/publish", 400, "bad_request", raw=b'{"destination": "/topic/x", "body": "b"}')  # no content type
    alice.no_message(0.3, "a message from a refused publish")


# ---------------------------------------------------------------------------
# kick


def test_kick_session_disconnects_an_xmpp_client(api, world, loop, herald):
    async def carol_online():
        c = await Xmpp(c2s_port(herald), "carol", resource="kick-me").start()
        c.presence(status="about to be kicked")
        return c

    carol = loop.run(carol_online())
    try:
        u = poll(lambda: api.get("/api/users/carol"), lambda r: r.status == 200, what="carol online").json
        (s,) = u["sessions"]
        assert s["resource"] == "kick-me" and s["transport"] == "tls", s
        assert api.ok("POST", f"/api/sessions/{s['id']}/kick") == {"kicked": 1}
        loop.run(_wait_event(carol._disconnected, 5), 10)
        conditions = [e["condition"] for e in carol.stream_errors]
        assert conditions == ["policy-violation"], f"stream errors seen by slixmpp: {carol.stream_errors}"
        poll(lambda: api.get("/api/users/carol"), lambda r: r.status == 404, what="carol gone from /api/users")
        api.error("POST", f"/api/sessions/{s['id']}/kick", 404, "not_found")
        assert api.get("/api/users/bob").status == 200, "only carol's session was closed"
    finally:
        loop.run(carol.kill(), 10)
    api.error("POST", "/api/sessions/987654321/kick", 404, "not_found")
    api.error("POST", "/api/sessions/not-a-number/kick", 400, "bad_request")


async def _wait_event(ev, timeout):
    try:
        await asyncio.wait_for(ev.wait(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"slixmpp was not disconnected within {timeout}s") from None


def test_kick_user_disconnects_every_stomp_session(api, world, herald):
    d1 = Client(herald, "1.2", login="dave", passcode="secret")
    d2 = Client(herald, "1.1", login="dave", passcode="secret")
    try:
        u = poll(lambda: api.get("/api/users/dave"), lambda r: r.status == 200 and len(r.json["sessions"]) == 2, what="dave's two sessions").json
        assert {s["protocol"] for s in u["sessions"]} == {"stomp"}, u
        assert api.ok("POST", "/api/users/dave/kick") == {"kicked": 2}
        for c in (d1, d2):
            err = c.error(5, "ERROR for a kicked session")
            assert "kick" in (err.headers.get("message", "") + err.body).lower(), (err.headers, err.body)
            c.wait_disconnected(5, "the server to close a kicked session")
        poll(lambda: api.get("/api/users/dave"), lambda r: r.status == 404, what="dave gone")
        api.error("POST", "/api/users/dave/kick", 404, "not_found")
        assert api.get("/api/users/alice").status == 200
    finally:
        d1.close()
        d2.close()
    api.error("POST", f"/api/users/{uid('nobody')}/kick", 404, "not_found")


# ---------------------------------------------------------------------------
# history, stream, metrics


def test_history_grows_with_the_sampler(api, world):
    h = api.ok("GET", "/api/history")
    assert h["interval_ms"] == INTERVAL_MS, h
    assert 1 <= len(h["samples"]) <= HISTORY, len(h["samples"])
    ts = [s["t"] for s in h["samples"]]
    assert ts == sorted(ts), ts
    last = ts[-1]
    later = poll(lambda: api.ok("GET", "/api/history"), lambda x: x["samples"][-1]["t"] > last, what="a newer sample")
    assert len(later["samples"]) >= len(h["samples"]) or len(later["samples"]) == HISTORY
    assert later["samples"][-1]["sessions"] >= 2 and later["samples"][-1]["users_online"] >= 2, later["samples"][-1]
    # publishes show up as a rate in some sample
    key = f"/topic/admin.h.{uid('h').replace('-', '.')}"

    def publishing():
        world.alice.send(key, "tick")
        return api.ok("GET", "/api/history")["samples"]

    poll(publishing, lambda ss: any(s["publish"] > 0 and s["t"] > last for s in ss), timeout=5, what="a sample with a publish rate")


def test_stream_sends_overview_session_and_presence_events(api, world, loop, herald):
    with SseStream(api) as s:
        assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream"), s.headers
        name, tick = s.next_event(2.0)
        assert name == "overview", name
        assert tick["overview"]["sessions"] >= 2 and tick["sample"]["sessions"] == tick["overview"]["sessions"], tick
        t0 = tick["sample"]["t"]
        _, tick2 = s.wait_for(lambda n, d: n == "overview" and d["sample"]["t"] > t0, 2.0, "a second overview tick")
        assert tick2["sample"]["t"] - t0 >= INTERVAL_MS / 2, (t0, tick2["sample"]["t"])

        eve = Client(herald, "1.2", login="eve", passcode="secret")
        try:
            _, opened = s.wait_for(lambda n, d: n == "session" and d["uid"] == "eve" and d["event"] == "open", 3.0, "eve's session open")
            assert (opened["type"], opened["protocol"], opened["transport"], opened["reason"]) == ("session", "stomp", "tcp", None), opened
            listed = api.ok("GET", "/api/users/eve")["sessions"]
            assert [x["id"] for x in listed] == [opened["session"]], (listed, opened)
            assert api.ok("POST", f"/api/sessions/{opened['session']}/kick") == {"kicked": 1}
            _, closed = s.wait_for(lambda n, d: n == "session" and d["event"] == "close" and d["session"] == opened["session"], 3.0, "eve's session close")
            assert closed["uid"] == "eve" and "kicked" in (closed["reason"] or ""), closed
        finally:
            eve.close()

        async def guest_online():
            return await Xmpp(c2s_port(herald), "guest", password="guest", resource="stream").start()

        guest = loop.run(guest_online())
        try:
            _, g = s.wait_for(lambda n, d: n == "session" and d["uid"] == "guest" and d["event"] == "open", 3.0, "guest's XMPP session open")
            assert (g["protocol"], g["transport"]) == ("xmpp", "tls"), g
            loop.call(guest.presence, "dnd", "streaming")
            _, p = s.wait_for(lambda n, d: n == "presence" and d["uid"] == "guest" and d["state"] == "dnd", 3.0, "guest's presence")
            assert p == {"type": "presence", "uid": "guest", "state": "dnd", "status": "streaming"}, p
            at = s.mark()
            loop.run(guest.disconnect(1.0), 10)
            s.wait_for(lambda n, d: n == "presence" and d["uid"] == "guest" and d["state"] == "offline", 3.0, "guest offline", since=at)
            s.wait_for(lambda n, d: n == "session" and d["uid"] == "guest" and d["event"] == "close", 3.0, "guest's session close", since=at)
        finally:
            loop.run(guest.kill(), 10)
        assert not [c for c in s.comments if c.startswith("lag")], s.comments


def open_stream(api) -> SseStream:
    """A stream that got its permit: retries while earlier streams are being released."""
    holder = {}

    def attempt():
        st = SseStream(api)
        holder["s"] = st
        return st.status

    poll(attempt, lambda status: status == 200, timeout=5, interval=0.1, what="a free stream slot")
    st = holder["s"]
    st.next_event(2.0)
    return st


def test_stream_limit_answers_429(api, world):
    streams = [open_stream(api) for _ in range(MAX_STREAMS)]
    try:
        over = SseStream(api)
        assert over.status == 429, over.status
        assert over.error_body["error"] == "limit" and str(MAX_STREAMS) in over.error_body["message"], over.error_body
        streams.pop(0).close()
        streams.append(open_stream(api))  # the closed stream's slot comes back
    finally:
        for st in streams:
            st.close()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def parse_metrics(text: str):
    samples, types = [], {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert parts[1] in ("HELP", "TYPE"), line
            if parts[1] == "TYPE":
                types[parts[2]] = parts[3]
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples, types


def test_metrics_prometheus_text(api, world):
    qname = uid("adm-metrics")
    world.alice.send(f"/queue/{qname}", "a")
    world.alice.send(f"/queue/{qname}", "b")
    totals = api.ok("GET", "/api/overview")["totals"]
    r = api.get("/metrics")
    assert r.status == 200, r
    assert r.header("content-type") == "text/plain; version=0.0.4; charset=utf-8", r.headers
    samples, types = parse_metrics(r.text)
    for name, _, _ in samples:
        assert name in types, f"{name} has no # TYPE line"
    by = {}
    for name, labels, v in samples:
        by.setdefault(name, []).append((labels, v))
    sessions = {(l["protocol"], l["transport"]): v for l, v in by["herald_sessions"]}
    assert sessions.get(("stomp", "tcp"), 0) >= 1 and sessions.get(("xmpp", "tls"), 0) >= 1, sessions
    assert set(l for l in by["herald_sessions"][0][0]) == {"node", "protocol", "transport"}
    node = api.ok("GET", "/api/overview")["node"]
    assert all(labels.get("node") == node for _, labels, _ in samples), "every series carries the node label"
    for name in ("herald_users_online", "herald_queues", "herald_messages_ready", "herald_messages_unacked", "herald_uptime_seconds"):
        assert types[name] == "gauge" and len(by[name]) == 1, name
    for name in ("herald_messages_published_total", "herald_messages_delivered_total", "herald_messages_acked_total", "herald_messages_dropped_total"):
        assert types[name] == "counter" and len(by[name]) == 1, name
    assert by["herald_messages_published_total"][0][1] >= totals["published"] > 0, (by["herald_messages_published_total"], totals)
    assert by["herald_users_online"][0][1] >= 2
    ready = {(l["vhost"], l["queue"]): v for l, v in by.get("herald_queue_messages_ready", [])}
    consumers = {(l["vhost"], l["queue"]): v for l, v in by.get("herald_queue_consumers", [])}
    assert ready.get(("/", qname)) == 2 and consumers.get(("/", qname)) == 0, (ready, consumers)
    exclusive = {x["name"] for x in api.ok("GET", f"/api/queues?per_page={MAX_PAGE}")["items"] if x["exclusive"]}
    assert exclusive and not exclusive & {q for _, q in ready}, "per-session queues are not exported"
    api.ok("POST", f"/api/queues/%2F/{qname}/purge")
