//! AMQP topic matching: routing keys and binding patterns are words separated
//! by `.`; `*` matches exactly one word, `#` zero or more.
//!
//! A trie over pattern words, so matching a key costs its word count (plus the
//! branches that `*` and `#` open), not the number of bindings: a `feed`
//! exchange with one binding per online user stays cheap to publish to.
//!
//! Matching simulates the trie as an NFA: after each key word, the set of
//! trie nodes still alive, each at most once. A `#` node stays alive over
//! every word, so the set never holds more than the trie has nodes and a
//! match costs at most key words × live nodes steps. Expanding each `#` over
//! each possible word count instead costs C(words + k, k) for k `#` in a
//! row: `a.#.#.#.#.#.#.#.#.#` against a 40-word key took 36 s.

use std::collections::HashMap;

#[derive(Debug)]
pub struct TopicTrie<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
struct Node<T> {
    words: HashMap<Box<str>, Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    values: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node { words: HashMap::new(), star: None, hash: None, values: Vec::new() }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie { root: Node::default(), len: 0 }
    }
}

impl<T> TopicTrie<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn insert(&mut self, pattern: &str, value: T) {
        let mut node = &mut self.root;
        for word in pattern.split('.') {
            node = match word {
                "*" => node.star.get_or_insert_with(Default::default),
                "#" => node.hash.get_or_insert_with(Default::default),
                w => node.words.entry(w.into()).or_default(),
            };
        }
        node.values.push(value);
        self.len += 1;
    }

    /// Removes the values bound with `pattern` for which `pred` holds; prunes
    /// emptied branches so churned bindings do not leak nodes.
    pub fn remove(&mut self, pattern: &str, mut pred: impl FnMut(&T) -> bool) -> usize {
        let words: Vec<&str> = pattern.split('.').collect();
        let removed = Self::remove_at(&mut self.root, &words, &mut pred);
        self.len -= removed;
        removed
    }

    fn remove_at(node: &mut Node<T>, words: &[&str], pred: &mut impl FnMut(&T) -> bool) -> usize {
        let Some((first, rest)) = words.split_first() else {
            let before = node.values.len();
            node.values.retain(|v| !pred(v));
            return before - node.values.len();
        };
        match *first {
            "*" | "#" => {
                let slot = if *first == "*" { &mut node.star } else { &mut node.hash };
                let Some(child) = slot.as_deref_mut() else { return 0 };
                let n = Self::remove_at(child, rest, pred);
                if child.is_empty() {
                    *slot = None;
                }
                n
            }
            w => {
                let Some(child) = node.words.get_mut(w) else { return 0 };
                let n = Self::remove_at(child, rest, pred);
                if child.is_empty() {
                    node.words.remove(w);
                }
                n
            }
        }
    }

    /// Calls `visit` with the values of every node whose pattern matches `key`.
    /// Returns how many nodes contributed: when more than one did, a value
    /// bound under two matching patterns was visited twice (callers dedupe).
    pub fn matches<'a>(&'a self, key: &str, visit: &mut impl FnMut(&'a T)) -> usize {
        self.match_counted(key, visit).0
    }

    /// [`TopicTrie::matches`], also returning the steps taken (states
    /// stepped over a word, plus nodes visited at the end): the cost bound.
    fn match_counted<'a>(&'a self, key: &str, visit: &mut impl FnMut(&'a T)) -> (usize, usize) {
        // (node, reached over `#`): a `#` node also matches the next word itself.
        let mut live: Vec<(&Node<T>, bool)> = Vec::new();
        let mut next: Vec<(&Node<T>, bool)> = Vec::new();
        enter(&mut live, &self.root, false);
        let mut steps = 0;
        for word in key.split('.') {
            if live.is_empty() {
                break;
            }
            steps += live.len();
            for &(node, is_hash) in &live {
                if is_hash {
                    // Its `#` descendants are live too and loop on their own:
                    // only the node itself, or chains would be pushed k² times.
                    next.push((node, true));
                }
                if let Some(child) = node.words.get(word) {
                    enter(&mut next, child, false);
                }
                if let Some(star) = &node.star {
                    enter(&mut next, star, false);
                }
            }
            dedup(&mut next);
            std::mem::swap(&mut live, &mut next);
            next.clear();
        }
        steps += live.len();
        let mut nodes = 0;
        for (node, _) in live {
            if !node.values.is_empty() {
                nodes += 1;
                node.values.iter().for_each(&mut *visit);
            }
        }
        (nodes, steps)
    }
}

/// Adds `node` to a state set with its `#` child, that child's `#` child and
/// so on: a `#` may match zero words, so it is alive wherever its parent is.
fn enter<'a, T>(set: &mut Vec<(&'a Node<T>, bool)>, mut node: &'a Node<T>, mut is_hash: bool) {
    loop {
        set.push((node, is_hash));
        match &node.hash {
            Some(h) => (node, is_hash) = (h, true),
            None => return,
        }
    }
}

/// Each node once. Only `#` can bring a node in twice (each node has one
/// path from the root, so otherwise it is reached at one word position only).
fn dedup<T>(set: &mut Vec<(&Node<T>, bool)>) {
    if set.len() > 1 {
        set.sort_unstable_by_key(|(n, _)| *n as *const Node<T>);
        set.dedup_by_key(|(n, _)| *n as *const Node<T>);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(t: &TopicTrie<&'static str>, key: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        t.matches(key, &mut |v| out.push(*v));
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn amqp_examples() {
        let mut t = TopicTrie::default();
        for p in ["a.b.c", "a.*.c", "a.#", "#", "*.b.*", "a.#.c", "#.c", "*"] {
            t.insert(p, p);
        }
        assert_eq!(matched(&t, "a.b.c"), ["#", "#.c", "*.b.*", "a.#", "a.#.c", "a.*.c", "a.b.c"]);
        assert_eq!(matched(&t, "a"), ["#", "*", "a.#"]);
        assert_eq!(matched(&t, "a.c"), ["#", "#.c", "a.#", "a.#.c"]);
        assert_eq!(matched(&t, "a.x.y.c"), ["#", "#.c", "a.#", "a.#.c"]);
        assert_eq!(matched(&t, "b"), ["#", "*"]);
        assert_eq!(matched(&t, "x.b.y"), ["#", "*.b.*"]);
    }

    /// The pattern of issue 19's finding 1 against a 40-word key: the old
    /// expansion took ~C(49, 9) = 2e9 steps; the state set stays within
    /// (pattern words) per key word.
    #[test]
    fn hostile_hash_chain_costs_linear_steps() {
        let mut t = TopicTrie::default();
        t.insert("a.#.#.#.#.#.#.#.#.#", "hostile");
        t.insert("a.#.#.#.#.#.#.#.#.#.z", "hostile-z");
        let key = std::iter::once("a").chain(std::iter::repeat_n("w", 39)).collect::<Vec<_>>().join(".");
        let mut hits = Vec::new();
        let (_, steps) = t.match_counted(&key, &mut |v| hits.push(*v));
        assert_eq!(hits, ["hostile"]);
        // Live nodes: the root, then `a` and its 9 `#` (the `z` child only when the word is `z`).
        assert!(steps <= 40 * 11, "{steps} steps for 40 words");
        // And a pattern of only `#` against the longest key allowed.
        let mut t = TopicTrie::default();
        t.insert(&vec!["#"; 32].join("."), "all");
        let key = vec!["w"; 64].join(".");
        let (nodes, steps) = t.match_counted(&key, &mut |_| {});
        assert_eq!(nodes, 1);
        assert!(steps <= 65 * 33, "{steps} steps");
    }

    /// The shape the engine serves: a binding per online user on `feed`,
    /// plus wildcard bindings (some hostile). A 40-word key keeps only the
    /// wildcard branches it matches live: the steps do not grow with the
    /// user bindings.
    #[test]
    fn many_bindings_cost_only_their_live_branches() {
        let mut t = TopicTrie::default();
        for i in 0..10_000 {
            t.insert(&format!("user{i}"), i);
        }
        for k in 1..=8 {
            t.insert(&format!("a{}", ".#".repeat(k)), 100_000 + k);
            t.insert(&format!("*{}.w", ".#".repeat(k)), 200_000 + k);
        }
        let key = std::iter::once("a").chain(std::iter::repeat_n("w", 39)).collect::<Vec<_>>().join(".");
        let started = std::time::Instant::now();
        let (nodes, steps) = t.match_counted(&key, &mut |_| {});
        let took = started.elapsed();
        assert_eq!(nodes, 16);
        // Live at most: `a` and its 8 `#`, `*` and its 8 `#` and their 8 `w` children.
        assert!(steps <= 40 * 30, "{steps} steps");
        eprintln!("40-word key, 10,016 bindings: {steps} steps in {took:?} (debug build)");
    }

    /// The AMQP definition, by recursion over both strings (exponential,
    /// fine for the short inputs below).
    fn reference(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.split_first(), key.split_first()) {
            (None, None) => true,
            (Some((&"#", prest)), _) => reference(prest, key) || (!key.is_empty() && reference(pattern, &key[1..])),
            (Some((p, prest)), Some((k, krest))) => (*p == "*" || p == k) && reference(prest, krest),
            _ => false,
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_definition(
            patterns in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(vec!["a", "b", "*", "#"]), 1..6), 1..6),
            key in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c"]), 1..7),
        ) {
            let mut t = TopicTrie::default();
            let joined: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            for (i, p) in joined.iter().enumerate() {
                t.insert(p, i);
            }
            let mut got = Vec::new();
            t.matches(&key.join("."), &mut |i| got.push(*i));
            got.sort();
            got.dedup();
            let want: Vec<usize> = (0..patterns.len()).filter(|&i| reference(&patterns[i], &key)).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn remove_prunes_and_counts() {
        let mut t = TopicTrie::default();
        t.insert("user.alice", 1);
        t.insert("user.alice", 2);
        t.insert("user.*", 3);
        assert_eq!(t.len(), 3);
        assert_eq!(t.remove("user.alice", |v| *v == 1), 1);
        assert_eq!(t.remove("user.alice", |v| *v == 1), 0);
        assert_eq!(t.remove("user.alice", |_| true), 1);
        assert!(t.root.words["user"].words.is_empty(), "emptied branch pruned");
        assert_eq!(t.remove("user.*", |_| true), 1);
        assert!(t.is_empty() && t.root.is_empty());
    }
}
