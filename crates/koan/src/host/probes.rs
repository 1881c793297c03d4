//! What a host says of itself to probes: its health (each service's check, the
//! transport's and the job store's), its liveness and its readiness.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::HostHandle;

use crate::health::{HealthStatus, HostHealth, Readiness};
use crate::registry::ServiceState;

/// How long one service's `health()` or `is_ready()` may take before it counts as
/// unhealthy / not ready.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

impl HostHandle {
    /// The overall health: the worst over critical services, where an unhealthy
    /// non-critical service counts as degraded.
    pub async fn health(&self) -> HostHealth {
        let mut services = Vec::new();
        let mut status = HealthStatus::Healthy;
        for h in self.each_health().await {
            let counted = if h.critical {
                h.report.status
            } else {
                h.report.status.min(HealthStatus::Degraded)
            };
            status = status.worst(counted);
            services.push(h);
        }
        // A lost broker connection is a warning: local work goes on.
        let transport = self.inner.transport.as_ref().and_then(|t| t.health());
        if let Some(t) = &transport {
            status = status.worst(t.status.min(HealthStatus::Degraded));
        }
        let jobs = self.store_refusing().map(|e| {
            status = status.worst(HealthStatus::Degraded);
            crate::health::HealthReport::degraded(e)
        });
        HostHealth {
            status,
            services,
            transport,
            jobs,
        }
    }

    /// Why the job store is failing the runner, if it is.
    fn store_failing(&self) -> Option<String> {
        let jobs = &self.inner.jobs;
        jobs.store_health.said(&jobs.store.describe())
    }

    /// [`store_failing`](Self::store_failing), or an enqueue it refused a moment ago.
    fn store_refusing(&self) -> Option<String> {
        let jobs = &self.inner.jobs;
        jobs.store_health.said_with_enqueues(&jobs.store.describe())
    }

    /// Every service's health, checked concurrently, each within `CHECK_TIMEOUT` (5 s):
    /// one hanging `health()` cannot hold the others (or `/health`) hostage.
    async fn each_health(&self) -> Vec<crate::health::ServiceHealth> {
        let cells: Vec<_> = self.inner.registry.all().to_vec();
        let checks: Vec<_> = cells
            .iter()
            .map(|cell| {
                let cell = Arc::clone(cell);
                tokio::spawn(async move { timed_health(&cell).await })
            })
            .collect();
        let mut out = Vec::with_capacity(cells.len());
        for (cell, check) in cells.iter().zip(checks) {
            out.push(check.await.unwrap_or_else(|_| late_health(cell)));
        }
        out
    }

    /// Liveness: the host's runtime answers, the host has not stopped, and no critical
    /// service has failed.
    pub async fn live(&self) -> bool {
        if self.exit().is_some() {
            return false;
        }
        let failed_critical = self
            .inner
            .registry
            .all()
            .iter()
            .any(|c| c.spec.options.critical && c.board.state() == ServiceState::Failed);
        if failed_critical {
            return false;
        }
        // The runtime must schedule a fresh task promptly.
        matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::spawn(async {})).await,
            Ok(Ok(()))
        )
    }

    /// Readiness: startup done, every enabled service's `is_ready()` true, no critical
    /// service failed or unhealthy, not shutting down.
    pub async fn ready(&self) -> Readiness {
        let mut reasons = Vec::new();
        if !self.inner.launched.load(Ordering::Acquire) {
            reasons.push("the host is not started".to_owned());
        } else if self.inner.is_stopping() {
            reasons.push("the host is shutting down".to_owned());
        }
        if !self.is_started() {
            reasons.push("startup is not done".to_owned());
        }
        if let Some(e) = self.store_failing() {
            reasons.push(e);
        }
        // Every service at once, each within `CHECK_TIMEOUT`: one hanging check
        // held the answer 5 s, and N of them N times that (found by a probe).
        let checks = self
            .inner
            .registry
            .all()
            .iter()
            .filter(|cell| cell.spec.disabled.is_none())
            .map(|cell| not_ready(cell));
        reasons.extend(
            futures_util::future::join_all(checks)
                .await
                .into_iter()
                .flatten(),
        );
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }
}

/// Why `cell` (enabled) makes its host unfit for traffic, if it does: a critical
/// service failed, waiting to restart or unhealthy, or a service whose
/// `is_ready()` says no or does not answer (both checks within `CHECK_TIMEOUT`).
async fn not_ready(cell: &crate::registry::ServiceCell) -> Option<String> {
    let name = &cell.spec.name;
    let critical = cell.spec.options.critical;
    match cell.board.state() {
        ServiceState::Failed if critical => {
            return Some(format!("critical service `{name}` has failed"));
        }
        ServiceState::Restarting if critical => {
            return Some(format!(
                "critical service `{name}` is down, waiting to restart"
            ));
        }
        // Ended by itself (a startup service's end is its success).
        ServiceState::Stopped
            if critical && cell.spec.kind != crate::service::ServiceKind::Startup =>
        {
            return Some(format!("critical service `{name}` has stopped"));
        }
        _ => {}
    }
    let check = async {
        // A critical service that reports itself unhealthy makes the host unfit
        // for traffic, even while its `is_ready()` holds.
        if critical && cell.health().await.report.status == HealthStatus::Unhealthy {
            return Some(format!("critical service `{name}` is unhealthy"));
        }
        match crate::util::catch_unwind(cell.spec.service.is_ready()).await {
            Ok(true) => None,
            _ => Some(format!("service `{name}` is not ready")),
        }
    };
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| {
            Some(format!(
                "service `{name}` did not answer {} within {}",
                if critical {
                    "its health check and `is_ready()`"
                } else {
                    "`is_ready()`"
                },
                crate::util::fmt_duration(CHECK_TIMEOUT)
            ))
        })
}

/// `cell`'s health, or unhealthy when its check does not answer within
/// `CHECK_TIMEOUT`: what `/health` and a service's own health route answer.
pub(crate) async fn timed_health(
    cell: &crate::registry::ServiceCell,
) -> crate::health::ServiceHealth {
    tokio::time::timeout(CHECK_TIMEOUT, cell.health())
        .await
        .unwrap_or_else(|_| late_health(cell))
}

fn late_health(cell: &crate::registry::ServiceCell) -> crate::health::ServiceHealth {
    crate::health::ServiceHealth {
        service: cell.spec.name.to_string(),
        critical: cell.spec.options.critical,
        report: crate::health::HealthReport::unhealthy(format!(
            "the health check did not answer within {}",
            crate::util::fmt_duration(CHECK_TIMEOUT)
        )),
    }
}
