"""Web-STOMP: the WebSocket handshake's subprotocol choice, and STOMP over it."""

from dsl import case, connect, connect_frame, frame, recv, send, sub, ws

CASES = [
    case("ws-v10-v11", "offered v10.stomp, v11.stomp", ws("w", ["v10.stomp", "v11.stomp"]), send("w", connect_frame("1.0,1.1")), recv("w", 1)),
    case("ws-v12", "offered v12.stomp", ws("w", ["v12.stomp"]), send("w", connect_frame("1.2")), recv("w", 1)),
    case("ws-all", "offered v10.stomp, v11.stomp, v12.stomp", ws("w", ["v10.stomp", "v11.stomp", "v12.stomp"]),
         send("w", connect_frame("1.0,1.1,1.2")), recv("w", 1)),
    case("ws-none", "no Sec-WebSocket-Protocol", ws("w", None), send("w", connect_frame("1.2")), recv("w", 1)),
    case("ws-stomp", "offered plain 'stomp'", ws("w", ["stomp"]), send("w", connect_frame("1.2")), recv("w", 1)),
    case("ws-unknown", "offered only 'mqtt'", ws("w", ["mqtt"]), send("w", connect_frame("1.2")), recv("w", 1)),
    case("ws-roundtrip", "SUBSCRIBE and SEND over WebSocket",
         connect("w", "1.2", kind="ws", protocols=["v12.stomp"]), sub("w", "/queue/ws-rt", "s1", receipt="r1"), recv("w", 1),
         send("w", frame("SEND", [("destination", "/queue/ws-rt"), ("receipt", "r2")], "over ws")), recv("w", 2, unordered=True)),
    case("ws-error", "an ERROR over WebSocket", connect("w", "1.2", kind="ws", protocols=["v12.stomp"]),
         send("w", frame("SEND", [], "x")), recv("w", 1, close=True)),
    case("ws-bad-login", "a wrong passcode over WebSocket", ws("w", ["v12.stomp"]),
         send("w", frame("CONNECT", [("accept-version", "1.2"), ("host", "/"), ("login", "guest"), ("passcode", "no")])),
         recv("w", 1, close=True)),
]
