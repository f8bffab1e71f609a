#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpora (fuzz/corpus/<target>/seed-*).

Seeds are real client traffic (stomp.js, strophe.js, RFC 6455, sockjs-client,
RFC 5802/7677 SCRAM, a JWT) and vectors from the unit tests, each behind the
target's configuration bytes (see the doc comment of each target). Run it
again after changing a target's input format; inputs the fuzzer found and
merged (HERALD_FUZZ_MERGE=1 scripts/fuzz) are kept.
"""
import base64, hashlib, hmac, json, os, shutil, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


# --- STOMP: [escaping, read size, limit] + bytes -----------------------------
CFG_V12 = bytes([2, 7, 0x4F])
CONNECT = b"CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\nlogin:guest\npasscode:guest\nhost:/\n\n\x00"
SUBSCRIBE = b"SUBSCRIBE\nid:sub-0\ndestination:/exchange/feed/alice\nack:client-individual\n\n\x00"
SEND = b"SEND\ndestination:/exchange/feed/bob\ncontent-type:text/plain\ncontent-length:13\n\nhello\x00 world!\x00"
write("stomp_frame", {
    "stompjs-session": CFG_V12 + CONNECT + b"\n" + SUBSCRIBE + SEND + b"\n\n" + b"DISCONNECT\nreceipt:close-1\n\n\x00",
    "stomppy-crlf-v11": bytes([1, 3, 0x4F]) + b"STOMP\r\naccept-version:1.1\r\nhost:/\r\n\r\n\x00\r\nSEND\r\ndestination:/queue/a\\cb\r\nx-h:va\\\\l\\nue\r\n\r\nbody\x00",
    "escapes-v12": CFG_V12 + b"SEND\ndestination:/topic/x\nk\\c\\r:v\\n\\\\\n\nno-length body\x00",
    "v10-raw": bytes([0, 1, 0x4F]) + b"SEND\ndestination:/topic/a:b\\c\n\n\x00\n",
    "too-large": bytes([2, 200, 0]) + b"SEND\ncontent-length:999\n\n" + b"x" * 80,
    "ack-nack-tx": CFG_V12 + b"BEGIN\ntransaction:tx1\n\n\x00ACK\nid:1\ntransaction:tx1\n\n\x00NACK\nid:2\n\n\x00COMMIT\ntransaction:tx1\n\n\x00",
})

# --- XML stream: [read size, depth/attrs, size] + stream ---------------------
CFG_XML = bytes([5, 0x77, 0xFF])
HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en'>")
write("xml_stream", {
    "slixmpp-session": CFG_XML + HEADER
    + b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj11c2VyLHI9ZnlrbytkMmxiYkZnT05Sdjlxa3hkYXdM</auth>\n"
    + b"<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>pa</resource></bind></iq> "
    + b"<message to='bob@localhost' type='chat' id='m1'><body>hi &amp; &#x263A; <![CDATA[<x>]]>\r\n</body>"
    + b"<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'><p>hi <b>there</b></p></body></html></message>"
    + b"<presence><show>away</show><status xml:lang='en'>out</status></presence></stream:stream>",
    "websocket-open": CFG_XML + b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
    "prefixed": CFG_XML + HEADER + b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
    + b"<x:iq xmlns:x='jabber:client' xmlns:p='urn:p' p:a='1' type='get'><query xmlns='jabber:iq:roster'/></x:iq>",
    "bom-decl": CFG_XML + b"\xef\xbb\xbf<?xml version='1.0' encoding='UTF-8'?>\n<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'/>",
    "deep": bytes([1, 0x13, 2]) + HEADER + b"<a><b><c><d><e x='1' y='2' z='3'/></d></c></b></a>",
    "restricted": CFG_XML + HEADER + b"<!-- c --><message><body>&lol;</body></message>",
})

# --- BOSH: [shape] + NUL-separated bodies (strophe.js) -------------------------
NS = b"xmlns='http://jabber.org/protocol/httpbind'"
XB = b"xmlns:xmpp='urn:xmpp:xbosh'"
strophe = [
    b"<body rid='1573741820' " + NS + b" to='localhost' xml:lang='en' wait='60' hold='1' content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' " + XB + b"/>",
    b"<body rid='1573741821' " + NS + b" sid='SID'><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth></body>",
    b"<body rid='1573741822' " + NS + b" sid='SID' to='localhost' xml:lang='en' xmpp:restart='true' " + XB + b"/>",
    b"<body rid='1573741823' " + NS + b" sid='SID'><iq type='set' id='_bind_auth_2' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>pa</resource></bind></iq></body>",
    b"!<body rid='1573741824' " + NS + b" sid='SID'/>",
    b"<body rid='1573741825' " + NS + b" sid='SID'><message to='bob@localhost' type='chat' xmlns='jabber:client'><body>hi</body></message><presence/></body>",
    b"<body rid='1573741826' " + NS + b" sid='SID' type='terminate'><presence type='unavailable' xmlns='jabber:client'/></body>",
]
write("bosh_body", {
    "strophe-session": bytes([0x0B]) + b"\x00".join(strophe),
    "out-of-order": bytes([0x2B]) + b"\x00".join([strophe[0], b"!" + strophe[3].replace(b"1573741823", b"1573741822"), strophe[1]]),
    "bad-requests": bytes([0x03]) + b"\x00".join([b"<body rid='x' " + NS + b"/>", b"<stream:stream/>", b"<body " + NS + b" rid='9007199254740993'/>", b"<body " + NS + b" rid='1' sid='nope'/>"]),
})

# --- WebSocket: [read size, limit] + client bytes after the 101 -----------------
def masked(b0, payload, mask=b"\x37\xfa\x21\x3d"):
    n = len(payload)
    head = bytes([b0])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))

write("websocket", {
    "rfc6455-masked-hello": bytes([3, 64]) + bytes.fromhex("818537fa213d7f9f4d5158"),
    "fragments-ping-close": bytes([2, 64]) + masked(0x01, b"Hel") + masked(0x89, b"Hello") + masked(0x80, b"lo") + masked(0x88, b"\x03\xe8bye"),
    "stomp-over-ws": bytes([9, 64]) + masked(0x82, CONNECT) + masked(0x81, SEND + b"x" * 120) + masked(0x8A, b""),
    "too-big": bytes([4, 1]) + masked(0x82, b"y" * 200),
    "unmasked": bytes([4, 64]) + bytes.fromhex("810548656c6c6f"),
    "handshake": bytes([0xFF, 0]) + b"13\ndGhlIHNhbXBsZSBub25jZQ==\nv10.stomp, v12.stomp,xmpp",
})

# --- HTTP/1.1: [read size, head limit, body limit] + request ------------------------
CFG_HTTP = bytes([5, 0xFF, 64])
bosh_body = strophe[1].replace(b"SID", b"8f2c")
write("http1_head", {
    "strophe-post": CFG_HTTP + b"POST /http-bind HTTP/1.1\r\nHost: localhost:5280\r\nContent-Type: text/xml; charset=utf-8\r\nOrigin: http://localhost:8080\r\nAccept: */*\r\nContent-Length: "
    + str(len(bosh_body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + bosh_body,
    "ws-upgrade": CFG_HTTP + b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n",
    "chunked-trailer": CFG_HTTP + b"POST /http-bind HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "sockjs-xhr-send": CFG_HTTP + b"POST /stomp/000/abcd1234/xhr_send HTTP/1.1\r\nHost: localhost:15674\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: 2\r\n\r\n[]",
    # Finding: an endless trailer line was buffered until the request timeout.
    "trailer-endless": bytes([200, 0xFF, 64]) + b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + b"a" * 1100,
    "http10-expect": bytes([1, 0x20, 2]) + b"PUT /x?y=1 HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
})

# --- SockJS: [mode] + body -----------------------------------------------------
stomp_js_frame = json.dumps(["CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\n\n\x00"]).encode()
write("sockjs", {
    "xhr-send-stompjs": b"\x00" + stomp_js_frame,
    "xhr-send-two": b"\x00" + json.dumps(["SUBSCRIBE\nid:sub-0\ndestination:/topic/a\n\n\x00", "SEND\ndestination:/topic/a\n\n\u2028hi\ud83d\ude00\x00"]).encode(),
    "websocket-single": b"\x00" + b' "SEND\\ndestination:/queue/q\\n\\n\\u0000"',
    "encode": b"\x01" + "a\u2028b\x00\"\\\n\ud7ff\ufeff".encode("utf-8", "surrogatepass") + b"\x00\xff\xfe",
    "jsonp-form": b"\x02" + b"c=1&x=y\x00" + stomp_js_frame,
})

# --- SASL: [mode] + client-first NUL client-final ------------------------------
CN = b"fyko+d2lbbFgONRv9qkxdawL"
SN = b"3rfcNHYJY1ZVvWVs7j"
write("sasl", {
    "scram-sha1-fixed-proof": b"\x01n,,n=user,r=" + CN + b"\x00c=biws,r=" + CN + SN + b",p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "scram-sha1-wrong-proof": b"\x00n,,n=user,r=" + CN + b"\x00c=biws,r=" + CN + SN + b",p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "scram-sha256-authzid": b"\x03y,a=user,n=user,r=rOprNGfwEbeRWgbNEkqO,x=1\x00c=eSxhPXVzZXIs,r=rOprNGfwEbeRWgbNEkqO" + SN + b",x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "scram-unknown-user": b"\x03n,,n==2Cbob=3D,r=abc\x00c=biws,r=abc" + SN + b",p=AAAA",
    "plain": b"\x04\x00alice\x00secret",
    "plain-authzid": b"\x04alice@localhost\x00alice\x00s\xc3\xa9cret",
})

# --- JWT: [mode] + login NUL (token | header NUL payload [NUL signature]) --------
SECRET = b"fuzz-secret-0123456789"
hdr = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
claims = json.dumps({"sub": "alice", "iss": "herald", "aud": "herald-clients", "exp": 4102444800, "nbf": 1700000000, "tags": ["administrator"]}).encode()
signed = b64u(hdr) + "." + b64u(claims)
token = signed + "." + b64u(hmac.new(SECRET, signed.encode(), hashlib.sha256).digest())
seeds = {
    "hs256-valid-token": b"\x00alice\x00" + token.encode(),
    "hs256-sign": b"\x01alice\x00" + hdr + b"\x00" + claims,
    "hs256-expired": b"\x01alice\x00" + hdr + b"\x00" + json.dumps({"sub": "alice", "iss": "herald", "aud": ["x", "herald-clients"], "exp": 1000}).encode(),
    "confusion": b"\x02alice\x00" + json.dumps({"alg": "HS256"}).encode() + b"\x00" + claims,
    "alg-none": b"\x03alice\x00" + json.dumps({"alg": "none"}).encode() + b"\x00" + claims + b"\x00x",
    "numeric-sub": b"\x0142\x00" + hdr + b"\x00" + json.dumps({"sub": 42, "iss": "herald", "aud": "herald-clients", "exp": 4102444800}).encode(),
}
# An RS256 token signed with the unit tests' private key, when openssl is there.
key = os.path.join(HERE, "..", "core", "tests", "data", "jwt-rs256-private.pem")
rs_signed = (b64u(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + b64u(claims)).encode()
if shutil.which("openssl"):
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=rs_signed, capture_output=True, check=True).stdout
    seeds["rs256-valid-token"] = b"\x00alice\x00" + rs_signed + b"." + b64u(sig).encode()
write("jwt", seeds)
