//! AMQP topic matching: routing keys and binding patterns are words separated
//! by `.`; `*` matches exactly one word, `#` zero or more.
//!
//! A trie over pattern words, so matching a key costs its word count (plus the
//! branches that `*` and `#` open), not the number of bindings: a `feed`
//! exchange with one binding per online user stays cheap to publish to.

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
        let words: Vec<&str> = key.split('.').collect();
        let mut nodes = 0;
        Self::match_at(&self.root, &words, visit, &mut nodes);
        nodes
    }

    fn match_at<'a>(node: &'a Node<T>, words: &[&str], visit: &mut impl FnMut(&'a T), nodes: &mut usize) {
        if let Some(hash) = &node.hash {
            // `#` swallows zero, one, ... all remaining words.
            for skip in 0..=words.len() {
                Self::match_at(hash, &words[skip..], visit, nodes);
            }
        }
        let Some((first, rest)) = words.split_first() else {
            if !node.values.is_empty() {
                *nodes += 1;
                node.values.iter().for_each(&mut *visit);
            }
            return;
        };
        if let Some(child) = node.words.get(*first) {
            Self::match_at(child, rest, visit, nodes);
        }
        if let Some(star) = &node.star {
            Self::match_at(star, rest, visit, nodes);
        }
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
