"""Destinations, valid and invalid, of each kind: what SEND and SUBSCRIBE answer."""

from dsl import case, connect, frame, recv, send, sub

DESTS = [
    ("queue", "/queue/dst-q"),
    ("queue-nested", "/queue/dst-a/b"),
    ("queue-bare", "/queue"),
    ("queue-slash", "/queue/"),
    ("queue-dots", "/queue/dst.a.b"),
    ("queue-escaped-slash", "/queue/dst-a%2Fb"),
    ("topic", "/topic/dst-t"),
    ("topic-nested", "/topic/dst-a/b"),
    ("topic-bare", "/topic"),
    ("topic-slash", "/topic/"),
    ("topic-wildcard", "/topic/dst.*.x"),
    ("exchange-topic", "/exchange/amq.topic/dst-k"),
    ("exchange-fanout", "/exchange/amq.fanout"),
    ("exchange-direct-nested", "/exchange/amq.direct/a/b"),
    ("exchange-empty-name", "/exchange//x"),
    ("exchange-bare", "/exchange"),
    ("exchange-slash", "/exchange/"),
    ("amq-queue-bare", "/amq/queue"),
    ("amq-queue-slash", "/amq/queue/"),
    ("amq-queue-nested", "/amq/queue/a/b"),
    ("temp-queue", "/temp-queue/dst-tq"),
    ("temp-queue-bare", "/temp-queue"),
    ("reply-queue", "/reply-queue/dst-nosuch"),
    ("reply-queue-bare", "/reply-queue/"),
    ("no-prefix", "dst-plain"),
    ("unknown-prefix", "/foo/bar"),
    ("empty", ""),
]

CASES = []
for name, dest in DESTS:
    CASES.append(case(f"send-{name}", f"SEND to {dest!r} with a receipt",
                      connect("c", "1.2"),
                      send("c", frame("SEND", [("destination", dest), ("receipt", "r1")], "x")),
                      recv("c", 1)))
    CASES.append(case(f"subscribe-{name}", f"SUBSCRIBE to {dest!r} with a receipt",
                      connect("c", "1.2"), sub("c", dest, "s1", receipt="r1"), recv("c", 1)))

# Deliveries through each valid kind (consumer c, publisher p, so receipts and messages do not race).
DELIVERY = [
    ("queue", "/queue/dlv-q", "/queue/dlv-q"),
    ("topic", "/topic/dlv-t", "/topic/dlv-t"),
    ("topic-wildcard", "/topic/dlv.*", "/topic/dlv.x"),
    ("exchange-topic", "/exchange/amq.topic/dlv-k", "/exchange/amq.topic/dlv-k"),
    ("exchange-fanout", "/exchange/amq.fanout", "/exchange/amq.fanout/any"),
    ("queue-to-amq-queue", "/queue/dlv-aq", "/amq/queue/dlv-aq"),
    ("queue-via-default-exchange", "/queue/dlv-dx", "/exchange/amq.direct/dlv-dx"),
]
for name, sdest, pdest in DELIVERY:
    CASES.append(case(f"deliver-{name}", f"SUBSCRIBE {sdest}, SEND {pdest} from another connection",
                      connect("c", "1.2"), sub("c", sdest, "s1", receipt="r1"), recv("c", 1),
                      connect("p", "1.2"),
                      send("p", frame("SEND", [("destination", pdest), ("receipt", "r2"), ("x-custom", "v")], "hello")),
                      recv("p", 1), recv("c", 1)))

CASES.append(case("temp-queue-reply", "a request with reply-to /temp-queue/, answered to the rewritten reply-to",
                  connect("c", "1.2"), sub("c", "/queue/dlv-rpc", "s1", receipt="r1"), recv("c", 1),
                  connect("p", "1.2"),
                  send("p", frame("SEND", [("destination", "/queue/dlv-rpc"), ("reply-to", "/temp-queue/rq"),
                                           ("receipt", "r2")], "ping")),
                  recv("p", 1), recv("c", 1)))
