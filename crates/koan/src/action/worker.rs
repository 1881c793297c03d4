//! Mailbox workers: run jobs with enforced deadlines and caught panics, answer callers,
//! update the metrics.

use std::sync::Arc;

use tokio::time::Instant;

use crate::clock::{Moment, moment};

use super::mailbox::Job;
use super::metrics::{ActionMetrics, Outcome};
use super::run::{CellRun, Run};
use crate::error::{Error, ErrorKind, Result};
use crate::host::HostInner;
use crate::payload::Payload;
use crate::registry::ServiceCell;
use crate::util::{catch_unwind, fmt_duration};

/// One worker of a service; `max_concurrency` of them share the mailbox. A job is
/// taken only once a concurrency slot is held, so it leaves the queue when it can run.
///
/// A worker whose run ends while more jobs wait keeps its slot and takes the next one
/// at once (it would give the slot back and take it again): per queued job, two writes
/// on the slots' word (the run counted in and out) instead of four, and the clock read
/// that ended one run starts the next.
pub(crate) async fn run_worker(host: Arc<HostInner>, cell: Arc<ServiceCell>) {
    let queue = &cell.queue;
    while let Some((mut job, slot)) = queue.mailbox.next(|| queue.slots.take()).await {
        let mut started = moment();
        loop {
            job.by_worker = true;
            let ended = {
                // Counted in `in_flight` for as long as the run lives: the count goes
                // down when the run ends *or* when it is dropped (a worker aborted at
                // the end of the grace). Dropped in reverse order: the run first.
                let _counted = InFlight::enter(&cell);
                // Aborted mid-run, it answers its caller, naming the action.
                let mut run = CellRun {
                    run: Run::start(&host, &cell, job, started),
                    cell: &cell,
                };
                // Queued jobs answer through their reply channel.
                let _ = std::future::poll_fn(|cx| run.run.poll_run(&cell, cx)).await;
                run.run.ended_at()
            };
            // One unit of tokio's cooperative budget per job, as a channel's
            // receiver spends: a worker draining a long mailbox of handlers that
            // never wait yields now and then instead of keeping its thread (and the
            // tasks queued on it) for the whole mailbox. The next job is taken after
            // the yield, so a higher-priority one that arrives meanwhile goes first.
            let yields = !tokio::task::coop::has_budget_remaining();
            tokio::task::coop::consume_budget().await;
            let Some(next) = queue.mailbox.next_in_slot() else {
                break;
            };
            // Its run starts where the last one ended (unless it yielded since), but
            // never before it was accepted.
            started = match ended {
                Some(at) if !yields => at.max(next.enqueued_at),
                _ => moment(),
            };
            job = next;
        }
        drop(slot);
    }
}

/// One run counted in flight (in its slot's word), counted out on drop.
pub(super) struct InFlight<'a>(&'a ServiceCell);

impl<'a> InFlight<'a> {
    pub(super) fn enter(cell: &'a ServiceCell) -> Self {
        cell.queue.slots.run_started();
        Self(cell)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.queue.slots.run_ended();
    }
}

/// Counts a finished (or refused) action in the metrics, and one that ran or timed
/// out in the service's activity, at `now` (a moment just read).
pub(super) fn finished(
    job: &Job,
    cell: &ServiceCell,
    outcome: Outcome,
    run: f64,
    queued: f64,
    now: Moment,
) {
    metrics(job, cell).record(outcome, run, queued);
    let failed = match outcome {
        Outcome::Ok => false,
        Outcome::Timeout => {
            // Its caller is told to look for the correlation id in the logs.
            tracing::warn!(service = %cell.spec.name, action = %job.entry(cell).name, correlation_id = %job.correlation.logged(), ran_ms = (run * 1e3) as u64, "action timed out: its deadline passed before it finished");
            true
        }
        Outcome::HandlerError | Outcome::Panic => true,
        // Refused input is counted where a refusal before the handler is: in
        // the metrics alone, neither a success nor a failure of the service.
        Outcome::ShuttingDown | Outcome::Cancelled | Outcome::InvalidParameters => return,
    };
    // The service's count beside its slots (on its runner's line, see `Slots`), the
    // host's in its ring.
    cell.queue.slots.count_action(failed, job.by_worker);
    cell.board
        .activity()
        .action_finished(cell.spec.clock.unix_secs_at(now), failed);
}

/// Counts a call whose deadline passed before any worker took it (its caller was
/// told it did not start): a `timeout` in `koan_actions_total`, its whole timeout
/// as its queue time, and no run. It was logged "timed out … before it finished",
/// given a run of 0 s and counted a failure of its service, as a call that ran
/// (a re-probe: 240 of 270 such warnings were for calls that never started).
pub(super) fn never_started(job: &Job, cell: &ServiceCell) {
    let waited = job.timeout.map_or(0.0, |t| t.get().as_secs_f64());
    metrics(job, cell).record_unstarted(Outcome::Timeout, waited);
    tracing::debug!(service = %cell.spec.name, action = %job.entry(cell).name, correlation_id = %job.correlation.logged(), "action given up at its deadline before any worker took it: not run, its caller told so");
}

/// The metric handles of the job's action (resolved on its first run).
fn metrics<'a>(job: &Job, cell: &'a ServiceCell) -> &'a ActionMetrics {
    let entry = job.entry(cell);
    entry
        .metrics
        .get_or_init(|| ActionMetrics::new(&cell.spec.name, &entry.name))
}

type HandlerResult =
    std::result::Result<std::result::Result<Payload, crate::error::BoxError>, String>;

/// Runs the handler future `fut` until `deadline`. `None` when the deadline came
/// first: the job is then answered `Timeout` here, and the handler had its grace.
pub(super) async fn run_with_deadline<F>(
    host: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    job: &mut Job,
    fut: F,
    deadline: Instant,
    token: tokio_util::sync::CancellationToken,
    started: Moment,
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
            let e = job.timeout_error(cell);
            let grace = host.config.action_grace;
            // A stored job's record must say what really happened: a handler that
            // finishes within the grace decides the outcome.
            if job.job.is_some() {
                match tokio::time::timeout(grace, &mut run).await {
                    // Ended at its cancelled token with an error: the deadline's
                    // doing, a timeout with the handler's words (a caller that
                    // waits hears the same), not a failure of the handler.
                    Ok(Ok(Err(handler))) => {
                        let now = moment();
                        finished(job, cell, Outcome::Timeout, now.saturating_duration_since(started).as_secs_f64(), queued, now);
                        let e = Error::new(ErrorKind::Timeout, format!("{}; its handler then said: {handler}", e.message()));
                        let _ = answer(job, Err(e));
                        return None;
                    }
                    Ok(r) => return Some(r),
                    Err(_) => {}
                }
                let now = moment();
                finished(job, cell, Outcome::Timeout, now.saturating_duration_since(started).as_secs_f64(), queued, now);
                tracing::warn!(service = %cell.spec.name, action = %job.entry(cell).name, correlation_id = %job.correlation.logged(), grace = %fmt_duration(grace), "job's action ignored its cancelled token past its deadline; its future was dropped");
                let _ = answer(job, Err(e));
                return None;
            }
            let now = moment();
            finished(job, cell, Outcome::Timeout, now.saturating_duration_since(started).as_secs_f64(), queued, now);
            // A caller running the action itself has its reply channel for this.
            let _ = answer(job, Err(e));
            // Give the handler a short grace to notice its cancelled token, then
            // drop its future. How it ended is said under the call's correlation
            // id, which its caller's `timeout` answer names: that answer says the
            // outcome is unknown, and only this line tells (a handler that did its
            // work 200 ms past the deadline left no trace; a probe).
            let ended = tokio::time::timeout(grace, &mut run).await;
            let late = fmt_duration(Instant::now().saturating_duration_since(deadline));
            let (service, action, correlation_id) = (&cell.spec.name, &job.entry(cell).name, job.correlation.logged());
            match ended {
                Ok(Ok(Ok(_))) => tracing::warn!(%service, %action, %correlation_id, after_deadline = %late, "action timed out, then ended with Ok after its caller was answered `timeout`: its work may be done"),
                Ok(Ok(Err(e))) => tracing::warn!(%service, %action, %correlation_id, error = %e, "action timed out, then ended with an error (its token had been cancelled at the deadline)"),
                Ok(Err(panic)) => tracing::warn!(%service, %action, %correlation_id, %panic, "action timed out, then panicked"),
                Err(_) => tracing::warn!(%service, %action, %correlation_id, grace = %fmt_duration(grace), "action ignored its cancelled token; its future was dropped"),
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
        let queued = moment().saturating_duration_since(job.enqueued_at);
        // Its caller was answered at its deadline (it never started): counted as
        // a worker reaching it counts it.
        if job.claim.as_ref().is_some_and(|c| c.given_up()) {
            job.answered = true;
            never_started(&job, cell);
            continue;
        }
        // Accepted and never started: said so, and that calling again is safe (it
        // read "accepts no more work", as if refused; a re-probe).
        let e = Error::new(
            ErrorKind::ShuttingDown,
            format!(
                "action `{}` of `{}` was not started: the host is shutting down with it still waiting in the mailbox; calling again once the host is back, or on another instance, is safe",
                job.entry(cell).name,
                cell.spec.name
            ),
        )
        .never_started();
        if let Some(m) = job.entry(cell).metrics.get() {
            m.record(Outcome::ShuttingDown, 0.0, queued.as_secs_f64());
        }
        let _ = answer(&mut job, Err(e));
    }
}

/// The handler's future, with the run's token cancelled when the caller's `cancel`
/// token is (the handler goes on until it returns, as at a deadline).
pub(super) fn cancelled_by(
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

pub(super) type HandlerFut = crate::util::BoxFuture<
    'static,
    std::result::Result<crate::payload::Payload, crate::error::BoxError>,
>;
