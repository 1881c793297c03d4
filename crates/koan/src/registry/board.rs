//! A service's published status: its state, run counts and last run, kept in a
//! watch channel (so tests and dashboards wait for changes instead of polling),
//! and its recent activity (run history, action counts).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use super::activity::Activity;
use super::status::{RunOutcome, RunRecord, RunStamp, ServiceState};
use crate::clock::{Clock, WallNanos};
use crate::service::RunReason;

/// The mutable part of a status, published through a watch channel so tests and
/// dashboards can wait for changes instead of polling.
#[derive(Debug, Clone)]
pub(crate) struct StatusCore {
    pub(crate) state: ServiceState,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) last_run: Option<RunStamp>,
    /// On tokio's clock: a wall time only when read (it is in the future, so the
    /// monotonic clock is the one it is due by).
    pub(crate) next_run: Option<Instant>,
    pub(crate) runs: u64,
    pub(crate) failures: u64,
    pub(crate) consecutive_failures: u32,
    pub(crate) restarts: u32,
    pub(crate) last_error: Option<String>,
}

/// The status of one service and the one place that writes it.
pub(crate) struct StatusBoard {
    status: watch::Sender<StatusCore>,
    activity: Activity,
    clock: Clock,
}

impl StatusBoard {
    /// A board in `Disabled` state when `disabled`, `Pending` otherwise.
    pub(crate) fn new(disabled: bool, clock: Clock, activity: Activity) -> Self {
        let state = if disabled {
            ServiceState::Disabled
        } else {
            ServiceState::Pending
        };
        let (status, _) = watch::channel(StatusCore {
            state,
            started_at: None,
            last_run: None,
            next_run: None,
            runs: 0,
            failures: 0,
            consecutive_failures: 0,
            restarts: 0,
            last_error: None,
        });
        StatusBoard {
            status,
            activity,
            clock,
        }
    }

    /// Updates the status with `f` (which says whether it changed anything).
    /// Watchers are woken only when some exist: waking nobody still costs `watch`
    /// eight locks, per update of every service (10,000 periodic services at 100 ms
    /// make 100,000 updates a second).
    fn update(&self, f: impl FnOnce(&mut StatusCore) -> bool) {
        self.status
            .send_if_modified(|s| f(s) && self.status.receiver_count() > 0);
    }

    pub(crate) fn state(&self) -> ServiceState {
        self.status.borrow().state
    }

    pub(crate) fn set_state(&self, state: ServiceState) {
        self.update(|s| {
            if s.state == state {
                return false;
            }
            // A service that failed for good or is disabled stays that way.
            if matches!(s.state, ServiceState::Failed | ServiceState::Disabled)
                && !matches!(state, ServiceState::Failed)
            {
                return false;
            }
            s.state = state;
            true
        });
    }

    pub(crate) fn fail(&self, error: String) {
        self.update(|s| {
            s.state = ServiceState::Failed;
            s.last_error = Some(error);
            true
        });
    }

    pub(crate) fn mark_started(&self, state: ServiceState) {
        let now = self.clock.now();
        self.update(|s| {
            s.state = state;
            s.started_at = Some(now);
            true
        });
    }

    /// Forgets consecutive failures (a restarted service that has stayed up).
    pub(crate) fn clear_failures(&self) {
        self.update(|s| std::mem::take(&mut s.consecutive_failures) != 0);
    }

    pub(crate) fn add_restart(&self) {
        self.update(|s| {
            s.restarts += 1;
            true
        });
    }

    pub(crate) fn set_next_run(&self, next: Option<Instant>) {
        self.update(|s| {
            s.next_run = next;
            true
        });
    }

    /// Records a finished run that started at the wall time `started_at`, and
    /// returns the record.
    pub(crate) fn record_run(
        &self,
        reason: RunReason,
        started_at: DateTime<Utc>,
        duration: Duration,
        outcome: RunOutcome,
    ) -> RunRecord {
        let ended = WallNanos::from(self.clock.now());
        let stamp = self.stamp(reason, started_at.into(), duration, outcome);
        self.update_run(&stamp, ended, None);
        stamp.record()
    }

    /// Records a finished run, the next run and the new state in one update (one
    /// wake-up of status watchers per periodic run). `ended` is the wall time the
    /// run ended at and `duration` how long it took, so it started at `ended -
    /// duration`. Returns the record when `record` asks for it (a poke's waiters).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish_run(
        &self,
        reason: RunReason,
        duration: Duration,
        outcome: RunOutcome,
        ended: WallNanos,
        next_run: Option<Instant>,
        state: ServiceState,
        record: bool,
    ) -> Option<RunRecord> {
        let stamp = self.stamp(reason, ended.minus(duration), duration, outcome);
        self.update_run(&stamp, ended, Some((next_run, state)));
        record.then(|| stamp.record())
    }

    fn stamp(
        &self,
        reason: RunReason,
        started: WallNanos,
        duration: Duration,
        outcome: RunOutcome,
    ) -> RunStamp {
        RunStamp {
            reason,
            started,
            duration_ms: crate::util::millis(duration),
            outcome,
        }
    }

    fn update_run(
        &self,
        stamp: &RunStamp,
        ended: WallNanos,
        then: Option<(Option<Instant>, ServiceState)>,
    ) {
        self.activity.run_finished(stamp, ended);
        self.update(|s| {
            s.runs += 1;
            if stamp.outcome.is_failure() {
                s.failures += 1;
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.last_error = stamp.outcome.error_text();
            } else if stamp.outcome.is_success() {
                s.consecutive_failures = 0;
            }
            s.last_run = Some(stamp.clone());
            if let Some((next_run, state)) = then {
                s.next_run = next_run;
                if !matches!(s.state, ServiceState::Failed | ServiceState::Disabled) {
                    s.state = state;
                }
            }
            true
        });
    }

    /// Its recent runs and action counts.
    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }

    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn watch(&self) -> watch::Receiver<StatusCore> {
        self.status.subscribe()
    }

    /// A copy of the current status.
    pub(crate) fn core(&self) -> StatusCore {
        self.status.borrow().clone()
    }
}
