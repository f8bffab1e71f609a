//! The envelope on the wire (sans-IO). Version 1, big-endian:
//!
//! ```text
//! 'H' 0x01 flags:u8 seq:u64
//! origin:str16 vhost:str16 exchange:str16 routing_key:str16 [sender:str16]
//! header_count:u16 { name:str16 value:str32 }*
//! body_len:u32 body
//! ```
//!
//! `str16` is a u16 length then that many UTF-8 bytes (`str32` a u32
//! length). Flags: bit 0 persistent, bit 1 a sender follows, bit 2
//! `also_exact`; other bits must be zero. The frame must end exactly after
//! the body. Anything else is a [`DecodeError`]: a frame from Redis is
//! hostile input (any client of that Redis can publish on our channels), so
//! decoding checks every length against what is left and never panics.

use bytes::{BufMut, Bytes, BytesMut};

use super::{BusError, Envelope};

const MAGIC: u8 = b'H';
const VERSION: u8 = 1;
const PERSISTENT: u8 = 1;
const HAS_SENDER: u8 = 2;
const ALSO_EXACT: u8 = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a Herald bus frame (wrong first byte).
    NotAFrame,
    /// A version this node does not speak (a newer node in a mixed cluster).
    Version(u8),
    /// Unknown flag bits.
    Flags(u8),
    /// A length runs past the end of the frame.
    Truncated,
    /// Bytes after the body.
    Trailing,
    /// A name is not UTF-8.
    Utf8,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::NotAFrame => f.write_str("not a bus frame"),
            DecodeError::Version(v) => write!(f, "unknown bus frame version {v}"),
            DecodeError::Flags(b) => write!(f, "unknown flag bits {b:#04x}"),
            DecodeError::Truncated => f.write_str("truncated frame"),
            DecodeError::Trailing => f.write_str("bytes after the body"),
            DecodeError::Utf8 => f.write_str("a name is not UTF-8"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn put16(out: &mut BytesMut, s: &str, what: &'static str) -> Result<(), BusError> {
    let n = u16::try_from(s.len()).map_err(|_| BusError::TooLarge(what))?;
    out.put_u16(n);
    out.put_slice(s.as_bytes());
    Ok(())
}

/// Encodes `env`; fails only when a field is over its length limit.
pub fn encode(env: &Envelope) -> Result<Bytes, BusError> {
    let hdr: usize = env.headers.iter().map(|(k, v)| 6 + k.len() + v.len()).sum();
    let mut out = BytesMut::with_capacity(
        25 + env.origin.len()
            + env.vhost.len()
            + env.exchange.len()
            + env.routing_key.len()
            + env.sender.as_ref().map_or(0, |s| 2 + s.len())
            + hdr
            + env.body.len(),
    );
    let mut flags = 0;
    if env.persistent {
        flags |= PERSISTENT;
    }
    if env.sender.is_some() {
        flags |= HAS_SENDER;
    }
    if env.also_exact {
        flags |= ALSO_EXACT;
    }
    out.put_slice(&[MAGIC, VERSION, flags]);
    out.put_u64(env.seq);
    put16(&mut out, &env.origin, "origin")?;
    put16(&mut out, &env.vhost, "vhost")?;
    put16(&mut out, &env.exchange, "exchange")?;
    put16(&mut out, &env.routing_key, "routing key")?;
    if let Some(s) = &env.sender {
        put16(&mut out, s, "sender")?;
    }
    out.put_u16(u16::try_from(env.headers.len()).map_err(|_| BusError::TooLarge("header count"))?);
    for (k, v) in &env.headers {
        put16(&mut out, k, "header name")?;
        out.put_u32(u32::try_from(v.len()).map_err(|_| BusError::TooLarge("header value"))?);
        out.put_slice(v.as_bytes());
    }
    out.put_u32(u32::try_from(env.body.len()).map_err(|_| BusError::TooLarge("body"))?);
    out.put_slice(&env.body);
    Ok(out.freeze())
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(DecodeError::Truncated)?;
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, DecodeError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> Result<usize, DecodeError> {
        let b = self.take(4)?;
        usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).map_err(|_| DecodeError::Truncated)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self, n: usize) -> Result<String, DecodeError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
    }
    fn str16(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()?;
        self.string(n)
    }
}

/// Decodes one frame; the body shares `frame`'s memory.
pub fn decode(frame: Bytes) -> Result<Envelope, DecodeError> {
    let mut r = Reader { buf: frame, pos: 0 };
    if r.u8().map_err(|_| DecodeError::NotAFrame)? != MAGIC {
        return Err(DecodeError::NotAFrame);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let flags = r.u8()?;
    if flags & !(PERSISTENT | HAS_SENDER | ALSO_EXACT) != 0 {
        return Err(DecodeError::Flags(flags));
    }
    let seq = r.u64()?;
    let origin = r.str16()?;
    let vhost = r.str16()?;
    let exchange = r.str16()?;
    let routing_key = r.str16()?;
    let sender = if flags & HAS_SENDER != 0 { Some(r.str16()?) } else { None };
    let count = r.u16()?;
    // Each header takes at least 6 bytes: a hostile count cannot make us
    // reserve more than the frame could hold.
    let mut headers = Vec::with_capacity(count.min((r.buf.len() - r.pos) / 6));
    for _ in 0..count {
        let k = r.str16()?;
        let n = r.u32()?;
        headers.push((k, r.string(n)?));
    }
    let n = r.u32()?;
    let body = r.take(n)?;
    if r.pos != r.buf.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(Envelope {
        origin,
        seq,
        vhost,
        exchange,
        routing_key,
        headers,
        body,
        persistent: flags & PERSISTENT != 0,
        sender,
        also_exact: flags & ALSO_EXACT != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            origin: "node-1".into(),
            seq: u64::MAX - 3,
            vhost: "/".into(),
            exchange: "amq.topic".into(),
            routing_key: "presence.p1.ü".into(),
            headers: vec![("a".into(), "1".into()), ("a".into(), String::new())],
            body: Bytes::from_static(b"\0\xffbody"),
            persistent: true,
            sender: Some("alice".into()),
            also_exact: true,
        }
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(decode(encode(&e).unwrap()).unwrap(), e);
        let mut e2 = e.clone();
        (e2.sender, e2.persistent, e2.also_exact, e2.headers, e2.body) = (None, false, false, vec![], Bytes::new());
        assert_eq!(decode(encode(&e2).unwrap()).unwrap(), e2);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let f = encode(&sample()).unwrap();
        for n in 0..f.len() {
            assert!(decode(f.slice(..n)).is_err(), "prefix of {n} bytes");
        }
        let mut long = f.to_vec();
        long.push(0);
        assert_eq!(decode(Bytes::from(long)), Err(DecodeError::Trailing));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let f = encode(&sample()).unwrap().to_vec();
        // Flip every byte to a few values: decode may fail, must not panic.
        for i in 0..f.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut g = f.clone();
                g[i] = v;
                let _ = decode(Bytes::from(g));
            }
        }
        assert_eq!(decode(Bytes::from_static(b"hello")), Err(DecodeError::NotAFrame));
        assert_eq!(decode(Bytes::from_static(b"H\x02")), Err(DecodeError::Version(2)));
        assert_eq!(decode(Bytes::from_static(b"H\x01\x80")), Err(DecodeError::Flags(0x80)));
        // A header count of 65535 in a tiny frame: refused, no huge reservation.
        let mut g = b"H\x01\x00".to_vec();
        g.extend_from_slice(&[0; 8]);
        g.extend_from_slice(&[0; 8]);
        g.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(decode(Bytes::from(g)), Err(DecodeError::Truncated));
    }

    #[test]
    fn oversized_fields_are_refused_when_encoding() {
        let mut e = sample();
        e.routing_key = "k".repeat(70_000);
        assert_eq!(encode(&e), Err(BusError::TooLarge("routing key")));
    }
}
