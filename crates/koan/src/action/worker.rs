//! Mailbox workers: run jobs with enforced deadlines and caught panics, answer callers,
//! update the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::context::{ActionContext, CORRELATION};
use super::correlation::CorrelationText;
use super::mailbox::Job;
use super::metrics::{ActionMetrics, Outcome};
use crate::error::{Error, ErrorKind, Result};
use crate::host::HostInner;
use crate::payload::Payload;
use crate::registry::ServiceCell;
use crate::util::{catch_unwind, fmt_duration};

/// One worker of a service; `max_concurrency` of them share the mailbox. A job is
/// taken only once a concurrency slot is held, so it leaves the queue when it can run.
pub(crate) async fn run_worker(host: Arc<HostInner>, cell: Arc<ServiceCell>) {
    let queue = &cell.queue;
    while let Some((job, _slot)) = queue.mailbox.next(|| queue.slots.take()).await {
        // Queued jobs answer through their reply channel.
        let _ = run_counted(&host, &cell, job, Instant::now()).await;
    }
}

/// Runs `job` (its caller holds a slot), counted in the service's `in_flight` for
/// as long as the run's future lives: the count goes down when the run ends *or*
/// when the future is dropped (a worker aborted at the end of the grace).
pub(crate) async fn run_counted(
    host: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    job: Job,
    started: Instant,
) -> Option<Result<Payload>> {
    let _counted = InFlight::enter(cell);
    execute(host, cell, job, started).await
}

/// One run counted in `ServiceCell::in_flight`, given back on drop.
struct InFlight<'a>(&'a ServiceCell);

impl<'a> InFlight<'a> {
    fn enter(cell: &'a ServiceCell) -> Self {
        cell.queue.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(cell)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.queue.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `job`, which left the queue at `started` (a caller that runs the job on
/// its own task passes the moment it accepted it: there was no queue).
/// Returns the outcome when the job has no reply channel to send it through (a
/// caller running the action itself), `None` otherwise.
async fn execute(
    host: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    mut job: Job,
    started: Instant,
) -> Option<Result<Payload>> {
    let queued = started
        .saturating_duration_since(job.enqueued_at)
        .as_secs_f64();
    if let Some(deadline) = job.deadline
        && started >= deadline
    {
        let e = job.timeout_error(&cell.spec.name);
        finished(&job, cell, Outcome::Timeout, 0.0, queued);
        return answer(&mut job, Err(e));
    }
    // A caller that already gave up (it stopped waiting, e.g. an HTTP client that
    // disconnected) needs no run; counted and logged so the skip is visible.
    if job.job.is_none() && job.reply.as_ref().is_some_and(|r| r.is_closed()) {
        job.answered = true;
        finished(&job, cell, Outcome::Cancelled, 0.0, queued);
        tracing::debug!(action = %job.entry.name, correlation_id = %job.correlation, "caller gone before the action started; not run");
        return None;
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
        action: Arc::clone(&job.entry.name),
        job: job.job.as_ref().map(|j| Arc::clone(&j.info)),
        correlation: CorrelationText::new(job.correlation.clone()),
        priority: job.priority,
        token: match (&deadline_token, base) {
            (Some(t), _) | (None, Some(t)) => std::sync::OnceLock::from(t.clone()),
            (None, None) => std::sync::OnceLock::new(),
        },
        deadline: job.deadline,
    };
    let params = std::mem::replace(&mut job.params, Box::new(()));
    let fut = (job.entry.call)(params, cx);
    let fut = cancelled_by(fut, job.cancel_on.take(), deadline_token.clone());
    // One span per action, on whichever task runs it (a worker, or the caller itself):
    // whatever the handler logs carries its service, action and correlation id.
    let span = tracing::info_span!(
        "action",
        service = %cell.spec.name,
        action = %job.entry.name,
        correlation_id = %job.correlation,
        job = job.job.as_ref().map(|j| j.info.id.as_str()),
    );
    let fut =
        tracing::Instrument::instrument(CORRELATION.scope(job.correlation.clone(), fut), span);
    let result = match (job.deadline, deadline_token) {
        (Some(deadline), Some(token)) => {
            // Kept out of line (boxed) so that calls without a deadline do not carry
            // the timer's state around.
            let timed = run_with_deadline(host, cell, &mut job, fut, deadline, token, started);
            match Box::pin(timed).await {
                Some(r) => r,
                None => return None,
            }
        }
        _ => catch_unwind(fut).await,
    };
    let elapsed = started.elapsed().as_secs_f64();
    let outcome = match result {
        Ok(Ok(payload)) => {
            finished(&job, cell, Outcome::Ok, elapsed, queued);
            Ok(payload)
        }
        Ok(Err(e)) => {
            finished(&job, cell, Outcome::HandlerError, elapsed, queued);
            let err = match e.downcast::<Error>() {
                Ok(koan_err) => *koan_err,
                Err(other) => Error::new(
                    ErrorKind::Handler,
                    format!(
                        "action `{}` of `{}` failed: {other}",
                        job.entry.name, cell.spec.name
                    ),
                ),
            };
            tracing::warn!(service = %cell.spec.name, action = %job.entry.name, correlation_id = %job.correlation, error = ?err.message(), "action failed");
            Err(err)
        }
        Err(panic) => {
            finished(&job, cell, Outcome::Panic, elapsed, queued);
            tracing::error!(service = %cell.spec.name, action = %job.entry.name, correlation_id = %job.correlation, panic = %panic, "action panicked");
            Err(Error::new(
                ErrorKind::Panic,
                format!(
                    "action `{}` of `{}` panicked: {panic}",
                    job.entry.name, cell.spec.name
                ),
            ))
        }
    };
    answer(&mut job, outcome)
}

/// Counts a finished (or refused) action in the metrics, and one that ran or timed
/// out in the service's activity.
fn finished(job: &Job, cell: &ServiceCell, outcome: Outcome, run: f64, queued: f64) {
    metrics(job, cell).record(outcome, run, queued);
    match outcome {
        Outcome::Ok => cell
            .board
            .activity()
            .action_finished(cell.spec.clock.unix_secs(), false),
        Outcome::HandlerError | Outcome::Panic | Outcome::Timeout => cell
            .board
            .activity()
            .action_finished(cell.spec.clock.unix_secs(), true),
        Outcome::ShuttingDown | Outcome::Cancelled => {}
    }
}

/// The metric handles of the job's action (resolved on its first run).
fn metrics<'a>(job: &'a Job, cell: &ServiceCell) -> &'a ActionMetrics {
    job.entry
        .metrics
        .get_or_init(|| ActionMetrics::new(&cell.spec.name, &job.entry.name))
}

type HandlerResult =
    std::result::Result<std::result::Result<Payload, crate::error::BoxError>, String>;

/// Runs the handler future `fut` until `deadline`. `None` when the deadline came
/// first: the job is then answered `Timeout` here, and the handler had its grace.
async fn run_with_deadline<F>(
    host: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    job: &mut Job,
    fut: F,
    deadline: Instant,
    token: tokio_util::sync::CancellationToken,
    started: Instant,
) -> Option<HandlerResult>
where
    F: std::future::Future<Output = std::result::Result<Payload, crate::error::BoxError>>,
{
    let mut run = std::pin::pin!(catch_unwind(fut));
    tokio::select! {
        r = &mut run => Some(r),
        _ = tokio::time::sleep_until(deadline) => {
            token.cancel();
            let queued = started.saturating_duration_since(job.enqueued_at).as_secs_f64();
            let e = job.timeout_error(&cell.spec.name);
            let grace = host.config.action_grace;
            // A stored job's record must say what really happened: a handler that
            // finishes within the grace decides the outcome.
            if job.job.is_some() {
                if let Ok(r) = tokio::time::timeout(grace, &mut run).await {
                    return Some(r);
                }
                finished(job, cell, Outcome::Timeout, started.elapsed().as_secs_f64(), queued);
                tracing::warn!(service = %cell.spec.name, action = %job.entry.name, grace = %fmt_duration(grace), "job's action ignored its cancelled token past its deadline; its future was dropped");
                let _ = answer(job, Err(e));
                return None;
            }
            finished(job, cell, Outcome::Timeout, started.elapsed().as_secs_f64(), queued);
            // A caller running the action itself has its reply channel for this.
            let _ = answer(job, Err(e));
            // Give the handler a short grace to notice its cancelled token, then
            // drop its future.
            if tokio::time::timeout(grace, &mut run).await.is_err() {
                tracing::warn!(
                    service = %cell.spec.name,
                    action = %job.entry.name,
                    grace = %fmt_duration(grace),
                    "action ignored its cancelled token; its future was dropped"
                );
            }
            None
        }
    }
}

/// Sends the outcome to the caller through its reply channel; the outcome comes back
/// when there is no such channel.
#[must_use]
pub(crate) fn answer(job: &mut Job, outcome: Result<Payload>) -> Option<Result<Payload>> {
    job.answered = true;
    match job.reply.take() {
        Some(reply) => {
            let _ = reply.send(outcome);
            None
        }
        None => Some(outcome),
    }
}

/// Answers every job of a closing mailbox with `ShuttingDown` (`callers_only`: only
/// the calls of waiting callers, and the mailbox stays open for stored jobs' runs).
pub(crate) fn refuse_all(cell: &ServiceCell, callers_only: bool) {
    let jobs = if callers_only {
        cell.queue.mailbox.take_callers()
    } else {
        cell.queue.mailbox.close()
    };
    for mut job in jobs {
        let e = Error::shutting_down(&format!(
            "action `{}` of `{}`",
            job.entry.name, cell.spec.name
        ));
        if let Some(m) = job.entry.metrics.get() {
            m.record(
                Outcome::ShuttingDown,
                0.0,
                job.enqueued_at.elapsed().as_secs_f64(),
            );
        }
        let _ = answer(&mut job, Err(e));
    }
}

/// The handler's future, with the run's token cancelled when the caller's `cancel`
/// token is (the handler goes on until it returns, as at a deadline).
fn cancelled_by(
    fut: HandlerFut,
    cancel: Option<tokio_util::sync::CancellationToken>,
    run: Option<tokio_util::sync::CancellationToken>,
) -> HandlerFut {
    let (Some(cancel), Some(run)) = (cancel, run) else {
        return fut;
    };
    Box::pin(async move {
        let link = async {
            cancel.cancelled().await;
            run.cancel();
            std::future::pending::<()>().await;
        };
        tokio::select! {
            biased;
            out = fut => out,
            () = link => unreachable!("pending"),
        }
    })
}

type HandlerFut = crate::util::BoxFuture<
    'static,
    std::result::Result<crate::payload::Payload, crate::error::BoxError>,
>;
