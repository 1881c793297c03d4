//! Succeeded and failed work per second (the last two minutes) and per hour (the last
//! day), for dashboards: every finished run and action of the host's services counts.
//!
//! Kept in memory, in two fixed rings of buckets updated with atomics, with no lock
//! shared between services. A finished action costs one atomic write, to its
//! second's bucket (a line every core running actions writes): the hours' ring is
//! written only when a second's bucket is reused a lap later (its counts are then
//! folded into their hour), and a read of the hours adds the seconds not folded yet.
//! A bucket is reused when its time comes round again; an update that races with
//! that reuse (or a read that races with a fold) may be lost or counted in the wrong
//! bucket, so counts at a bucket's first instant are approximate. Nothing survives a
//! restart.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Seconds kept in the per-second ring.
pub(crate) const SECONDS_KEPT: usize = 120;
/// Hours kept in the per-hour ring (the current hour included).
pub(crate) const HOURS_KEPT: usize = 24;

struct Bucket {
    /// Which period (time / width) the counts are of; -1 before first use.
    period: AtomicI64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

struct Ring {
    width: i64,
    buckets: Box<[Bucket]>,
}

impl Ring {
    fn new(width: i64, len: usize) -> Self {
        let buckets = (0..len)
            .map(|_| Bucket {
                period: AtomicI64::new(-1),
                succeeded: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            })
            .collect();
        Ring { width, buckets }
    }

    fn slot(&self, period: i64) -> &Bucket {
        let len = self.buckets.len() as i64;
        &self.buckets[period.rem_euclid(len) as usize]
    }

    /// Adds `n` to the bucket of `secs`. When that bucket held an older period, it is
    /// reused, and the counts it held are handed back with the second they were of.
    fn add(&self, secs: i64, failed: bool, n: u64) -> Option<(i64, Counts)> {
        let period = secs.div_euclid(self.width);
        let b = self.slot(period);
        let mut seen = b.period.load(Ordering::Acquire);
        let mut reused = None;
        while seen != period {
            if seen > period {
                return None; // older than what the ring keeps
            }
            match b
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let old = Counts {
                        succeeded: b.succeeded.swap(0, Ordering::AcqRel),
                        failed: b.failed.swap(0, Ordering::AcqRel),
                    };
                    reused = (seen >= 0).then_some((seen * self.width, old));
                    break;
                }
                Err(now) => seen = now,
            }
        }
        let counter = if failed { &b.failed } else { &b.succeeded };
        counter.fetch_add(n, Ordering::AcqRel);
        reused
    }

    /// The bucket holding `period` and its counts, if it still does.
    fn counts(&self, period: i64) -> Option<Counts> {
        let b = self.slot(period);
        (b.period.load(Ordering::Acquire) == period).then(|| Counts {
            succeeded: b.succeeded.load(Ordering::Acquire),
            failed: b.failed.load(Ordering::Acquire),
        })
    }

    /// The buckets up to the one holding `secs`, oldest first.
    fn read(&self, secs: i64) -> Vec<ThroughputBucket> {
        let last = secs.div_euclid(self.width);
        let len = self.buckets.len() as i64;
        (last - len + 1..=last)
            .map(|period| {
                let c = self.counts(period).unwrap_or_default();
                ThroughputBucket {
                    start: Utc
                        .timestamp_opt(period * self.width, 0)
                        .single()
                        .unwrap_or_default(),
                    succeeded: c.succeeded,
                    failed: c.failed,
                }
            })
            .collect()
    }
}

/// Succeeded and failed counts of one bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    succeeded: u64,
    failed: u64,
}

/// The host's counts of finished work.
pub(crate) struct Throughput {
    seconds: Ring,
    hours: Ring,
}

impl std::fmt::Debug for Throughput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throughput").finish_non_exhaustive()
    }
}

impl Default for Throughput {
    fn default() -> Self {
        Throughput {
            seconds: Ring::new(1, SECONDS_KEPT),
            hours: Ring::new(3600, HOURS_KEPT),
        }
    }
}

impl Throughput {
    /// Counts one finished piece of work at `at`.
    #[cfg(test)]
    pub(crate) fn record(&self, at: DateTime<Utc>, failed: bool) {
        self.record_secs(at.timestamp(), failed);
    }

    /// Counts one finished piece of work at `secs` seconds since the Unix epoch: in
    /// its second only; a second's counts reach its hour when its bucket is reused.
    pub(crate) fn record_secs(&self, secs: i64, failed: bool) {
        if let Some((second, old)) = self.seconds.add(secs, failed, 1) {
            self.fold(second, old);
        }
    }

    /// Adds the counts of a second whose bucket was reused to its hour.
    fn fold(&self, second: i64, c: Counts) {
        for (failed, n) in [(false, c.succeeded), (true, c.failed)] {
            if n > 0 {
                // The hours' ring is never reused from here with counts to fold.
                let _ = self.hours.add(second, failed, n);
            }
        }
    }

    /// The counts as of `now`.
    pub(crate) fn snapshot(&self, now: DateTime<Utc>) -> ThroughputSnapshot {
        let secs = now.timestamp();
        let per_second = self.seconds.read(secs);
        let mut per_hour = self.hours.read(secs);
        // Every second still in its bucket (the last 120 that saw work, some of them
        // possibly older) is not in its hour yet.
        let first_hour = per_hour.first().map_or(0, |h| h.start.timestamp());
        for b in &self.seconds.buckets {
            let second = b.period.load(Ordering::Acquire);
            let Some(c) = (second >= 0).then(|| self.seconds.counts(second)).flatten() else {
                continue;
            };
            let hour = (second.div_euclid(3600) * 3600 - first_hour).div_euclid(3600);
            if let Some(h) = usize::try_from(hour).ok().and_then(|h| per_hour.get_mut(h)) {
                h.succeeded += c.succeeded;
                h.failed += c.failed;
            }
        }
        ThroughputSnapshot {
            now,
            per_second,
            per_hour,
        }
    }
}

/// Succeeded and failed work in one bucket of time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ThroughputBucket {
    /// When the bucket starts (a whole second or a whole hour).
    pub start: DateTime<Utc>,
    /// Runs and actions that succeeded.
    pub succeeded: u64,
    /// Runs and actions that failed (errors, panics, timeouts).
    pub failed: u64,
}

/// Finished work per second and per hour ([`crate::HostHandle::throughput`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ThroughputSnapshot {
    /// When it was read.
    pub now: DateTime<Utc>,
    /// The last 120 seconds, oldest first; the last bucket is the current second.
    pub per_second: Vec<ThroughputBucket>,
    /// The last 24 hours, oldest first; the last bucket is the current hour.
    pub per_hour: Vec<ThroughputBucket>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn counts_land_in_their_second_and_hour() {
        let t = Throughput::default();
        t.record(at(0), false);
        t.record(at(0), true);
        t.record(at(1), false);
        let s = t.snapshot(at(1));
        assert_eq!(s.per_second.len(), SECONDS_KEPT);
        let last = &s.per_second[SECONDS_KEPT - 1];
        let before = &s.per_second[SECONDS_KEPT - 2];
        assert_eq!((last.start, last.succeeded, last.failed), (at(1), 1, 0));
        assert_eq!(
            (before.start, before.succeeded, before.failed),
            (at(0), 1, 1)
        );
        let hour = s.per_hour.last().expect("24 hours");
        assert_eq!((hour.succeeded, hour.failed), (2, 1));
        assert_eq!(hour.start.timestamp() % 3600, 0);
    }

    #[test]
    fn a_bucket_reused_a_lap_later_starts_from_zero() {
        let t = Throughput::default();
        t.record(at(0), true);
        let lap = SECONDS_KEPT as i64;
        t.record(at(lap), false);
        let s = t.snapshot(at(lap));
        let last = s.per_second.last().expect("120 seconds");
        assert_eq!((last.succeeded, last.failed), (1, 0));
        // The old second is out of the window, not counted twice.
        assert_eq!(s.per_second.iter().map(|b| b.failed).sum::<u64>(), 0);
        // Work older than the ring keeps is ignored.
        t.record(at(0), true);
        assert_eq!(
            t.snapshot(at(lap))
                .per_second
                .last()
                .expect("120 seconds")
                .failed,
            0
        );
    }

    #[test]
    fn a_second_reused_a_lap_later_still_counts_in_its_hour() {
        let t = Throughput::default();
        let hour = 3600 * 10;
        t.record(at(hour), false);
        t.record(at(hour), true);
        t.record(at(hour + 1), false);
        // Reuses the bucket of `hour` (folded into its hour), then a later hour's.
        let lap = SECONDS_KEPT as i64;
        t.record(at(hour + lap), false);
        t.record(at(hour + 3600), true);
        let s = t.snapshot(at(hour + 3600));
        let this = s.per_hour.last().expect("24 hours");
        let before = &s.per_hour[HOURS_KEPT - 2];
        assert_eq!((before.succeeded, before.failed), (3, 1), "{s:?}");
        assert_eq!((this.succeeded, this.failed), (0, 1));
        assert_eq!(before.start.timestamp() % 3600, 0);
        // A second older than the day the hours keep is not counted anywhere.
        let t = Throughput::default();
        t.record(at(0), true);
        let day = 3600 * HOURS_KEPT as i64;
        assert!(t.snapshot(at(day)).per_hour.iter().all(|h| h.failed == 0));
    }

    #[test]
    fn quiet_seconds_read_as_zero() {
        let t = Throughput::default();
        t.record(at(0), false);
        let s = t.snapshot(at(30));
        assert_eq!(s.per_second.iter().map(|b| b.succeeded).sum::<u64>(), 1);
        assert_eq!(s.per_second[SECONDS_KEPT - 31].succeeded, 1);
    }
}
