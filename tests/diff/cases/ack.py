"""ACK / NACK in each ack mode, and the spellings of `requeue`."""

from dsl import case, connect, frame, recv, send, sub


def two_messages(q):
    return [connect("p", "1.2"),
            send("p", frame("SEND", [("destination", q), ("receipt", "p1")], "one")), recv("p", 1),
            send("p", frame("SEND", [("destination", q), ("receipt", "p2")], "two")), recv("p", 1)]


CASES = []
for mode in ("auto", "client", "client-individual"):
    q = f"/queue/ack-{mode}"
    CASES.append(case(f"mode-{mode}", f"ack:{mode}: deliveries, then ACK of the second with a receipt",
                      two_messages(q), connect("c", "1.2"), sub("c", q, "s1", ack=mode), recv("c", 2),
                      send("c", frame("ACK", [("id", "@ack:1"), ("receipt", "a1")])), recv("c", 1)))

for spelling in ("true", "True", "false", "False", "TRUE", "yes", ""):
    q = f"/queue/nack-{spelling or 'empty'}"
    CASES.append(case(f"nack-requeue-{spelling or 'empty'}", f"NACK with requeue:{spelling!r}: redelivered or dropped",
                      two_messages(q), connect("c", "1.2"), sub("c", q, "s1", ack="client-individual"), recv("c", 2),
                      send("c", frame("ACK", [("id", "@ack:1"), ("receipt", "a1")])), recv("c", 1),
                      send("c", frame("NACK", [("id", "@ack:0"), ("requeue", spelling), ("receipt", "n1")])),
                      recv("c", 2, timeout=1.0, unordered=True)))

CASES += [
    case("nack-default", "NACK without requeue: requeued by default",
         two_messages("/queue/nack-default"), connect("c", "1.2"), sub("c", "/queue/nack-default", "s1", ack="client-individual"),
         recv("c", 2), send("c", frame("ACK", [("id", "@ack:1"), ("receipt", "a1")])), recv("c", 1),
         send("c", frame("NACK", [("id", "@ack:0"), ("receipt", "n1")])), recv("c", 2, timeout=1.0, unordered=True)),
    case("ack-1.1", "1.1 ACK with message-id and subscription",
         two_messages("/queue/ack-11"), connect("c", "1.1"), sub("c", "/queue/ack-11", "s1", ack="client"), recv("c", 2),
         send("c", frame("ACK", [("message-id", "@message-id:1"), ("subscription", "s1"), ("receipt", "a1")])), recv("c", 1)),
    case("ack-1.0", "1.0 ACK with message-id",
         two_messages("/queue/ack-10"), connect("c", "1.0"), sub("c", "/queue/ack-10", "s1", ack="client"), recv("c", 2),
         send("c", frame("ACK", [("message-id", "@message-id:1"), ("receipt", "a1")])), recv("c", 1)),
    case("ack-twice", "ACK the same message twice (channel error in RabbitMQ)",
         two_messages("/queue/ack-twice"), connect("c", "1.2"), sub("c", "/queue/ack-twice", "s1", ack="client-individual"),
         recv("c", 2), send("c", frame("ACK", [("id", "@ack:0"), ("receipt", "a1")])), recv("c", 1),
         send("c", frame("ACK", [("id", "@ack:0"), ("receipt", "a2")])), recv("c", 1, close=True)),
    case("ack-in-auto-mode", "ACK a message delivered with ack:auto",
         two_messages("/queue/ack-auto2"), connect("c", "1.2"), sub("c", "/queue/ack-auto2", "s1"), recv("c", 2),
         send("c", frame("ACK", [("id", "@ack:0"), ("receipt", "a1")])), recv("c", 1, close=True)),
]
