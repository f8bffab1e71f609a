"""slixmpp over Herald's XMPP c2s listener (TCP + STARTTLS), plus raw-socket stream checks.

The server generates a self-signed certificate for the domain; clients here do not verify it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile

import pytest

from conftest import start_herald
from xmpp_util import (
    DOMAIN,
    RawC2S,
    Xmpp,
    AuthFailed,
    available_from,
    c2s_port,
    ptype,
    rid,
    run,
    stream_error_condition,
    unavailable_from,
    xmpp_extra,
)


@pytest.fixture(scope="module")
def herald():
    h = start_herald(extra=xmpp_extra("required"))
    yield h
    h.stop()


@pytest.fixture
def port(herald):
    return c2s_port(herald)


async def closing(*clients):
    for c in clients:
        await c.disconnect(1.0)


def body_is(text):
    return lambda m: m["body"] == text


# ---------------------------------------------------------------------------
# login


def test_login_over_starttls(port):
    async def scenario():
        a = await Xmpp(port, "alice", resource="tcp").start()
        try:
            assert a.tls, "session started without STARTTLS"
            assert a.jid == "alice@localhost/tcp"
            assert hasattr(a.c.socket, "version") and a.c.socket.version(), f"not a TLS socket: {a.c.socket!r}"
        finally:
            await closing(a)

    run(scenario())


def test_self_signed_certificate_names_the_domain(port):
    raw = RawC2S(port)
    try:
        raw.starttls()
        der = raw.peer_cert_der
        assert der, "no peer certificate"
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
            path = f.name
        try:
            info = ssl._ssl._test_decode_cert(path)  # CPython's decoder; no extra dependency
        finally:
            os.unlink(path)
        names = [v for k, v in info.get("subjectAltName", ()) if k == "DNS"]
        cns = [v for rdn in info.get("subject", ()) for k, v in rdn if k == "commonName"]
        assert DOMAIN in names or DOMAIN in cns, f"certificate names {names} / CN {cns}"
    finally:
        raw.close()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_login_with_forced_mechanism(port, mech):
    async def scenario():
        c = await Xmpp(port, "carol", mech=mech).start()
        try:
            assert c.mechanism == mech, f"used {c.mechanism}"
            assert c.tls
        finally:
            await closing(c)

    run(scenario())


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_bad_password_is_not_authorized(port, mech):
    async def scenario():
        c = Xmpp(port, "alice", password="wrong", mech=mech)
        with pytest.raises(AuthFailed):
            await c.start()
        assert c.failures, "no SASL <failure/> received"
        assert c.failures[0]["condition"] == "not-authorized", str(c.failures[0])

    run(scenario())


def test_bad_password_raw_failure_element(port):
    raw = RawC2S(port)
    try:
        raw.starttls()
        feats = raw.open_stream()
        for m in (b"PLAIN", b"SCRAM-SHA-1", b"SCRAM-SHA-256"):
            assert b"<mechanism>" + m + b"</mechanism>" in feats, f"{m} not offered: {feats!r}"
        out = raw.auth_plain("alice", "nope")
        assert b"<failure" in out and b"not-authorized" in out, out
    finally:
        raw.close()


# ---------------------------------------------------------------------------
# roster / presence / chat


def test_roster(port):
    async def scenario():
        a = await Xmpp(port, "alice").start()
        c = await Xmpp(port, "carol").start()
        try:
            ra = await a.roster()
            assert sorted(ra) == ["bob@localhost", "carol@localhost"], ra
            for j in ra:
                assert ra[j]["subscription"] == "both", ra
                assert ra[j]["groups"] == ["p1"], ra
            rc = await c.roster()
            assert sorted(rc) == ["alice@localhost", "bob@localhost", "dave@localhost", "eve@localhost"], rc
            assert rc["dave@localhost"]["groups"] == ["p2"]
            assert rc["bob@localhost"]["groups"] == ["p1"]
        finally:
            await closing(a, c)

    run(scenario())


def test_roster_set_is_not_allowed(port):
    async def scenario():
        a = await Xmpp(port, "alice").start()
        try:
            iq = a.c.make_iq_set()
            iq.enable("roster")
            iq["roster"]["items"] = {"mallory@localhost": {"name": "M", "subscription": "none", "groups": []}}
            from slixmpp.exceptions import IqError

            with pytest.raises(IqError) as ei:
                await iq.send(timeout=5)
            assert ei.value.iq["error"]["condition"] == "not-allowed", str(ei.value.iq)
        finally:
            await closing(a)

    run(scenario())


def test_presence_both_ways_show_status_and_unavailable(port):
    async def scenario():
        a = await Xmpp(port, "alice", resource="pa").online(status="alice on tcp")
        b = await Xmpp(port, "bob", resource="pb").online(status="bob on tcp")
        try:
            p = await b.presence_from(available_from(a.jid), what="alice's current presence")
            assert p["status"] == "alice on tcp"
            p = await a.presence_from(available_from(b.jid), what="bob's initial presence")
            assert p["status"] == "bob on tcp"
            for show in ("away", "dnd", "xa", "chat"):
                a.presence(show=show, status=f"now {show}")
                p = await b.presence_from(lambda x: available_from(a.jid)(x) and x["show"] == show, what=f"alice {show}")
                assert p["status"] == f"now {show}"
            await a.kill()  # abrupt TCP drop, no </stream:stream>
            await b.presence_from(unavailable_from("alice@localhost/pa"), what="alice unavailable after drop")
        finally:
            await closing(a, b)

    run(scenario())


def test_graceful_close_is_unavailable(port):
    async def scenario():
        b = await Xmpp(port, "bob").online()
        a = await Xmpp(port, "alice").online()
        try:
            await b.presence_from(available_from(a.jid), what="alice online")
            jid = a.jid
            await a.disconnect()
            await b.presence_from(unavailable_from(jid), what="alice unavailable after </stream:stream>")
        finally:
            await closing(a, b)

    run(scenario())


def test_chat_both_ways_between_slixmpp_clients(port):
    async def scenario():
        a = await Xmpp(port, "alice").online()
        b = await Xmpp(port, "bob").online()
        try:
            mid = a.chat("bob@localhost", "hello bob from slixmpp ✓", mid="py-1")
            m = await b.message(body_is("hello bob from slixmpp ✓"), what="chat from alice")
            assert m["type"] == "chat"
            assert m["id"] == mid
            assert str(m["from"]) == a.jid
            b.chat(str(m["from"]), "hi alice", mid="py-2")
            r = await a.message(body_is("hi alice"), what="reply from bob")
            assert r["type"] == "chat" and r["id"] == "py-2" and str(r["from"]) == b.jid
            # spoofed from is replaced by the server
            a.chat("bob@localhost", "spoofed", mfrom="carol@localhost/x")
            s = await b.message(body_is("spoofed"), what="spoofed chat")
            assert str(s["from"]) == a.jid
        finally:
            await closing(a, b)

    run(scenario())


def test_full_jid_routing(port):
    async def scenario():
        a = await Xmpp(port, "alice").online()
        b1 = await Xmpp(port, "bob", resource="one").online()
        b2 = await Xmpp(port, "bob", resource="two").online()
        try:
            a.chat("bob@localhost", "everyone")
            await b1.message(body_is("everyone"))
            await b2.message(body_is("everyone"))
            a.chat("bob@localhost/two", "just two")
            await b2.message(body_is("just two"))
            await b1.no_message(body_is("just two"), what="full-JID chat at the other resource")
        finally:
            await closing(a, b1, b2)

    run(scenario())


def test_project_fanout_and_forbidden(port):
    async def scenario():
        a = await Xmpp(port, "alice").online()
        b = await Xmpp(port, "bob").online()
        d = await Xmpp(port, "dave").online()
        try:
            body = "to project p1 " + rid()
            a.chat("p1@projects.localhost", body, mtype="groupchat")
            for c in (a, b):
                m = await c.message(body_is(body), what="project fan-out")
                assert str(m["from"]) == "p1@projects.localhost/alice", str(m)
                assert m["type"] == "groupchat"
            d.chat("p1@projects.localhost", "let me in", mtype="groupchat", mid="nope-1")
            e = await d.message(lambda m: m["type"] == "error" and m["id"] == "nope-1", what="forbidden error")
            assert e["error"]["condition"] == "forbidden", str(e)
            await b.no_message(body_is("let me in"), what="non-member message")
        finally:
            await closing(a, b, d)

    run(scenario())


def test_iq_ping_disco_unknown(port):
    async def scenario():
        a = await Xmpp(port, "alice").start()
        try:
            from slixmpp.exceptions import IqError

            a.c.register_plugin("xep_0199")
            a.c.register_plugin("xep_0030")
            await a.c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=5)
            info = await a.c.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=5)
            ids = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
            assert ("server", "im") in ids, ids
            assert "urn:xmpp:ping" in info["disco_info"]["features"]
            iq = a.c.make_iq_get(queryxmlns="urn:example:unknown", ito=DOMAIN)
            with pytest.raises(IqError) as ei:
                await iq.send(timeout=5)
            assert ei.value.iq["error"]["condition"] == "service-unavailable"
        finally:
            await closing(a)

    run(scenario())


# ---------------------------------------------------------------------------
# raw stream errors


def test_starttls_required_is_advertised(port):
    raw = RawC2S(port)
    try:
        feats = raw.open_stream()
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in feats, feats
        assert b"<required" in feats, f"STARTTLS should be marked required: {feats!r}"
    finally:
        raw.close()


def test_auth_before_starttls_is_refused(port):
    raw = RawC2S(port)
    try:
        raw.open_stream()
        v = base64.b64encode(b"\0alice\0secret").decode()
        raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{v}</auth>")
        # RFC 6120 §6.5.3: <failure><encryption-required/>, as ejabberd 23.01
        # answers (tests/xdiff tls-auth-before-starttls); never <success/>.
        out = raw.read_until(rb"<success|</(?:stream:)?error>|<failure\b.*?(?:/>|</failure>)")
        assert b"<success" not in out, f"authenticated without TLS: {out!r}"
        assert b"<failure" in out and b"encryption-required" in out, out
    finally:
        raw.close()


MALFORMED = {
    # A mismatched end tag is a fatal well-formedness error as soon as it is read
    # (XML 1.0 WFC "Element Type Match"); ejabberd answers at once ("mismatched tag").
    "mismatched-end-tag": b"<message to='bob@localhost'><body>broken</mess>",
    "garbage-markup": b"<<<>>>",
    "duplicate-attribute": b"<message to='a@localhost' to='b@localhost'/>",
    "unclosed-attribute-quote": b"<message to='bob@localhost><body>x</body></message>",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_xml_on_tls_gives_not_well_formed(port, case):
    raw = RawC2S(port)
    try:
        raw.starttls()
        raw.open_stream()
        raw.send(MALFORMED[case])
        out = raw.read_to_eof()
        assert stream_error_condition(out) == "not-well-formed", out
        assert b"</stream:stream>" in out, f"stream not closed: {out!r}"
    finally:
        raw.close()


def test_stanza_before_auth_gives_not_authorized(port):
    raw = RawC2S(port)
    try:
        raw.starttls()
        raw.open_stream()
        raw.send(b"<message to='bob@localhost' type='chat'><body>sneaky</body></message>")
        out = raw.read_to_eof()
        assert stream_error_condition(out) == "not-authorized", out
    finally:
        raw.close()


def test_plaintext_c2s_when_starttls_off(herald_factory):
    h = herald_factory(extra=xmpp_extra("off"))
    p = c2s_port(h)
    raw = RawC2S(p)
    try:
        feats = raw.open_stream()
        assert b"xmpp-tls" not in feats, f"STARTTLS offered with starttls=off: {feats!r}"
        assert b"SCRAM-SHA-256" in feats, feats
    finally:
        raw.close()

    async def scenario():
        a = await Xmpp(p, "alice", mech="SCRAM-SHA-256", plaintext=True).online()
        b = await Xmpp(p, "bob", mech="SCRAM-SHA-1", plaintext=True).online()
        try:
            assert not a.tls
            a.chat("bob@localhost", "plain loopback")
            await b.message(body_is("plain loopback"))
        finally:
            await closing(a, b)

    run(scenario())
