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
    /// A run that failed with `error`, kept cut to [`MAX_RUN_ERROR_BYTES`] (its
    /// log line too: a 1.2 MB error wrote 600 KB of log a second; a probe).
    pub(crate) fn failed(error: String) -> RunOutcome {
        RunOutcome::Failed {
            error: cut_run_text(error),
        }
    }

    /// A run that panicked with `message`, kept cut.
    pub(crate) fn panicked(message: String) -> RunOutcome {
        RunOutcome::Panicked {
            message: cut_run_text(message),
        }
    }

    /// Whether the run succeeded.
    pub fn is_success(&self) -> bool {
        StampKind::of(self) == StampKind::Success
    }

    /// Whether the run counts as a failure.
    pub fn is_failure(&self) -> bool {
        StampKind::of(self).is_failure()
    }

    /// A one-line description of a failure.
    pub fn error_text(&self) -> Option<String> {
        StampKind::of(self).error_text(self.text())
    }

    /// The error or panic message; empty for the other outcomes.
    fn text(&self) -> &str {
        match self {
            RunOutcome::Failed { error: t } | RunOutcome::Panicked { message: t } => t,
            _ => "",
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
///
/// Half a cache line, aligned to it: a periodic service pushes one into its history
/// every run, and a 56-byte stamp (the outcome inline) straddled two lines in seven
/// pushes of eight, each line cold since the history last came round (B6).
#[derive(Debug, Clone)]
#[repr(align(32))]
pub(crate) struct RunStamp {
    pub(crate) reason: RunReason,
    kind: StampKind,
    pub(crate) started: WallNanos,
    pub(crate) duration_ms: u64,
    /// The error or panic message of a run that failed or panicked.
    text: Option<Box<RunText>>,
}

/// How a run ended, without its text: what a [`RunStamp`] keeps, and where the rules
/// of both it and [`RunOutcome`] live (what counts as a failure, the error shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StampKind {
    Success,
    Failed,
    Panicked,
    TimedOut,
    Cancelled,
}

impl StampKind {
    fn of(outcome: &RunOutcome) -> Self {
        match outcome {
            RunOutcome::Success => StampKind::Success,
            RunOutcome::Failed { .. } => StampKind::Failed,
            RunOutcome::Panicked { .. } => StampKind::Panicked,
            RunOutcome::TimedOut => StampKind::TimedOut,
            RunOutcome::Cancelled => StampKind::Cancelled,
        }
    }

    fn is_failure(self) -> bool {
        !matches!(self, StampKind::Success | StampKind::Cancelled)
    }

    /// The one-line description of a failure whose message is `text`.
    fn error_text(self, text: &str) -> Option<String> {
        match self {
            StampKind::Success | StampKind::Cancelled => None,
            StampKind::Failed => Some(text.to_owned()),
            StampKind::Panicked => Some(format!("panicked: {text}")),
            StampKind::TimedOut => Some("timed out".to_owned()),
        }
    }
}

/// The most bytes of a run's error or panic message a service's status and
/// history keep, as a job's record does: a periodic service failing with a 1.2 MB
/// error grew its host's registry entry past the broker's `max_payload` (the
/// whole host dropped out of the cluster) and its history to 15 MB a read
/// (found by a probe).
pub(crate) const MAX_RUN_ERROR_BYTES: usize = crate::job::MAX_ERROR_BYTES;

/// `text` cut to [`MAX_RUN_ERROR_BYTES`] (once: a text cut already is kept).
pub(crate) fn cut_run_text(text: String) -> String {
    const KEEPER: &str = "the service's status";
    let marked = format!("; {KEEPER} keeps the first {MAX_RUN_ERROR_BYTES})");
    if text.len() <= MAX_RUN_ERROR_BYTES + 80 && text.ends_with(&marked) {
        return text;
    }
    crate::util::cut_text(text, MAX_RUN_ERROR_BYTES, KEEPER)
}

/// A failed or panicked run's message, behind one thin pointer.
#[derive(Debug, Clone)]
pub(crate) struct RunText(String);

/// A stamp without its message, in the words a history's slot keeps (see
/// `registry::history`): its reason and how it ended in one, then its start and
/// its duration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StampWords {
    pub(crate) tag: u32,
    pub(crate) started: i64,
    pub(crate) duration_ms: u64,
}

/// The entry of `table` numbered `i`.
fn numbered<T: Copy>(table: &[T], i: u32) -> Option<T> {
    table.get(usize::try_from(i).ok()?).copied()
}

/// The reasons and the kinds by their number in a [`StampWords`]'s tag: the order
/// of the `match` in [`RunStamp::words`] and of `StampKind`'s declaration
/// (`a_stamp_reads_back_from_its_words` checks every entry).
const REASONS: [RunReason; 6] = [
    RunReason::Start,
    RunReason::Restart,
    RunReason::Scheduled,
    RunReason::Trigger,
    RunReason::CheckQueue,
    RunReason::ProcessBatch,
];
const KINDS: [StampKind; 5] = [
    StampKind::Success,
    StampKind::Failed,
    StampKind::Panicked,
    StampKind::TimedOut,
    StampKind::Cancelled,
];

impl RunStamp {
    pub(crate) fn new(
        reason: RunReason,
        started: WallNanos,
        duration_ms: u64,
        outcome: RunOutcome,
    ) -> Self {
        let kind = StampKind::of(&outcome);
        let text = match outcome {
            RunOutcome::Failed { error: t } | RunOutcome::Panicked { message: t } => {
                Some(cut_run_text(t))
            }
            _ => None,
        };
        RunStamp {
            reason,
            kind,
            started,
            duration_ms,
            text: text.map(|t| Box::new(RunText(t))),
        }
    }

    /// Its words and its message (see [`StampWords`]).
    pub(crate) fn words(&self) -> (StampWords, Option<&RunText>) {
        let reason = match self.reason {
            RunReason::Start => 0,
            RunReason::Restart => 1,
            RunReason::Scheduled => 2,
            RunReason::Trigger => 3,
            RunReason::CheckQueue => 4,
            RunReason::ProcessBatch => 5,
        };
        let words = StampWords {
            tag: reason << 8 | self.kind as u32,
            started: self.started.nanos(),
            duration_ms: self.duration_ms,
        };
        (words, self.text.as_deref())
    }

    /// The stamp of `words` and its message.
    pub(crate) fn from_words(words: StampWords, text: Option<RunText>) -> Self {
        RunStamp {
            reason: numbered(&REASONS, words.tag >> 8).unwrap_or(RunReason::Start),
            kind: numbered(&KINDS, words.tag & 0xff).unwrap_or(StampKind::Success),
            started: WallNanos::from_nanos(words.started),
            duration_ms: words.duration_ms,
            text: text.map(Box::new),
        }
    }

    /// How the run ended.
    pub(crate) fn outcome(&self) -> RunOutcome {
        let text = || self.text.as_ref().map(|t| t.0.clone()).unwrap_or_default();
        match self.kind {
            StampKind::Success => RunOutcome::Success,
            StampKind::Failed => RunOutcome::Failed { error: text() },
            StampKind::Panicked => RunOutcome::Panicked { message: text() },
            StampKind::TimedOut => RunOutcome::TimedOut,
            StampKind::Cancelled => RunOutcome::Cancelled,
        }
    }

    /// Whether the run succeeded ([`RunOutcome::is_success`]).
    pub(crate) fn is_success(&self) -> bool {
        self.kind == StampKind::Success
    }

    /// Whether the run counts as a failure ([`RunOutcome::is_failure`]).
    pub(crate) fn is_failure(&self) -> bool {
        self.kind.is_failure()
    }

    /// The run's error as the status shows it ([`RunOutcome::error_text`]).
    pub(crate) fn error_text(&self) -> Option<String> {
        self.kind
            .error_text(self.text.as_ref().map_or("", |t| t.0.as_str()))
    }

    /// The run as the API shows it.
    pub(crate) fn record(&self) -> RunRecord {
        RunRecord {
            reason: self.reason,
            started_at: self.started.to_datetime(),
            duration_ms: self.duration_ms,
            outcome: self.outcome(),
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

#[cfg(test)]
mod tests {

    #[test]
    fn a_run_text_is_cut_once() {
        let long = "é".repeat(10_000);
        let once = cut_run_text(long);
        assert!(once.len() < MAX_RUN_ERROR_BYTES + 80, "{}", once.len());
        assert_eq!(cut_run_text(once.clone()), once, "cut again, unchanged");
        let RunOutcome::Failed { error } = RunOutcome::failed(once.clone()) else {
            panic!("failed");
        };
        assert_eq!(error, once);
    }
    use super::*;

    /// A stamp is half a line and never straddles two (fails at the 56 bytes of a
    /// stamp holding its `RunOutcome`).
    #[test]
    fn a_run_stamp_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<RunStamp>(), 32);
        assert_eq!(std::mem::align_of::<RunStamp>(), 32);
    }

    /// One outcome of each kind, a failure's and a panic's with their messages.
    fn every_outcome() -> [RunOutcome; 5] {
        [
            RunOutcome::Success,
            RunOutcome::Failed {
                error: "disk full".into(),
            },
            RunOutcome::Panicked {
                message: "index out of bounds".into(),
            },
            RunOutcome::TimedOut,
            RunOutcome::Cancelled,
        ]
    }

    /// Every outcome reads back as it was recorded, and is judged as its `RunOutcome`.
    #[test]
    fn a_stamp_keeps_its_outcome() {
        let started = WallNanos::from(chrono::Utc::now());
        for outcome in every_outcome() {
            let stamp = RunStamp::new(RunReason::Scheduled, started, 7, outcome.clone());
            assert_eq!(stamp.outcome(), outcome);
            assert_eq!(stamp.is_success(), outcome.is_success());
            assert_eq!(stamp.is_failure(), outcome.is_failure());
            assert_eq!(stamp.error_text(), outcome.error_text());
            let record = stamp.record();
            assert_eq!((record.outcome, record.duration_ms), (outcome, 7));
        }
    }

    /// A stamp reads back from its words (a history slot's) as it was, for every
    /// reason and outcome.
    #[test]
    fn a_stamp_reads_back_from_its_words() {
        let started = WallNanos::from(chrono::Utc::now());
        for reason in REASONS {
            for outcome in every_outcome() {
                let stamp = RunStamp::new(reason, started, 7, outcome);
                let (words, text) = stamp.words();
                let back = RunStamp::from_words(words, text.cloned());
                assert_eq!(back.record(), stamp.record());
            }
        }
    }
}
