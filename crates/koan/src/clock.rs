//! Wall-clock time that follows tokio's clock when tests pause it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Where the host reads the wall time from.
///
/// Schedules sleep on tokio's monotonic clock; the wall time is needed for cron
/// expressions and for the timestamps in status. In tests the tokio clock is paused,
/// so the virtual clock derives wall time from it to keep both in step.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    System,
    Virtual { wall: DateTime<Utc>, at: Instant },
}

impl Clock {
    /// A clock that starts at the real wall time and then follows tokio's clock.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn following_tokio() -> Self {
        Clock::Virtual {
            wall: Utc::now(),
            at: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Virtual { wall, at } => {
                *wall + chrono::Duration::from_std(at.elapsed()).unwrap_or_default()
            }
        }
    }

    /// The wall time now in whole seconds since the Unix epoch (rounded down, as
    /// `now().timestamp()`), read without building a date: what per-second counts
    /// need on every action.
    pub(crate) fn unix_secs(&self) -> i64 {
        match self {
            Clock::System => {
                match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                    Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    Err(before) => {
                        let d = before.duration();
                        let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                        -whole - i64::from(d.subsec_nanos() > 0)
                    }
                }
            }
            Clock::Virtual { .. } => self.now().timestamp(),
        }
    }

    /// [`unix_secs`](Self::unix_secs) at `now`, a moment just read from tokio's
    /// clock: the system clock itself is read about once a second (see
    /// [`SecondWindow`]) instead of on every finished action.
    pub(crate) fn unix_secs_at(&self, now: Instant) -> i64 {
        match self {
            Clock::System => SYSTEM_SECOND.at(now.into_std()),
            Clock::Virtual { .. } => self.now().timestamp(),
        }
    }

    /// The wall time at a tokio instant (past or future).
    pub(crate) fn wall_at(&self, instant: Instant) -> DateTime<Utc> {
        let now = Instant::now();
        Self::wall_at_from(instant, now, self.now())
    }

    /// The wall time at `instant`, given that `now` is the wall time `wall`: several
    /// instants converted from one pair of clock reads.
    pub(crate) fn wall_at_from(
        instant: Instant,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> DateTime<Utc> {
        if instant >= now {
            wall + chrono::Duration::from_std(instant - now).unwrap_or_default()
        } else {
            wall - chrono::Duration::from_std(now - instant).unwrap_or_default()
        }
    }
}

/// The system clock's current Unix second, and the monotonic moment it ends: within
/// that second, [`Clock::unix_secs_at`] is a comparison instead of a read of the
/// wall clock (on a virtual machine a clock read costs more than the rest of a
/// finished action's counting).
///
/// Hand-written with two atomics rather than a lock (it is on every action's path).
/// A reader racing a refresh at the turn of a second may get the new second a few
/// nanoseconds early, as the throughput ring's buckets already allow at their first
/// instant; a step of the wall clock is seen at the end of the current second.
struct SecondWindow {
    /// Nanoseconds after [`anchor`] at which `secs` ends; 0 before the first read.
    ends: AtomicU64,
    secs: AtomicI64,
}

static SYSTEM_SECOND: SecondWindow = SecondWindow {
    ends: AtomicU64::new(0),
    secs: AtomicI64::new(0),
};

/// The monotonic origin of [`SecondWindow::ends`].
fn anchor() -> std::time::Instant {
    static ANCHOR: OnceLock<std::time::Instant> = OnceLock::new();
    *ANCHOR.get_or_init(std::time::Instant::now)
}

impl SecondWindow {
    fn at(&self, now: std::time::Instant) -> i64 {
        let at =
            u64::try_from(now.saturating_duration_since(anchor()).as_nanos()).unwrap_or(u64::MAX);
        if at < self.ends.load(Ordering::Acquire) {
            return self.secs.load(Ordering::Relaxed);
        }
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => {
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let left = u64::from(1_000_000_000 - d.subsec_nanos());
                self.secs.store(secs, Ordering::Relaxed);
                self.ends.store(at.saturating_add(left), Ordering::Release);
                secs
            }
            // Before 1970: not kept (no test or host runs there).
            Err(_) => Clock::System.unix_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_secs_at_now_is_the_timestamp_of_now() {
        // Twice: the first read opens the second's window, the second reads it.
        for _ in 0..2 {
            let before = Utc::now().timestamp();
            let secs = Clock::System.unix_secs_at(Instant::now());
            let after = Utc::now().timestamp();
            assert!(
                before <= secs && secs <= after,
                "{before} ≤ {secs} ≤ {after}"
            );
        }
    }

    #[test]
    fn unix_secs_is_the_timestamp_of_now() {
        let before = Utc::now().timestamp();
        let secs = Clock::System.unix_secs();
        let after = Utc::now().timestamp();
        assert!(
            before <= secs && secs <= after,
            "{before} ≤ {secs} ≤ {after}"
        );
    }
}
