//! SockJS framing (core/src/transport/sockjs/framing.rs): the JSON message array a
//! client posts (`xhr_send`, `jsonp_send`, also form-encoded) or sends on
//! the framed websocket, and the `a[...]` frames the server writes.
//!
//! Input: 1 mode byte, then a request body. Invariants:
//! - the server reads exactly what a JSON parser reads: a string, or an
//!   array of strings, nothing else;
//! - what the server writes for any messages is JSON that reads back as the
//!   same messages, with every character sockjs-client wants escaped as
//!   `\uXXXX` (no raw U+2028 and friends that break JSONP);
//! - the form field decoder is the inverse of form encoding.
#![no_main]

use herald_core::fuzzing::{sockjs_encode_messages, sockjs_form_field, sockjs_must_escape, sockjs_parse_messages};
use herald_fuzz::header;
use libfuzzer_sys::fuzz_target;

fn check_encoding(msgs: &[String]) {
    let frame = sockjs_encode_messages(msgs);
    let json = frame.strip_prefix('a').expect("frame without its 'a'");
    assert!(!json.chars().any(sockjs_must_escape), "unescaped character in {json:?}");
    let back: Vec<String> = serde_json::from_str(json).expect("server wrote invalid JSON");
    assert_eq!(back, msgs);
    assert_eq!(sockjs_parse_messages(json.as_bytes()).ok().as_deref(), Some(msgs));
}

/// `application/x-www-form-urlencoded` as a browser's form post writes it.
fn form_encode(value: &[u8]) -> String {
    let mut out = String::new();
    for &b in value {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let ([mode], body) = header::<1>(data);
    match mode % 3 {
        0 => {
            // A body as the client posts it.
            let parsed = sockjs_parse_messages(body);
            let reference = match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(serde_json::Value::String(s)) => Some(vec![s]),
                Ok(serde_json::Value::Array(a)) => a.into_iter().map(|v| v.as_str().map(str::to_owned)).collect(),
                _ => None,
            };
            assert_eq!(parsed.as_ref().ok(), reference.as_ref(), "parse differs from JSON");
            if let Ok(msgs) = parsed {
                check_encoding(&msgs);
            }
        }
        1 => {
            // Messages (split at NUL, lossy UTF-8) the server writes out.
            let msgs: Vec<String> = body.split(|&b| b == 0).map(|m| String::from_utf8_lossy(m).into_owned()).collect();
            check_encoding(&msgs);
        }
        _ => {
            // jsonp_send's form body: d=<urlencoded JSON>, among other fields.
            let (other, value) = body.split_at(body.iter().position(|&b| b == 0).unwrap_or(0));
            let value = value.get(1..).unwrap_or_default();
            let form = format!("{}&d={}", form_encode(other).replace("d", "e"), form_encode(value));
            assert_eq!(sockjs_form_field(form.as_bytes(), "d").as_deref(), Some(value));
            let _ = sockjs_form_field(body, "d");
        }
    }
});
