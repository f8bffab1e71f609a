//! Exchanges and their bindings: direct, fanout, topic and headers.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Deserialize;

use super::queue::Queue;
use super::topic::TopicTrie;
use crate::message::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Arguments of a headers-exchange binding (`x-match` all/any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMatch {
    pub all: bool,
    pub args: Vec<(String, String)>,
}

impl HeaderMatch {
    fn matches(&self, m: &Message) -> bool {
        let hit = |(k, v): &(String, String)| m.header(k) == Some(v.as_str());
        if self.all {
            self.args.iter().all(hit)
        } else {
            self.args.iter().any(hit)
        }
    }
}

#[derive(Debug)]
enum Bindings {
    Direct(HashMap<String, Vec<Arc<Queue>>>),
    Fanout(Vec<(String, Arc<Queue>)>),
    Topic(TopicTrie<Arc<Queue>>),
    Headers(Vec<(String, HeaderMatch, Arc<Queue>)>),
}

#[derive(Debug)]
pub struct Exchange {
    pub name: Arc<str>,
    pub kind: ExchangeKind,
    bindings: RwLock<Bindings>,
    /// Messages published through this exchange (admin rates).
    pub published: std::sync::atomic::AtomicU64,
}

impl Exchange {
    pub fn new(name: &str, kind: ExchangeKind) -> Exchange {
        let bindings = match kind {
            ExchangeKind::Direct => Bindings::Direct(HashMap::new()),
            ExchangeKind::Fanout => Bindings::Fanout(Vec::new()),
            ExchangeKind::Topic => Bindings::Topic(TopicTrie::default()),
            ExchangeKind::Headers => Bindings::Headers(Vec::new()),
        };
        Exchange { name: name.into(), kind, bindings: RwLock::new(bindings), published: Default::default() }
    }

    pub fn bind(&self, queue: &Arc<Queue>, key: &str, headers: Option<HeaderMatch>) {
        let mut b = self.bindings.write();
        match &mut *b {
            Bindings::Direct(map) => {
                let v = map.entry(key.to_owned()).or_default();
                if !v.iter().any(|q| Arc::ptr_eq(q, queue)) {
                    v.push(queue.clone());
                }
            }
            Bindings::Fanout(v) => {
                if !v.iter().any(|(k, q)| k == key && Arc::ptr_eq(q, queue)) {
                    v.push((key.to_owned(), queue.clone()));
                }
            }
            Bindings::Topic(t) => {
                // An identical binding is idempotent, as in AMQP.
                t.remove(key, |q| Arc::ptr_eq(q, queue));
                t.insert(key, queue.clone());
            }
            Bindings::Headers(v) => {
                let m = headers.unwrap_or_default();
                v.retain(|(k, hm, q)| !(k == key && *hm == m && Arc::ptr_eq(q, queue)));
                v.push((key.to_owned(), m, queue.clone()));
            }
        }
    }

    pub fn unbind(&self, queue: &Arc<Queue>, key: &str) {
        let mut b = self.bindings.write();
        match &mut *b {
            Bindings::Direct(map) => {
                if let Some(v) = map.get_mut(key) {
                    v.retain(|q| !Arc::ptr_eq(q, queue));
                    if v.is_empty() {
                        map.remove(key);
                    }
                }
            }
            Bindings::Fanout(v) => v.retain(|(k, q)| !(k == key && Arc::ptr_eq(q, queue))),
            Bindings::Topic(t) => {
                t.remove(key, |q| Arc::ptr_eq(q, queue));
            }
            Bindings::Headers(v) => v.retain(|(k, _, q)| !(k == key && Arc::ptr_eq(q, queue))),
        }
    }

    pub fn binding_count(&self) -> usize {
        match &*self.bindings.read() {
            Bindings::Direct(map) => map.values().map(Vec::len).sum(),
            Bindings::Fanout(v) => v.len(),
            Bindings::Topic(t) => t.len(),
            Bindings::Headers(v) => v.len(),
        }
    }

    /// Calls `deliver` once for every queue the message routes to; returns
    /// how many. The bindings' read lock is held only to collect the queues
    /// (a match whose cost `[routing]` bounds), not while delivering: a
    /// fan-out to many queues does not hold up binds, nor, behind a waiting
    /// bind, other publishers (parking_lot's lock is fair to writers).
    pub fn route(&self, message: &Message, mut deliver: impl FnMut(&Arc<Queue>)) -> usize {
        let targets: Vec<Arc<Queue>> = {
            let b = self.bindings.read();
            match &*b {
                Bindings::Direct(map) => map.get(&message.routing_key).map(|qs| qs.to_vec()).unwrap_or_default(),
                Bindings::Fanout(v) => dedup(v.iter().map(|(_, q)| q), v.len() > 1),
                Bindings::Topic(t) => {
                    let mut hits: Vec<&Arc<Queue>> = Vec::new();
                    let nodes = t.matches(&message.routing_key, &mut |q| hits.push(q));
                    dedup(hits.into_iter(), nodes > 1)
                }
                Bindings::Headers(v) => {
                    let hits = v.iter().filter(|(_, m, _)| m.matches(message)).map(|(_, _, q)| q);
                    dedup(hits, v.len() > 1)
                }
            }
        };
        targets.iter().for_each(&mut deliver);
        targets.len()
    }
}

/// A queue bound twice (two keys, two patterns) gets a message once.
fn dedup<'a>(queues: impl Iterator<Item = &'a Arc<Queue>>, may_repeat: bool) -> Vec<Arc<Queue>> {
    let mut all: Vec<&Arc<Queue>> = queues.collect();
    if may_repeat {
        all.sort_unstable_by_key(|q| Arc::as_ptr(q));
        all.dedup_by_key(|q| Arc::as_ptr(q));
    }
    all.into_iter().cloned().collect()
}
