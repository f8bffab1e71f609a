"""Frame syntax and limits: NUL/EOL before a command, content-length, escaping, sizes."""

from dsl import GUEST, case, connect, connect_frame, frame, recv, send, sub, tcp

SUBQ = [connect("c", "1.2"), sub("c", "/queue/fr-q", "s1", receipt="r0"), recv("c", 1)]


def roundtrip(name, doc, version, data, n=1):
    q = f"/queue/fr-{name}"
    return case(name, doc, connect("c", version), sub("c", q, "s1", receipt="r0"), recv("c", 1),
                connect("p", version), send("p", data), recv("p", n), recv("c", 1))


CASES = [
    case("eol-before-connect", "EOLs (heart-beats) before CONNECT", tcp("c"), send("c", b"\n\r\n" + connect_frame("1.2")), recv("c", 1)),
    case("nul-before-connect", "a NUL byte before CONNECT", tcp("c"), send("c", b"\x00" + connect_frame("1.2")), recv("c", 1)),
    case("nul-between-frames", "a NUL byte between two frames",
         connect("c", "1.2"), send("c", b"\x00" + frame("SEND", [("destination", "/queue/fr-nul"), ("receipt", "r1")], "x")),
         recv("c", 1)),
    case("crlf-frame", "CRLF line endings", tcp("c"),
         send("c", b"CONNECT\r\naccept-version:1.2\r\nhost:/\r\nlogin:guest\r\npasscode:guest\r\n\r\n\x00"), recv("c", 1)),
    roundtrip("content-length", "SEND with content-length and a NUL inside the body", "1.2",
              frame("SEND", [("destination", "/queue/fr-content-length"), ("receipt", "r1")], b"a\x00b", content_length=True)),
    roundtrip("no-content-length", "SEND without content-length", "1.2",
              frame("SEND", [("destination", "/queue/fr-no-content-length"), ("receipt", "r1"), ("content-type", "text/plain")], "plain")),
    roundtrip("escaped-headers-1.2", "1.2 header escapes \\c \\n \\\\ \\r in a custom header", "1.2",
              frame("SEND", [("destination", "/queue/fr-escaped-headers-1.2"), ("receipt", "r1"), ("x-e", "a\\cb\\nc\\\\d\\re")], "e")),
    roundtrip("escaped-headers-1.1", "1.1 header escapes in a custom header", "1.1",
              frame("SEND", [("destination", "/queue/fr-escaped-headers-1.1"), ("receipt", "r1"), ("x-e", "a\\cb\\nc\\\\d")], "e")),
    roundtrip("colon-in-value-1.0", "1.0: a raw colon in a header value", "1.0",
              frame("SEND", [("destination", "/queue/fr-colon-in-value-1.0"), ("receipt", "r1"), ("x-e", "a:b\\c")], "e")),
    roundtrip("repeated-header", "a repeated header: the first wins", "1.2",
              frame("SEND", [("destination", "/queue/fr-repeated-header"), ("receipt", "r1"), ("x-r", "first"), ("x-r", "second")], "r")),
    roundtrip("utf8-header", "UTF-8 in a header value and body", "1.2",
              frame("SEND", [("destination", "/queue/fr-utf8-header"), ("receipt", "r1"), ("x-u", "h\u00e9llo \u2603")], "b\u00f6dy")),
    roundtrip("whitespace-header", "spaces around a header value are kept (1.2)", "1.2",
              frame("SEND", [("destination", "/queue/fr-whitespace-header"), ("receipt", "r1"), ("x-w", " padded ")], "w")),
    case("bad-escape-1.2", "an undefined escape \\t in a 1.2 header",
         connect("c", "1.2"), send("c", frame("SEND", [("destination", "/queue/fr-be"), ("x-b", "a\\tb")], "x")), recv("c", 1, close=True)),
    case("content-length-too-short", "content-length shorter than the body: no NUL where expected",
         connect("c", "1.2"), send("c", b"SEND\ndestination:/queue/fr-cl\ncontent-length:1\nreceipt:r1\n\nabc\x00"), recv("c", 1, close=True)),
    case("content-length-bad", "content-length not a number",
         connect("c", "1.2"), send("c", b"SEND\ndestination:/queue/fr-cl\ncontent-length:abc\nreceipt:r1\n\nabc\x00"), recv("c", 1, close=True)),
    case("header-no-colon", "a header line without a colon",
         connect("c", "1.2"), send("c", b"SEND\ndestination:/queue/fr-nc\nnocolon\nreceipt:r1\n\nabc\x00"), recv("c", 1, close=True)),
    roundtrip("body-64k", "a 64 KiB body", "1.2",
              frame("SEND", [("destination", "/queue/fr-body-64k"), ("receipt", "r1")], b"x" * 65536)),
    roundtrip("header-4k", "a 4 KiB header value", "1.2",
              frame("SEND", [("destination", "/queue/fr-header-4k"), ("receipt", "r1"), ("x-big", "h" * 4096)], "b")),
    case("header-16k", "a 16 KiB header value",
         connect("c", "1.2"), send("c", frame("SEND", [("destination", "/queue/fr-h16"), ("receipt", "r1"), ("x-big", "h" * 16384)], "b")),
         recv("c", 1)),
    case("headers-200", "200 headers in one frame",
         connect("c", "1.2"), send("c", frame("SEND", [("destination", "/queue/fr-h200"), ("receipt", "r1")] +
                                              [(f"x-h{i}", "v") for i in range(200)], "b")), recv("c", 1)),
    case("send-2mib", "a 2 MiB SEND",
         connect("c", "1.2"), send("c", frame("SEND", [("destination", "/queue/fr-2m"), ("receipt", "r1")], b"y" * (2 << 20))),
         recv("c", 1, timeout=10)),
    case("send-16mib", "a 16 MiB SEND (RabbitMQ's frame limit is larger)",
         connect("c", "1.2"), send("c", frame("SEND", [("destination", "/queue/fr-16m"), ("receipt", "r1")], b"z" * (16 << 20))),
         recv("c", 1, timeout=20)),
]
