use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::WallNanos;
use crate::service::{RunReason, ServiceKind};

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ServiceState {
    /// Registered; the host has not started it yet (startup services run first).
    Pending,
    /// Being started.
    Starting,
    /// Running: a background service's loop, or a periodic run in progress.
    Running,
    /// A periodic service waiting for its next run.
    Idle,
    /// Waiting out the backoff before a restart.
    Restarting,
    /// Asked to stop, not yet stopped.
    Stopping,
    /// Stopped (or, for a startup service, finished).
    Stopped,
    /// Failed for good: restarts exhausted, startup failed, or restart policy `never`.
    Failed,
    /// Not run: disabled by configuration or environment gate.
    Disabled,
}

impl ServiceState {
    /// Lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Pending => "pending",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Idle => "idle",
            ServiceState::Restarting => "restarting",
            ServiceState::Stopping => "stopping",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
            ServiceState::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunOutcome {
    /// Returned `Ok`.
    Success,
    /// Returned an error.
    Failed {
        /// The error's message.
        error: String,
    },
    /// Panicked (caught; the service goes on).
    Panicked {
        /// The panic message.
        message: String,
    },
    /// Did not finish in time.
    TimedOut,
    /// Cut short because the host stopped.
    Cancelled,
}

impl RunOutcome {
    /// Whether the run succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, RunOutcome::Success)
    }

    /// Whether the run counts as a failure.
    pub fn is_failure(&self) -> bool {
        !matches!(self, RunOutcome::Success | RunOutcome::Cancelled)
    }

    /// A one-line description of a failure.
    pub fn error_text(&self) -> Option<String> {
        match self {
            RunOutcome::Success | RunOutcome::Cancelled => None,
            RunOutcome::Failed { error } => Some(error.clone()),
            RunOutcome::Panicked { message } => Some(format!("panicked: {message}")),
            RunOutcome::TimedOut => Some("timed out".to_owned()),
        }
    }
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct RunRecord {
    /// Why it ran.
    pub reason: RunReason,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

/// A finished run as a status keeps it: its start as [`WallNanos`], so recording a
/// run builds no date; a [`RunRecord`] when read.
#[derive(Debug, Clone)]
pub(crate) struct RunStamp {
    pub(crate) reason: RunReason,
    pub(crate) started: WallNanos,
    pub(crate) duration_ms: u64,
    pub(crate) outcome: RunOutcome,
}

impl RunStamp {
    /// The run as the API shows it.
    pub(crate) fn record(&self) -> RunRecord {
        RunRecord {
            reason: self.reason,
            started_at: self.started.to_datetime(),
            duration_ms: self.duration_ms,
            outcome: self.outcome.clone(),
        }
    }
}

/// A snapshot of a service's status: its state, runs, queue and schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// Its kind.
    pub kind: ServiceKind,
    /// Where it is in its life.
    pub state: ServiceState,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Why it is disabled, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Whether its failure stops the host.
    pub critical: bool,
    /// When it last (re)started.
    pub started_at: Option<DateTime<Utc>>,
    /// The last finished run.
    pub last_run: Option<RunRecord>,
    /// When the next scheduled run is due (periodic services).
    pub next_run: Option<DateTime<Utc>>,
    /// Runs finished.
    pub runs: u64,
    /// Runs that failed (errors, panics, timeouts).
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Restarts by the supervisor.
    pub restarts: u32,
    /// Actions waiting in the mailbox.
    pub queue_depth: usize,
    /// Actions running now.
    pub in_flight: usize,
    /// The last error, if any.
    pub last_error: Option<String>,
}
