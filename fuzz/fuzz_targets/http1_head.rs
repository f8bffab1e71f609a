//! HTTP/1.1 request head and chunked body (core/src/transport/http1.rs),
//! read the way the front server reads them.
//!
//! Input: 3 configuration bytes (read size, head limit, body limit), then a
//! client's bytes. Invariants:
//! - a head is never accepted over `max_head_bytes` or with more than
//!   `max_headers` headers, and an incomplete head is refused as soon as
//!   more than `max_head_bytes` are buffered;
//! - the head parsed from a buffer is the head of its first `len` bytes;
//! - a framed body is never over `max_body_bytes`; the chunked decoder
//!   never buffers a body over the limit nor keeps more than a chunk-size
//!   line's worth of undecoded input between reads (no unbounded buffer);
//! - the chunked body does not depend on how the bytes were split.
#![no_main]

use bytes::{Bytes, BytesMut};
use herald_core::transport::http1::{framing, parse_head, ChunkedDecoder, Framing, Head, Http1Limits, RequestError};
use herald_fuzz::{chunks, header};
use libfuzzer_sys::fuzz_target;

/// The longest chunk-size line or trailer line the decoder may wait on.
const LINE: usize = 1024;

fn same_head(a: &Head, b: &Head) {
    assert_eq!(
        (&a.method, &a.target, a.version, &a.headers, a.len),
        (&b.method, &b.target, b.version, &b.headers, b.len)
    );
}

/// Reads a head the way `read_request` does: parse after every read.
fn read_head(data: &[u8], sizes: &[u8], limits: &Http1Limits) -> Option<Result<Head, RequestError>> {
    let mut buf = Vec::new();
    for piece in chunks(data, sizes) {
        buf.extend_from_slice(piece);
        match parse_head(&buf, limits) {
            Ok(None) => assert!(
                buf.len() <= limits.max_head_bytes,
                "{} bytes of head pending, limit {}",
                buf.len(),
                limits.max_head_bytes
            ),
            Ok(Some(head)) => {
                assert!(
                    head.len <= limits.max_head_bytes,
                    "head of {} bytes accepted, limit {}",
                    head.len,
                    limits.max_head_bytes
                );
                assert!(head.len <= buf.len());
                assert!(head.headers.len() <= limits.max_headers, "{} headers", head.headers.len());
                let exact =
                    parse_head(&buf[..head.len], limits).expect("head prefix refused").expect("head prefix incomplete");
                same_head(&head, &exact);
                return Some(Ok(head));
            }
            Err(e) => return Some(Err(e)),
        }
    }
    None
}

fn read_chunked(data: &[u8], sizes: &[u8], max_body: usize) -> Option<Result<Bytes, RequestError>> {
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut read = 0;
    for piece in chunks(data, sizes) {
        buf.extend_from_slice(piece);
        read += piece.len();
        match dec.decode(&mut buf, max_body) {
            Ok(None) => assert!(buf.len() <= LINE + 2, "{} undecoded bytes kept between reads", buf.len()),
            Ok(Some(body)) => {
                assert!(body.len() <= max_body, "body of {} bytes, limit {max_body}", body.len());
                assert!(body.len() <= read);
                return Some(Ok(body));
            }
            Err(e) => return Some(Err(e)),
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let ([size, head_limit, body_limit], rest) = header::<3>(data);
    let limits = Http1Limits {
        max_head_bytes: 16 + usize::from(head_limit) * 8,
        max_headers: 1 + usize::from(head_limit % 16),
        max_body_bytes: usize::from(body_limit) * 16,
        ..Http1Limits::default()
    };
    let whole = read_head(rest, &[], &limits);
    let split = read_head(rest, &[size, 1, 7, 200], &limits);
    match (&whole, &split) {
        (Some(Ok(a)), Some(Ok(b))) => same_head(a, b),
        // Partial input is checked against the limit as it arrives, so one
        // split may be refused where the whole is incomplete, never accepted.
        (Some(Ok(_)), _) | (_, Some(Ok(_))) => panic!("head accepted with one split only: {whole:?} / {split:?}"),
        _ => {}
    }
    let Some(Ok(head)) = whole else { return };
    let body = &rest[head.len..];
    match framing(&head, limits.max_body_bytes) {
        Ok(Framing::Length(n)) => assert!(n <= limits.max_body_bytes, "length {n} over {}", limits.max_body_bytes),
        Ok(Framing::Chunked) => {
            let a = read_chunked(body, &[], limits.max_body_bytes);
            let b = read_chunked(body, &[size, 3, 1], limits.max_body_bytes);
            if let (Some(Ok(a)), Some(Ok(b))) = (&a, &b) {
                assert_eq!(a, b, "chunked body depends on the read sizes");
            }
        }
        Err(_) => {}
    }
});
