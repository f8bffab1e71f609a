//! Which [`Interest`] a binding needs, and the count per interest that
//! tells the router when to call [`Bus::subscribe`](super::Bus::subscribe)
//! (the first binding) and [`Bus::unsubscribe`](super::Bus::unsubscribe)
//! (after the last). Sans-IO; the router keeps one [`Interests`] per node,
//! next to the bindings it mirrors.

use std::collections::HashMap;

use crate::config::ExchangeKind;

use super::Interest;

impl Interest {
    /// The interest a binding of `key` on an exchange of `kind` needs:
    /// direct, and topic keys without `*`/`#` words, hear their own key's
    /// channel; topic patterns, fanout (which ignores keys) and headers
    /// (which match on headers) hear the exchange's wildcard channel.
    pub fn of_binding(vhost: &str, exchange: &str, kind: ExchangeKind, key: &str) -> Interest {
        let exact = match kind {
            ExchangeKind::Direct => true,
            ExchangeKind::Topic => !key.split('.').any(|w| w == "*" || w == "#"),
            ExchangeKind::Fanout | ExchangeKind::Headers => false,
        };
        if exact {
            Interest::exact(vhost, exchange, key)
        } else {
            Interest::wildcard(vhost, exchange)
        }
    }
}

/// Bindings counted per interest.
#[derive(Debug, Default)]
pub struct Interests {
    counts: HashMap<Interest, usize>,
}

impl Interests {
    /// Counts one more binding; true when it is the first for `interest`
    /// (subscribe now).
    pub fn add(&mut self, interest: Interest) -> bool {
        let n = self.counts.entry(interest).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts one binding less; true when it was the last (unsubscribe
    /// now). Removing an interest that is not counted is a no-op (false).
    pub fn remove(&mut self, interest: &Interest) -> bool {
        let Some(n) = self.counts.get_mut(interest) else { return false };
        *n -= 1;
        if *n == 0 {
            self.counts.remove(interest);
            return true;
        }
        false
    }

    /// Every interest held, to subscribe again after a restart of the bus.
    pub fn held(&self) -> impl Iterator<Item = &Interest> {
        self.counts.keys()
    }

    /// Whether some binding needs `interest`.
    pub fn contains(&self, interest: &Interest) -> bool {
        self.counts.contains_key(interest)
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_map_to_interests() {
        let of = |kind, key| Interest::of_binding("/", "x", kind, key);
        assert_eq!(of(ExchangeKind::Direct, "a.*"), Interest::exact("/", "x", "a.*"));
        assert_eq!(of(ExchangeKind::Topic, "feed.u1"), Interest::exact("/", "x", "feed.u1"));
        assert_eq!(of(ExchangeKind::Topic, ""), Interest::exact("/", "x", ""));
        // `a*` is a plain word in AMQP topic matching, not a wildcard.
        assert_eq!(of(ExchangeKind::Topic, "a*.b"), Interest::exact("/", "x", "a*.b"));
        for p in ["a.*", "#", "presence.p1.*", "*.b", "a.#.c"] {
            assert_eq!(of(ExchangeKind::Topic, p), Interest::wildcard("/", "x"), "{p}");
        }
        assert_eq!(of(ExchangeKind::Fanout, "k"), Interest::wildcard("/", "x"));
        assert_eq!(of(ExchangeKind::Headers, ""), Interest::wildcard("/", "x"));
    }

    #[test]
    fn first_and_last_binding_are_reported() {
        let mut i = Interests::default();
        let a = Interest::exact("/", "x", "a");
        let w = Interest::wildcard("/", "x");
        assert!(i.add(a.clone()));
        assert!(!i.add(a.clone()));
        assert!(i.add(w.clone()));
        assert!(!i.add(w.clone()));
        assert_eq!(i.len(), 2);
        assert!(!i.remove(&a));
        assert!(i.remove(&a));
        assert!(!i.remove(&a), "not held any more: no-op");
        assert!(!i.remove(&w));
        assert!(i.remove(&w));
        assert!(i.is_empty());
    }
}
