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
    /// A clock that starts at `wall` and then follows tokio's clock.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn following_tokio(wall: DateTime<Utc>) -> Self {
        Clock::Virtual {
            wall,
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

    /// [`unix_secs`](Self::unix_secs) at `now`, a [`Moment`] just read: the system
    /// clock itself is read about once a second per thread (see [`MOMENT_SECOND`])
    /// instead of on every finished action. A virtual clock reads tokio's.
    pub(crate) fn unix_secs_at(&self, now: Moment) -> i64 {
        match self {
            Clock::System => window(&MOMENT_SECOND, now, Moment::checked_add)
                .map_or_else(|| Clock::System.unix_secs(), |(_, secs)| secs),
            Clock::Virtual { .. } => self.now().timestamp(),
        }
    }

    /// The wall time at a tokio instant (past or future).
    pub(crate) fn wall_at(&self, instant: Instant) -> DateTime<Utc> {
        let now = Instant::now();
        Self::wall_at_from(instant, now, self.now())
    }

    /// The wall time at `instant` (past or future), given `now`, a moment just read
    /// from tokio's clock: with the system clock, measured from this thread's
    /// current second (see [`SECOND`]), so the wall clock is read about once a
    /// second per thread and no date is built.
    pub(crate) fn wall_nanos_at(&self, instant: Instant, now: Instant) -> WallNanos {
        match self {
            Clock::System => match system_window(now.into_std()) {
                Some((ends, secs)) => WallNanos(shifted(
                    secs.saturating_add(1).saturating_mul(1_000_000_000),
                    Instant::from_std(ends),
                    instant,
                )),
                None => WallNanos::from(Self::wall_at_from(instant, now, Utc::now())),
            },
            Clock::Virtual { wall, at } => {
                WallNanos(shifted(WallNanos::from(*wall).0, *at, instant))
            }
        }
    }

    /// The wall time at `instant`, given that `now` is the wall time `wall`: several
    /// instants converted from one pair of clock reads.
    pub(crate) fn wall_at_from(
        instant: Instant,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> DateTime<Utc> {
        // Saturating at the calendar's ends: an instant that far off (a delay of
        // thousands of years) must not panic a status query.
        if instant >= now {
            chrono::Duration::from_std(instant - now)
                .ok()
                .and_then(|d| wall.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        } else {
            chrono::Duration::from_std(now - instant)
                .ok()
                .and_then(|d| wall.checked_sub_signed(d))
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
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
    /// As [`SECOND`], in [`Moment`]s: the second a finished action is counted in.
    static MOMENT_SECOND: Cell<Option<(Moment, i64)>> = const { Cell::new(None) };
}

/// This thread's second around `now` (a moment just read): the monotonic moment it
/// ends and its Unix second, the clock read only when `now` has left the window.
/// `None` before 1970 (not kept: no test or host runs there).
fn system_window(now: std::time::Instant) -> Option<(std::time::Instant, i64)> {
    window(&SECOND, now, std::time::Instant::checked_add)
}

/// [`system_window`] on the clock of `T` (`add` moves a moment of it).
fn window<T: Copy + Ord + 'static>(
    second: &'static std::thread::LocalKey<Cell<Option<(T, i64)>>>,
    now: T,
    add: fn(&T, std::time::Duration) -> Option<T>,
) -> Option<(T, i64)> {
    if let Ok(Some((ends, secs))) = second.try_with(Cell::get)
        && now < ends
    {
        return Some((ends, secs));
    }
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let left = std::time::Duration::from_nanos(u64::from(1_000_000_000 - d.subsec_nanos()));
    let ends = add(&now, left)?;
    // Gone only while the thread exits: the next call reads the clock.
    let _ = second.try_with(|s| s.set(Some((ends, secs))));
    Some((ends, secs))
}

/// A moment of an action's life (accepted, started, ended), for its queue time, its
/// run time and the second it is counted in: the processor's time-stamp counter, as
/// `quanta` reads and scales it (a few nanoseconds; it falls back to the monotonic
/// clock where the counter is not invariant). Tokio's clock costs a vDSO call with a
/// fence, 20–40 ns on these virtual machines, which a run pays twice: 13 % of B1's
/// samples were those two reads. Deadlines stay on tokio's clock, which tests pause;
/// so do a virtual clock's per-second counts (see [`Clock::unix_secs_at`]).
pub(crate) type Moment = quanta::Instant;

/// The counter behind [`moment`], koan's own: `quanta::Instant::now` first looks
/// for a clock a test set on the thread (a thread-local `RefCell`, about 40
/// instructions a read through `LocalKey::with` where the compiler does not
/// inline it, B1 by callgrind), which koan never sets.
static COUNTER: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();

/// The [`Moment`] now.
#[inline]
pub(crate) fn moment() -> Moment {
    COUNTER.get_or_init(quanta::Clock::new).now()
}

/// Calibrates the counter behind [`moment`] (half a millisecond here, 200 ms at most,
/// on the first read in the process) so that no action pays for it: called as a host
/// is built.
pub(crate) fn calibrate() {
    let _ = moment();
}

/// `base` moved by the signed distance from `from` to `to`, in nanoseconds
/// (saturating).
fn shifted(base: i64, from: Instant, to: Instant) -> i64 {
    if to >= from {
        base.saturating_add(i64::try_from((to - from).as_nanos()).unwrap_or(i64::MAX))
    } else {
        base.saturating_sub(i64::try_from((from - to).as_nanos()).unwrap_or(i64::MAX))
    }
}

/// A wall time as nanoseconds since the Unix epoch: what a status keeps per run, so
/// that a run's times cost a subtraction instead of a calendar computation (a
/// periodic run used to spend about 600 instructions building dates with chrono).
/// It becomes a [`DateTime`] only when a status is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct WallNanos(i64);

impl WallNanos {
    /// The date and time, saturating outside chrono's range for nanoseconds
    /// (1677–2262).
    pub(crate) fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.0)
    }

    /// Nanoseconds since the Unix epoch.
    pub(crate) fn nanos(self) -> i64 {
        self.0
    }

    /// The wall time `nanos` nanoseconds after the Unix epoch.
    pub(crate) fn from_nanos(nanos: i64) -> Self {
        WallNanos(nanos)
    }

    /// The whole seconds since the Unix epoch (rounded down).
    pub(crate) fn unix_secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    /// The wall time `d` earlier (saturating).
    pub(crate) fn minus(self, d: std::time::Duration) -> Self {
        WallNanos(
            self.0
                .saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        )
    }
}

impl From<DateTime<Utc>> for WallNanos {
    fn from(t: DateTime<Utc>) -> Self {
        WallNanos(t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
            i64::MIN
        } else {
            i64::MAX
        }))
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
            let secs = Clock::System.unix_secs_at(moment());
            let after = Utc::now().timestamp();
            assert!(
                before <= secs && secs <= after,
                "{before} ≤ {secs} ≤ {after}"
            );
        }
    }

    #[test]
    fn wall_nanos_follow_a_virtual_clock_exactly_both_ways() {
        let wall = DateTime::from_timestamp(1_700_000_000, 250).expect("in range");
        let at = Instant::now();
        let clock = Clock::Virtual { wall, at };
        let d = std::time::Duration::from_millis(1500);
        let later = clock.wall_nanos_at(at + d, at);
        assert_eq!(
            later.to_datetime(),
            wall + chrono::Duration::milliseconds(1500)
        );
        assert_eq!(later.minus(d).to_datetime(), wall);
        let earlier = Clock::Virtual { wall, at: at + d }.wall_nanos_at(at, at);
        assert_eq!(
            earlier.to_datetime(),
            wall - chrono::Duration::milliseconds(1500)
        );
    }

    #[test]
    fn wall_nanos_of_the_system_clock_are_now_and_keep_distances() {
        for _ in 0..2 {
            let now = Instant::now();
            let x = Clock::System.wall_nanos_at(now, now).to_datetime();
            // The window maps the monotonic clock onto the wall clock exactly when it
            // is opened; within its second the two drift by microseconds at most.
            // (100 ms: room for a slow test machine, far from a second off.)
            let gap = (Utc::now() - x).num_milliseconds().abs();
            assert!(gap < 100, "{x} is {gap} ms from now");
            let d = std::time::Duration::from_secs(90);
            let ahead = Clock::System.wall_nanos_at(now + d, now).to_datetime();
            assert_eq!(ahead - x, chrono::Duration::seconds(90));
        }
        let old = DateTime::from_timestamp(-5, 0).expect("in range");
        assert_eq!(WallNanos::from(old).to_datetime(), old);
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
