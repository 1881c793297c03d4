//! A service's published status: its state, run counts and last run, kept beside the
//! service (no allocation of its own), with a change signal for those who wait on
//! it (tests), and its recent activity (run history, action counts).

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use super::activity::Activity;
use super::status::{RunOutcome, RunRecord, RunStamp, ServiceState};
use crate::clock::{Clock, WallNanos};
use crate::service::RunReason;

/// A service's status as read: what [`StatusBoard`] keeps, in one copy.
#[derive(Debug, Clone)]
pub(crate) struct StatusCore {
    pub(crate) state: ServiceState,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) last_run: Option<RunStamp>,
    /// On tokio's clock: a wall time only when read.
    pub(crate) next_run: Option<Instant>,
    /// When the periodic run in progress began, while the state is `Running`.
    pub(crate) run_started: Option<Instant>,
    pub(crate) runs: u64,
    pub(crate) failures: u64,
    pub(crate) consecutive_failures: u32,
    pub(crate) restarts: u32,
    pub(crate) last_error: Option<String>,
}

/// The status of one service and the one place that writes it.
///
/// What every periodic run writes (state, counts, next run) is one cache line of
/// its own, in the service's allocation, under its own lock; the rest (start, restarts,
/// last error) under another, written rarely; the last run is the history's newest
/// (kept here only when the history keeps none). 10,000 services at 100 ms make
/// 200,000 status writes a second, each a cache miss per line it touches. (It was
/// a `watch` channel of the whole status: about five lines a run, in an allocation
/// of its own, and the last run written twice.)
pub(crate) struct StatusBoard {
    hot: HotLine,
    cold: Mutex<ColdStatus>,
    /// Wakes those waiting for a change; made by the first of them, so an update of
    /// a status nobody waits on touches nothing else.
    changed: OnceLock<watch::Sender<()>>,
    activity: Activity,
    clock: Clock,
}

/// The part of a status a periodic run writes, on a cache line of its own.
#[repr(align(64))]
struct HotLine(Mutex<HotStatus>);

struct HotStatus {
    state: ServiceState,
    /// On tokio's clock: a wall time only when read (it is in the future, so the
    /// monotonic clock is the one it is due by).
    next_run: Option<Instant>,
    /// When the periodic run in progress began (read only while `Running`): what a
    /// stall is measured from, written with the state that says the run began.
    run_started: Option<Instant>,
    runs: u64,
    failures: u64,
    consecutive_failures: u32,
}

impl HotStatus {
    /// Moves to `state`, and says whether that changed it. A service that failed for
    /// good or is disabled stays that way.
    fn enter(&mut self, state: ServiceState) -> bool {
        if self.state == state
            || (matches!(self.state, ServiceState::Failed | ServiceState::Disabled)
                && !matches!(state, ServiceState::Failed))
        {
            return false;
        }
        self.state = state;
        true
    }
}

#[derive(Default)]
struct ColdStatus {
    started_at: Option<DateTime<Utc>>,
    restarts: u32,
    last_error: Option<String>,
    /// The last run, when the history keeps none (else its newest).
    last_run: Option<RunStamp>,
}

/// Either lock, taken even if a panic poisoned it: every update leaves its part whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A waiter for a status's changes ([`StatusBoard::watch`]).
#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
pub(crate) struct StatusWatch<'a> {
    board: &'a StatusBoard,
    rx: watch::Receiver<()>,
}

#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
impl StatusWatch<'_> {
    /// The current status; a change after this read wakes [`changed`](Self::changed).
    pub(crate) fn current(&mut self) -> StatusCore {
        self.rx.borrow_and_update();
        self.board.core()
    }

    /// Waits for a change since the last [`current`](Self::current).
    pub(crate) async fn changed(&mut self) {
        // The sender lives as long as the board borrowed here: never an error.
        let _ = self.rx.changed().await;
    }
}

/// What a periodic run's end says of the service's next run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NextRun {
    /// Unchanged: a run its caller ran itself moves no tick (its driver, which owns
    /// the schedule, handles a tick that fell due meanwhile).
    Keep,
    /// At this instant.
    At(Instant),
}

impl StatusBoard {
    /// A board in `Disabled` state when `disabled`, `Pending` otherwise.
    pub(crate) fn new(disabled: bool, clock: Clock, activity: Activity) -> Self {
        let state = if disabled {
            ServiceState::Disabled
        } else {
            ServiceState::Pending
        };
        StatusBoard {
            hot: HotLine(Mutex::new(HotStatus {
                state,
                next_run: None,
                run_started: None,
                runs: 0,
                failures: 0,
                consecutive_failures: 0,
            })),
            cold: Mutex::new(ColdStatus::default()),
            changed: OnceLock::new(),
            activity,
            clock,
        }
    }

    /// Loads a word of each line a run's status update writes (the hot line, the
    /// change signal, the history's lock and its next slot), and nothing else: see
    /// the periodic driver's `warm`.
    #[inline]
    pub(crate) fn touch(&self) -> (bool, bool, (bool, u32)) {
        (
            self.hot.0.is_poisoned(),
            self.changed.get().is_some(),
            self.activity.touch(),
        )
    }

    /// The first word of its history's next slot (see `History::next_word`).
    pub(crate) fn next_history_word(&self) -> Option<&std::sync::atomic::AtomicU32> {
        self.activity.next_history_word()
    }

    fn hot(&self) -> MutexGuard<'_, HotStatus> {
        lock(&self.hot.0)
    }

    /// Wakes those waiting for a change, if any (after the change, its locks released).
    fn changed(&self) {
        if let Some(changed) = self.changed.get() {
            changed.send_replace(());
        }
    }

    /// Updates the hot part with `f` (which says whether it changed anything).
    fn update(&self, f: impl FnOnce(&mut HotStatus) -> bool) {
        let modified = f(&mut self.hot());
        if modified {
            self.changed();
        }
    }

    pub(crate) fn state(&self) -> ServiceState {
        self.hot().state
    }

    pub(crate) fn set_state(&self, state: ServiceState) {
        self.update(|s| s.enter(state));
    }

    /// A periodic run began at `at`: the service is `Running`, and a stall is
    /// measured from `at` (in the same update: no line more is written a run).
    pub(crate) fn begin_run(&self, at: Instant) {
        self.update(|s| {
            s.run_started = Some(at);
            s.enter(ServiceState::Running)
        });
    }

    pub(crate) fn fail(&self, error: String) {
        {
            // The hot lock first, always (the order `core` reads in).
            let mut hot = self.hot();
            hot.state = ServiceState::Failed;
            lock(&self.cold).last_error = Some(super::status::cut_run_text(error));
        }
        self.changed();
    }

    pub(crate) fn mark_started(&self, state: ServiceState) {
        let now = self.clock.now();
        {
            let mut hot = self.hot();
            hot.state = state;
            lock(&self.cold).started_at = Some(now);
        }
        self.changed();
    }

    /// Forgets consecutive failures (a restarted service that has stayed up).
    pub(crate) fn clear_failures(&self) {
        self.update(|s| std::mem::take(&mut s.consecutive_failures) != 0);
    }

    pub(crate) fn add_restart(&self) {
        // The count goes with nothing in the hot part: its lock alone.
        lock(&self.cold).restarts += 1;
        self.changed();
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
        next_run: NextRun,
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
        RunStamp::new(reason, started, crate::util::millis(duration), outcome)
    }

    fn update_run(
        &self,
        stamp: &RunStamp,
        ended: WallNanos,
        then: Option<(NextRun, ServiceState)>,
    ) {
        {
            // Under the hot lock, so that a status read sees the run in its count
            // and as its last run at once.
            let mut s = self.hot();
            let kept = self.activity.run_finished(stamp, ended, then.is_some());
            let error = stamp.error_text();
            if !kept || error.is_some() {
                let mut cold = lock(&self.cold);
                if !kept {
                    cold.last_run = Some(stamp.clone());
                }
                if error.is_some() {
                    cold.last_error = error;
                }
            }
            s.runs += 1;
            if stamp.is_failure() {
                s.failures += 1;
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            } else if stamp.is_success() {
                s.consecutive_failures = 0;
            }
            if let Some((next_run, state)) = then {
                if let NextRun::At(next_run) = next_run {
                    s.next_run = Some(next_run);
                }
                if !matches!(s.state, ServiceState::Failed | ServiceState::Disabled) {
                    s.state = state;
                }
            }
        }
        self.changed();
    }

    /// Its recent runs and action counts.
    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }

    /// A waiter for this status's changes.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn watch(&self) -> StatusWatch<'_> {
        let rx = self
            .changed
            .get_or_init(|| watch::channel(()).0)
            .subscribe();
        StatusWatch { board: self, rx }
    }

    /// A copy of the current status.
    pub(crate) fn core(&self) -> StatusCore {
        let hot = self.hot();
        let cold = lock(&self.cold);
        let last_run = match &cold.last_run {
            Some(run) => Some(run.clone()),
            None => self.activity.last_run(),
        };
        StatusCore {
            state: hot.state,
            started_at: cold.started_at,
            last_run,
            next_run: hot.next_run,
            run_started: hot.run_started,
            runs: hot.runs,
            failures: hot.failures,
            consecutive_failures: hot.consecutive_failures,
            restarts: cold.restarts,
            last_error: cold.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a periodic run writes is one cache line: a field added to `HotStatus`
    /// that spills it onto a second line costs 10,000 services a miss per run.
    #[test]
    fn the_hot_status_is_one_cache_line() {
        assert_eq!(size_of::<HotLine>(), 64);
        assert_eq!(align_of::<HotLine>(), 64);
    }
}
