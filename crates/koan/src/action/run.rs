//! One job's run, from the moment it may start to its outcome: what a mailbox worker
//! and a caller running an action itself (`action::inline`) share.
//!
//! A hand-written future rather than an `async fn`: the common run (no deadline, no
//! caller's cancel token) holds the job, the handler's future and the action's span
//! side by side and polls the handler in place, so the job is not moved again into
//! each layer of an async state machine, and a caller's run needs no allocation of
//! its own. Runs with a deadline or a cancel token take the timer's path, boxed.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::context::{ActionContext, Scoped, in_scope};
use super::correlation::CorrelationText;
use super::mailbox::Job;
use super::metrics::Outcome;
use super::worker::{HandlerFut, answer, cancelled_by, finished, run_with_deadline};
use crate::clock::{Moment, moment};
use crate::error::{Error, ErrorKind, Result};
use crate::host::HostInner;
use crate::payload::Payload;
use crate::registry::ServiceCell;
use crate::util::{BoxFuture, catch_unwind, panic_message};

/// A handler's outcome: its own result, or the message of its panic.
type HandlerResult =
    std::result::Result<std::result::Result<Payload, crate::error::BoxError>, String>;

/// A job's run. Resolves to its outcome when the job has no reply channel to send
/// it through (a caller running the action itself), to `None` otherwise.
pub(crate) enum Run {
    /// Settled before its handler started (its deadline passed in the queue, or its
    /// caller went away); taken by the first poll.
    Ready(Option<Result<Payload>>),
    /// The handler runs, polled in place: no deadline and no cancel token.
    Handler(HandlerRun),
    /// With a deadline or a caller's cancel token: the timer's path.
    Timed(BoxFuture<'static, Option<Result<Payload>>>),
    /// Finished; with the moment its handler's outcome was counted, when read here
    /// (a worker that goes straight on to its next job starts that one then).
    Done(Option<Moment>),
}

/// A running handler without a deadline: polled inside the action's span and with
/// its correlation id current (`context::in_scope`), as `Instrument` and a task-local's
/// scope would.
pub(crate) struct HandlerRun {
    job: Job,
    /// `None` once it finished.
    fut: Option<HandlerFut>,
    span: tracing::Span,
    started: Moment,
    queued: f64,
}

impl Drop for HandlerRun {
    fn drop(&mut self) {
        // Dropped mid-run (its worker aborted at the end of the grace): the handler's
        // future is dropped in its span and scope, as an instrumented one would be.
        if let Some(fut) = self.fut.take() {
            let _entered = self.span.enter();
            in_scope(&self.job.correlation, || drop(fut));
        }
    }
}

impl Run {
    /// Starts `job`, which left the queue at `started` (a caller that runs the job on
    /// its own task passes the moment it accepted it: there was no queue). The caller
    /// holds a concurrency slot and counts the run in flight.
    #[inline]
    pub(crate) fn start(
        host: &Arc<HostInner>,
        cell: &Arc<ServiceCell>,
        mut job: Job,
        started: Moment,
    ) -> Run {
        // A caller running the job itself starts it at its acceptance: no queue time
        // (and no subtraction to learn it).
        let queued = if started > job.enqueued_at {
            (started - job.enqueued_at).as_secs_f64()
        } else {
            0.0
        };
        // A stored job's deadline counts from its run's start (jobs.md), not from
        // its wait here behind other calls: one died of `timeout` at each attempt,
        // never run (found by a probe).
        if job.job.is_some()
            && let Some(timeout) = job.timeout
        {
            job.deadline = Some(crate::util::after(Instant::now(), timeout.get()));
        }
        // Its caller gave up on it at its deadline, and was told it never started.
        if job.claim.as_ref().is_some_and(|c| c.given_up()) {
            job.answered = true;
            super::worker::never_started(&job, cell);
            return Run::Ready(None);
        }
        // Only a job with a deadline reads tokio's clock (see `Moment`).
        if let Some(deadline) = job.deadline
            && Instant::now() >= deadline
        {
            let e = job.not_started_error(cell);
            super::worker::never_started(&job, cell);
            return Run::Ready(answer(&mut job, Err(e)));
        }
        // A caller that already gave up (it stopped waiting, e.g. an HTTP client that
        // disconnected) needs no run; counted and logged so the skip is visible. Work
        // handed over with a ticket runs whether or not the ticket is kept.
        if job.job.is_none() && !job.detached && job.reply.as_ref().is_some_and(|r| r.is_closed()) {
            job.answered = true;
            finished(&job, cell, Outcome::Cancelled, 0.0, queued, started);
            tracing::debug!(action = %job.entry(cell).name, correlation_id = %job.correlation.logged(), "caller gone before the action started; not run");
            return Run::Ready(None);
        }
        // A stored job cancelled, or whose claim was lost, while it waited here is
        // not started: its runner let it go, and its retry may be running. (One
        // whose service is stopping is run as ever: a draining host runs it.)
        if let Some(meta) = &job.job
            && meta.token.is_cancelled()
            && !cell.life.token.is_cancelled()
        {
            // Told to stop by the host's stop (a durable store's runner halts
            // before the services stop): put back, not an attempt (a review).
            let halted = cell.host().is_some_and(|h| h.jobs.halted());
            let e = if halted {
                Error::new(
                    ErrorKind::ShuttingDown,
                    format!(
                        "job `{}` was not started: its host is stopping",
                        meta.info.id
                    ),
                )
            } else {
                Error::new(
                    ErrorKind::JobState,
                    format!(
                        "job `{}` was cancelled or lost its claim before its run started",
                        meta.info.id
                    ),
                )
            };
            finished(&job, cell, Outcome::Cancelled, 0.0, queued, started);
            return Run::Ready(answer(&mut job, Err(e)));
        }
        // Only an action with a deadline needs a token of its own up front; the others
        // get one lazily if the handler asks for it (see `ActionContext::token`). A
        // stored job's run has its own (cancelled too when its claim is lost).
        let base = job.job.as_ref().map(|j| &j.token);
        // A caller's cancel token, like a deadline, needs the run's token up front.
        let deadline_token = (job.deadline.is_some() || job.cancel_on.is_some())
            .then(|| base.unwrap_or(&cell.life.token).child_token());
        let cx = ActionContext {
            cell: Arc::clone(cell),
            action: job.action,
            job: job.job.as_ref().map(|j| Arc::clone(&j.info)),
            correlation: CorrelationText::new(job.correlation.clone()),
            priority: job.priority,
            token: match (&deadline_token, base) {
                (Some(t), _) | (None, Some(t)) => std::sync::OnceLock::from(t.clone()),
                (None, None) => std::sync::OnceLock::new(),
            },
            deadline: job.deadline,
        };
        let params = std::mem::replace(&mut job.params, crate::payload::Params::of(()));
        let entry = job.entry(cell);
        let fut = (entry.call)(params, cx);
        // One span per action, on whichever task runs it (a worker, or the caller
        // itself): whatever the handler logs carries its service, action and
        // correlation id.
        let span = tracing::info_span!(
            "action",
            service = %cell.spec.name,
            action = %entry.name,
            correlation_id = %job.correlation.logged(),
            job = job.job.as_ref().map(|j| j.info.id.as_str()),
        );
        match deadline_token {
            None => Run::Handler(HandlerRun {
                job,
                fut: Some(fut),
                span,
                started,
                queued,
            }),
            Some(token) => {
                let fut = cancelled_by(fut, job.cancel_on.take(), Some(token.clone()));
                let (host, cell) = (Arc::clone(host), Arc::clone(cell));
                Run::Timed(Box::pin(async move {
                    timed(&host, &cell, job, fut, span, token, started, queued).await
                }))
            }
        }
    }

    /// Polls the run of a job of `cell`.
    pub(crate) fn poll_run(
        &mut self,
        cell: &ServiceCell,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Payload>>> {
        match self {
            Run::Ready(outcome) => {
                let outcome = outcome.take();
                *self = Run::Done(None);
                Poll::Ready(outcome)
            }
            Run::Handler(h) => {
                let Some(fut) = h.fut.as_mut() else {
                    panic!("a run polled after it completed");
                };
                let polled = {
                    let _entered = h.span.enter();
                    in_scope(&h.job.correlation, || {
                        std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)))
                    })
                };
                let result = match polled {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(out)) => Ok(out),
                    Err(panic) => Err(panic_message(panic)),
                };
                h.fut = None;
                let now = moment();
                let outcome = settle(&mut h.job, cell, result, h.started, h.queued, now);
                *self = Run::Done(Some(now));
                Poll::Ready(outcome)
            }
            Run::Timed(fut) => {
                let outcome = std::task::ready!(fut.as_mut().poll(cx));
                *self = Run::Done(None);
                Poll::Ready(outcome)
            }
            Run::Done(_) => panic!("a run polled after it completed"),
        }
    }

    /// Answers the job of a run dropped before it finished (its task aborted at the
    /// end of the grace): `ShuttingDown`, naming its action, declared by `cell`. A
    /// timed run answers for itself (see [`timed`]).
    #[inline]
    pub(crate) fn abandon(&mut self, cell: &ServiceCell) {
        if let Run::Handler(h) = self {
            h.job.abandon_in(cell);
        }
    }

    /// The action's name, while its handler runs.
    pub(crate) fn action<'c>(&self, cell: &'c ServiceCell) -> Option<&'c str> {
        match self {
            Run::Handler(h) => Some(&h.job.entry(cell).name),
            _ => None,
        }
    }

    /// When a finished run's handler outcome was counted, if this run read it.
    pub(crate) fn ended_at(&self) -> Option<Moment> {
        match self {
            Run::Done(at) => *at,
            _ => None,
        }
    }
}

/// A worker's run of a job of `cell`: dropped before it finished, it answers the
/// job (see [`Run::abandon`]).
pub(crate) struct CellRun<'c> {
    pub(crate) run: Run,
    pub(crate) cell: &'c ServiceCell,
}

impl Drop for CellRun<'_> {
    fn drop(&mut self) {
        self.run.abandon(self.cell);
    }
}

/// A job of `cell` held by a run's future: dropped unanswered with it, it answers
/// (see [`Job::abandon`]).
struct Held<'c> {
    job: Job,
    cell: &'c ServiceCell,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.job.abandon_in(self.cell);
    }
}

/// The timer's path: a run with a deadline, or with a caller's cancel token.
#[allow(clippy::too_many_arguments)]
async fn timed(
    host: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    job: Job,
    fut: HandlerFut,
    span: tracing::Span,
    token: tokio_util::sync::CancellationToken,
    started: Moment,
    queued: f64,
) -> Option<Result<Payload>> {
    let mut held = Held { job, cell };
    let job = &mut held.job;
    let fut = tracing::Instrument::instrument(Scoped::new(job.correlation.clone(), fut), span);
    let result = match job.deadline {
        // Kept out of line (boxed) so that its state is held only while it runs.
        Some(deadline) => {
            let timed = run_with_deadline(host, cell, job, fut, deadline, token, started);
            Box::pin(timed).await?
        }
        None => catch_unwind(fut).await,
    };
    settle(job, cell, result, started, queued, moment())
}

/// Counts and logs the handler's `result` (the run began at `started`; `now`, just
/// read, ends it), and answers the job with it.
fn settle(
    job: &mut Job,
    cell: &ServiceCell,
    result: HandlerResult,
    started: Moment,
    queued: f64,
    now: Moment,
) -> Option<Result<Payload>> {
    // One clock read for the run's duration and the second it is counted in.
    let elapsed = now.saturating_duration_since(started).as_secs_f64();
    let outcome = match result {
        Ok(Ok(payload)) => {
            finished(job, cell, Outcome::Ok, elapsed, queued, now);
            Ok(payload)
        }
        Ok(Err(e)) => {
            let err = match e.downcast::<Error>() {
                // The answer to a call the handler made, passed on: the handler's
                // failure, naming it. Whole, it told this call's caller that its
                // parameters were wrong (400), the action unknown, or the work
                // never started and safe to send again: this handler had run
                // (found by a probe).
                Ok(inner) if inner.is_of_a_call() => Error::new(
                    ErrorKind::Handler,
                    format!(
                        "action `{}` of `{}` failed: a call it made failed: [{}] {}",
                        job.entry(cell).name,
                        cell.spec.name,
                        inner.kind(),
                        inner.message()
                    ),
                )
                .with_source(*inner),
                // Its own error: as it was made, but for `not_started`, which a
                // handler that ran cannot be.
                Ok(own) => own.ran(),
                Err(other) => Error::new(
                    ErrorKind::Handler,
                    format!(
                        "action `{}` of `{}` failed: {}",
                        job.entry(cell).name,
                        cell.spec.name,
                        crate::util::with_causes(&*other)
                    ),
                ),
            };
            // A stored job's handler told to stop by its host's shutdown
            // (`job/shutdown.rs`) ended so too: not an action that failed.
            let halted = || job.job.is_some() && cell.host().is_some_and(|h| h.jobs.halted());
            if err.kind() == ErrorKind::Handler && (cell.life.token.is_cancelled() || halted()) {
                // Ended at its token as its service stopped: the stop's doing, not
                // a failure of the work — answered as one (503, which a caller may
                // send again elsewhere), not as the handler's error (500).
                finished(job, cell, Outcome::ShuttingDown, elapsed, queued, now);
                tracing::info!(service = %cell.spec.name, action = %job.entry(cell).name, correlation_id = %job.correlation.logged(), error = ?err.message(), "action ended by its service's stop");
                // The host going on, the service stopped itself: not a shutdown a
                // caller would wait out, and said so.
                let by_itself = cell
                    .host()
                    .is_some_and(|h| !h.stopping.load(std::sync::atomic::Ordering::Acquire));
                let (kind, why) = if by_itself {
                    (
                        ErrorKind::ServiceUnavailable,
                        "its service has stopped (its own code cancelled its token; it takes no more calls until the host restarts)",
                    )
                } else {
                    (ErrorKind::ShuttingDown, "its service's stop")
                };
                return answer(
                    job,
                    Err(Error::new(
                        kind,
                        format!(
                            "action `{}` of `{}` was stopped by {why} before it finished: {}",
                            job.entry(cell).name,
                            cell.spec.name,
                            err.message()
                        ),
                    )),
                );
            }
            // A stored job's handler that ended at its token after an operator's
            // cancel (or a lost claim): the cancel's doing, counted `cancelled`
            // (it was counted a handler's failure, and warned; found by a probe).
            if err.kind() == ErrorKind::Handler
                && job.job.as_ref().is_some_and(|j| j.token.is_cancelled())
            {
                finished(job, cell, Outcome::Cancelled, elapsed, queued, now);
                tracing::info!(service = %cell.spec.name, action = %job.entry(cell).name, correlation_id = %job.correlation.logged(), error = ?err.message(), "action stopped: its job was cancelled or lost its claim");
                return answer(job, Err(err));
            }
            // The handler refused its input: the caller's mistake, counted as
            // the same refusal made before the handler runs, not as a failure of
            // the service (the same bad input counted two ways; a probe).
            if err.kind() == ErrorKind::InvalidParameters {
                finished(job, cell, Outcome::InvalidParameters, elapsed, queued, now);
                tracing::info!(service = %cell.spec.name, action = %job.entry(cell).name, correlation_id = %job.correlation.logged(), error = ?err.message(), "action refused its parameters");
                return answer(job, Err(err));
            }
            finished(job, cell, Outcome::HandlerError, elapsed, queued, now);
            tracing::warn!(service = %cell.spec.name, action = %job.entry(cell).name, correlation_id = %job.correlation.logged(), error = ?err.message(), "action failed");
            Err(err)
        }
        Err(panic) => {
            finished(job, cell, Outcome::Panic, elapsed, queued, now);
            tracing::error!(service = %cell.spec.name, action = %job.entry(cell).name, correlation_id = %job.correlation.logged(), panic = %panic, "action panicked");
            Err(Error::new(
                ErrorKind::Panic,
                format!(
                    "action `{}` of `{}` panicked: {panic}",
                    job.entry(cell).name,
                    cell.spec.name
                ),
            ))
        }
    };
    answer(job, outcome)
}
