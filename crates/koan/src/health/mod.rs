//! Health reports: per service, and aggregated for the host.
//!
//! A service reports through [`Service::health`](crate::Service::health); the runtime
//! folds in what it observed itself (a failed service is unhealthy, a periodic service
//! that keeps failing turns degraded and then unhealthy). The host's overall health is
//! the worst over critical services, where an unhealthy non-critical service counts
//! only as degraded.

mod report;

pub use report::{HealthReport, HealthStatus, HostHealth, Readiness, ServiceHealth};

/// How many consecutive failed runs turn a service degraded, and then unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Consecutive failures from which the service reports degraded (default 1).
    pub degraded_after: u32,
    /// Consecutive failures from which the service reports unhealthy (default 3).
    pub unhealthy_after: u32,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            degraded_after: 1,
            unhealthy_after: 3,
        }
    }
}

impl HealthThresholds {
    /// The status implied by `consecutive_failures` alone.
    pub(crate) fn status_for(&self, consecutive_failures: u32) -> HealthStatus {
        if consecutive_failures >= self.unhealthy_after.max(1) {
            HealthStatus::Unhealthy
        } else if consecutive_failures >= self.degraded_after.max(1) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }
}
