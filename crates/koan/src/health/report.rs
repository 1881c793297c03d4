use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Healthy, degraded or unhealthy; ordered from best to worst.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Working normally.
    Healthy,
    /// Working, but something is wrong (failures, slowness).
    Degraded,
    /// Not working.
    Unhealthy,
}

impl HealthStatus {
    /// The worse of two statuses.
    pub fn worst(self, other: HealthStatus) -> HealthStatus {
        self.max(other)
    }

    /// The IETF health-check draft's vocabulary: `pass`, `warn`, `fail`.
    pub fn as_check_status(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "pass",
            HealthStatus::Degraded => "warn",
            HealthStatus::Unhealthy => "fail",
        }
    }
}

/// What a service says about its own health: a verdict, an optional sentence and
/// error, and extra figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct HealthReport {
    /// The verdict.
    pub status: HealthStatus,
    /// A sentence for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The error behind an unhealthy verdict, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Extra figures (queue length, lag, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, serde_json::Value>,
}

impl HealthReport {
    fn with_status(status: HealthStatus, description: impl Into<String>) -> Self {
        let description = description.into();
        HealthReport {
            status,
            description: (!description.is_empty()).then_some(description),
            error: None,
            data: BTreeMap::new(),
        }
    }

    /// A healthy report.
    pub fn healthy(description: impl Into<String>) -> Self {
        Self::with_status(HealthStatus::Healthy, description)
    }

    /// A degraded report.
    pub fn degraded(description: impl Into<String>) -> Self {
        Self::with_status(HealthStatus::Degraded, description)
    }

    /// An unhealthy report.
    pub fn unhealthy(description: impl Into<String>) -> Self {
        Self::with_status(HealthStatus::Unhealthy, description)
    }

    /// Attaches the error that caused this report.
    pub fn with_error(mut self, error: impl std::fmt::Display) -> Self {
        self.error = Some(error.to_string());
        self
    }

    /// Attaches a named figure.
    pub fn with_data(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        if let Ok(v) = serde_json::to_value(value) {
            self.data.insert(key.into(), v);
        }
        self
    }
}

impl Default for HealthReport {
    fn default() -> Self {
        HealthReport::healthy("")
    }
}

/// One service's effective health as the host sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct ServiceHealth {
    /// The service's name.
    pub service: String,
    /// Whether the service counts fully toward the host's health.
    pub critical: bool,
    /// The combined report (the service's own and what the runtime observed).
    #[serde(flatten)]
    pub report: HealthReport,
}

/// The host's overall health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HostHealth {
    /// Worst of critical services; non-critical unhealthy counts as degraded.
    pub status: HealthStatus,
    /// Every service's report.
    pub services: Vec<ServiceHealth>,
    /// The connection to the other processes of the cluster, when there is a
    /// transport: degraded while it is down (the host still runs its own services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<HealthReport>,
    /// The job store, while the runner's last look at it failed: degraded (and
    /// the host not ready), since the jobs it accepts wait until it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<HealthReport>,
}

/// Whether the host is ready for work, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Readiness {
    /// True once startup is done, every `is_ready()` is true and the host is not stopping.
    pub ready: bool,
    /// What keeps it from being ready.
    pub reasons: Vec<String>,
}
