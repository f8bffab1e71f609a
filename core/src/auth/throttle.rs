//! Failed-login limits (`[login]`), per user and per client address, with a
//! back-off that doubles. Applied by `Engine::login` for every protocol, so
//! STOMP (TCP, WebSocket, SockJS) and XMPP (TCP, WebSocket, BOSH; PLAIN and
//! SCRAM) share one count.
//!
//! The lock-out problem: a per-user limit alone lets a stranger lock a user
//! out by failing on purpose. Here the user back-off is bounded
//! (`max_backoff_secs`), and it does not apply from an address that logged
//! in as that user within the window ("trusted" addresses, a few per user):
//! the user keeps working from where they already are, while the stranger's
//! own address is throttled by the per-address limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::ClientInfo;
use crate::config::LoginConfig;

/// Addresses remembered per user as trusted (the latest ones win).
const TRUSTED_PER_USER: usize = 4;

/// A client address as counted: IPv4 whole, IPv6 by its /64 (one host
/// usually owns a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IpKey(IpAddr);

impl IpKey {
    fn of(client: &ClientInfo) -> Option<IpKey> {
        Some(IpKey(match client.ip()?.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        }))
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    since: Instant,
    blocked_until: Option<Instant>,
    /// Users only: addresses that logged in as this user, and when.
    trusted: Vec<(IpKey, Instant)>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry { failures: 0, since: now, blocked_until: None, trusted: Vec::new() }
    }

    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until.filter(|&t| t > now).map(|t| t - now)
    }

    /// Nothing worth keeping: no failures in the window, no block, no trust.
    fn stale(&self, now: Instant, window: Duration) -> bool {
        now.duration_since(self.since) > window
            && self.blocked(now).is_none()
            && self.trusted.iter().all(|(_, t)| now.duration_since(*t) > window)
    }
}

/// A login name as counted: a keyed hash (random key per process), so an
/// entry costs the same whatever the name's length (a STOMP `login` header
/// may be 8 KiB, an XMPP authcid a whole stanza) and names cannot be chosen
/// to collide.
type UserKey = u64;

#[derive(Default)]
struct State {
    users: HashMap<UserKey, Entry>,
    ips: HashMap<IpKey, Entry>,
    last_purge: Option<Instant>,
}

/// Why a login is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

impl Throttled {
    /// Whole seconds, rounded up (never 0).
    pub fn retry_secs(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }
}

impl std::fmt::Display for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "too many failed logins; retry in {} s", self.retry_secs())
    }
}

pub struct LoginThrottle {
    config: LoginConfig,
    state: Mutex<State>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle").field("config", &self.config).finish_non_exhaustive()
    }
}

impl LoginThrottle {
    pub fn new(config: &LoginConfig) -> LoginThrottle {
        LoginThrottle { config: config.clone(), state: Mutex::default(), hasher: Default::default() }
    }

    fn user_key(&self, login: &str) -> UserKey {
        use std::hash::BuildHasher;
        self.hasher.hash_one(login)
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.config.failure_window_secs)
    }

    /// Whether `login` from `client` may try now.
    pub fn check(&self, login: &str, client: &ClientInfo) -> Result<(), Throttled> {
        self.check_at(login, client, Instant::now())
    }

    fn check_at(&self, login: &str, client: &ClientInfo, now: Instant) -> Result<(), Throttled> {
        let ip = IpKey::of(client);
        let state = self.state.lock();
        let from_ip = ip.and_then(|ip| state.ips.get(&ip)).and_then(|e| e.blocked(now));
        let for_user = state.users.get(&self.user_key(login)).and_then(|e| {
            let trusted = ip
                .is_some_and(|ip| e.trusted.iter().any(|(t, at)| *t == ip && now.duration_since(*at) <= self.window()));
            if trusted {
                None
            } else {
                e.blocked(now)
            }
        });
        match from_ip.max(for_user) {
            Some(retry_after) => Err(Throttled { retry_after }),
            None => Ok(()),
        }
    }

    /// A wrong password (or unknown user).
    pub fn failure(&self, login: &str, client: &ClientInfo) {
        self.failure_at(login, client, Instant::now())
    }

    fn failure_at(&self, login: &str, client: &ClientInfo, now: Instant) {
        let ip = IpKey::of(client);
        let mut state = self.state.lock();
        if self.config.max_failures_per_ip > 0 {
            if let Some(ip) = ip {
                if let Some(e) = self.entry(&mut state, now, |s| &mut s.ips, ip) {
                    self.count(e, self.config.max_failures_per_ip, now);
                }
            }
        }
        if self.config.max_failures_per_user > 0 {
            if let Some(e) = self.entry(&mut state, now, |s| &mut s.users, self.user_key(login)) {
                self.count(e, self.config.max_failures_per_user, now);
            }
        }
    }

    /// A successful login: the user's count starts again and the address is
    /// trusted for the user. The address's own count stays (a valid account
    /// must not reset the count of the guesses made beside it).
    pub fn success(&self, login: &str, client: &ClientInfo) {
        self.success_at(login, client, Instant::now())
    }

    fn success_at(&self, login: &str, client: &ClientInfo, now: Instant) {
        let ip = IpKey::of(client);
        let mut state = self.state.lock();
        // Without an address there is nothing to trust: only an existing entry changes.
        let e = match ip {
            Some(_) if self.config.max_failures_per_user > 0 => {
                self.entry(&mut state, now, |s| &mut s.users, self.user_key(login))
            }
            _ => state.users.get_mut(&self.user_key(login)),
        };
        let Some(e) = e else { return };
        e.failures = 0;
        e.since = now;
        e.blocked_until = None;
        if let Some(ip) = ip {
            e.trusted.retain(|(t, _)| *t != ip);
            if e.trusted.len() >= TRUSTED_PER_USER {
                e.trusted.remove(0);
            }
            // Room for one at first: most users log in from one address, and
            // `push` would make room for four (160 B in every such user's entry).
            e.trusted.reserve_exact(1);
            e.trusted.push((ip, now));
        }
    }

    fn count(&self, e: &mut Entry, allowed: u32, now: Instant) {
        if now.duration_since(e.since) > self.window() {
            e.failures = 0;
            e.since = now;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= allowed {
            let over = (e.failures - allowed).min(31);
            let max = Duration::from_secs(self.config.max_backoff_secs);
            let backoff =
                Duration::from_millis(self.config.backoff_initial_ms).saturating_mul(1u32 << over.min(31)).min(max);
            e.blocked_until = Some(now + backoff);
        }
    }

    /// The entry for `key`, made if there is room: past `max_tracked`,
    /// stale entries are dropped (at most once a second, the scan is O(n));
    /// if none are, the key is not tracked (the address limit still holds).
    fn entry<'s, K: std::hash::Hash + Eq + 's>(
        &self,
        state: &'s mut State,
        now: Instant,
        map: fn(&mut State) -> &mut HashMap<K, Entry>,
        key: K,
    ) -> Option<&'s mut Entry> {
        let total = state.users.len() + state.ips.len();
        if !map(state).contains_key(&key) && total >= self.config.max_tracked {
            if state.last_purge.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                state.last_purge = Some(now);
                let window = self.window();
                state.users.retain(|_, e| !e.stale(now, window));
                state.ips.retain(|_, e| !e.stale(now, window));
            }
            if state.users.len() + state.ips.len() >= self.config.max_tracked {
                return None;
            }
        }
        Some(map(state).entry(key).or_insert_with(|| Entry::new(now)))
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        let s = self.state.lock();
        s.users.len() + s.ips.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(ip: &str) -> ClientInfo {
        ClientInfo {
            addr: Some(std::net::SocketAddr::new(ip.parse().unwrap(), 1234)),
            protocol: crate::session::Protocol::Stomp,
            transport: crate::transport::Transport::Tcp,
        }
    }

    fn config() -> LoginConfig {
        LoginConfig {
            max_failures_per_user: 3,
            max_failures_per_ip: 5,
            backoff_initial_ms: 1000,
            max_backoff_secs: 8,
            ..LoginConfig::default()
        }
    }

    #[test]
    fn back_off_doubles_up_to_the_max_and_ends() {
        let t = LoginThrottle::new(&config());
        let now = Instant::now();
        let a = from("10.0.0.1");
        for _ in 0..3 {
            assert!(t.check_at("alice", &a, now).is_ok(), "3 failures are allowed");
            t.failure_at("alice", &a, now);
        }
        assert_eq!(t.check_at("alice", &a, now), Err(Throttled { retry_after: Duration::from_secs(1) }));
        t.failure_at("alice", &a, now);
        assert_eq!(t.check_at("alice", &a, now).unwrap_err().retry_secs(), 2);
        for _ in 0..10 {
            t.failure_at("alice", &a, now);
        }
        assert_eq!(t.check_at("alice", &a, now).unwrap_err().retry_secs(), 8, "capped at max_backoff_secs");
        assert!(t.check_at("alice", &a, now + Duration::from_secs(9)).is_ok(), "the back-off ends");
        assert_eq!(t.check_at("alice", &a, now).unwrap_err().to_string(), "too many failed logins; retry in 8 s");
    }

    #[test]
    fn the_address_limit_covers_every_user() {
        let t = LoginThrottle::new(&config());
        let now = Instant::now();
        let a = from("10.0.0.1");
        for i in 0..4 {
            t.failure_at(&format!("u{i}"), &a, now);
        }
        assert!(t.check_at("someone-else", &a, now).is_ok(), "4 failures from one address < 5");
        t.failure_at("u5", &a, now);
        assert!(t.check_at("someone-else", &a, now).is_err(), "5 failures from one address");
        assert!(t.check_at("someone-else", &from("10.0.0.2"), now).is_ok());
        // IPv6: one /64 counts as one address.
        let t = LoginThrottle::new(&config());
        for i in 0..6 {
            t.failure_at(&format!("u{i}"), &from(&format!("2001:db8::{i}")), now);
        }
        assert!(t.check_at("x", &from("2001:db8::ffff"), now).is_err());
        assert!(t.check_at("x", &from("2001:db8:0:1::1"), now).is_ok());
    }

    #[test]
    fn a_stranger_cannot_lock_a_user_out_of_a_trusted_address() {
        let t = LoginThrottle::new(&config());
        let now = Instant::now();
        let (home, attacker) = (from("10.0.0.1"), from("192.0.2.9"));
        t.failure_at("alice", &home, now);
        t.success_at("alice", &home, now);
        for _ in 0..3 {
            t.failure_at("alice", &attacker, now);
        }
        assert!(t.check_at("alice", &attacker, now).is_err(), "alice is backed off for strangers");
        assert!(t.check_at("alice", &from("10.9.9.9"), now).is_err(), "and for new addresses");
        assert!(t.check_at("alice", &home, now).is_ok(), "not where she logged in before");
        // Successful logins do not clear the address count.
        let t = LoginThrottle::new(&config());
        for i in 0..6 {
            t.failure_at(&format!("u{i}"), &attacker, now);
            t.success_at("mallory", &attacker, now);
        }
        assert!(t.check_at("mallory", &attacker, now).is_err());
    }

    #[test]
    fn long_login_names_are_counted_in_a_fixed_size() {
        // 10,000 entries of 64 KiB names held 640 MB (100,000 are tracked by
        // default); an entry's key is 8 bytes now.
        assert_eq!(std::mem::size_of::<UserKey>(), 8);
        let t = LoginThrottle::new(&LoginConfig { max_failures_per_ip: 0, ..config() });
        let now = Instant::now();
        let a = from("10.0.0.1");
        let long = |c: char| c.to_string().repeat(64 * 1024);
        for _ in 0..3 {
            t.failure_at(&long('x'), &a, now);
        }
        assert!(t.check_at(&long('x'), &a, now).is_err(), "the same long name is one user");
        assert!(t.check_at(&long('y'), &a, now).is_ok(), "another long name is another user");
        assert!(t.check_at("x", &a, now).is_ok());
    }

    #[test]
    fn memory_is_bounded_by_max_tracked() {
        let t = LoginThrottle::new(&LoginConfig { max_tracked: 50, ..config() });
        let now = Instant::now();
        for i in 0..1000 {
            t.failure_at(&format!("user-{i}"), &from(&format!("10.0.{}.{}", i / 250, i % 250)), now);
        }
        assert!(t.tracked() <= 50);
        // Later, stale entries make room again.
        let later = now + Duration::from_secs(config().failure_window_secs + 1);
        t.failure_at("new", &from("10.9.9.9"), later);
        assert!(t.state.lock().users.contains_key(&t.user_key("new")));
    }

    #[test]
    fn no_address_counts_per_user_only() {
        let t = LoginThrottle::new(&config());
        let now = Instant::now();
        for _ in 0..3 {
            t.failure_at("app", &ClientInfo::LOCAL, now);
        }
        assert!(t.check_at("app", &ClientInfo::LOCAL, now).is_err());
        assert!(t.check_at("other", &ClientInfo::LOCAL, now).is_ok());
    }
}
