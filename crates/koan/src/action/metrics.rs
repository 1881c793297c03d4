//! Action metrics through the `metrics` facade. Handles are resolved once per action
//! (on first use), so the hot path does no key building. Install the recorder before
//! the first action runs.

use metrics::{Counter, Histogram, counter, histogram};

/// The outcomes a worker records.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Ok = 0,
    HandlerError = 1,
    Panic = 2,
    Timeout = 3,
    ShuttingDown = 4,
    /// The caller stopped waiting before the action started; it was not run.
    Cancelled = 5,
    /// The handler refused its parameters (`InvalidParameters`): the caller's
    /// mistake, counted as the same refusal made before the handler runs.
    InvalidParameters = 6,
}

const OUTCOMES: [&str; 7] = [
    "ok",
    "handler_error",
    "handler_panic",
    "timeout",
    "shutting_down",
    "cancelled",
    "invalid_parameters",
];

pub(crate) struct ActionMetrics {
    outcomes: [Counter; 7],
    duration: Histogram,
    queue_wait: Histogram,
}

impl ActionMetrics {
    pub(crate) fn new(service: &str, action: &str) -> Self {
        let s = service.to_owned();
        let a = action.to_owned();
        let outcomes = OUTCOMES.map(|o| {
            counter!(ACTIONS_TOTAL, "service" => s.clone(), "action" => a.clone(), "outcome" => o)
        });
        ActionMetrics {
            outcomes,
            duration: histogram!("koan_action_duration_seconds", "service" => s.clone(), "action" => a.clone()),
            queue_wait: histogram!("koan_action_queue_seconds", "service" => s, "action" => a),
        }
    }

    /// An action that never ran (see `worker::never_started`): no duration.
    pub(crate) fn record_unstarted(&self, outcome: Outcome, queued: f64) {
        self.outcomes[outcome as usize].increment(1);
        self.queue_wait.record(queued);
    }

    pub(crate) fn record(&self, outcome: Outcome, run: f64, queued: f64) {
        self.outcomes[outcome as usize].increment(1);
        self.duration.record(run);
        self.queue_wait.record(queued);
    }
}

/// Actions by service, action and outcome: one series per declared action.
const ACTIONS_TOTAL: &str = "koan_actions_total";

/// The label of an action or service name the caller chose and the host does not
/// know: labels come only from declared names, or every made-up name sent over HTTP
/// would become a series kept for the life of the process.
pub(crate) const UNKNOWN: &str = "<unknown>";

/// Counts a rejection at the caller (busy, bad parameters, unknown action, …).
pub(crate) fn rejected(service: &str, action: &str, kind: crate::error::ErrorKind) {
    let (service, action) = match kind {
        crate::error::ErrorKind::UnknownService => (UNKNOWN, UNKNOWN),
        crate::error::ErrorKind::UnknownAction => (service, UNKNOWN),
        _ => (service, action),
    };
    count(service, action, kind.as_str());
}

/// Counts how a built-in poke of a periodic service (`trigger`, …) ended.
pub(crate) fn poke_finished<T>(service: &str, action: &str, outcome: &crate::error::Result<T>) {
    let label = match outcome {
        Ok(_) => "ok",
        Err(e) => e.kind().as_str(),
    };
    count(service, action, label);
}

/// One count of `koan_actions_total` without a cached handle (rejections and pokes).
fn count(service: &str, action: &str, outcome: &'static str) {
    counter!(
        ACTIONS_TOTAL,
        "service" => service.to_owned(),
        "action" => action.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}
