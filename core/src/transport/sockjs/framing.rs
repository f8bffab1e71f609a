//! SockJS framing, sans-IO: the frames a receiving connection sends (`o`,
//! `h`, `a[...]`, `c[code,"reason"]`), how each HTTP transport wraps them
//! (xhr lines, EventSource events, htmlfile script tags, JSONP calls), the
//! JSON string escaping sockjs-client expects, and the decoding of client
//! messages (JSON arrays, form-encoded `d=` fields).
//!
//! May import: the standard library, `bytes` and `serde_json`. No sessions,
//! no HTTP types.

use std::collections::VecDeque;
use std::fmt::Write as _;

use bytes::Bytes;

/// A SockJS close frame's code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

pub(crate) const GO_AWAY: CloseReason = CloseReason { code: 3000, reason: "Go away!" };
pub(crate) const ANOTHER_CONNECTION: CloseReason = CloseReason { code: 2010, reason: "Another connection still open" };
pub(crate) const INTERRUPTED: CloseReason = CloseReason { code: 1002, reason: "Connection interrupted" };
pub(crate) const OVERFLOW: CloseReason = CloseReason { code: 3001, reason: "Too many pending messages" };
pub(crate) const TIMED_OUT: CloseReason = CloseReason { code: 3002, reason: "Session timed out" };

pub(super) enum Frame {
    Open,
    Heartbeat,
    Messages(VecDeque<String>),
    Close(CloseReason),
}

impl Frame {
    pub(super) fn encode(&self) -> String {
        match self {
            Frame::Open => "o".to_owned(),
            Frame::Heartbeat => "h".to_owned(),
            Frame::Messages(msgs) => encode_messages(msgs),
            Frame::Close(c) => close_frame(*c),
        }
    }
}

pub(crate) fn encode_messages<'a>(msgs: impl IntoIterator<Item = &'a String>) -> String {
    let mut out = String::from("a[");
    for (i, m) in msgs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, m);
    }
    out.push(']');
    out
}

pub(super) fn close_frame(c: CloseReason) -> String {
    let mut out = format!("c[{},", c.code);
    push_json_string(&mut out, c.reason);
    out.push(']');
    out
}

/// How frames are wrapped on the wire.
pub(super) enum Wrap {
    Xhr,
    EventSource,
    HtmlFile,
    Jsonp(String),
}

impl Wrap {
    pub(super) fn frame(&self, frame: &str) -> Bytes {
        let mut out = String::with_capacity(frame.len() + 32);
        match self {
            Wrap::Xhr => {
                out.push_str(frame);
                out.push('\n');
            }
            Wrap::EventSource => {
                out.push_str("data: ");
                out.push_str(frame);
                out.push_str("\r\n\r\n");
            }
            Wrap::HtmlFile => {
                out.push_str("<script>\np(");
                push_json_string(&mut out, frame);
                out.push_str(");\n</script>\r\n");
            }
            Wrap::Jsonp(callback) => {
                out.push_str(callback);
                out.push('(');
                push_json_string(&mut out, frame);
                out.push_str(");\r\n");
            }
        }
        Bytes::from(out)
    }
}

/// Client messages: a JSON array of strings, or (websocket) a single string.
pub(crate) fn parse_messages(data: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    match data.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'"') => serde_json::from_slice::<String>(data).map(|m| vec![m]),
        _ => serde_json::from_slice::<Vec<String>>(data),
    }
}

/// Value of `name` in an `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let key = url_decode(kv.next()?);
        (key == name.as_bytes()).then(|| url_decode(kv.next().unwrap_or_default()))
    })
}

fn url_decode(s: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Characters sent as `\uXXXX`: the sockjs-protocol list of characters
/// browsers mangle (control characters, invisible formatting characters, the
/// `\ufff0-\uffff` specials) plus everything outside the BMP (as surrogate
/// pairs, like JavaScript servers do).
pub(crate) fn must_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{ad}'
        | '\u{600}'..='\u{604}'
        | '\u{70f}'
        | '\u{17b4}'
        | '\u{17b5}'
        | '\u{200c}'..='\u{200f}'
        | '\u{2028}'..='\u{202f}'
        | '\u{2060}'..='\u{206f}'
        | '\u{feff}'
        | '\u{fff0}'..='\u{ffff}'
        | '\u{10000}'..)
}

/// Appends `s` as a JSON string literal, escaped as sockjs-client expects.
pub(super) fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            c if must_escape(c) => Some(""),
            _ => None,
        };
        let Some(esc) = esc else { continue };
        out.push_str(&s[start..i]);
        start = i + c.len_utf8();
        if !esc.is_empty() {
            out.push_str(esc);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{:04x}", unit);
            }
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        let mut out = String::new();
        push_json_string(
            &mut out,
            "a\"b\\c\n\u{0}\u{1f}\u{7f}\u{ad}\u{200c}\u{2028}\u{2060}\u{feff}\u{fff0}\u{ffff}é€\u{1F600}",
        );
        assert_eq!(out, r#""a\"b\\c\n\u0000\u001f\u007f\u00ad\u200c\u2028\u2060\ufeff\ufff0\uffffé€\ud83d\ude00""#);
        // Whatever is escaped decodes back to the same string.
        let all: String = (0..=0x10FFFFu32).step_by(7).filter_map(char::from_u32).collect();
        let mut enc = String::new();
        push_json_string(&mut enc, &all);
        assert_eq!(serde_json::from_str::<String>(&enc).unwrap(), all);
        assert_eq!(close_frame(GO_AWAY), r#"c[3000,"Go away!"]"#);
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_field(b"d=%5B%22x%22%5D", "d").unwrap(), br#"["x"]"#);
        assert_eq!(form_field(b"a=1&d=a+b%2", "d").unwrap(), b"a b%2");
        assert_eq!(form_field(b"p=p", "d"), None);
    }
}
