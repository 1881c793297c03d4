use std::any::TypeId;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::activity::Activity;
use super::status::{RunOutcome, RunRecord, ServiceState, ServiceStatus};
use crate::action::{ActionTable, Mailbox, Slots};
use crate::clock::Clock;
use crate::health::{HealthReport, HealthStatus, ServiceHealth};
use crate::schedule::{PeriodicControl, Schedule};
use crate::service::{ErasedService, RunReason, Runner, ServiceKind, ServiceOptions};
use crate::util::catch_unwind;

/// The mutable part of a status, published through a watch channel so tests and
/// dashboards can wait for changes instead of polling.
#[derive(Debug, Clone)]
pub(crate) struct StatusCore {
    pub(crate) state: ServiceState,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) last_run: Option<RunRecord>,
    pub(crate) next_run: Option<DateTime<Utc>>,
    pub(crate) runs: u64,
    pub(crate) failures: u64,
    pub(crate) consecutive_failures: u32,
    pub(crate) restarts: u32,
    pub(crate) last_error: Option<String>,
}

/// Everything the host keeps about one service.
pub(crate) struct ServiceCell {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ServiceKind,
    pub(crate) type_id: TypeId,
    pub(crate) options: ServiceOptions,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) service: Arc<dyn ErasedService>,
    pub(crate) runner: Runner,
    /// Shared, so that a run's context costs a reference count, not the token's lock.
    pub(crate) token: Arc<CancellationToken>,
    pub(crate) control: Option<Arc<PeriodicControl>>,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) actions: Arc<ActionTable>,
    pub(crate) disabled: Option<String>,
    pub(crate) clock: Clock,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) in_flight: AtomicUsize,
    /// One permit per action that may run at once (`max_concurrency`), shared by the
    /// mailbox workers and by callers running an action themselves when the service
    /// is idle (`action::inline`).
    pub(crate) slots: Slots,
    /// Set with `token` by [`cancel`](Self::cancel): read on hot loops without the
    /// token's lock.
    cancelled: std::sync::atomic::AtomicBool,
    /// The host that runs it (set once the host is built). Handlers reach the host
    /// through here, so that an action's context takes no count on the host.
    pub(crate) host: std::sync::OnceLock<std::sync::Weak<crate::host::HostInner>>,
    status: watch::Sender<StatusCore>,
    activity: Activity,
}

impl std::fmt::Debug for ServiceCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCell")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

pub(crate) struct CellParts {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ServiceKind,
    pub(crate) type_id: TypeId,
    pub(crate) options: ServiceOptions,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) service: Arc<dyn ErasedService>,
    pub(crate) runner: Runner,
    pub(crate) token: CancellationToken,
    pub(crate) actions: ActionTable,
    pub(crate) disabled: Option<String>,
    pub(crate) clock: Clock,
    /// Its recent runs and action counts.
    pub(crate) activity: Activity,
}

impl ServiceCell {
    pub(crate) fn new(parts: CellParts) -> Self {
        let state = if parts.disabled.is_some() {
            ServiceState::Disabled
        } else {
            ServiceState::Pending
        };
        let control = (parts.kind == ServiceKind::Periodic)
            .then(|| Arc::new(PeriodicControl::new(parts.options.mailbox_capacity)));
        let mailbox = Arc::new(Mailbox::new(
            Arc::clone(&parts.name),
            parts.options.mailbox_capacity,
        ));
        let slots = Slots::new(parts.options.max_concurrency);
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
        ServiceCell {
            name: parts.name,
            kind: parts.kind,
            type_id: parts.type_id,
            options: parts.options,
            schedule: parts.schedule,
            service: parts.service,
            runner: parts.runner,
            token: Arc::new(parts.token),
            control,
            mailbox,
            actions: Arc::new(parts.actions),
            disabled: parts.disabled,
            clock: parts.clock,
            tasks: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            slots,
            cancelled: std::sync::atomic::AtomicBool::new(false),
            host: std::sync::OnceLock::new(),
            status,
            activity: parts.activity,
        }
    }

    /// Stops the service: cancels its token (its tasks and handlers see it).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.token.cancel();
        // A periodic driver waits on its own wake-up, not on the token.
        if let Some(control) = &self.control {
            control.wake();
        }
    }

    /// Whether [`cancel`](Self::cancel) was called; one atomic load.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
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

    pub(crate) fn set_next_run(&self, next: Option<DateTime<Utc>>) {
        self.update(|s| {
            s.next_run = next;
            true
        });
    }

    /// Records a finished run and returns the record.
    pub(crate) fn record_run(
        &self,
        reason: RunReason,
        started_at: DateTime<Utc>,
        duration: Duration,
        outcome: RunOutcome,
    ) -> RunRecord {
        self.update_run(reason, started_at, duration, outcome, None)
    }

    /// Records a finished run, the next run and the new state in one update (one
    /// wake-up of status watchers per periodic run).
    pub(crate) fn finish_run(
        &self,
        reason: RunReason,
        started_at: DateTime<Utc>,
        duration: Duration,
        outcome: RunOutcome,
        next_run: Option<DateTime<Utc>>,
        state: ServiceState,
    ) -> RunRecord {
        self.update_run(
            reason,
            started_at,
            duration,
            outcome,
            Some((next_run, state)),
        )
    }

    fn update_run(
        &self,
        reason: RunReason,
        started_at: DateTime<Utc>,
        duration: Duration,
        outcome: RunOutcome,
        then: Option<(Option<DateTime<Utc>>, ServiceState)>,
    ) -> RunRecord {
        let record = RunRecord {
            reason,
            started_at,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            outcome,
        };
        self.activity.run_finished(&record, self.clock.now());
        self.update(|s| {
            s.runs += 1;
            if record.outcome.is_failure() {
                s.failures += 1;
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.last_error = record.outcome.error_text();
            } else if record.outcome.is_success() {
                s.consecutive_failures = 0;
            }
            s.last_run = Some(record.clone());
            if let Some((next_run, state)) = then {
                s.next_run = next_run;
                if !matches!(s.state, ServiceState::Failed | ServiceState::Disabled) {
                    s.state = state;
                }
            }
            true
        });
        record
    }

    /// Its recent runs and action counts.
    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }

    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn watch(&self) -> watch::Receiver<StatusCore> {
        self.status.subscribe()
    }

    pub(crate) fn snapshot(&self) -> ServiceStatus {
        let s = self.status.borrow().clone();
        self.to_status(s)
    }

    pub(crate) fn to_status(&self, s: StatusCore) -> ServiceStatus {
        ServiceStatus {
            name: self.name.to_string(),
            kind: self.kind,
            state: s.state,
            enabled: self.disabled.is_none(),
            disabled_reason: self.disabled.clone(),
            critical: self.options.critical,
            started_at: s.started_at,
            last_run: s.last_run,
            next_run: s.next_run,
            runs: s.runs,
            failures: s.failures,
            consecutive_failures: s.consecutive_failures,
            restarts: s.restarts,
            queue_depth: self.mailbox.len() + self.control.as_ref().map_or(0, |c| c.pending()),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            last_error: s.last_error,
        }
    }

    /// The service's own report combined with what the runtime observed.
    pub(crate) async fn health(&self) -> ServiceHealth {
        let critical = self.options.critical;
        let wrap = |report| ServiceHealth {
            service: self.name.to_string(),
            critical,
            report,
        };
        if let Some(reason) = &self.disabled {
            return wrap(HealthReport::healthy(format!("disabled: {reason}")));
        }
        let core = self.status.borrow().clone();
        if core.state == ServiceState::Failed {
            let mut r = HealthReport::unhealthy("the service has failed");
            r.error = core.last_error;
            return wrap(r);
        }
        let own = match catch_unwind(self.service.health()).await {
            Ok(r) => r,
            Err(panic) => HealthReport::unhealthy("the health check panicked").with_error(panic),
        };
        let observed = self
            .options
            .health_thresholds
            .status_for(core.consecutive_failures);
        if observed <= own.status {
            return wrap(own);
        }
        let mut report = match observed {
            HealthStatus::Unhealthy => HealthReport::unhealthy(format!(
                "{} consecutive failed runs",
                core.consecutive_failures
            )),
            _ => HealthReport::degraded(format!(
                "{} consecutive failed run(s)",
                core.consecutive_failures
            )),
        };
        report.error = core.last_error;
        report.data = own.data;
        wrap(report)
    }

    pub(crate) fn push_task(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    pub(crate) fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        self.tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}
