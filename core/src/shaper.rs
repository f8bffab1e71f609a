//! Per-connection inbound rate limits (`[shaper]`), as ejabberd's shapers.
//!
//! A client over its rate is throttled, never cut off and never dropped
//! from: after a read that goes over the byte budget, or when no frame (or
//! stanza) token is left, the connection is simply not read from until the
//! bucket has refilled. What the client keeps sending waits in its own
//! socket buffer (and then in its own TCP window), so it costs the server
//! nothing, and a legitimate client that bursts now and then never notices.
//!
//! Idle sessions pay nothing: a [`Shaper`] exists only when `[shaper]` turns a
//! bucket on (sessions hold an `Option<Box<Shaper>>`, one pointer), and it
//! uses no timer until a client actually goes over its rate.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::config::ShaperConfig;

/// A token bucket that may go into debt: a read has already happened when
/// its size is known, so it is taken whole and the next read waits until the
/// debt is repaid (ejabberd's shaper works the same way).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Full at first: a client may send `burst` at once when it starts.
    pub fn new((rate, burst): (f64, f64), now: Instant) -> Bucket {
        Bucket { rate, burst, tokens: burst, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes `n` tokens, into debt if need be. `Some(t)`: nothing more may be
    /// taken before `t`.
    pub fn take(&mut self, n: f64, now: Instant) -> Option<Instant> {
        self.refill(now);
        self.tokens -= n;
        self.ready_at(0.0, now)
    }

    /// When `n` tokens will be there; `None` if they are now.
    pub fn ready_at(&mut self, n: f64, now: Instant) -> Option<Instant> {
        self.refill(now);
        // The margin absorbs float rounding, so a wait that ended on time
        // is not followed by a second, nanosecond-long one.
        let missing = n - self.tokens - 1e-9;
        (missing > 0.0).then(|| now + Duration::from_secs_f64(missing / self.rate))
    }
}

/// One session's shaper: a byte bucket, a frame (or stanza) bucket, or both,
/// and until when it reads nothing.
#[derive(Debug)]
pub struct Shaper {
    bytes: Option<Bucket>,
    frames: Option<Bucket>,
    read_after: Option<Instant>,
    /// The timer of the current pause, kept here (not in the session's
    /// future, which only holds a pointer to this) and dropped when it ends.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Shaper {
    /// `None` unless `config` turns on one of the buckets asked for: most
    /// deployments pay a null pointer per session.
    pub fn new(config: &ShaperConfig, bytes: bool, frames: bool) -> Option<Box<Shaper>> {
        let now = Instant::now();
        let bytes = config.bytes().filter(|_| bytes).map(|b| Bucket::new(b, now));
        let frames = config.frames().filter(|_| frames).map(|f| Bucket::new(f, now));
        (bytes.is_some() || frames.is_some()).then(|| Box::new(Shaper { bytes, frames, read_after: None, sleep: None }))
    }

    fn pause_until(&mut self, until: Option<Instant>) {
        if let Some(t) = until {
            self.read_after = Some(self.read_after.map_or(t, |r| r.max(t)));
        }
    }

    /// Charges `n` bytes just read.
    pub fn read(&mut self, n: usize) {
        if let Some(b) = self.bytes.as_mut() {
            let until = b.take(n as f64, Instant::now());
            self.pause_until(until);
        }
    }

    /// Whether one more frame may be handled now. When not, reading pauses
    /// until it may (the frame stays buffered, unparsed).
    pub fn frame_ready(&mut self) -> bool {
        let Some(f) = self.frames.as_mut() else { return true };
        let until = f.ready_at(1.0, Instant::now());
        self.pause_until(until);
        until.is_none()
    }

    /// Charges one frame about to be handled.
    pub fn take_frame(&mut self) {
        if let Some(f) = self.frames.as_mut() {
            f.take(1.0, Instant::now());
        }
    }

    /// Until when nothing is read, if that is still ahead.
    pub fn paused(&mut self) -> Option<Instant> {
        let until = self.read_after.filter(|t| *t > Instant::now());
        if until.is_none() {
            self.end_pause();
        }
        until
    }

    fn end_pause(&mut self) {
        self.read_after = None;
        self.sleep = None;
    }

    fn poll_pause(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(until) = self.read_after else { return Poll::Ready(()) };
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if sleep.deadline() != until {
            sleep.as_mut().reset(until);
        }
        std::task::ready!(sleep.as_mut().poll(cx));
        self.end_pause();
        Poll::Ready(())
    }
}

/// Whether an optional shaper is pausing reads now.
pub fn paused(shaper: &mut Option<Box<Shaper>>) -> bool {
    shaper.as_deref_mut().and_then(Shaper::paused).is_some()
}

/// Resolves when the current pause ends (at once if there is none). A
/// pointer-sized future, so a `select!` branch on it costs a waiting session
/// nothing to speak of; the timer lives in the boxed [`Shaper`], only while
/// a client is over its rate. Cancel-safe.
pub fn pause(shaper: &mut Option<Box<Shaper>>) -> impl Future<Output = ()> + Send + '_ {
    std::future::poll_fn(move |cx| match shaper.as_deref_mut() {
        Some(s) => s.poll_pause(cx),
        None => Poll::Ready(()),
    })
}

/// Waits until `until` (BOSH holds a throttled request in a future of its own).
pub async fn wait(until: Instant) {
    tokio::time::sleep_until(until).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new((10.0, 5.0), t0);
        for _ in 0..5 {
            assert_eq!(b.take(1.0, t0), None);
        }
        // The sixth goes into debt: one token's time (0.1 s) before the next.
        let until = b.take(1.0, t0).expect("in debt");
        assert!((until - t0).as_secs_f64() > 0.099 && (until - t0).as_secs_f64() < 0.101);
        assert!(b.ready_at(0.0, t0 + Duration::from_millis(100)).is_none());
        // Refill stops at the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.ready_at(5.0, later), None);
        assert!(b.ready_at(5.5, later).is_some());
    }

    #[test]
    fn a_large_read_is_taken_whole_and_repaid() {
        let t0 = Instant::now();
        let mut b = Bucket::new((1000.0, 1000.0), t0);
        let until = b.take(4000.0, t0).expect("in debt");
        let wait = (until - t0).as_secs_f64();
        assert!((wait - 3.0).abs() < 0.001, "{wait}");
    }

    #[test]
    fn over_n_seconds_at_most_rate_times_n_plus_burst_frames() {
        // A client that always has a frame ready, checked every millisecond.
        let config = ShaperConfig { frames_per_sec: 20.0, frames_burst: 5, ..ShaperConfig::default() };
        let mut s = Shaper::new(&config, false, true).expect("on");
        let t0 = Instant::now();
        let mut f = s.frames.clone().expect("frames");
        let mut handled = 0;
        for ms in 0..2000u64 {
            let now = t0 + Duration::from_millis(ms);
            if f.ready_at(1.0, now).is_none() {
                f.take(1.0, now);
                handled += 1;
            }
        }
        assert!((44..=45).contains(&handled), "{handled}");
        assert!(s.frame_ready());
        s.take_frame();
    }

    #[test]
    fn config_keys_and_checks() {
        let c =
            crate::Config::from_toml_str("[shaper]\nbytes_per_sec = 1000\nframes_per_sec = 2.5\nframes_burst = 10\n")
                .unwrap();
        assert_eq!(c.shaper.bytes(), Some((1000.0, 1000.0)), "burst defaults to a second's worth");
        assert_eq!(c.shaper.frames(), Some((2.5, 10.0)));
        let slow = crate::Config::from_toml_str("[shaper]\nframes_per_sec = 0.2\n").unwrap();
        assert_eq!(slow.shaper.frames(), Some((0.2, 1.0)), "a burst is at least one frame");
        let err = crate::Config::from_toml_str("[shaper]\nbytes_per_sec = -1\n").unwrap_err().to_string();
        assert!(err.contains("shaper.bytes_per_sec"), "{err}");
        assert!(crate::Config::from_toml_str("[shaper]\nframes_per_sec = nan\n").is_err());
        assert!(crate::Config::from_toml_str("[shaper]\nper_sec = 1\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn off_by_default_and_per_kind() {
        let off = ShaperConfig::default();
        assert!(Shaper::new(&off, true, true).is_none());
        let bytes = ShaperConfig { bytes_per_sec: 100.0, ..ShaperConfig::default() };
        assert!(Shaper::new(&bytes, false, true).is_none(), "a stanza-only shaper ignores bytes");
        let mut s = Shaper::new(&bytes, true, true).expect("on");
        assert!(s.frame_ready(), "no frame bucket: always ready");
        assert_eq!(s.paused(), None);
        s.read(300);
        let until = s.paused().expect("paused after going over");
        assert!(until > Instant::now());
    }
}
