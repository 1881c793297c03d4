//! Mailbox workers: run jobs with enforced deadlines and caught panics, answer callers,
//! update the ledger and the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::context::{ActionContext, CORRELATION};
use super::mailbox::Job;
use super::metrics::{ActionMetrics, Outcome};
use super::payload::Payload;
use crate::error::{Error, ErrorKind, Result};
use crate::host::HostInner;
use crate::registry::ServiceCell;
use crate::util::{CatchUnwind, fmt_duration};

/// One worker of a service; `max_concurrency` of them share the mailbox.
pub(crate) async fn run_worker(host: Arc<HostInner>, cell: Arc<ServiceCell>) {
    while let Some(job) = cell.mailbox.pop().await {
        cell.in_flight.fetch_add(1, Ordering::Relaxed);
        execute(&host, &cell, job).await;
        cell.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn timeout_error(job: &Job, service: &str) -> Error {
    let limit = job.timeout.map(fmt_duration).unwrap_or_default();
    Error::new(
        ErrorKind::Timeout,
        format!(
            "action `{}` of `{service}` did not finish within its timeout of {limit} (queue time included)",
            job.entry.name
        ),
    )
}

async fn execute(host: &Arc<HostInner>, cell: &Arc<ServiceCell>, mut job: Job) {
    let metrics = job
        .entry
        .metrics
        .get_or_init(|| ActionMetrics::new(&cell.name, &job.entry.name));
    let queued = job.enqueued_at.elapsed().as_secs_f64();
    if let Some(deadline) = job.deadline
        && Instant::now() >= deadline
    {
        let e = timeout_error(&job, &cell.name);
        metrics.record(Outcome::Timeout, 0.0, queued);
        answer(host, &mut job, Err(e));
        return;
    }
    // A caller that already gave up (it stopped waiting, e.g. an HTTP client that
    // disconnected) needs no run; counted and logged so the skip is visible.
    if job.id.is_none() && job.reply.as_ref().is_some_and(|r| r.is_closed()) {
        job.answered = true;
        metrics.record(Outcome::Cancelled, 0.0, queued);
        tracing::debug!(action = %job.entry.name, correlation_id = %job.correlation, "caller gone before the action started; not run");
        return;
    }
    if let Some(id) = &job.id {
        host.ledger.running(id);
    }
    // Only an action with a deadline needs a token of its own up front; the others
    // get one lazily if the handler asks for it (see `ActionContext::token`).
    let deadline_token = job.deadline.map(|_| cell.token.child_token());
    let cx = ActionContext {
        service: Arc::clone(&cell.name),
        action: Arc::clone(&job.entry.name),
        id: job.id.clone(),
        correlation_id: Arc::clone(&job.correlation),
        priority: job.priority,
        service_token: cell.token.clone(),
        token: match &deadline_token {
            Some(t) => std::sync::OnceLock::from(t.clone()),
            None => std::sync::OnceLock::new(),
        },
        deadline: job.deadline,
        host: host.me.clone(),
    };
    let params = std::mem::replace(&mut job.params, Box::new(()));
    let fut = (job.entry.call)(params, cx);
    let fut = CORRELATION.scope(Arc::clone(&job.correlation), fut);
    tokio::pin!(fut);
    let mut run = CatchUnwind(fut.as_mut());
    let started = Instant::now();
    let result = match job.deadline {
        None => (&mut run).await,
        Some(deadline) => {
            tokio::select! {
                r = &mut run => r,
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some(t) = &deadline_token {
                        t.cancel();
                    }
                    let e = timeout_error(&job, &cell.name);
                    metrics.record(Outcome::Timeout, started.elapsed().as_secs_f64(), queued);
                    answer(host, &mut job, Err(e));
                    // Give the handler a short grace to notice its cancelled token,
                    // then drop its future.
                    let grace = host.config.action_grace;
                    if tokio::time::timeout(grace, &mut run).await.is_err() {
                        tracing::warn!(
                            action = %job.entry.name,
                            grace = %fmt_duration(grace),
                            "action ignored its cancelled token; its future was dropped"
                        );
                    }
                    return;
                }
            }
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let outcome = match result {
        Ok(Ok(payload)) => {
            metrics.record(Outcome::Ok, elapsed, queued);
            Ok(payload)
        }
        Ok(Err(e)) => {
            metrics.record(Outcome::HandlerError, elapsed, queued);
            let err = match e.downcast::<Error>() {
                Ok(koan_err) => *koan_err,
                Err(other) => Error::new(
                    ErrorKind::Handler,
                    format!(
                        "action `{}` of `{}` failed: {other}",
                        job.entry.name, cell.name
                    ),
                ),
            };
            tracing::warn!(action = %job.entry.name, correlation_id = %job.correlation, error = %err, "action failed");
            Err(err)
        }
        Err(panic) => {
            metrics.record(Outcome::Panic, elapsed, queued);
            tracing::error!(action = %job.entry.name, correlation_id = %job.correlation, panic = %panic, "action panicked");
            Err(Error::new(
                ErrorKind::Panic,
                format!(
                    "action `{}` of `{}` panicked: {panic}",
                    job.entry.name, cell.name
                ),
            ))
        }
    };
    answer(host, &mut job, outcome);
}

/// Sends the outcome to whoever waits for it: the caller and/or the ledger.
pub(crate) fn answer(host: &HostInner, job: &mut Job, outcome: Result<Payload>) {
    job.answered = true;
    if let Some(id) = &job.id {
        let at = host.config.clock.now();
        match &outcome {
            Ok(p) => host
                .ledger
                .finish(id, at, Ok(p.to_json().unwrap_or_default())),
            Err(e) => host.ledger.finish(id, at, Err(e)),
        }
    }
    if let Some(reply) = job.reply.take() {
        let _ = reply.send(outcome);
    }
}

/// Answers every job of a closing mailbox with `ShuttingDown`.
pub(crate) fn refuse_all(host: &HostInner, cell: &ServiceCell) {
    for mut job in cell.mailbox.close() {
        let e = Error::shutting_down(&format!("action `{}` of `{}`", job.entry.name, cell.name));
        if let Some(m) = job.entry.metrics.get() {
            m.record(
                Outcome::ShuttingDown,
                0.0,
                job.enqueued_at.elapsed().as_secs_f64(),
            );
        }
        answer(host, &mut job, Err(e));
    }
}
