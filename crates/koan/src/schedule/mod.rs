//! Schedules of periodic services: a fixed interval or a cron expression, a policy for
//! missed ticks, and the driver that serializes scheduled runs with on-demand pokes.
//!
//! The next run is always computed from *now*: a slow run or a suspended machine never
//! causes a burst of catch-up runs nor a schedule that drifts into the past.

mod control;
mod driver;
mod here;
mod weekdays;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};

pub use control::TriggerOutcome;
pub(crate) use control::{PeriodicControl, Poke, PokeReceipt, PokeStart};
pub(crate) use driver::{Driver, spawn};
pub(crate) use here::run as run_here;

/// What to do with scheduled ticks that fell due while a run was in progress or the
/// machine was stalled.
///
/// Pokes (`trigger`, `check-queue`) that arrive during a run are always coalesced into
/// exactly one follow-up run. Scheduled ticks follow this policy: with the default
/// [`Skip`](MissedTickPolicy::Skip) a tick missed during a long run is not run late;
/// [`CatchUpOnce`](MissedTickPolicy::CatchUpOnce) turns any number of missed ticks into
/// exactly one follow-up run. No policy ever runs a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MissedTickPolicy {
    /// Drop the missed ticks and wait for the next one on the schedule (default).
    #[default]
    Skip,
    /// Start the next period when the run ends: `next = end + period`.
    Delay,
    /// Run once right away for all the missed ticks together, then resume the schedule.
    CatchUpOnce,
}

/// When a periodic service runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every fixed period.
    Every(Duration),
    /// On a cron expression (UTC).
    Cron(CronSchedule),
}

/// A parsed cron expression and the text it came from.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    inner: Box<cron::Schedule>,
}

impl CronSchedule {
    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.inner.after(&after).next()
    }
}

/// The longest interval a periodic service may have: 10 years. Beyond it, the
/// wall time of its next run (`next_run`) was out of the calendar's range, and a
/// status query panicked (seen with `every = "100000000000d"`).
pub const MAX_PERIOD: Duration = Duration::from_secs(3650 * 24 * 3600);

impl Schedule {
    /// Every `period`; zero, or longer than [`MAX_PERIOD`], is a `Config` error.
    pub fn every(period: Duration) -> Result<Self> {
        if period.is_zero() {
            return Err(Error::new(
                ErrorKind::Config,
                "a periodic interval must be longer than zero (e.g. `every = \"30s\"`)",
            ));
        }
        if period > MAX_PERIOD {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "a periodic interval must be at most 10 years (3650 days), got {}; for a yearly or rarer run use `cron` (e.g. `0 0 1 1 *`)",
                    crate::util::fmt_duration(period)
                ),
            ));
        }
        Ok(Schedule::Every(period))
    }

    /// A cron expression: six fields with seconds (`"0 */5 * * * *"`), optionally a
    /// seventh for the year, or the classic five fields (`"*/5 * * * *"`, seconds = 0).
    pub fn cron(expression: &str) -> Result<Self> {
        let trimmed = expression.trim();
        let fields = trimmed.split_whitespace().count();
        if !(5..=7).contains(&fields) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "invalid cron expression `{}`: it has {fields} fields; expected 5 fields \
                     (min hour day month weekday), 6 with seconds first, or 7 with a year, \
                     e.g. `0 */5 * * * *`",
                    expression.escape_debug()
                ),
            ));
        }
        let invalid = |why: &str| {
            let fields_are = if fields == 5 {
                "min hour day month weekday; weekday 0-7 (0 and 7 are Sunday) or SUN-SAT, as in Unix cron"
            } else {
                "sec min hour day month weekday [year]; weekday 1-7 (1 is Sunday) or SUN-SAT, as in Quartz"
            };
            Error::new(
                ErrorKind::Config,
                format!(
                    "invalid cron expression `{}`: {why} (fields: {fields_are}; seconds and minutes 0-59, hours 0-23, day of month 1-31, month 1-12)",
                    expression.escape_debug(),
                ),
            )
        };
        let normalized = if fields == 5 {
            // The weekday as Unix cron reads it (`weekdays.rs`).
            let mut parts: Vec<&str> = trimmed.split_whitespace().collect();
            let weekday = weekdays::unix_to_names(parts[4]).map_err(|why| invalid(&why))?;
            parts[4] = &weekday;
            format!("0 {}", parts.join(" "))
        } else {
            trimmed.to_owned()
        };
        let inner = cron::Schedule::from_str(&normalized).map_err(|e| {
            // The parser's message ends with what it found wrong, after the
            // expression and a caret on lines of their own; its bound is inclusive.
            let text = e.to_string();
            let why = text
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty() && *l != "^")
                .unwrap_or("not a cron expression")
                .replace("must be less than", "must be at most");
            invalid(&why)
        })?;
        Ok(Schedule::Cron(CronSchedule {
            expression: expression.to_owned(),
            inner: Box::new(inner),
        }))
    }

    /// Refuses a schedule that never fires after `now`, looking 10 years ahead (a
    /// cron of February 30th, or of a year gone by): such a service would be
    /// built, started, and never run, with nothing to say so.
    pub fn check_fires(&self, now: DateTime<Utc>) -> Result<()> {
        let Schedule::Cron(c) = self else {
            return Ok(());
        };
        let horizon = now + chrono::TimeDelta::days(3653);
        match c.next_after(now) {
            Some(next) if next <= horizon => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "cron expression `{}` never fires: no time in the next 10 years matches it (check the day of the month against the month, and the year)",
                    c.expression.escape_debug()
                ),
            )),
        }
    }

    /// Parses a human duration (`"90s"`, `"5m"`, `"1h 30m"`) into an interval schedule.
    pub fn parse_every(text: &str) -> Result<Self> {
        let period = parse_duration(text)?;
        Schedule::every(period)
    }

    /// A short description: `every 1h` or `cron 0 */5 * * * *`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(p) => format!("every {}", crate::util::fmt_duration(*p)),
            Schedule::Cron(c) => format!("cron {}", c.expression),
        }
    }

    /// The first due instant for a service started at `start`.
    pub(crate) fn first_due(
        &self,
        start: Instant,
        initial_delay: Duration,
        run_on_startup: bool,
        clock: &Clock,
    ) -> Instant {
        let anchor = crate::util::after(start, initial_delay);
        if run_on_startup {
            return anchor;
        }
        match self {
            Schedule::Every(p) => crate::util::after(anchor, *p),
            Schedule::Cron(_) => self.after(anchor, clock),
        }
    }

    /// The first fire time strictly after `instant`.
    fn after(&self, instant: Instant, clock: &Clock) -> Instant {
        match self {
            Schedule::Every(p) => crate::util::after(instant, *p),
            Schedule::Cron(c) => {
                let wall = clock.wall_at(instant);
                match c.next_after(wall) {
                    Some(next) => {
                        let delta = (next - wall).to_std().unwrap_or(Duration::ZERO);
                        crate::util::after(instant, delta)
                    }
                    // An expression that never fires again (a past year): park far away.
                    None => crate::util::after(instant, Duration::from_secs(100 * 365 * 24 * 3600)),
                }
            }
        }
    }

    /// The next due instant after a run that ended at `now`.
    ///
    /// `planned` is the due instant the driver was waiting for; `consumed` is when
    /// this run started if it was that scheduled one (`None`: it was a poke).
    pub(crate) fn next_due(
        &self,
        policy: MissedTickPolicy,
        anchor: Instant,
        planned: Instant,
        consumed: Option<Instant>,
        now: Instant,
        clock: &Clock,
    ) -> Instant {
        if consumed.is_some() && policy == MissedTickPolicy::Delay {
            return self.after(now, clock);
        }
        // The usual turn, without a division: under `Skip` an interval's due instant
        // is always a point of its grid (`first_due` and `following` give nothing
        // else, and a poke leaves it alone), so the next point is one period on.
        if consumed.is_some()
            && policy == MissedTickPolicy::Skip
            && let Schedule::Every(p) = self
            && planned >= anchor
        {
            let next = crate::util::after(planned, *p);
            if next > now {
                return next;
            }
        }
        // A scheduled run that started late (a process stopped, a runtime starved) ran
        // for every tick due before its start: only one due after it is missed. Counted
        // from `planned`, the ticks before its start were missed too, and `CatchUpOnce`
        // ran again at once (two runs in the same millisecond after a process was
        // stopped for 45 s; found by a tester).
        let candidate = match consumed {
            Some(started) => self.following(anchor, planned.max(started), clock),
            None => planned,
        };
        if candidate > now {
            return candidate;
        }
        match policy {
            MissedTickPolicy::CatchUpOnce => now,
            MissedTickPolicy::Delay => self.after(now, clock),
            MissedTickPolicy::Skip => self.following(anchor, now, clock),
        }
    }

    /// The first point of the schedule strictly after `t` (interval grids are anchored).
    fn following(&self, anchor: Instant, t: Instant, clock: &Clock) -> Instant {
        match self {
            Schedule::Every(p) => {
                if t < anchor {
                    return anchor;
                }
                let elapsed = (t - anchor).as_nanos();
                let period = p.as_nanos().max(1);
                let k = elapsed / period + 1;
                let offset = Duration::from_nanos(u64::try_from(period * k).unwrap_or(u64::MAX));
                crate::util::after(anchor, offset)
            }
            Schedule::Cron(_) => self.after(t, clock),
        }
    }
}

/// Parses `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("invalid duration `{text}`: {e}; write e.g. `30s`, `5m`, `1h 30m` or `250ms`"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next due instant of an interval under `Skip`, for every due point of the
    /// grid and every end of a run from on time to three periods late, is the grid's
    /// first point strictly after the end (or the next one when the run was quick).
    #[test]
    fn an_interval_under_skip_stays_on_its_grid() {
        let clock = Clock::System;
        let p = Duration::from_millis(100);
        let schedule = Schedule::every(p).expect("a period");
        let anchor = Instant::now();
        for k in 0..5u32 {
            let planned = anchor + p * k;
            for late_ms in [0u64, 1, 99, 100, 101, 250, 300] {
                let now = planned + Duration::from_millis(late_ms);
                let next = schedule.next_due(
                    MissedTickPolicy::Skip,
                    anchor,
                    planned,
                    Some(planned),
                    now,
                    &clock,
                );
                let periods = u32::try_from(late_ms / 100).expect("small") + 1;
                assert_eq!(next, planned + p * periods, "k {k}, {late_ms} ms late");
                assert_eq!(next, schedule.following(anchor, planned.max(now), &clock));
            }
        }
    }
}
