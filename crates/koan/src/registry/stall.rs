//! The one rule for a stalled periodic run: a tick that has not ended long after it
//! fell due makes its service's health `degraded`, saying so. Before, a tick stuck
//! for ever (a query that never answers, a lock never released) left the service
//! `running`, healthy and ready, its `next_run` silently in the past (found by a
//! probe).
//!
//! A run is measured from the later of its due time (`next_run`) and its start (kept
//! with the state `Running`, on the line a run writes anyway). From its due time
//! alone, a run that started late looked as old as its lateness: after a process
//! was stopped for 30 s, a run of 3 s said it had gone on for 29 s, past its limit of
//! 10 s, and any pause longer than the limit made every periodic service running
//! then say it had stalled (found by a tester). The due time still counts when it
//! is the later: a tick held back by a caller's run that began before it fell due
//! (see `schedule::here`) is late from when it fell due, however long ago that run
//! began.

use std::time::Duration;

use tokio::time::Instant;

use super::board::StatusCore;
use super::spec::ServiceSpec;
use super::status::ServiceState;
use crate::health::HealthReport;
use crate::schedule::Schedule;

/// The least `stall_after` by default: a minute, whatever the period.
pub(crate) const MIN_STALL: Duration = Duration::from_secs(60);

/// Periods a run may go on past its due time, by default, before it counts as
/// stalled.
const PERIODS: u32 = 10;

/// How long past its due time a run counts as stalled: the service's
/// `stall_after`, else ten of its periods and at least [`MIN_STALL`].
pub(crate) fn window(spec: &ServiceSpec, schedule: &Schedule) -> Duration {
    if let Some(set) = spec.options.stall_after {
        return set;
    }
    let period = match schedule {
        Schedule::Every(p) => *p,
        Schedule::Cron(c) => {
            // The gap between its next two fire times (an hour if it has none).
            let now = spec.clock.now();
            c.next_after(now)
                .and_then(|a| (c.next_after(a)? - a).to_std().ok())
                .unwrap_or(Duration::from_secs(3600))
        }
    };
    period.saturating_mul(PERIODS).max(MIN_STALL)
}

/// The report of a periodic service whose run has gone on past its window, if it
/// has.
pub(crate) fn stalled(spec: &ServiceSpec, core: &StatusCore) -> Option<HealthReport> {
    let schedule = spec.schedule.as_ref()?;
    if core.state != ServiceState::Running {
        return None;
    }
    let due = core.next_run?;
    let since = core.run_started.map_or(due, |started| started.max(due));
    let late = Instant::now().saturating_duration_since(since);
    let window = window(spec, schedule);
    if late <= window {
        return None;
    }
    let fmt = crate::util::fmt_duration;
    Some(HealthReport::degraded(format!(
        "a run has not ended: the run due at {} ({}) has gone on for at least {}, past its stall limit of {} (`stall_after`; by default ten periods, at least a minute): a tick that waits on something that never answers?",
        spec.clock
            .wall_at(due)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        schedule.describe(),
        fmt(late),
        fmt(window),
    )))
}
