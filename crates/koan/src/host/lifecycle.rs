//! The host's lifecycle task: startup phase, start of the others, wait, shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::supervisor::{give_up, supervise};
use super::{HostExit, HostInner};
use crate::action::{refuse_all, run_worker};
use crate::error::{Error, ErrorKind};
use crate::registry::{RunOutcome, ServiceCell, ServiceState};
use crate::schedule;
use crate::service::{RunReason, Runner, ServiceKind};
use crate::util::{catch_unwind, fmt_duration};

pub(crate) fn spawn(host: Arc<HostInner>) {
    tokio::spawn(async move {
        let exit = lifecycle(&host).await;
        match &exit {
            HostExit::Stopped => tracing::info!("host stopped"),
            other => tracing::error!(exit = ?other, "host stopped with a failure"),
        }
        host.exit.send_replace(Some(exit));
    });
}

tokio::task_local! {
    /// Set on a startup service's run: the calls it makes run though their
    /// services have not started (`Slots::take_while_closed`).
    static STARTUP: ();
}

/// Whether this task is a startup service's run.
pub(crate) fn in_startup() -> bool {
    STARTUP.try_with(|()| ()).is_ok()
}

pub(super) fn span(cell: &ServiceCell) -> tracing::Span {
    tracing::info_span!("service", name = %cell.spec.name, kind = cell.spec.kind.as_str())
}

/// Startup services in order, then the rest by priority (the order they start in).
fn start_order(host: &HostInner) -> (Vec<Arc<ServiceCell>>, Vec<Arc<ServiceCell>>) {
    let enabled = host
        .registry
        .all()
        .iter()
        .filter(|c| c.spec.disabled.is_none());
    let (mut startup, mut others): (Vec<_>, Vec<_>) = enabled
        .cloned()
        .partition(|c| c.spec.kind == ServiceKind::Startup);
    startup.sort_by_key(|c| c.spec.options.order);
    others.sort_by_key(|c| std::cmp::Reverse(c.spec.options.priority));
    (startup, others)
}

async fn lifecycle(host: &Arc<HostInner>) -> HostExit {
    let mut critical = host.critical_rx.lock().ok().and_then(|mut g| g.take());
    let (startup, others) = start_order(host);
    for cell in host
        .registry
        .all()
        .iter()
        .filter(|c| c.spec.disabled.is_some())
    {
        tracing::info!(service = %cell.spec.name, reason = ?cell.spec.disabled, "service disabled");
    }

    let phase_deadline = crate::util::after(Instant::now(), host.config.startup_timeout);
    let mut exit = None;
    for cell in &startup {
        if host.stop_request.is_cancelled() {
            break;
        }
        if let Err(e) = run_startup(host, cell, phase_deadline)
            .instrument(span(cell))
            .await
        {
            // Cut short by a requested stop: that is a clean stop, not a failure.
            if e.kind() == ErrorKind::ShuttingDown && host.stop_request.is_cancelled() {
                break;
            }
            if cell.spec.options.continue_on_failure || !host.config.fail_fast {
                tracing::warn!(service = %cell.spec.name, error = %e, "startup service failed; continuing");
            } else {
                exit = Some(HostExit::StartupFailed(e));
                break;
            }
        }
    }

    if exit.is_none() && !host.stop_request.is_cancelled() {
        for cell in &others {
            start_service(host, cell);
        }
        for cell in &startup {
            start_workers(host, cell);
        }
        host.startup_done.send_replace(true);
        let store = &host.jobs.store;
        if store.is_durable() {
            tracing::info!(store = %store.describe(), "jobs are kept in a durable store");
        } else {
            tracing::warn!(store = %store.describe(), "jobs are kept in memory only: enqueued jobs are lost if the process dies (queued ones are run within the shutdown grace); configure a durable job store");
        }
        tokio::spawn(crate::job::run_jobs(Arc::clone(host)));
        tracing::info!(services = others.len() + startup.len(), "host started");
        exit = Some(tokio::select! {
            // A failure heard at the moment a stop is asked for is the exit's
            // cause: its code is kept (unbiased, either could win; a review).
            biased;
            Some((service, error)) = async {
                match critical.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => HostExit::CriticalFailure { service, error },
            _ = host.stop_request.cancelled() => HostExit::Stopped,
        });
    }
    if let Some(failure) = exit.as_ref().filter(|e| !e.is_success()) {
        let _ = host.failure.set(failure.clone());
    }
    shutdown(host, &startup, &others).await;
    exit.unwrap_or(HostExit::Stopped)
}

async fn run_startup(
    host: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    phase_deadline: Instant,
) -> Result<(), Error> {
    let Runner::Startup(run) = &cell.spec.runner else {
        return Ok(());
    };
    cell.board.mark_started(ServiceState::Running);
    tracing::info!(order = cell.spec.options.order, "startup service started");
    let own_deadline = crate::util::after(Instant::now(), cell.spec.options.timeout);
    let deadline = own_deadline.min(phase_deadline);
    let started = Instant::now();
    let started_wall = cell.spec.clock.now();
    let fut = catch_unwind(STARTUP.scope((), run(host.context(cell, RunReason::Start))));
    let mut fut = std::pin::pin!(fut);
    let outcome = tokio::select! {
        r = tokio::time::timeout_at(deadline, fut.as_mut()) => match r {
            Ok(Ok(Ok(()))) => RunOutcome::Success,
            Ok(Ok(Err(e))) => RunOutcome::Failed { error: crate::util::with_causes(&*e) },
            Ok(Err(panic)) => RunOutcome::Panicked { message: panic },
            Err(_) => {
                let grace = host.config.action_grace;
                wind_down(cell, fut.as_mut(), grace, "its timeout").await;
                RunOutcome::TimedOut
            }
        },
        _ = host.stop_request.cancelled() => {
            let grace = host.config.grace;
            wind_down(cell, fut.as_mut(), grace, "the host's stop").await;
            RunOutcome::Cancelled
        }
    };
    let elapsed = started.elapsed();
    let record = cell
        .board
        .record_run(RunReason::Start, started_wall, elapsed, outcome);
    match record.outcome {
        RunOutcome::Success => {
            tracing::info!(duration = %fmt_duration(elapsed), "startup service finished");
            cell.board.set_state(ServiceState::Stopped);
            Ok(())
        }
        RunOutcome::Cancelled => {
            cell.board.set_state(ServiceState::Stopped);
            Err(Error::shutting_down(&format!(
                "startup service `{}`",
                cell.spec.name
            )))
        }
        RunOutcome::TimedOut => {
            let which = if own_deadline <= phase_deadline {
                format!("its timeout of {}", fmt_duration(cell.spec.options.timeout))
            } else {
                format!(
                    "the startup phase limit of {}",
                    fmt_duration(host.config.startup_timeout)
                )
            };
            // The service's own record says what happened to it; the host's error
            // also says which service.
            let what = format!("did not finish within {which}");
            let msg = format!("startup service `{}` {what}", cell.spec.name);
            give_up(host, cell, what);
            Err(Error::new(ErrorKind::Timeout, msg))
        }
        other => {
            let what = other.error_text().unwrap_or_default();
            let msg = format!("startup service `{}` failed: {what}", cell.spec.name);
            give_up(host, cell, what);
            Err(Error::new(ErrorKind::Startup, msg))
        }
    }
}

/// A startup service cut short (`why`: the host stops, or its time ran out) is
/// told through its token and given `grace` to end — the host's grace at a stop,
/// as every other service has; an action's grace past its timeout, as a timed-out
/// action has — then dropped. It was dropped at once, its token cancelled only
/// after: a migration stopped by a SIGTERM had no chance to roll back, and the
/// log said nothing of it (a probe).
async fn wind_down<F>(
    cell: &ServiceCell,
    run: std::pin::Pin<&mut F>,
    grace: std::time::Duration,
    why: &str,
) where
    F: std::future::Future<Output = Result<Result<(), crate::error::BoxError>, String>>,
{
    cell.cancel();
    tracing::info!(grace = %fmt_duration(grace), "startup service stopped by {why}; waiting for it to end");
    // How it ended is said: a roll-back that failed is what an operator must know.
    match tokio::time::timeout(grace, run).await {
        Ok(Ok(Ok(()))) => tracing::info!("startup service ended after it was stopped"),
        Ok(Ok(Err(e))) => {
            let error = crate::util::with_causes(&*e);
            tracing::warn!(%error, "startup service ended with an error after it was stopped");
        }
        Ok(Err(panic)) => tracing::error!(%panic, "startup service panicked after it was stopped"),
        Err(_) => {
            cell.life.abort();
            tracing::warn!("startup service did not stop within the grace period; aborted");
        }
    }
}

fn start_service(host: &Arc<HostInner>, cell: &Arc<ServiceCell>) {
    match &cell.spec.runner {
        Runner::Background(run) => {
            let task = supervise(Arc::clone(host), Arc::clone(cell), Arc::clone(run));
            cell.life
                .push_task(tokio::spawn(task.instrument(span(cell))));
        }
        Runner::Periodic(run) => {
            if let (Some(control), Some(schedule)) = (&cell.control, &cell.spec.schedule) {
                let task = schedule::spawn(
                    Arc::clone(cell),
                    &**run,
                    Arc::clone(control),
                    schedule.clone(),
                    host.context(cell, RunReason::Scheduled),
                    span(cell),
                );
                cell.life.push_task(task);
            }
        }
        Runner::Startup(_) => {}
    }
    start_workers(host, cell);
}

fn start_workers(host: &Arc<HostInner>, cell: &Arc<ServiceCell>) {
    // Its callers may run its actions themselves from now on.
    cell.queue.slots.open();
    if !cell.spec.actions.is_empty() {
        for _ in 0..cell.spec.options.max_concurrency {
            let worker = run_worker(Arc::clone(host), Arc::clone(cell));
            cell.life
                .push_task(tokio::spawn(worker.instrument(span(cell))));
        }
    }
}

async fn shutdown(
    host: &Arc<HostInner>,
    startup: &[Arc<ServiceCell>],
    others: &[Arc<ServiceCell>],
) {
    tracing::info!(grace = %fmt_duration(host.config.grace), "host stopping");
    let deadline = crate::util::after(Instant::now(), host.config.grace);
    // No new calls or jobs; callers waiting in a mailbox are answered now.
    host.stopping.store(true, Ordering::Release);
    for cell in host.registry.all() {
        refuse_all(cell, true);
    }
    // Then jobs: the runner takes no more (after running the queued ones when they
    // would not survive), and the running ones get the grace.
    if *host.startup_done.borrow() {
        host.jobs.stop(host, deadline).await;
    }
    host.stop_request.cancel();
    // Nothing accepted is dropped: queued actions are answered `ShuttingDown` now.
    for cell in host.registry.all() {
        refuse_all(cell, false);
        // Queued periodic runs too: a driver that is aborted never answers them.
        if let Some(control) = &cell.control {
            control.close(&cell.spec.name);
        }
    }
    // Reverse start order. Services of one priority started together and stop
    // together: all of them cancelled, then awaited, so that a slow one does not
    // spend the grace of the others (and 100,000 services do not stop one wake-up
    // after another: B6). Startup services, which ran one by one, stop one by one.
    let by_priority = others.chunk_by(|a, b| a.spec.options.priority == b.spec.options.priority);
    let groups = by_priority.rev().chain(startup.rchunks(1));
    for group in groups {
        let stopping: Vec<_> = group
            .iter()
            .rev()
            .filter_map(|cell| {
                cell.cancel();
                let tasks = cell.life.take_tasks();
                (!tasks.is_empty()).then(|| {
                    cell.board.set_state(ServiceState::Stopping);
                    (cell, tasks)
                })
            })
            .collect();
        // Asked after the grace ran out (running jobs held it): aborted unless it
        // stops at once, and said so.
        let late = Instant::now() >= deadline;
        for (cell, tasks) in stopping {
            stop_cell(cell, tasks, deadline, late).await;
        }
    }
    host.events.close();
}

/// Waits for a cancelled service's tasks until `deadline`, then aborts what is left.
async fn stop_cell(cell: &ServiceCell, tasks: Vec<JoinHandle<()>>, deadline: Instant, late: bool) {
    let mut aborted = false;
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
            aborted = true;
        }
    }
    // Actions that callers run themselves (`action::inline`) hold slots too: past
    // the grace they are stopped, their callers answered.
    if tokio::time::timeout_at(deadline, cell.queue.slots.all_free())
        .await
        .is_err()
    {
        cell.life.abort();
        tracing::warn!(service = %cell.spec.name, "actions run by their callers did not finish within the grace period; stopped");
    }
    if aborted {
        // Its work may live on in threads no abort reaches: the process is
        // ended should it linger (`host::signals`).
        cell.life.abort();
    }
    if aborted && late {
        tracing::warn!(service = %cell.spec.name, "service was asked to stop only once the grace period had run out (jobs still running held it); aborted");
    } else if aborted {
        tracing::warn!(service = %cell.spec.name, "service did not stop within the grace period; aborted");
    } else {
        tracing::info!(service = %cell.spec.name, "service stopped");
    }
    cell.board.set_state(ServiceState::Stopped);
}
