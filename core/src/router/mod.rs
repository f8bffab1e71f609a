//! The router: vhosts → exchanges → bindings → queues.
//!
//! Lock order (never take an earlier one while holding a later one):
//! a history key's lock (`history::History::lock`, `feed`/`project` only) →
//! the history store's → `Vhost::queues` → `Vhost::exchanges` → an exchange's bindings → a queue's
//! state → a session's outbox. Publishing takes only read locks until it
//! reaches the queues, so publishers on different cores do not contend.
//!
//! No lock is held over work whose size a client controls: a topic match
//! runs under the bindings' read lock only because `[routing]` bounds its
//! cost (key words × live trie nodes, checked in [`Vhost::publish`] and
//! [`Vhost::bind`]); the matched queues are collected and the lock released
//! before any delivery.

pub mod destination;
pub mod exchange;
pub mod history;
pub mod interest;
pub mod queue;
pub mod topic;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use destination::{Destination, DestinationError};
pub use exchange::{Exchange, ExchangeKind, HeaderMatch};
pub use queue::{
    AckError, AckMode, ConsumerId, Overflow, Queue, QueueCounters, QueueLimits, QueueOptions, Settle, Totals,
};

use crate::config::{Config, RoutingConfig};
use crate::message::{Message, STREAM_EPOCH, STREAM_OFFSET};
use crate::session::SessionId;
use crate::store::history::now_ms;
use crate::store::history::{recover, HistoryLimits, MemoryHistory, Recovery, Since, StreamKey};
use crate::store::{Durable, QueueMeta, QueueStore, StoreError, StoredBinding, StoredLimits};
pub use history::History;
pub use interest::InterestChanges;
use interest::VhostInterests;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no vhost '{0}'")]
    NoVhost(String),
    #[error("no exchange '{0}' in vhost '{1}'")]
    NoExchange(String, String),
    #[error("no queue '{0}' in vhost '{1}'")]
    NoQueue(String, String),
    #[error("queue '{0}' is exclusive to another session")]
    Locked(String),
    #[error("queue '{name}' exists with different options ({what})")]
    Inequivalent { name: String, what: &'static str },
    #[error("cannot use reserved name '{0}'")]
    Reserved(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `limits.max_queues` or `limits.max_queues_per_user`.
    #[error("queue limit reached: {0}")]
    QueueLimit(String),
    /// A `reject-publish` queue at its length limit.
    #[error("queue '{name}' is full (at {limit}; x-overflow is reject-publish): message refused")]
    QueueFull { name: String, limit: String },
    /// The node's memory alarm is on (`limits.memory_high_watermark`).
    #[error(
        "memory alarm: node above its high watermark, publishing refused ({used} bytes held, watermark {watermark})"
    )]
    MemoryAlarm { used: u64, watermark: u64 },
}

/// Queue counts, node-wide: every vhost shares one (`limits.max_queues`,
/// `limits.max_queues_per_user`). Taken under `Vhost::queues`' write lock,
/// as a leaf.
#[derive(Debug)]
pub struct QueueQuota {
    max_total: usize,
    max_per_user: usize,
    total: AtomicUsize,
    per_user: Mutex<HashMap<Arc<str>, usize>>,
}

impl QueueQuota {
    fn new(config: &Config) -> QueueQuota {
        QueueQuota {
            max_total: config.limits.max_queues,
            max_per_user: config.limits.max_queues_per_user,
            total: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new queue, or says which limit it would break. Queues
    /// restored from the store count even past the limits.
    fn take(&self, owner: Option<&Arc<str>>, restoring: bool) -> Result<(), RouteError> {
        if !restoring && self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(RouteError::QueueLimit(format!(
                "at most {} queues on this node (limits.max_queues)",
                self.max_total
            )));
        }
        if let Some(uid) = owner {
            let mut per = self.per_user.lock();
            let n = per.entry(uid.clone()).or_insert(0);
            if *n >= self.max_per_user && !restoring {
                return Err(RouteError::QueueLimit(format!(
                    "at most {} queues that outlive a session per user (limits.max_queues_per_user); delete some first",
                    self.max_per_user
                )));
            }
            *n += 1;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn give_back(&self, owner: Option<&Arc<str>>) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(uid) = owner {
            let mut per = self.per_user.lock();
            if let Some(n) = per.get_mut(uid) {
                *n -= 1;
                if *n == 0 {
                    per.remove(uid);
                }
            }
        }
    }

    /// Queues `uid` owns now.
    pub fn of_user(&self, uid: &str) -> usize {
        self.per_user.lock().get(uid).copied().unwrap_or(0)
    }
}

/// The node's memory alarm: set by the engine's monitor, read on every publish.
#[derive(Debug, Default)]
pub struct MemoryAlarm {
    /// `limits.memory_high_watermark` in bytes; `None` = off.
    limit: Option<u64>,
    on: AtomicBool,
    /// Bytes counted at the last check.
    used: AtomicU64,
    /// Bytes buffered in open STOMP transactions, node-wide (sessions add
    /// and take back; the monitor reads it).
    transactions: AtomicUsize,
}

impl MemoryAlarm {
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub fn new(limit: Option<u64>) -> MemoryAlarm {
        MemoryAlarm { limit, ..MemoryAlarm::default() }
    }

    /// Records a measurement; returns whether the alarm changed.
    pub fn update(&self, used: u64) -> bool {
        self.used.store(used, Ordering::Relaxed);
        let on = self.limit.is_some_and(|w| used > w);
        self.on.swap(on, Ordering::Relaxed) != on
    }

    /// The error a publish gets while the alarm is on.
    pub fn check(&self) -> Result<(), RouteError> {
        if self.is_on() {
            return Err(RouteError::MemoryAlarm {
                used: self.used.load(Ordering::Relaxed),
                watermark: self.limit.unwrap_or(0),
            });
        }
        Ok(())
    }

    pub fn transactions_grew(&self, n: usize) {
        self.transactions.fetch_add(n, Ordering::Relaxed);
    }

    pub fn transactions_shrank(&self, n: usize) {
        self.transactions.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn transaction_bytes(&self) -> usize {
        self.transactions.load(Ordering::Relaxed)
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn watermark(&self) -> Option<u64> {
        self.limit
    }
}

/// A routing key or binding pattern beyond a `[routing]` bound. The text
/// names the config key, so a client (STOMP ERROR body, API error) and an
/// operator both see which bound it hit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} has {got} {unit}; the limit is {limit} (routing.{key})")]
pub struct LimitError {
    /// `routing key` or `binding pattern`.
    pub what: &'static str,
    pub unit: &'static str,
    pub got: usize,
    pub limit: usize,
    /// The `[routing]` key.
    pub key: &'static str,
}

fn bound(
    what: &'static str,
    unit: &'static str,
    got: usize,
    limit: usize,
    key: &'static str,
) -> Result<(), LimitError> {
    if got > limit {
        return Err(LimitError { what, unit, got, limit, key });
    }
    Ok(())
}

/// Checks a routing key published to an exchange of `kind`: bytes always
/// (what every exchange hashes or compares), words on topic exchanges.
pub fn check_key(limits: &RoutingConfig, kind: ExchangeKind, key: &str) -> Result<(), LimitError> {
    bound("routing key", "bytes", key.len(), limits.max_key_bytes, "max_key_bytes")?;
    if kind == ExchangeKind::Topic {
        bound("routing key", "words", key.split('.').count(), limits.max_key_words, "max_key_words")?;
    }
    Ok(())
}

/// Checks a binding key (a pattern on topic exchanges).
pub fn check_pattern(limits: &RoutingConfig, kind: ExchangeKind, pattern: &str) -> Result<(), LimitError> {
    bound("binding pattern", "bytes", pattern.len(), limits.max_key_bytes, "max_key_bytes")?;
    if kind == ExchangeKind::Topic {
        bound("binding pattern", "words", pattern.split('.').count(), limits.max_pattern_words, "max_pattern_words")?;
        let hashes = pattern.split('.').filter(|w| *w == "#").count();
        bound("binding pattern", "'#' wildcards", hashes, limits.max_pattern_hashes, "max_pattern_hashes")?;
    }
    Ok(())
}

/// The exchanges every vhost has (RabbitMQ's plus the addressing model's).
fn builtin_exchanges(config: &Config) -> Vec<(String, ExchangeKind)> {
    let mut v: Vec<(String, ExchangeKind)> = vec![
        ("amq.direct".into(), ExchangeKind::Direct),
        ("amq.fanout".into(), ExchangeKind::Fanout),
        ("amq.topic".into(), ExchangeKind::Topic),
        ("amq.headers".into(), ExchangeKind::Headers),
        ("amq.match".into(), ExchangeKind::Headers),
    ];
    for name in [&config.exchanges.feed, &config.exchanges.project, &config.exchanges.presence] {
        v.push((name.clone(), ExchangeKind::Topic));
    }
    v
}

/// One binding of a queue: the exchange and the key.
type BindingRef = (Arc<Exchange>, String);

#[derive(Debug)]
pub struct Vhost {
    pub name: Arc<str>,
    exchanges: RwLock<HashMap<String, Arc<Exchange>>>,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    /// Bindings per queue, to undo them when the queue goes.
    bound: Mutex<HashMap<String, Vec<BindingRef>>>,
    store: Arc<dyn QueueStore>,
    /// Default (and largest) length limits of a new queue.
    queue_limits: QueueLimits,
    quota: Arc<QueueQuota>,
    /// Bounds on keys and patterns (`[routing]`).
    routing: RoutingConfig,
    /// Messages accepted by `publish` (before fan-out to queues).
    pub published: AtomicU64,
    /// Counters of deleted queues, so node totals never go backwards when
    /// per-session queues come and go.
    retired: QueueCounters,
    /// Offsets and retained messages of `feed` and `project` (shared by vhosts).
    pub history: Arc<History>,
    /// Bindings per Bus interest, counted once the node is in a cluster
    /// (taken under `bound`, as a leaf); changes go to `interest_changes`.
    interests: VhostInterests,
    interest_changes: Arc<InterestChanges>,
}

impl Vhost {
    fn new(
        name: &str,
        config: &Config,
        store: Arc<dyn QueueStore>,
        quota: Arc<QueueQuota>,
        history: Arc<History>,
        interest_changes: Arc<InterestChanges>,
    ) -> Vhost {
        let mut exchanges = HashMap::new();
        for (x, kind) in builtin_exchanges(config) {
            exchanges.insert(x.clone(), Arc::new(Exchange::new(&x, kind)));
        }
        if let Some(v) = config.vhosts.iter().find(|v| v.name == name) {
            for x in &v.exchanges {
                exchanges.insert(x.name.clone(), Arc::new(Exchange::new(&x.name, x.kind)));
            }
        }
        Vhost {
            name: name.into(),
            exchanges: RwLock::new(exchanges),
            queues: RwLock::new(HashMap::new()),
            bound: Mutex::new(HashMap::new()),
            store,
            queue_limits: QueueLimits::from_config(&config.limits),
            quota,
            routing: config.routing.clone(),
            published: AtomicU64::new(0),
            retired: QueueCounters::default(),
            history,
            interests: VhostInterests::default(),
            interest_changes,
        }
    }

    /// Starts counting bindings per Bus interest (the node joined a
    /// cluster): every interest the existing bindings need is marked for
    /// the reconciler, and from now on each first/last binding is.
    pub fn track_interests(&self) {
        let bound = self.bound.lock();
        let all = bound.values().flatten().map(|(x, k)| (&*x.name, x.kind, k.as_str()));
        self.interests.start(&self.name, all, &self.interest_changes);
    }

    /// Whether some binding of this vhost needs `interest` (the reconciler
    /// compares this with what it subscribed).
    pub fn holds_interest(&self, interest: &crate::bus::Interest) -> bool {
        self.interests.holds(interest)
    }

    fn count_binding(&self, x: &Exchange, key: &str, add: bool) {
        self.interests.count(&self.name, &x.name, x.kind, key, add, &self.interest_changes);
    }

    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.exchanges.read().get(name).cloned()
    }

    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.read().get(name).cloned()
    }

    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

    pub fn queue_count(&self) -> usize {
        self.queues.read().len()
    }

    /// Per-queue counters summed over live and deleted queues, since start.
    pub fn totals(&self) -> Totals {
        let mut t = self.retired.snapshot();
        t.published_messages = self.published.load(Ordering::Relaxed);
        for q in self.queues.read().values() {
            t.merge(&q.counters.snapshot());
        }
        t
    }

    /// Declares a queue, or returns the existing one if its options agree
    /// (AMQP `queue.declare` semantics: a mismatch is an error, not a change).
    /// Declared by the application: owned by no user, default limits.
    pub fn declare_queue(
        &self,
        name: &str,
        options: QueueOptions,
        session: Option<SessionId>,
    ) -> Result<Arc<Queue>, RouteError> {
        self.declare_queue_for(name, options, session, None, None)
    }

    /// Declares a queue for a user: a queue that outlives the session
    /// (not exclusive) counts against `owner`'s `limits.max_queues_per_user`.
    /// `limits` (from `x-max-length` and the like) may only tighten the
    /// configured ones; they are ignored when the queue already exists.
    pub fn declare_queue_for(
        &self,
        name: &str,
        options: QueueOptions,
        session: Option<SessionId>,
        owner: Option<&str>,
        limits: Option<QueueLimits>,
    ) -> Result<Arc<Queue>, RouteError> {
        self.declare(name, options, session, owner, limits, false)
    }

    fn declare(
        &self,
        name: &str,
        options: QueueOptions,
        session: Option<SessionId>,
        owner: Option<&str>,
        limits: Option<QueueLimits>,
        restoring: bool,
    ) -> Result<Arc<Queue>, RouteError> {
        if name.is_empty() || name.starts_with("amq.") && options.exclusive.is_none() {
            return Err(RouteError::Reserved(name.to_owned()));
        }
        if let Some(q) = self.queue(name) {
            return Self::check_existing(q, &options, session);
        }
        let mut queues = self.queues.write();
        if let Some(q) = queues.get(name) {
            return Self::check_existing(q.clone(), &options, session);
        }
        let owner: Option<Arc<str>> = owner.filter(|_| options.exclusive.is_none()).map(Arc::from);
        self.quota.take(owner.as_ref(), restoring)?;
        let d = self.queue_limits;
        let limits = match limits {
            Some(l) => QueueLimits {
                max_len: l.max_len.min(d.max_len),
                max_bytes: l.max_bytes.min(d.max_bytes),
                overflow: l.overflow,
            },
            None => d,
        };
        // Exclusive queues die with their session: only the others are stored.
        if options.durable && options.exclusive.is_none() && !restoring {
            let meta = QueueMeta {
                auto_delete: options.auto_delete,
                owner: owner.as_deref().map(str::to_owned),
                limits: (limits != d).then_some(StoredLimits {
                    max_len: limits.max_len as u64,
                    max_bytes: limits.max_bytes as u64,
                    reject_publish: limits.overflow == Overflow::RejectPublish,
                }),
            };
            if let Err(e) = self.store.declare(&self.name, name, &meta) {
                self.quota.give_back(owner.as_ref());
                return Err(e.into());
            }
        }
        let q = Arc::new(Queue::with_limits(&self.name, name, options, limits, Some(self.store.clone()), owner));
        queues.insert(name.to_owned(), q.clone());
        Ok(q)
    }

    /// A ticket for every queue-store write so far (a durable SUBSCRIBE's
    /// receipt waits for its declaration and binding).
    pub fn durable(&self) -> Durable {
        self.store.durable()
    }

    /// Message bytes held by this vhost's queues (ready and unacked).
    pub fn held_bytes(&self) -> u64 {
        self.queues.read().values().map(|q| q.held_bytes() as u64).sum()
    }

    fn check_existing(
        q: Arc<Queue>,
        options: &QueueOptions,
        session: Option<SessionId>,
    ) -> Result<Arc<Queue>, RouteError> {
        if let Some(s) = session {
            if !q.accessible_by(s) {
                return Err(RouteError::Locked(q.name.to_string()));
            }
        }
        if q.options.durable != options.durable {
            return Err(RouteError::Inequivalent { name: q.name.to_string(), what: "durable" });
        }
        if q.options.auto_delete != options.auto_delete {
            return Err(RouteError::Inequivalent { name: q.name.to_string(), what: "auto-delete" });
        }
        Ok(q)
    }

    /// Whether `pattern` may be bound on `exchange` under `[routing]`; for
    /// callers that must refuse before they create anything (the queue of a
    /// subscription). [`Vhost::bind`] checks again.
    pub fn check_binding(&self, exchange: &Exchange, pattern: &str) -> Result<(), RouteError> {
        Ok(check_pattern(&self.routing, exchange.kind, pattern)?)
    }

    pub fn bind(
        &self,
        exchange: &str,
        queue: &Arc<Queue>,
        key: &str,
        headers: Option<HeaderMatch>,
    ) -> Result<(), RouteError> {
        self.bind_as(exchange, queue, key, headers, false)
    }

    /// `restoring`: read back from the store at start, not written again.
    fn bind_as(
        &self,
        exchange: &str,
        queue: &Arc<Queue>,
        key: &str,
        headers: Option<HeaderMatch>,
        restoring: bool,
    ) -> Result<(), RouteError> {
        let x =
            self.exchange(exchange).ok_or_else(|| RouteError::NoExchange(exchange.into(), self.name.to_string()))?;
        self.check_binding(&x, key)?;
        // A durable queue's bindings come back with it (bindings are only
        // ever undone with the queue: `unbind_where` serves inbox queues,
        // which are not durable).
        if queue.is_stored() && !restoring {
            let binding = StoredBinding {
                exchange: exchange.to_owned(),
                key: key.to_owned(),
                headers: headers.as_ref().map(|h| (h.all, h.args.clone())),
            };
            self.store.bind(&self.name, &queue.name, &binding)?;
        }
        x.bind(queue, key, headers);
        let mut bound = self.bound.lock();
        let list = bound.entry(queue.name.to_string()).or_default();
        if !list.iter().any(|(e, k)| Arc::ptr_eq(e, &x) && k == key) {
            self.count_binding(&x, key, true);
            list.push((x, key.to_owned()));
        }
        Ok(())
    }

    /// Binds `queue` to one key of a history exchange and queues what the
    /// key's history holds from `since` (at most `history.size` messages),
    /// under the key's lock: the replay and the live messages that follow
    /// meet without gap or duplicate. The caller has checked permissions.
    pub fn bind_recovering(
        &self,
        exchange: &str,
        queue: &Arc<Queue>,
        key: &str,
        since: Since,
        epoch: Option<&str>,
    ) -> Result<Recovery, RouteError> {
        if !self.history.covers(exchange) {
            self.bind(exchange, queue, key, None)?;
            return Ok(Recovery { epoch: "".into(), top: 0, replay: Vec::new(), recovered: false });
        }
        let stream = StreamKey::new(&self.name, exchange, key);
        let _order = self.history.lock(&stream);
        let page = self.history.store.read(&stream, 1, self.history.limits().size, now_ms())?;
        let recovery = recover(page, since, epoch);
        self.bind(exchange, queue, key, None)?;
        for m in &recovery.replay {
            queue.publish(m.clone())?;
        }
        Ok(recovery)
    }

    /// Removes `queue`'s bindings on `exchange` whose key `drop` selects
    /// (a member removed from a project); returns how many went.
    pub fn unbind_where(&self, queue: &Arc<Queue>, exchange: &str, drop: impl Fn(&str) -> bool) -> usize {
        let removed: Vec<BindingRef> = {
            let mut bound = self.bound.lock();
            let Some(list) = bound.get_mut(&*queue.name) else { return 0 };
            let mut removed = Vec::new();
            list.retain(|(x, k)| {
                let hit = &*x.name == exchange && drop(k);
                if hit {
                    self.count_binding(x, k, false);
                    removed.push((x.clone(), k.clone()));
                }
                !hit
            });
            removed
        };
        for (x, key) in &removed {
            x.unbind(queue, key);
        }
        removed.len()
    }

    /// Deletes a queue, its bindings and (if durable) its stored messages.
    pub fn delete_queue(&self, name: &str) -> Option<Arc<Queue>> {
        let q = self.queues.write().remove(name)?;
        self.quota.give_back(q.owner.as_ref());
        let bindings = {
            let mut bound = self.bound.lock();
            let bindings = bound.remove(name).unwrap_or_default();
            for (x, key) in &bindings {
                self.count_binding(x, key, false);
            }
            bindings
        };
        for (x, key) in bindings {
            x.unbind(&q, &key);
        }
        q.mark_deleted();
        self.retired.add(&q.counters);
        if q.is_stored() {
            if let Err(e) = self.store.delete(&self.name, name) {
                tracing::warn!(queue = name, error = %e, "queue store delete failed");
            }
        }
        Some(q)
    }

    /// Routes a message; `""` is the default exchange (routing key = queue
    /// name). Returns how many queues took it; unroutable messages are
    /// dropped, as in AMQP without `mandatory`.
    pub fn publish(&self, message: Message) -> Result<usize, RouteError> {
        self.publish_durable(message).map(|(n, _)| n)
    }

    /// [`Vhost::publish`], with the store's tickets of the stored queues
    /// that took a persistent message (none otherwise, and none that are
    /// ready at once: an empty `Vec` allocates nothing).
    pub fn publish_durable(&self, mut message: Message) -> Result<(usize, Vec<Durable>), RouteError> {
        if self.history.covers(&message.exchange) {
            // Server-stamped: a publisher does not choose its offset.
            message.headers.retain(|(k, _)| k != STREAM_OFFSET && k != STREAM_EPOCH);
            let x = self
                .exchange(&message.exchange)
                .ok_or_else(|| RouteError::NoExchange(message.exchange.clone(), self.name.to_string()))?;
            check_key(&self.routing, x.kind, &message.routing_key)?;
            let key = StreamKey::new(&self.name, &message.exchange, &message.routing_key);
            // Held through the fan-out: offsets reach queues in order (history.rs).
            let _order = self.history.lock(&key);
            let message = self.history.store.append(&key, message, now_ms())?;
            return self.fan_out(&x, message);
        }
        let message = Arc::new(message);
        if message.exchange.is_empty() {
            self.published.fetch_add(1, Ordering::Relaxed);
            return match self.queue(&message.routing_key) {
                // Memory's tickets (ready, fine) are not kept; failed ones are.
                Some(q) => Ok((1, q.publish(message)?.into_iter().filter(|t| !t.is_ready_ok()).collect())),
                None => Ok((0, Vec::new())),
            };
        }
        let x = self
            .exchange(&message.exchange)
            .ok_or_else(|| RouteError::NoExchange(message.exchange.clone(), self.name.to_string()))?;
        // Before matching: the bound is what keeps the match cheap.
        check_key(&self.routing, x.kind, &message.routing_key)?;
        self.fan_out(&x, message)
    }

    fn fan_out(&self, x: &Exchange, message: Arc<Message>) -> Result<(usize, Vec<Durable>), RouteError> {
        self.published.fetch_add(1, Ordering::Relaxed);
        x.published.fetch_add(1, Ordering::Relaxed);
        let mut tickets = Vec::new();
        let mut failed = None;
        let n = x.route(&message, |q| match q.publish(message.clone()) {
            // Memory's tickets (ready, fine) are not kept; failed ones are.
            Ok(t) => tickets.extend(t.filter(|t| !t.is_ready_ok())),
            Err(e) => failed = Some(e),
        });
        match failed {
            Some(e) => Err(e),
            None => Ok((n, tickets)),
        }
    }
}

#[derive(Debug)]
pub struct Router {
    vhosts: HashMap<String, Arc<Vhost>>,
    /// Queue counts across vhosts.
    pub quota: Arc<QueueQuota>,
    /// The memory alarm every publish checks (set by `Engine`'s monitor).
    pub alarm: MemoryAlarm,
    /// Bus interests that appeared or vanished (in a cluster only).
    pub interest_changes: Arc<InterestChanges>,
}

impl Router {
    /// A router whose history is in memory (`[history]` limits).
    pub fn new(config: &Config, store: Arc<dyn QueueStore>) -> Result<Router, RouteError> {
        Self::with_history(config, store, Arc::new(MemoryHistory::new(HistoryLimits::from_config(&config.history))))
    }

    pub fn with_history(
        config: &Config,
        store: Arc<dyn QueueStore>,
        history: Arc<dyn crate::store::history::HistoryStore>,
    ) -> Result<Router, RouteError> {
        let quota = Arc::new(QueueQuota::new(config));
        let history = Arc::new(History::new(history, &config.exchanges.feed, &config.exchanges.project));
        let interest_changes = Arc::new(InterestChanges::default());
        let vhosts: HashMap<String, Arc<Vhost>> = config
            .vhosts
            .iter()
            .map(|v| {
                let vhost = Vhost::new(
                    &v.name,
                    config,
                    store.clone(),
                    quota.clone(),
                    history.clone(),
                    interest_changes.clone(),
                );
                (v.name.clone(), Arc::new(vhost))
            })
            .collect();
        // Durable queues and their persistent messages come back from the store.
        let mut max_id = 0;
        for sq in store.load()? {
            let Some(vhost) = vhosts.get(&sq.vhost) else {
                tracing::warn!(vhost = %sq.vhost, queue = %sq.name, "stored queue of an unknown vhost ignored");
                continue;
            };
            let opts = QueueOptions { durable: true, exclusive: None, auto_delete: sq.meta.auto_delete };
            let limits = sq.meta.limits.map(|l| QueueLimits {
                max_len: usize::try_from(l.max_len).unwrap_or(usize::MAX),
                max_bytes: usize::try_from(l.max_bytes).unwrap_or(usize::MAX),
                overflow: if l.reject_publish { Overflow::RejectPublish } else { Overflow::DropHead },
            });
            let q = vhost.declare(&sq.name, opts, None, sq.meta.owner.as_deref(), limits, true)?;
            for b in sq.bindings {
                let headers = b.headers.map(|(all, args)| HeaderMatch { all, args });
                if let Err(e) = vhost.bind_as(&b.exchange, &q, &b.key, headers, true) {
                    // The config changed (an exchange gone, a bound tightened):
                    // the queue stays, without this binding.
                    tracing::warn!(vhost = %sq.vhost, queue = %sq.name, exchange = %b.exchange, key = %b.key,
                        error = %e, "stored binding not restored");
                }
            }
            for m in sq.messages {
                max_id = max_id.max(m.id);
                let mut msg = Message::new(m.exchange, m.routing_key, m.headers, m.body);
                msg.id = m.id;
                q.restore(Arc::new(msg), m.redelivered);
            }
        }
        crate::message::reserve_ids_through(max_id);
        Ok(Router {
            vhosts,
            quota,
            alarm: MemoryAlarm::new(config.limits.memory_high_watermark.bytes()),
            interest_changes,
        })
    }

    pub fn vhost(&self, name: &str) -> Result<&Arc<Vhost>, RouteError> {
        self.vhosts.get(name).ok_or_else(|| RouteError::NoVhost(name.to_owned()))
    }

    pub fn vhosts(&self) -> impl Iterator<Item = &Arc<Vhost>> {
        self.vhosts.values()
    }

    /// Counts bindings per Bus interest from now on (`cluster::join`),
    /// starting with the bindings that exist (durable queues restored at
    /// start, anything bound before the join).
    pub fn track_interests(&self) {
        for v in self.vhosts.values() {
            v.track_interests();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Outbound, SessionHandle};
    use crate::store::MemoryStore;
    use crate::transport::Peer;
    use bytes::Bytes;

    fn router(store: Arc<dyn QueueStore>) -> Router {
        Router::new(&Config::default(), store).unwrap()
    }

    fn transient() -> QueueOptions {
        QueueOptions { durable: false, exclusive: None, auto_delete: false }
    }

    #[test]
    fn topic_exchange_routes_once_per_queue() {
        let r = router(Arc::new(MemoryStore::default()));
        let v = r.vhost("/").unwrap();
        let q = v.declare_queue("q1", transient(), None).unwrap();
        v.bind("amq.topic", &q, "a.*", None).unwrap();
        v.bind("amq.topic", &q, "a.#", None).unwrap();
        assert_eq!(v.publish(Message::new("amq.topic", "a.b", vec![], Bytes::new())).unwrap(), 1);
        assert_eq!(q.depth(), 1);
        assert_eq!(v.publish(Message::new("amq.topic", "b.c", vec![], Bytes::new())).unwrap(), 0);
        assert!(matches!(v.publish(Message::new("nope", "k", vec![], Bytes::new())), Err(RouteError::NoExchange(..))));
        v.delete_queue("q1");
        assert_eq!(v.exchange("amq.topic").unwrap().binding_count(), 0, "bindings go with the queue");
    }

    #[test]
    fn routing_limits_refuse_long_keys_and_patterns() {
        let r = router(Arc::new(MemoryStore::default()));
        let v = r.vhost("/").unwrap();
        let q = v.declare_queue("q1", transient(), None).unwrap();
        let limit = |e: Result<usize, RouteError>| match e {
            Err(RouteError::Limit(l)) => l.key,
            other => panic!("{other:?}"),
        };
        let bind_limit = |e: Result<(), RouteError>| match e {
            Err(RouteError::Limit(l)) => l.to_string(),
            other => panic!("{other:?}"),
        };
        let hashes = format!("a{}", ".#".repeat(9));
        assert_eq!(
            bind_limit(v.bind("amq.topic", &q, &hashes, None)),
            "binding pattern has 9 '#' wildcards; the limit is 8 (routing.max_pattern_hashes)"
        );
        assert!(
            bind_limit(v.bind("amq.topic", &q, &vec!["*"; 33].join("."), None)).contains("routing.max_pattern_words")
        );
        assert!(bind_limit(v.bind("amq.direct", &q, &"x".repeat(256), None)).contains("routing.max_key_bytes"));
        v.bind("amq.topic", &q, &format!("a{}", ".#".repeat(8)), None).unwrap();
        v.bind("amq.direct", &q, &"x".repeat(255), None).unwrap();
        let send = |x: &str, key: &str| v.publish(Message::new(x, key, vec![], Bytes::new()));
        assert_eq!(limit(send("amq.topic", &vec!["a"; 65].join("."))), "max_key_words");
        assert_eq!(limit(send("amq.direct", &"x".repeat(256))), "max_key_bytes");
        assert_eq!(send("amq.topic", &vec!["a"; 64].join(".")).unwrap(), 1);
        // Words count on topic exchanges only: the key is not a pattern elsewhere.
        assert_eq!(send("amq.direct", &vec!["x"; 100].join(".")).unwrap(), 0);
        assert_eq!(v.exchange("amq.topic").unwrap().binding_count(), 1, "refused bindings left nothing behind");
    }

    #[test]
    fn default_direct_fanout_headers() {
        let r = router(Arc::new(MemoryStore::default()));
        let v = r.vhost("/").unwrap();
        let q = v.declare_queue("jobs", transient(), None).unwrap();
        assert_eq!(v.publish(Message::new("", "jobs", vec![], Bytes::new())).unwrap(), 1);
        assert_eq!(v.publish(Message::new("", "missing", vec![], Bytes::new())).unwrap(), 0);
        v.bind("amq.direct", &q, "k", None).unwrap();
        assert_eq!(v.publish(Message::new("amq.direct", "k", vec![], Bytes::new())).unwrap(), 1);
        assert_eq!(v.publish(Message::new("amq.direct", "k2", vec![], Bytes::new())).unwrap(), 0);
        v.bind("amq.fanout", &q, "", None).unwrap();
        assert_eq!(v.publish(Message::new("amq.fanout", "anything", vec![], Bytes::new())).unwrap(), 1);
        let all = HeaderMatch { all: true, args: vec![("a".into(), "1".into()), ("b".into(), "2".into())] };
        v.bind("amq.headers", &q, "", Some(all)).unwrap();
        let h = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(v.publish(Message::new("amq.headers", "", h(&[("a", "1")]), Bytes::new())).unwrap(), 0);
        assert_eq!(v.publish(Message::new("amq.headers", "", h(&[("a", "1"), ("b", "2")]), Bytes::new())).unwrap(), 1);
        assert_eq!(q.depth(), 4);
    }

    #[test]
    fn declare_checks_equivalence_and_exclusivity() {
        let r = router(Arc::new(MemoryStore::default()));
        let v = r.vhost("/").unwrap();
        v.declare_queue("d", QueueOptions { durable: true, exclusive: None, auto_delete: false }, None).unwrap();
        assert!(matches!(v.declare_queue("d", transient(), None), Err(RouteError::Inequivalent { .. })));
        let mine = QueueOptions { durable: false, exclusive: Some(7), auto_delete: true };
        v.declare_queue("x", mine, Some(7)).unwrap();
        assert!(matches!(v.declare_queue("x", mine, Some(8)), Err(RouteError::Locked(_))));
        assert!(matches!(v.declare_queue("amq.q", transient(), None), Err(RouteError::Reserved(_))));
    }

    #[test]
    fn queue_counts_are_capped_per_user_and_per_node() {
        let mut config = Config::default();
        config.limits.max_queues = 4;
        config.limits.max_queues_per_user = 2;
        let r = Router::new(&config, Arc::new(MemoryStore::default())).unwrap();
        let v = r.vhost("/").unwrap();
        let durable = QueueOptions { durable: true, exclusive: None, auto_delete: false };
        v.declare_queue_for("a1", durable, Some(1), Some("alice"), None).unwrap();
        v.declare_queue_for("a2", transient(), Some(1), Some("alice"), None).unwrap();
        v.declare_queue_for("a1", durable, Some(1), Some("alice"), None).expect("redeclaring is not a new queue");
        let e = v.declare_queue_for("a3", durable, Some(1), Some("alice"), None).unwrap_err();
        assert!(matches!(e, RouteError::QueueLimit(_)) && e.to_string().starts_with("queue limit reached"), "{e}");
        // Exclusive queues die with their session: they count only in the node's total.
        let mine = QueueOptions { durable: false, exclusive: Some(1), auto_delete: true };
        v.declare_queue_for("x1", mine, Some(1), Some("alice"), None).unwrap();
        assert_eq!(r.quota.of_user("alice"), 2);
        v.declare_queue_for("b1", transient(), Some(2), Some("bob"), None).unwrap();
        let e = v.declare_queue_for("b2", transient(), Some(2), Some("bob"), None).unwrap_err();
        assert!(e.to_string().contains("limits.max_queues"), "{e}");
        v.delete_queue("a1");
        assert_eq!(r.quota.of_user("alice"), 1);
        v.declare_queue_for("a3", durable, Some(1), Some("alice"), None).expect("room again after a delete");
    }

    #[test]
    fn declared_limits_only_tighten() {
        let mut config = Config::default();
        config.limits.max_queue_bytes = 4096;
        let r = Router::new(&config, Arc::new(MemoryStore::default())).unwrap();
        let v = r.vhost("/").unwrap();
        let asked = QueueLimits { max_len: 5, max_bytes: 1 << 30, overflow: Overflow::RejectPublish };
        let q = v.declare_queue_for("q", transient(), None, None, Some(asked)).unwrap();
        assert_eq!(q.limits, QueueLimits { max_len: 5, max_bytes: 4096, overflow: Overflow::RejectPublish });
    }

    #[test]
    fn memory_alarm_follows_its_measure() {
        let a = MemoryAlarm::new(Some(1000));
        assert!(a.check().is_ok());
        assert!(a.update(2000));
        let e = a.check().unwrap_err();
        assert!(e.to_string().starts_with("memory alarm: node above its high watermark, publishing refused"), "{e}");
        assert!(!a.update(3000), "no change");
        assert!(a.update(500));
        assert!(a.check().is_ok());
        let off = MemoryAlarm::new(None);
        off.update(u64::MAX);
        assert!(off.check().is_ok());
    }

    #[test]
    fn durable_queues_come_back_with_their_options_limits_and_bindings() {
        let store: Arc<dyn QueueStore> = Arc::new(MemoryStore::default());
        let durable = QueueOptions { durable: true, exclusive: None, auto_delete: true };
        let limits = QueueLimits { max_len: 7, max_bytes: 4096, overflow: Overflow::RejectPublish };
        {
            let r = router(store.clone());
            let v = r.vhost("/").unwrap();
            let q = v.declare_queue_for("d", durable, Some(1), Some("alice"), Some(limits)).unwrap();
            v.bind("amq.topic", &q, "a.*", None).unwrap();
            let all = HeaderMatch { all: true, args: vec![("k".into(), "v".into())] };
            v.bind("amq.headers", &q, "", Some(all)).unwrap();
            // Neither transient nor exclusive queues are stored.
            v.declare_queue("t", transient(), None).unwrap();
            let mine = QueueOptions { durable: true, exclusive: Some(1), auto_delete: true };
            let x = v.declare_queue("x", mine, Some(1)).unwrap();
            v.bind("amq.topic", &x, "a.*", None).unwrap();
        }
        let r = router(store.clone());
        let v = r.vhost("/").unwrap();
        assert!(v.queue("t").is_none() && v.queue("x").is_none());
        let q = v.queue("d").expect("restored");
        assert_eq!(q.options, durable);
        assert_eq!(q.limits, limits);
        assert_eq!(r.quota.of_user("alice"), 1);
        assert_eq!(v.publish(Message::new("amq.topic", "a.b", vec![], Bytes::new())).unwrap(), 1);
        let h = vec![("k".to_string(), "v".to_string())];
        assert_eq!(v.publish(Message::new("amq.headers", "", h, Bytes::new())).unwrap(), 1);
        v.delete_queue("d");
        assert!(store.load().unwrap().is_empty(), "a deleted queue leaves nothing stored");
    }

    #[test]
    fn history_exchanges_number_messages_and_a_recovering_bind_replays_first() {
        let r = router(Arc::new(MemoryStore::default()));
        let v = r.vhost("/").unwrap();
        let forged = vec![(STREAM_OFFSET.to_string(), "99".to_string()), ("a".to_string(), "b".to_string())];
        for _ in 0..5 {
            v.publish(Message::new("feed", "alice", forged.clone(), Bytes::new())).unwrap();
        }
        let q = v.declare_queue("sub", transient(), None).unwrap();
        let rec = v.bind_recovering("feed", &q, "alice", Since::Offset(3), None).unwrap();
        assert!(rec.recovered);
        assert_eq!((rec.top, q.depth()), (5, 3), "3, 4, 5 replayed");
        v.publish(Message::new("feed", "alice", vec![], Bytes::new())).unwrap();
        v.publish(Message::new("feed", "bob", vec![], Bytes::new())).unwrap();
        assert_eq!(q.depth(), 4, "then live, and only its key");
        let page = v.history.store.read(&StreamKey::new("/", "feed", "alice"), 1, 10, now_ms()).unwrap();
        let m = &page.messages[0];
        assert_eq!(m.headers, [("a".to_string(), "b".to_string())], "a publisher's stream header is dropped");
        assert_eq!(m.stream.as_ref().unwrap().offset, 1);
        // Other exchanges are not numbered.
        let q2 = v.declare_queue("t", transient(), None).unwrap();
        v.bind("amq.topic", &q2, "x", None).unwrap();
        v.publish(Message::new("amq.topic", "x", forged, Bytes::new())).unwrap();
        assert_eq!(q2.depth(), 1);
    }

    #[test]
    fn durable_persistent_messages_survive_a_new_router() {
        let store: Arc<dyn QueueStore> = Arc::new(MemoryStore::default());
        let durable = QueueOptions { durable: true, exclusive: None, auto_delete: false };
        {
            let r = router(store.clone());
            let v = r.vhost("/").unwrap();
            v.declare_queue("d", durable, None).unwrap();
            let persistent = vec![("persistent".to_string(), "true".to_string())];
            v.publish(Message::new("", "d", persistent, Bytes::from_static(b"keep"))).unwrap();
            v.publish(Message::new("", "d", vec![], Bytes::from_static(b"lose"))).unwrap();
        }
        let r = router(store);
        let q = r.vhost("/").unwrap().queue("d").expect("durable queue restored");
        let s = SessionHandle::new(
            "u",
            "/",
            crate::session::Protocol::Stomp,
            &Peer { addr: None, transport: crate::transport::Transport::Tcp },
            8,
        );
        q.consume(s.clone(), "s".into(), AckMode::Auto, 0);
        let mut out = Vec::new();
        s.drain(&mut out, 10);
        let bodies: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Outbound::Deliver(d) => Some(d.message.body.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(bodies, [Bytes::from_static(b"keep")]);
    }
}
