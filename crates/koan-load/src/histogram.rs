//! The latency histogram of a load run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A lock-free latency histogram: 16 linear sub-buckets per power of two (~6 %).
pub(crate) struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            buckets: (0..1024).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn index(us: u64) -> usize {
        if us < 16 {
            return us as usize;
        }
        let p = 63 - us.leading_zeros() as u64;
        let sub = (us >> (p - 4)) - 16;
        (16 + (p - 4) * 16 + sub) as usize
    }

    pub(crate) fn value(idx: usize) -> u64 {
        if idx < 16 {
            return idx as u64;
        }
        let p = (idx as u64 - 16) / 16 + 4;
        let sub = (idx as u64 - 16) % 16;
        (16 + sub) << (p - 4)
    }

    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::index(us).min(1023)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts, emptying the histogram when `reset`.
    pub(crate) fn snapshot(&self, reset: bool) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| {
                if reset {
                    b.swap(0, Ordering::Relaxed)
                } else {
                    b.load(Ordering::Relaxed)
                }
            })
            .collect()
    }

    pub(crate) fn quantile(counts: &[u64], q: f64) -> u64 {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i);
            }
        }
        Self::value(counts.len() - 1)
    }
}
