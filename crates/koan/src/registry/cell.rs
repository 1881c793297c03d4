//! Everything the host keeps about one service, by concern: what it is (`spec`),
//! where its actions wait and run (`queue`), a periodic service's driver inbox
//! (`control`), its lifetime (`life`) and its published status (`board`).

use std::sync::{Arc, OnceLock, Weak};

use tokio_util::sync::CancellationToken;

use super::activity::Activity;
use super::board::{StatusBoard, StatusCore};
use super::lifetime::Lifetime;
use super::spec::ServiceSpec;
use super::status::{RunStamp, ServiceState, ServiceStatus};
use crate::action::ActionQueue;
use crate::health::{HealthReport, HealthStatus, ServiceHealth};
use crate::host::HostInner;
use crate::schedule::PeriodicControl;
use crate::service::ServiceKind;
use crate::util::catch_unwind;

pub(crate) struct ServiceCell {
    pub(crate) spec: ServiceSpec,
    pub(crate) queue: ActionQueue,
    /// A periodic service's driver inbox (pokes, wake-ups); `None` for other kinds.
    pub(crate) control: Option<Arc<PeriodicControl>>,
    pub(crate) life: Lifetime,
    pub(crate) board: StatusBoard,
    /// The host that runs it, set once the host is built: handlers reach the host
    /// through here, so that an action's context takes no count on the host.
    host: OnceLock<Weak<HostInner>>,
}

impl std::fmt::Debug for ServiceCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCell")
            .field("name", &self.spec.name)
            .field("kind", &self.spec.kind)
            .finish_non_exhaustive()
    }
}

impl ServiceCell {
    pub(crate) fn new(spec: ServiceSpec, token: CancellationToken, activity: Activity) -> Self {
        let options = &spec.options;
        let control = (spec.kind == ServiceKind::Periodic)
            .then(|| Arc::new(PeriodicControl::new(options.mailbox_capacity)));
        let queue = ActionQueue::new(
            &spec.name,
            spec.actions
                .entries
                .iter()
                .map(|e| Arc::clone(&e.name))
                .collect(),
            options.mailbox_capacity,
            options.max_concurrency,
        );
        let activity = activity.counting_actions_in(Arc::clone(&queue.slots));
        let board = StatusBoard::new(spec.disabled.is_some(), spec.clock.clone(), activity);
        ServiceCell {
            spec,
            queue,
            control,
            life: Lifetime::new(token),
            board,
            host: OnceLock::new(),
        }
    }

    /// Tells the cell which host runs it (once, when the host is built).
    pub(crate) fn set_host(&self, host: Weak<HostInner>) {
        let _ = self.host.set(host);
    }

    /// The host that runs it, while it lives.
    pub(crate) fn host(&self) -> Option<Arc<HostInner>> {
        self.host.get().and_then(Weak::upgrade)
    }

    /// Stops the service: cancels its token (its tasks and handlers see it).
    pub(crate) fn cancel(&self) {
        self.life.cancel();
        // A periodic driver waits on its own wake-up, not on the token.
        if let Some(control) = &self.control {
            control.cancel();
        }
    }

    pub(crate) fn snapshot(&self) -> ServiceStatus {
        self.to_status(self.board.core())
    }

    pub(crate) fn to_status(&self, s: StatusCore) -> ServiceStatus {
        let spec = &self.spec;
        ServiceStatus {
            name: spec.name.to_string(),
            kind: spec.kind,
            state: s.state,
            enabled: spec.disabled.is_none(),
            disabled_reason: spec.disabled.clone(),
            critical: spec.options.critical,
            started_at: s.started_at,
            last_run: s.last_run.as_ref().map(RunStamp::record),
            next_run: s.next_run.map(|due| spec.clock.wall_at(due)),
            runs: s.runs,
            failures: s.failures,
            consecutive_failures: s.consecutive_failures,
            restarts: s.restarts,
            queue_depth: self.queue.mailbox.len()
                + self.control.as_ref().map_or(0, |c| c.pending()),
            in_flight: self.queue.slots.running(),
            last_error: s.last_error,
        }
    }

    /// The service's own report combined with what the runtime observed.
    pub(crate) async fn health(&self) -> ServiceHealth {
        let critical = self.spec.options.critical;
        let wrap = |report| ServiceHealth {
            service: self.spec.name.to_string(),
            critical,
            report,
        };
        if let Some(reason) = &self.spec.disabled {
            return wrap(HealthReport::healthy(format!("disabled: {reason}")));
        }
        let core = self.board.core();
        if core.state == ServiceState::Failed {
            let mut r = HealthReport::unhealthy("the service has failed");
            r.error = core.last_error;
            return wrap(r);
        }
        // A critical service whose run ended by itself, outside a shutdown: as
        // readiness says (health said `pass` while readiness failed; found by a probe).
        if core.state == ServiceState::Stopped
            && critical
            && self.spec.kind != crate::service::ServiceKind::Startup
            && self.host().is_some_and(|h| !h.is_stopping())
        {
            let mut r = HealthReport::unhealthy(
                "the service has stopped: its run ended (or its own code cancelled its token), and it is not restarted",
            );
            r.error = core.last_error;
            return wrap(r);
        }
        let mut own = match catch_unwind(self.spec.service.health()).await {
            Ok(r) => r,
            Err(panic) => HealthReport::unhealthy("the health check panicked").with_error(panic),
        };
        // A run gone on past its stall limit says so, unless its own report is worse.
        if let Some(mut stalled) = super::stall::stalled(&self.spec, &core)
            && stalled.status > own.status
        {
            stalled.data = std::mem::take(&mut own.data);
            own = stalled;
        }
        let mut observed = self
            .spec
            .options
            .health_thresholds
            .status_for(core.consecutive_failures);
        // A background service running again after failed runs (restarted, as it
        // is after each) is up: degraded at worst while its restart window still
        // counts them, as a periodic service is healthy again once a run succeeds.
        // One that keeps failing is unhealthy between its runs (`Restarting`) and
        // once it fails for good. (A critical one was unhealthy for the whole
        // window, its host unready while it worked; found by a probe.)
        let running_again = self.spec.kind == ServiceKind::Background
            && core.state == ServiceState::Running
            && core.consecutive_failures > 0;
        if running_again {
            observed = observed.min(HealthStatus::Degraded);
        }
        if observed <= own.status {
            return wrap(own);
        }
        let failed = core.consecutive_failures;
        let mut report = match observed {
            _ if running_again => HealthReport::degraded(format!(
                "running again after {failed} failed run{} (restarted {} time{}); recovered once it stays up for {}",
                plural(failed),
                core.restarts,
                plural(core.restarts),
                crate::util::fmt_duration(self.spec.options.intensity.within),
            )),
            HealthStatus::Unhealthy => {
                HealthReport::unhealthy(format!("{failed} consecutive failed runs"))
            }
            _ => HealthReport::degraded(format!("{failed} consecutive failed run(s)")),
        };
        report.error = core.last_error;
        report.data = own.data;
        wrap(report)
    }
}

/// `"s"` unless `n` is one.
fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}
