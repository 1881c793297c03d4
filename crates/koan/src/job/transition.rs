//! The changes of a job's record, shared by every store that keeps whole records:
//! one owner for each rule (what a claim, a finish, a retry and a cancel do), and the
//! errors a store answers with.

use chrono::{DateTime, Utc};

use super::record::{JobAttempt, JobRecord, JobState, JobStep};
use super::store::{ClaimRequest, Finish};
use crate::action::ErrorBody;
use crate::error::{Error, ErrorKind};

/// `UnknownJob`: no job with that id.
pub fn unknown_job(id: &str) -> Error {
    Error::new(
        ErrorKind::UnknownJob,
        format!(
            "no job with id `{id}` (never enqueued, deleted, or past retention); list jobs with GET /api/jobs"
        ),
    )
}

/// `JobState`: the job is not in a state that allows `what` (only one that is
/// `allowed`).
pub fn wrong_state(id: &str, state: JobState, what: &str, allowed: &str) -> Error {
    Error::new(
        ErrorKind::JobState,
        format!("job `{id}` is {state}: cannot {what} it (only a job that is {allowed})"),
    )
}

/// The outcome of a job cancelled before it ended (`JobState`), as its waiters
/// are told it: the one constructor, so [`is_cancelled`] knows it.
pub fn cancelled(id: &str) -> Error {
    Error::new(ErrorKind::JobState, format!("job `{id}` was cancelled"))
}

/// Whether `outcome` is a job's [`cancelled`] (a handler's own errors are of
/// another kind: `handler_error`).
pub fn is_cancelled(outcome: &Error) -> bool {
    outcome.kind() == ErrorKind::JobState && outcome.message().ends_with("` was cancelled")
}

/// A repeat under an idempotency key returns the first job only when it asks for the
/// same work; a different call under a used key is refused rather than answered with
/// another call's job (`JobState`, 409 over HTTP). Shared by the host's store and
/// the cluster's (`koan-nats`).
pub fn same_call(first: &JobRecord, service: &str, asked: &[JobStep]) -> Result<(), Error> {
    let had = first.steps();
    if first.service == service && had == asked {
        return Ok(());
    }
    // What differs, named: a repeat differing only in its timeout was told "other
    // parameters" (found by a probe).
    let ms = |t: Option<u64>| t.map_or_else(|| "none".to_owned(), |t| format!("{t} ms"));
    let differs = if first.service != service {
        format!("another service (`{}`)", service.escape_debug())
    } else if had.len() != asked.len() {
        format!("a chain of {} actions, not {}", asked.len(), had.len())
    } else {
        let (h, a) = had
            .iter()
            .zip(asked)
            .find(|(h, a)| h != a)
            .unwrap_or((&had[0], &asked[0]));
        if h.action != a.action {
            format!("another action (`{}`)", a.action.escape_debug())
        } else if h.params != a.params {
            "other parameters".to_owned()
        } else {
            format!(
                "another timeout ({}; the first had {})",
                ms(a.timeout_ms),
                ms(h.timeout_ms)
            )
        }
    };
    Err(Error::new(
        ErrorKind::JobState,
        format!(
            "idempotency key `{}` was first used for job {} (`{}` of `{}`), and this call differs: {differs}; a repeat must be the same call: use a new key for a different one",
            first
                .idempotency_key
                .as_deref()
                .unwrap_or_default()
                .escape_debug(),
            first.id,
            first.action.escape_debug(),
            first.service.escape_debug(),
        ),
    ))
}

/// Runs of one job that may end with its host gone (its claim lapsed) before the
/// job is dead: as many as the cluster's default `max_deliver` lets JetStream
/// deliver a job whose runs never end.
pub const MAX_LAPSES: usize = 5;

/// The record once claimed by `request` (the attempt count raised, the attempt
/// recorded, `running` under the lease); `false` when the job is dead instead.
///
/// A job still `running` is claimed because its lease lapsed: its host crashed, was
/// killed or froze without recording an outcome. That attempt counts, and its
/// history says so. It runs again whatever its retry policy (a crash is not its
/// handler's verdict), until [`MAX_LAPSES`] runs in a row ended so: then it is dead,
/// so that a job which brings its process down is not run after every restart for
/// ever (as the cluster's `max_deliver` ends it). Its record then says why, and the
/// store hands it back dead for the runner to report.
#[must_use = "a job that is dead at its claim must not be run"]
pub fn apply_claim(r: &mut JobRecord, request: &ClaimRequest) -> bool {
    if r.state == JobState::Running && !record_lapse(r, request.now) {
        return false;
    }
    r.attempts += 1;
    r.state = JobState::Running;
    r.instance = Some(request.instance.clone());
    r.lease_until = Some(request.lease_until);
    make_room(&mut r.history);
    r.history.push(JobAttempt {
        attempt: r.attempts,
        started_at: request.now,
        finished_at: None,
        instance: request.instance.clone(),
        error: None,
    });
    true
}

/// The most entries a job's history keeps. Each stop of its host mid-run adds one
/// that does not count as an attempt: a host stopped and started again in a loop
/// grew the record (rewritten whole at each change) without end.
pub const MAX_HISTORY: usize = 64;

/// Makes room for one more entry: the oldest entry of a run stopped by its host's
/// shutdown goes first (the attempts that count stay), else the oldest entry.
fn make_room(history: &mut Vec<JobAttempt>) {
    while history.len() >= MAX_HISTORY {
        let stopped = history.iter().position(|a| {
            a.error
                .as_ref()
                .is_some_and(|e| e.error == ErrorKind::ShuttingDown.as_str())
        });
        history.remove(stopped.unwrap_or(0));
    }
}

/// Records that the running attempt of `r` ended without an outcome (its claim
/// lapsed); `false` when that was the last run it may lose so, and `r` is now dead.
fn record_lapse(r: &mut JobRecord, now: DateTime<Utc>) -> bool {
    let host = r.instance.take().unwrap_or_default();
    r.lease_until = None;
    // The attempts that never ended in a row, this one included: an attempt that
    // ended has its end (a dead verdict's too, so that a retry by hand starts
    // afresh), and one cut by a stop is no longer in the history.
    let lapsed = r
        .history
        .iter()
        .rev()
        .take_while(|a| a.finished_at.is_none())
        .count();
    let last = lapsed >= MAX_LAPSES;
    let mut message = format!(
        "attempt {} of job `{}` never ended: its host `{}` stopped renewing its claim (it crashed, was killed, froze past the lease, or could not write its outcome to the store)",
        r.attempts,
        r.id,
        host.escape_debug()
    );
    if last {
        message.push_str(&format!(
            "; {lapsed} runs in a row ended so, and the job is dead (retry it by hand once the cause is known)"
        ));
    }
    let error = ErrorBody::from(&Error::new(ErrorKind::Handler, message));
    if let Some(attempt) = r.history.last_mut() {
        attempt.error = Some(error.clone());
        if last {
            attempt.finished_at = Some(now);
        }
    }
    r.error = Some(error);
    if last {
        r.state = JobState::Dead;
        r.finished_at = Some(now);
    }
    !last
}

/// `Ok` when job `id`, in `state`, may be deleted: only a final one (succeeded,
/// dead or cancelled), in every store. A live one is cancelled first, so that its
/// waiters are told and, in the cluster, no message of it waits to run it again.
pub fn check_delete(id: &str, state: JobState) -> Result<(), Error> {
    if state.is_final() {
        return Ok(());
    }
    Err(wrong_state(id, state, "delete", "final (cancel it first)"))
}

/// Kinds of failure that another run cannot mend: a job that fails so is dead at
/// once, whatever its retry policy (a host's store and a transport's queue alike).
pub fn never_retried(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidParameters
            | ErrorKind::UnknownAction
            | ErrorKind::UnknownService
            | ErrorKind::Disabled
    )
}

/// Which jobs a retry by hand takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryFrom {
    /// A dead, cancelled, retrying or succeeded job (`jobs().retry`).
    Any,
    /// A dead job only (`retry_all_dead`): one that someone else retried, and
    /// that ended meanwhile, is not run again.
    Dead,
}

impl RetryFrom {
    /// Whether a job in `state` may be retried so.
    pub fn allows(self, state: JobState) -> bool {
        match self {
            RetryFrom::Any => matches!(
                state,
                JobState::Dead | JobState::Cancelled | JobState::Retrying | JobState::Succeeded
            ),
            RetryFrom::Dead => state == JobState::Dead,
        }
    }

    /// `Ok` when job `id`, in `state`, may be retried so; else the `JobState`
    /// error that names the states that may.
    pub fn check(self, id: &str, state: JobState) -> Result<(), Error> {
        if self.allows(state) {
            return Ok(());
        }
        let expected = match self {
            RetryFrom::Any => "dead, cancelled, retrying or succeeded",
            RetryFrom::Dead => "dead",
        };
        Err(wrong_state(id, state, "retry", expected))
    }
}

/// The most bytes of a handler's error message a job's record keeps (in its
/// `error` and in its attempt's history entry): the rest is cut, saying how long it
/// was. A handler returning a 1 MB error grew one job's record to 58 MB over its
/// retries, and every enqueue behind its writes to seconds (found by a probe).
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

/// `e` with its message cut to [`MAX_ERROR_BYTES`].
fn kept(mut e: ErrorBody) -> ErrorBody {
    e.message = crate::util::cut_text(e.message, MAX_ERROR_BYTES, "the job's record");
    e
}

/// The record after `how` (shared by stores that keep whole records).
pub fn apply_finish(r: &mut JobRecord, how: Finish, now: DateTime<Utc>) {
    r.instance = None;
    r.lease_until = None;
    let how = match how {
        Finish::Retry { error, at } => Finish::Retry {
            error: kept(error),
            at,
        },
        Finish::Dead { error } => Finish::Dead { error: kept(error) },
        other => other,
    };
    let error = match how {
        Finish::Succeeded { result, truncated } => {
            r.state = JobState::Succeeded;
            r.result = Some(result);
            r.result_truncated = truncated;
            r.error = None;
            r.finished_at = Some(now);
            None
        }
        Finish::Retry { error, at } => {
            r.state = JobState::Retrying;
            r.run_at = at;
            r.error = Some(error.clone());
            Some(error)
        }
        Finish::Dead { error } => {
            r.state = JobState::Dead;
            r.error = Some(error.clone());
            r.finished_at = Some(now);
            Some(error)
        }
        Finish::Release { at } => {
            r.state = JobState::Queued;
            r.run_at = at;
            r.attempts = r.attempts.saturating_sub(1);
            r.history.pop();
            return;
        }
        Finish::Stopped { at } => {
            r.state = JobState::Queued;
            r.run_at = at;
            r.attempts = r.attempts.saturating_sub(1);
            Some(ErrorBody {
                error: crate::error::ErrorKind::ShuttingDown.as_str().to_owned(),
                message: format!(
                    "attempt {} was stopped by its host's shutdown before it ended; the job runs again, and this attempt does not count",
                    r.attempts + 1
                ),
            })
        }
    };
    if let Some(last) = r.history.last_mut() {
        last.finished_at = Some(now);
        last.error = error;
    }
}

/// The record after a retry by hand.
pub fn apply_retry(r: &mut JobRecord, now: DateTime<Utc>) {
    r.state = JobState::Queued;
    r.run_at = now;
    r.finished_at = None;
    r.instance = None;
    r.lease_until = None;
    r.max_attempts = r.max_attempts.max(r.attempts + 1);
}

/// The record after a cancel (a running attempt ends then, and says why). A
/// running one keeps where it ran and its claim's end: in another process
/// sharing the store it goes on until its next heartbeat, so a retry must not
/// run beside it before that claim lapses ([`Jobs::retry`](super::Jobs::retry)).
pub fn apply_cancel(r: &mut JobRecord, now: DateTime<Utc>) {
    let running = r.state == JobState::Running;
    if running && let Some(last) = r.history.last_mut() {
        last.finished_at = Some(now);
        last.error = Some(ErrorBody::from(&cancelled(&r.id)));
    }
    r.state = JobState::Cancelled;
    r.finished_at = Some(now);
    if !running {
        r.instance = None;
        r.lease_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(at: i64) -> ClaimRequest {
        let now = DateTime::from_timestamp(at, 0).expect("a time");
        ClaimRequest {
            service: "s".into(),
            limit: 1,
            instance: "host-1".into(),
            now,
            lease_until: now + chrono::TimeDelta::seconds(30),
        }
    }

    /// A handler's error of 1 MB is kept cut to `MAX_ERROR_BYTES` in the record
    /// and its history, and the record's weight (retention) counts the history's.
    #[test]
    fn a_huge_error_is_cut_and_weighed() {
        let mut r = crate::testing::job_record("j", "s");
        for i in 0..3 {
            assert!(apply_claim(&mut r, &claim(1 + i)));
            let error = ErrorBody {
                error: ErrorKind::Handler.as_str().into(),
                message: "é".repeat(500_000),
            };
            apply_finish(
                &mut r,
                Finish::Retry {
                    error,
                    at: claim(2 + i).now,
                },
                claim(2 + i).now,
            );
        }
        let message = &r.error.as_ref().expect("an error").message;
        assert!(message.len() < MAX_ERROR_BYTES + 100, "{}", message.len());
        assert!(message.ends_with("… (1000000 bytes; the job's record keeps the first 8192)"));
        assert!(r.history.iter().all(|a| {
            a.error
                .as_ref()
                .is_some_and(|e| e.message.len() < MAX_ERROR_BYTES + 100)
        }));
        assert!(
            r.weight() > 4 * MAX_ERROR_BYTES,
            "the history's errors count: {}",
            r.weight()
        );
    }

    /// A job whose host is stopped mid-run 500 times keeps at most `MAX_HISTORY`
    /// entries, its counted attempts among them (before: one entry more per stop).
    #[test]
    fn a_history_stays_bounded_through_stops_and_keeps_counted_attempts() {
        let mut r = crate::testing::job_record("j", "s");
        assert!(apply_claim(&mut r, &claim(1)));
        let failed = ErrorBody {
            error: ErrorKind::Handler.as_str().into(),
            message: "boom".into(),
        };
        apply_finish(
            &mut r,
            Finish::Retry {
                error: failed,
                at: claim(2).now,
            },
            claim(2).now,
        );
        for i in 0..500 {
            assert!(apply_claim(&mut r, &claim(3 + i)));
            apply_finish(
                &mut r,
                Finish::Stopped {
                    at: claim(3 + i).now,
                },
                claim(3 + i).now,
            );
        }
        assert_eq!(r.history.len(), MAX_HISTORY);
        assert_eq!(r.attempts, 1);
        let first = &r.history[0];
        assert_eq!(
            first.error.as_ref().map(|e| e.error.as_str()),
            Some("handler_error"),
            "the counted attempt stays: {first:?}"
        );
        assert!(apply_claim(&mut r, &claim(9_999)));
        assert_eq!(r.history.len(), MAX_HISTORY);
        assert_eq!(r.history.last().map(|a| a.attempt), Some(2));
    }
}
