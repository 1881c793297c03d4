//! Wall-clock time that follows tokio's clock when tests pause it.

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

#[cfg(test)]
mod tests {
    use super::*;

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
