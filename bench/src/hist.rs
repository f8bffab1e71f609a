//! A small log-linear latency histogram (microseconds).
//!
//! Values below 1024 µs are kept exactly; above, each power of two is split
//! into 512 buckets (< 0.2 % relative error). Workers send the non-empty
//! buckets to the orchestrator as `[[index, count], ...]`, which merges them.

use serde_json::Value;

const LINEAR: u64 = 1024;
const SUB_BITS: u32 = 9;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (LINEAR + 54 * SUB) as usize;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as u64; // >= 10
    let sub = (v >> (e - SUB_BITS as u64)) & (SUB - 1);
    let i = LINEAR + (e - 10) * SUB + sub;
    (i as usize).min(BUCKETS - 1)
}

/// Lower bound of a bucket (the value reported for it).
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let e = (i - LINEAR) / SUB + 10;
    let sub = (i - LINEAR) % SUB;
    (1 << e) | (sub << (e - SUB_BITS as u64))
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        self.counts[index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), in µs; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }

    pub fn to_json(&self) -> Value {
        let buckets: Vec<Value> =
            self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| serde_json::json!([i, c])).collect();
        serde_json::json!({ "max": self.max, "b": buckets })
    }

    pub fn merge_json(&mut self, v: &Value) {
        if let Some(b) = v["b"].as_array() {
            for pair in b {
                let (i, c) = (pair[0].as_u64().unwrap_or(0) as usize, pair[1].as_u64().unwrap_or(0));
                if i < BUCKETS {
                    self.counts[i] += c;
                    self.total += c;
                }
            }
        }
        self.max = self.max.max(v["max"].as_u64().unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_precision() {
        for v in [0u64, 1, 500, 1023, 1024, 1500, 10_000, 123_456, 9_999_999, 1 << 40] {
            let b = value(index(v));
            assert!(b <= v && (v - b) as f64 <= v as f64 * 0.002 + 1.0, "{v} -> {b}");
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut h = Hist::default();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 500);
        assert_eq!(h.quantile(0.99), 990);
        let mut m = Hist::default();
        m.merge_json(&h.to_json());
        assert_eq!(m.total(), 1000);
        assert_eq!(m.quantile(0.99), 990);
        assert_eq!(m.max(), 1000);
    }
}
