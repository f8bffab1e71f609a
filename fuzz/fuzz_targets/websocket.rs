//! WebSocket codec (core/src/transport/websocket.rs): the client frames the
//! server reads, and the upgrade handshake.
//!
//! Input: 2 configuration bytes (read size, message limit), then the bytes a
//! client sends after the 101. Invariants:
//! - a text or binary message is never larger than `max_message`, text is
//!   UTF-8, ping payloads fit a control frame;
//! - while waiting for more bytes the decoder holds at most one frame
//!   header plus `max_message` (a client cannot make it buffer more);
//! - the messages do not depend on how the bytes were split into reads;
//! - a message sent again as masked client frames (one frame, or fragments
//!   with a ping in between) decodes to the same message;
//! - the handshake accepts only a GET with version 13 and a 16-byte key,
//!   and answers with the RFC 6455 accept value.
#![no_main]

use bytes::{BufMut, BytesMut};
use herald_core::transport::websocket::{
    accept_key, handshake, Decoder, Event, WsError, OP_BINARY, OP_CONTINUATION, OP_PING, OP_TEXT,
};
use herald_fuzz::{chunks, header};
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

const MAX_HEADER: usize = 14;

fn run(data: &[u8], sizes: &[u8], max_message: usize) -> (Vec<Event>, Option<WsError>) {
    let mut d = Decoder::new(max_message);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in chunks(data, sizes) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(ev)) => {
                    match &ev {
                        Event::Text(t) => {
                            assert!(t.len() <= max_message);
                            assert!(std::str::from_utf8(t).is_ok(), "text message not UTF-8");
                        }
                        Event::Binary(b) => assert!(b.len() <= max_message),
                        Event::Ping(p) => assert!(p.len() <= 125),
                        Event::Pong | Event::Close(_) => {}
                    }
                    events.push(ev);
                }
                Ok(None) => {
                    let bound = MAX_HEADER + max_message.max(125);
                    assert!(buf.len() < bound, "{} bytes buffered, bound {bound}", buf.len());
                    break;
                }
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

/// One masked client frame.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut BytesMut) {
    out.put_u8(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n @ 0..=125 => out.put_u8(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.put_u8(0x80 | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(0x80 | 127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

fn check_handshake(data: &[u8]) {
    // Header values from the input: version, key, protocols.
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (version, key, protocols) =
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    for (name, value) in
        [("sec-websocket-version", version), ("sec-websocket-key", key), ("sec-websocket-protocol", protocols)]
    {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    }
    let offered = ["v12.stomp", "xmpp"];
    match handshake(&Method::GET, &headers, &offered) {
        Ok(accepted) => {
            assert_eq!(headers.get("sec-websocket-version").map(HeaderValue::as_bytes), Some(&b"13"[..]));
            let key = headers.get("sec-websocket-key").map(HeaderValue::as_bytes).unwrap_or_default();
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD.decode(key).expect("accepted a key that is not base64");
            assert_eq!(raw.len(), 16, "accepted a key of {} bytes", raw.len());
            assert_eq!(accepted.accept, accept_key(key));
            if let Some(p) = accepted.protocol {
                assert!(offered.contains(&p));
                let asked = headers.get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or_default();
                assert!(asked.split(',').any(|o| o.trim() == p), "picked {p} not offered in {asked:?}");
            }
        }
        Err(_) => {}
    }
    assert!(handshake(&Method::POST, &headers, &offered).is_err(), "accepted a POST");
}

fuzz_target!(|data: &[u8]| {
    let ([size, limit], rest) = header::<2>(data);
    if size == 0xFF {
        check_handshake(rest);
        return;
    }
    let max_message = 1 + usize::from(limit) * 4;
    let (whole, whole_err) = run(rest, &[], max_message);
    let (split, split_err) = run(rest, &[size, 1, 2, size >> 2], max_message);
    assert_eq!(whole, split, "messages depend on the read sizes");
    assert_eq!(whole_err, split_err, "errors depend on the read sizes");

    // Send every message again, whole and in fragments with a ping between.
    let mask = [size, limit, 0x5a, 0xa5];
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    let ping = Event::Ping(bytes::Bytes::from_static(b"p"));
    for ev in &whole {
        let (op, payload) = match ev {
            Event::Text(t) => (OP_TEXT, t),
            Event::Binary(b) => (OP_BINARY, b),
            _ => continue,
        };
        client_frame(true, op, payload, mask, &mut wire);
        let cut = payload.len() / 2;
        client_frame(false, op, &payload[..cut], mask, &mut wire);
        client_frame(true, OP_PING, b"p", mask, &mut wire);
        client_frame(true, OP_CONTINUATION, &payload[cut..], mask, &mut wire);
        expected.push(ev);
        expected.push(&ping);
        expected.push(ev);
    }
    let (again, err) = run(&wire, &[], max_message);
    assert_eq!(err, None);
    assert_eq!(again.iter().collect::<Vec<_>>(), expected);
});
