//! Clock, payload timestamps and per-worker delivery counters.
//!
//! Every process (generator workers, the publisher, the Node pusher) reads
//! CLOCK_MONOTONIC, which Linux shares across processes, so a timestamp
//! written by one process can be subtracted from the time another reads.
//! Node's `process.hrtime.bigint()` is the same clock.

use std::cell::RefCell;
use std::rc::Rc;

use crate::hist::Hist;

pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A message body of `size` bytes carrying the send time: `~T<ns>~<seq> xxxx…`.
pub fn payload(seq: u64, size: usize) -> String {
    let mut s = format!("~T{}~{} ", mono_ns(), seq);
    while s.len() < size {
        s.push('x');
    }
    s
}

/// The send time embedded in a received frame or stanza, if any.
pub fn find_ts(data: &[u8]) -> Option<u64> {
    let pos = data.windows(2).position(|w| w == b"~T")?;
    let mut v: u64 = 0;
    let mut any = false;
    for &b in &data[pos + 2..] {
        if b.is_ascii_digit() {
            v = v * 10 + (b - b'0') as u64;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

/// An HS256 JWT for `uid` (`sub`), valid for a day: what `[auth.jwt]
/// hs256_secret` accepts as a password.
pub fn jwt_hs256(secret: &str, uid: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};
    let exp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 86_400;
    let head = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = B64.encode(serde_json::json!({"sub": uid, "exp": exp}).to_string());
    let signing = format!("{head}.{body}");
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(signing.as_bytes());
    format!("{signing}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// Counters shared by the sessions of one worker (single-threaded runtime).
#[derive(Default)]
pub struct Stats {
    pub recv: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub hist: Hist,
    pub closed: u64,
    pub first_close: Option<String>,
}

pub type SharedStats = Rc<RefCell<Stats>>;

impl Stats {
    /// Records one delivery whose body or stanza is `data`.
    pub fn delivered(&mut self, data: &[u8]) {
        let now = mono_ns();
        self.recv += 1;
        if self.first_ns == 0 {
            self.first_ns = now;
        }
        self.last_ns = now;
        if let Some(t) = find_ts(data) {
            self.hist.record(now.saturating_sub(t) / 1000);
        }
    }

    pub fn session_closed(&mut self, why: String) {
        self.closed += 1;
        if self.first_close.is_none() {
            self.first_close = Some(why);
        }
    }

    pub fn reset(&mut self) {
        let closed = self.closed;
        let first_close = self.first_close.take();
        *self = Stats::default();
        self.closed = closed;
        self.first_close = first_close;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_its_timestamp() {
        let p = payload(7, 100);
        assert_eq!(p.len(), 100);
        let t = find_ts(format!("<message><body>{p}</body></message>").as_bytes()).unwrap();
        assert!(t > 0 && t <= mono_ns());
    }
}
