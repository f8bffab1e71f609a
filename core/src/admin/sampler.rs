//! Rates and history for the console: once per interval the sampler reads
//! the node's counters, turns differences into per-second rates, and keeps a
//! bounded history (overview samples, and a few rate samples per queue for
//! the sparklines). Counters are cheap atomics read without locks held
//! across queues; the sampler itself runs only when the admin listener is on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::router::Totals;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Rates {
    pub publish: f64,
    pub deliver: f64,
    pub ack: f64,
    pub drop: f64,
}

impl Rates {
    /// Per-second rates between two counter snapshots `dt` apart. A counter
    /// that went down (cannot happen with retired totals, but a queue name
    /// can be reused) counts as zero rather than a negative rate.
    pub fn between(prev: &Totals, now: &Totals, dt: Duration, use_messages: bool) -> Rates {
        let secs = dt.as_secs_f64().max(1e-3);
        let r = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        Rates {
            publish: if use_messages {
                r(prev.published_messages, now.published_messages)
            } else {
                r(prev.published, now.published)
            },
            deliver: r(prev.delivered, now.delivered),
            ack: r(prev.acked, now.acked),
            drop: r(prev.dropped, now.dropped),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct TotalsOut {
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
    pub dropped: u64,
}

impl TotalsOut {
    pub fn of(t: &Totals, use_messages: bool) -> TotalsOut {
        TotalsOut {
            published: if use_messages { t.published_messages } else { t.published },
            delivered: t.delivered,
            acked: t.acked,
            dropped: t.dropped,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub node: String,
    pub version: &'static str,
    pub uptime_secs: u64,
    pub sessions: usize,
    pub users_online: usize,
    pub queues: usize,
    pub exchanges: usize,
    pub messages_ready: usize,
    pub messages_unacked: usize,
    pub sessions_by_protocol: BTreeMap<String, usize>,
    pub sessions_by_transport: BTreeMap<String, usize>,
    pub rates: Rates,
    pub totals: TotalsOut,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sample {
    /// Unix time, ms.
    pub t: u64,
    pub sessions: usize,
    pub users_online: usize,
    pub publish: f64,
    pub deliver: f64,
    pub ack: f64,
}

/// What one tick produced; the live stream sends it as the `overview` event.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub overview: Overview,
    pub sample: Sample,
}

/// Rate history of one queue (or exchange), keyed by vhost and name.
#[derive(Debug, Default)]
pub struct Track {
    last: Totals,
    pub rates: Rates,
    pub publish: VecDeque<f32>,
    pub deliver: VecDeque<f32>,
    /// The tick that last saw it; tracks of vanished queues are dropped.
    seen: u64,
}

impl Track {
    fn push(&mut self, now: Totals, dt: Duration, keep: usize, tick: u64, first: bool) {
        self.rates = if first { Rates::default() } else { Rates::between(&self.last, &now, dt, false) };
        self.last = now;
        self.seen = tick;
        push_bounded(&mut self.publish, self.rates.publish as f32, keep);
        push_bounded(&mut self.deliver, self.rates.deliver as f32, keep);
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, keep: usize) {
    if q.len() == keep {
        q.pop_front();
    }
    q.push_back(v);
}

type Key = (Arc<str>, Arc<str>);

#[derive(Default)]
struct State {
    tick: u64,
    last: Option<(Instant, Totals)>,
    history: VecDeque<Sample>,
    queues: HashMap<Key, Track>,
    exchanges: HashMap<Key, Track>,
}

pub struct Sampler {
    engine: Engine,
    pub interval: Duration,
    history_len: usize,
    queue_len: usize,
    state: Mutex<State>,
    latest: watch::Sender<Option<Arc<Tick>>>,
}

impl Sampler {
    pub fn new(engine: Engine) -> Arc<Sampler> {
        let a = &engine.config.admin;
        Arc::new(Sampler {
            interval: Duration::from_millis(a.stream_interval_ms),
            history_len: a.history_samples,
            queue_len: a.queue_history,
            state: Mutex::new(State::default()),
            latest: watch::channel(None).0,
            engine,
        })
    }

    /// Ticks until the engine shuts down.
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = every.tick() => { self.tick(); }
                _ = self.engine.shutdown.cancelled() => return,
            }
        }
    }

    /// The newest tick, as the stream sends it (None before the first).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Tick>>> {
        self.latest.subscribe()
    }

    /// Reads every counter once and records rates. Public for tests.
    pub fn tick(&self) -> Arc<Tick> {
        let now = Instant::now();
        let stats = self.engine.stats();
        let mut totals = Totals::default();
        let mut exchanges = 0;
        let mut st = self.state.lock();
        st.tick += 1;
        let tick_no = st.tick;
        let dt = st.last.map(|(t, _)| now - t).unwrap_or(self.interval);
        for v in self.engine.router.vhosts() {
            totals.merge(&v.totals());
            for q in v.queues() {
                let key = (v.name.clone(), q.name.clone());
                let first = !st.queues.contains_key(&key);
                st.queues.entry(key).or_default().push(q.counters.snapshot(), dt, self.queue_len, tick_no, first);
            }
            for x in v.exchanges() {
                exchanges += 1;
                let key = (v.name.clone(), x.name.clone());
                let first = !st.exchanges.contains_key(&key);
                let t =
                    Totals { published: x.published.load(std::sync::atomic::Ordering::Relaxed), ..Totals::default() };
                st.exchanges.entry(key).or_default().push(t, dt, self.queue_len, tick_no, first);
            }
        }
        st.queues.retain(|_, t| t.seen == tick_no);
        st.exchanges.retain(|_, t| t.seen == tick_no);
        let rates = match st.last {
            Some((_, prev)) => Rates::between(&prev, &totals, dt, true),
            None => Rates::default(),
        };
        st.last = Some((now, totals));
        let mut by_protocol = BTreeMap::new();
        for (k, n) in &stats.sessions_by_transport {
            let protocol = k.split('/').next().unwrap_or(k);
            *by_protocol.entry(protocol.to_owned()).or_insert(0) += n;
        }
        let sample = Sample {
            t: unix_ms(SystemTime::now()),
            sessions: stats.sessions,
            users_online: stats.users_online,
            publish: rates.publish,
            deliver: rates.deliver,
            ack: rates.ack,
        };
        push_bounded(&mut st.history, sample, self.history_len);
        drop(st);
        let overview = Overview {
            node: stats.node,
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: stats.uptime_secs,
            sessions: stats.sessions,
            users_online: stats.users_online,
            queues: stats.queues,
            exchanges,
            messages_ready: stats.messages_ready,
            messages_unacked: stats.messages_unacked,
            sessions_by_protocol: by_protocol,
            sessions_by_transport: stats.sessions_by_transport,
            rates,
            totals: TotalsOut::of(&totals, true),
        };
        let tick = Arc::new(Tick { overview, sample });
        self.latest.send_replace(Some(tick.clone()));
        tick
    }

    /// The latest tick, or a fresh one when none ran yet.
    pub fn current(&self) -> Arc<Tick> {
        let latest = self.latest.borrow().clone();
        latest.unwrap_or_else(|| self.tick())
    }

    pub fn history(&self) -> Vec<Sample> {
        self.state.lock().history.iter().copied().collect()
    }

    /// Calls `f` with the rate track of a queue, if it was sampled.
    pub fn with_queue<R>(&self, vhost: &Arc<str>, name: &Arc<str>, f: impl FnOnce(Option<&Track>) -> R) -> R {
        let st = self.state.lock();
        f(st.queues.get(&(vhost.clone(), name.clone())))
    }

    pub fn with_queues<R>(&self, f: impl FnOnce(&dyn Fn(&Arc<str>, &Arc<str>) -> Option<Rates>) -> R) -> R {
        let st = self.state.lock();
        f(&|v, n| st.queues.get(&(v.clone(), n.clone())).map(|t| t.rates))
    }

    pub fn exchange_rate(&self, vhost: &Arc<str>, name: &Arc<str>) -> f64 {
        self.state.lock().exchanges.get(&(vhost.clone(), name.clone())).map_or(0.0, |t| t.rates.publish)
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_and_never_negative() {
        let prev = Totals { published_messages: 10, published: 20, delivered: 5, acked: 1, dropped: 0 };
        let now = Totals { published_messages: 30, published: 60, delivered: 4, acked: 3, dropped: 2 };
        let r = Rates::between(&prev, &now, Duration::from_millis(500), true);
        assert_eq!(r, Rates { publish: 40.0, deliver: 0.0, ack: 4.0, drop: 4.0 });
        let q = Rates::between(&prev, &now, Duration::from_secs(2), false);
        assert_eq!(q.publish, 20.0, "queues count copies, not messages");
    }

    #[test]
    fn tracks_keep_a_bounded_history() {
        let mut t = Track::default();
        for i in 0..5u64 {
            t.push(Totals { published: i * 10, ..Totals::default() }, Duration::from_secs(1), 3, i, i == 0);
        }
        assert_eq!(t.publish, [10.0, 10.0, 10.0]);
        assert_eq!(t.publish.len(), 3);
        let mut fresh = Track::default();
        fresh.push(Totals { published: 1000, ..Totals::default() }, Duration::from_secs(1), 3, 1, true);
        assert_eq!(fresh.rates.publish, 0.0, "a first sample has no rate, not everything since start");
    }

    #[tokio::test]
    async fn tick_reports_publish_rates_and_history() {
        let config: crate::Config = toml::from_str("[admin]\nhistory_samples = 2\n").unwrap();
        let engine = Engine::new(config).unwrap();
        let sampler = Sampler::new(engine.clone());
        let first = sampler.tick();
        assert_eq!(first.overview.rates.publish, 0.0);
        for _ in 0..5 {
            engine.publish("/", "amq.topic", "nobody.listens", vec![], bytes::Bytes::from_static(b"x")).unwrap();
        }
        let second = sampler.tick();
        assert_eq!(second.overview.totals.published, 5);
        assert!(second.overview.rates.publish > 0.0);
        assert!(second.overview.exchanges >= 5, "amq.* and the addressing exchanges");
        sampler.tick();
        assert_eq!(sampler.history().len(), 2, "bounded by history_samples");
    }
}
