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

    /// The wall time at a tokio instant (past or future).
    pub(crate) fn wall_at(&self, instant: Instant) -> DateTime<Utc> {
        let now = Instant::now();
        let wall = self.now();
        if instant >= now {
            wall + chrono::Duration::from_std(instant - now).unwrap_or_default()
        } else {
            wall - chrono::Duration::from_std(now - instant).unwrap_or_default()
        }
    }
}
