//! STOMP decoder (core/src/stomp/frame.rs).
//!
//! Input: 3 configuration bytes (escaping, read size, frame limit), then the
//! bytes a client sends. Invariants:
//! - a frame is never larger than `max_frame_bytes` on the wire, never has
//!   more than `max_headers` headers or a line longer than `max_header_bytes`;
//! - while waiting for more bytes the decoder never holds a whole
//!   `max_frame_bytes` (the buffer is bounded whatever the client sends);
//! - the frames do not depend on how the bytes were split into reads;
//! - encoding a decoded frame and decoding it again gives the same frame.
#![no_main]

use bytes::BytesMut;
use herald_core::stomp::frame::{encode, Decoded, Decoder, Escaping, Frame, FrameError, Limits};
use herald_fuzz::{chunks, header};
use libfuzzer_sys::fuzz_target;

/// Frames (and whether it ended in an error) from feeding `data` in pieces.
fn run(data: &[u8], sizes: &[u8], limits: Limits, escaping: Escaping) -> (Vec<Frame>, Option<FrameError>) {
    let mut d = Decoder::new(limits);
    d.set_escaping(escaping);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in chunks(data, sizes) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Some(Decoded::Heartbeat)) => assert!(buf.len() < before, "heart-beat consumed nothing"),
                Ok(Some(Decoded::Frame(f))) => {
                    let wire = before - buf.len();
                    assert!(
                        wire <= limits.max_frame_bytes,
                        "frame of {wire} bytes over the {} limit",
                        limits.max_frame_bytes
                    );
                    assert!(f.headers.len() <= limits.max_headers, "{} headers", f.headers.len());
                    assert!(f.command.as_str().len() <= limits.max_header_bytes, "command line too long");
                    frames.push(f);
                }
                Ok(None) => {
                    // `\r` alone may be half a heart-beat; otherwise anything
                    // buffered is an unfinished frame, which must fit.
                    assert!(
                        buf.len() < limits.max_frame_bytes.max(2),
                        "{} bytes buffered, limit {}",
                        buf.len(),
                        limits.max_frame_bytes
                    );
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// A value that the wire cannot carry unchanged without the 1.2 `\r` escape:
/// a trailing CR is taken as part of the CRLF line end.
fn trailing_cr(s: &str) -> bool {
    s.ends_with('\r')
}

fuzz_target!(|data: &[u8]| {
    let ([esc, size, limit], rest) = header::<3>(data);
    let escaping = match esc % 3 {
        0 => Escaping::None,
        1 => Escaping::V11,
        _ => Escaping::V12,
    };
    let limits = Limits {
        max_frame_bytes: 64 + usize::from(limit) * 16,
        max_headers: 1 + usize::from(limit % 16),
        max_header_bytes: 16 + usize::from(limit) * 2,
    };
    let (whole, whole_err) = run(rest, &[], limits, escaping);
    let (split, split_err) = run(rest, &[size, size.rotate_left(3), 1], limits, escaping);
    // Limits are checked on partial input, so the error itself may differ
    // with the split; the frames before it and the fact of failing may not.
    assert_eq!(whole, split, "frames depend on the read sizes");
    assert_eq!(whole_err.is_some(), split_err.is_some(), "{whole_err:?} vs {split_err:?}");

    for f in &whole {
        let handshake = matches!(f.command.as_str(), "CONNECT" | "STOMP" | "CONNECTED");
        let cr_escaped = escaping == Escaping::V12 && !handshake;
        // The command line is never escaped.
        if trailing_cr(f.command.as_str())
            || (!cr_escaped && f.headers.iter().any(|(n, v)| trailing_cr(n) || trailing_cr(v)))
        {
            continue;
        }
        let mut wire = BytesMut::new();
        encode(f, escaping, &mut wire);
        let mut d = Decoder::new(Limits { max_frame_bytes: 1 << 30, max_headers: 1 << 30, max_header_bytes: 1 << 30 });
        d.set_escaping(escaping);
        let again = d.decode(&mut wire);
        assert_eq!(again, Ok(Some(Decoded::Frame(f.clone()))), "re-encoded frame decodes differently");
        assert!(wire.is_empty(), "re-encoded frame left {} bytes", wire.len());
    }
});
