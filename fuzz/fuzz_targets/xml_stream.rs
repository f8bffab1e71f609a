//! XMPP XML stream parser (core/src/xmpp/xml.rs).
//!
//! Input: 3 configuration bytes (read size, depth/attribute limits, size
//! limit), then a client's stream. Invariants:
//! - no stanza is deeper than `max_depth`, has an element with more than
//!   `max_attrs` attributes, or took more than `max_stanza_bytes` on the wire;
//! - while waiting for more bytes the parser holds at most
//!   `max_stanza_bytes` plus one read;
//! - the events do not depend on how the bytes were split into reads;
//! - a stanza serialized and parsed again (`parse_element`) is the same
//!   element (where XMPP's serializer is defined to be exact: see
//!   `round_trips`);
//! - `parse_element` on the whole input (the WebSocket and BOSH path) obeys
//!   the same limits.
#![no_main]

use bytes::BytesMut;
use herald_core::xmpp::xml::{parse_element, Element, Limits, Node, StreamParser, XmlError, XmlEvent};
use herald_fuzz::{chunks, header};
use libfuzzer_sys::fuzz_target;

fn depth(e: &Element) -> usize {
    1 + e.elements().map(depth).max().unwrap_or(0)
}

fn max_attrs(e: &Element) -> usize {
    e.attrs.len().max(e.elements().map(max_attrs).max().unwrap_or(0))
}

/// Whether `to_bytes` is documented to reproduce `e` exactly: prefixed
/// attributes lose their `xmlns:p` declaration (declarations are not kept)
/// and an element in no namespace inside one with a default namespace is
/// written as inheriting it.
fn round_trips(e: &Element, default_ns: &str) -> bool {
    if e.ns.is_empty() && !default_ns.is_empty() {
        return false;
    }
    if e.attrs.iter().any(|(k, _)| k.contains(':') && !k.starts_with("xml:")) {
        return false;
    }
    let inner = if e.ns == "http://etherx.jabber.org/streams" { default_ns } else { &e.ns };
    e.elements().all(|c| round_trips(c, inner))
}

fn check_limits(e: &Element, limits: &Limits) {
    assert!(depth(e) <= limits.max_depth, "depth {} > {}", depth(e), limits.max_depth);
    assert!(max_attrs(e) <= limits.max_attrs, "{} attributes > {}", max_attrs(e), limits.max_attrs);
}

fn no_empty_text(e: &Element) {
    for c in &e.children {
        match c {
            Node::Text(t) => assert!(!t.is_empty(), "empty text node"),
            Node::Element(c) => no_empty_text(c),
        }
    }
}

fn run(data: &[u8], sizes: &[u8], limits: &Limits) -> (Vec<XmlEvent>, Option<XmlError>) {
    let mut p = StreamParser::new(*limits);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut largest_read = 0;
    for piece in chunks(data, sizes) {
        largest_read = largest_read.max(piece.len());
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match p.parse(&mut buf) {
                Ok(Some(ev)) => {
                    if let XmlEvent::Stanza(el) = &ev {
                        let consumed = &before[..before.len() - buf.len()];
                        let wire = consumed.trim_ascii_start().len();
                        assert!(
                            wire <= limits.max_stanza_bytes,
                            "stanza of {wire} bytes > {}",
                            limits.max_stanza_bytes
                        );
                        check_limits(el, limits);
                        no_empty_text(el);
                    }
                    events.push(ev);
                }
                Ok(None) => {
                    // The BOM and XML declaration are checked separately.
                    let bound = limits.max_stanza_bytes + largest_read + 3;
                    assert!(buf.len() <= bound, "{} bytes buffered > {bound}", buf.len());
                    break;
                }
                Err(e) => {
                    // A dead stream stays dead.
                    assert_eq!(p.parse(&mut buf), Err(e.clone()));
                    return (events, Some(e));
                }
            }
        }
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let ([size, shape, bytes], rest) = header::<3>(data);
    let limits = Limits {
        max_depth: 1 + usize::from(shape % 8),
        max_attrs: 1 + usize::from(shape >> 4),
        max_stanza_bytes: 32 + usize::from(bytes) * 16,
    };
    let (whole, whole_err) = run(rest, &[], &limits);
    let (split, split_err) = run(rest, &[size, 1, size.rotate_left(2)], &limits);
    assert_eq!(whole, split, "events depend on the read sizes");
    assert_eq!(whole_err.is_some(), split_err.is_some(), "{whole_err:?} vs {split_err:?}");

    let generous = Limits { max_depth: 1 << 30, max_attrs: 1 << 30, max_stanza_bytes: 1 << 30 };
    for ev in &whole {
        if let XmlEvent::Stanza(el) = ev {
            if round_trips(el, "") {
                let bytes = el.to_bytes();
                let again = parse_element(&bytes, &generous);
                assert_eq!(again.as_ref(), Ok(el), "{}", String::from_utf8_lossy(&bytes));
            }
        }
    }

    if let Ok(el) = parse_element(rest, &limits) {
        check_limits(&el, &limits);
        no_empty_text(&el);
        let body = rest.trim_ascii();
        // The element itself is within the limit; a BOM, an XML declaration
        // and whitespace around it are not counted.
        assert!(
            body.len() <= limits.max_stanza_bytes || body.starts_with(b"<?") || rest.starts_with(b"\xEF\xBB\xBF"),
            "element of {} bytes",
            body.len()
        );
    }
});
