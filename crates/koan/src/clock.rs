//! Wall-clock time that follows tokio's clock when tests pause it.

use std::cell::Cell;

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
    /// clock: the system clock itself is read about once a second per thread (see
    /// [`SECOND`]) instead of on every finished action.
    pub(crate) fn unix_secs_at(&self, now: Instant) -> i64 {
        match self {
            Clock::System => system_secs_at(now.into_std()),
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

thread_local! {
    /// This thread's view of the system clock's current Unix second, and the
    /// monotonic moment it ends: within that second, [`Clock::unix_secs_at`] is a
    /// comparison of two instants instead of a read of the wall clock (on a virtual
    /// machine a clock read costs more than the rest of a finished action's
    /// counting). Per thread rather than shared: no atomics, no subtraction from a
    /// common origin, and each thread reads the wall clock about once a second.
    ///
    /// As before, a step of the wall clock is seen at the end of the current second,
    /// and an instant counted at the turn of a second may land in the next one a few
    /// nanoseconds early, as the throughput ring's buckets allow at their first
    /// instant.
    static SECOND: Cell<Option<(std::time::Instant, i64)>> = const { Cell::new(None) };
}

/// The Unix second at `now` (a moment just read), by [`SECOND`].
fn system_secs_at(now: std::time::Instant) -> i64 {
    if let Ok(Some((ends, secs))) = SECOND.try_with(Cell::get)
        && now < ends
    {
        return secs;
    }
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => {
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let left = std::time::Duration::from_nanos(u64::from(1_000_000_000 - d.subsec_nanos()));
            if let Some(ends) = now.checked_add(left) {
                // Gone only while the thread exits: the next call reads the clock.
                let _ = SECOND.try_with(|s| s.set(Some((ends, secs))));
            }
            secs
        }
        // Before 1970: not kept (no test or host runs there).
        Err(_) => Clock::System.unix_secs(),
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
