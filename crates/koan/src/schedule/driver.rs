//! The periodic driver: one task per periodic service that serializes scheduled runs
//! with pokes (see [`super::control`]), so runs never overlap.
//!
//! An idle driver is woken at once through an `AtomicWaker`, never by polling: the
//! poke side sets its state (the queue's length, the service's cancelled flag), then
//! wakes; the driver registers its waker, then reads that state.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Schedule;
use super::control::{PeriodicControl, Poke, Waiters};
use super::here::{Caught, HereFuture, RunHere};
use crate::registry::{NextRun, RunOutcome, ServiceCell, ServiceState};
use crate::service::{
    BatchRequest, PeriodicRun, PeriodicService, RunReason, ServiceContext, run_periodic,
};
use crate::util::catch_unwind;

/// What the driver task of a periodic service needs besides the service itself. Not
/// part of the stable API.
#[doc(hidden)]
pub struct Driver {
    cell: Arc<ServiceCell>,
    control: Arc<PeriodicControl>,
    schedule: Schedule,
    cx: ServiceContext,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("service", &self.cell.spec.name)
            .finish()
    }
}

/// Spawns the driver task of one periodic service, built where the service's type is
/// known (see [`PeriodicRun::spawn`]).
pub(crate) fn spawn(
    cell: Arc<ServiceCell>,
    run: &dyn PeriodicRun,
    control: Arc<PeriodicControl>,
    schedule: Schedule,
    cx: ServiceContext,
    span: tracing::Span,
) -> JoinHandle<()> {
    run.spawn(
        Driver {
            cell,
            control,
            schedule,
            cx,
        },
        span,
    )
}

impl Driver {
    /// The driver loop. Generic over the service: a run's future is a field of this
    /// one, not a box per run.
    pub(crate) fn drive<T: PeriodicService>(
        self,
        svc: Arc<T>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let Driver {
            cell,
            control,
            schedule,
            cx,
        } = self;
        drive_loop(svc, cell, control, schedule, cx)
    }
}

/// Abandons callers' runs when dropped (see [`PeriodicControl::abandon_here`]).
struct Abandon(Arc<PeriodicControl>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.abandon_here();
    }
}

/// How a caller runs service `T` itself: as the driver would, in its span.
struct HereRun<T> {
    svc: Arc<T>,
    cx: ServiceContext,
    span: tracing::Span,
}

impl<T: PeriodicService> RunHere for HereRun<T> {
    fn start(&self, reason: RunReason, batch: Option<BatchRequest>) -> HereFuture {
        use tracing::Instrument;
        let (svc, cx) = (Arc::clone(&self.svc), self.cx.for_run(reason, batch));
        Box::pin(
            catch_unwind(async move { run_periodic(&*svc, cx).await })
                .instrument(self.span.clone()),
        )
    }

    fn cancelled_by_user(&self) -> bool {
        self.cx.cancelled_by_user()
    }
}

/// A run's outcome from its result (`None`: it timed out), logged as the driver logs
/// a failure or a panic.
pub(super) fn outcome_of(
    reason: RunReason,
    result: Option<Caught>,
    cell: &ServiceCell,
) -> RunOutcome {
    match result {
        None => RunOutcome::TimedOut,
        Some(Ok(Ok(()))) => RunOutcome::Success,
        // Ended at its token as the host stops: cut short, not a failure (it
        // counted as one, warned, and left health degraded during the shutdown;
        // found by a probe).
        Some(Ok(Err(e)))
            if cell.life.token.is_cancelled() && cell.host().is_some_and(|h| h.is_stopping()) =>
        {
            tracing::info!(?reason, error = %crate::util::with_causes(&*e), "periodic run ended with an error as the host stopped: counted as cancelled");
            RunOutcome::Cancelled
        }
        Some(Ok(Err(e))) => {
            let outcome = RunOutcome::failed(crate::util::with_causes(&*e));
            let error = outcome.error_text().unwrap_or_default();
            tracing::warn!(?reason, error = %error, "periodic run failed");
            outcome
        }
        Some(Err(panic)) => {
            let outcome = RunOutcome::panicked(panic);
            let panic = outcome.error_text().unwrap_or_default();
            tracing::error!(?reason, panic = %panic, "periodic run panicked");
            outcome
        }
    }
}

/// The loop of [`Driver::drive`]: one `async` block, not an `async fn` awaited by
/// another. An `async fn` keeps its arguments twice in its state (as given, and
/// moved into its body), and one awaited from another adds the outer one's state
/// and tag; each wake-up reads both tags and the loop's locals, spread over the
/// task's lines. As a block, what it is given stays where the task holds it: in a
/// debug build's layout (`-Zprint-type-sizes`), the driver's task went from 1,024
/// to 640 bytes and its future from 800 to 528; B6's CPU per run fell 3.6 % (lower
/// in 21 of 30 alternated windows; docs/benchmarks/round-23.md). A box per
/// run for the run's future, to shrink it further, cost 3.5 % more.
#[allow(clippy::manual_async_fn)] // An `async fn` is what this avoids (above).
fn drive_loop<T: PeriodicService>(
    service: Arc<T>,
    cell: Arc<ServiceCell>,
    control: Arc<PeriodicControl>,
    schedule: Schedule,
    cx: ServiceContext,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // Callers may run pokes themselves from now on (see `here`), in this span.
        control.set_here(Arc::new(HereRun {
            svc: Arc::clone(&service),
            cx: cx.clone(),
            span: tracing::Span::current(),
        }));
        // However the driver ends (its loop returns, or its task is aborted after the
        // grace), a caller's run still in progress is abandoned.
        let _abandon = Abandon(Arc::clone(&control));
        let service = &service;
        let svc = &**service;
        let clock = cell.spec.clock.clone();
        let opts = &cell.spec.options;
        let start = Instant::now();
        let anchor = crate::util::after(start, opts.initial_delay);
        let mut due = schedule.first_due(start, opts.initial_delay, opts.run_on_startup, &clock);
        // Copied into the driver's own state: a run reads no line of the service's spec.
        let (missed_ticks, singleton) = (opts.missed_ticks, opts.singleton);
        cell.board.set_next_run(Some(due));
        cell.board.mark_started(ServiceState::Idle);
        tracing::info!(schedule = %schedule.describe(), "periodic service started");

        // One timer for the driver's life, moved to each due time (a fresh timer per
        // period costs a registration and a removal under the timer wheel's lock).
        // Boxed, made as the driver starts: the timers of services started together
        // then sit side by side in memory, not a driver's whole task apart. When 10,000
        // runs fall due at once, tokio walks its list of due timers one entry after the
        // other, each a load that waits for the last; dense entries cost that walk about
        // half (B6: CPU per run −11 %; docs/benchmarks/round-18.md).
        let mut sleep = Box::pin(tokio::time::sleep_until(due));
        // The end of the last run, read a moment ago: the next turn needs no clock read.
        let mut fresh: Option<Instant> = None;
        // The history's slot the next run writes, as the last run left it (see `warm`).
        let mut next_slot = None;
        loop {
            // `ServiceCell::cancel` sets this flag, then wakes the driver.
            if control.is_cancelled() {
                break;
            }
            // A caller runs a poke itself (see `here`; the driver's own runs end before
            // this turn): the service is its until that run ends.
            if control.is_running() {
                control.wait_here(true).await;
                continue;
            }
            let now = fresh.take().unwrap_or_else(Instant::now);
            let (reason, batch, waiters, consumed, deadline) =
                if let Some(cmd) = control.begin_command() {
                    let batch = match &cmd.poke {
                        Poke::ProcessBatch(b) => Some(b.clone()),
                        _ => None,
                    };
                    (cmd.poke.reason(), batch, cmd.waiters, false, cmd.deadline)
                } else if now >= due {
                    // A caller's run that ended after this tick fell due: the tick is
                    // handled as after any poked run (skipped, or run once, per policy).
                    if let Some(ended) = control.take_here_ended()
                        && ended >= due
                    {
                        due = schedule.next_due(missed_ticks, anchor, due, None, ended, &clock);
                        cell.board.set_next_run(Some(due));
                        continue;
                    }
                    // (The common case, not a singleton, without a future to build.)
                    if singleton && !may_run(&cx, &cell).await {
                        // A singleton whose lease another host holds: that host runs this tick.
                        due = schedule.next_due(missed_ticks, anchor, due, Some(now), now, &clock);
                        cell.board.set_next_run(Some(due));
                        continue;
                    }
                    if !control.begin_scheduled() {
                        // A caller took the service a moment ago: its run first.
                        continue;
                    }
                    (RunReason::Scheduled, None, Waiters::default(), true, None)
                } else {
                    // Moved only when it changed or has fired: a stale deadline cannot make
                    // the timer fire again at every turn of the loop, and a poke's turn
                    // leaves the armed timer alone.
                    if sleep.deadline() != due || sleep.is_elapsed() {
                        sleep.as_mut().reset(due);
                    }
                    let mut polled = false;
                    std::future::poll_fn(|task| {
                        if polled {
                            // Woken (by its timer, most often): the run's lines, loaded
                            // together.
                            warm(service, &cell, &cx, next_slot);
                        }
                        // Registered before the state is read: a poke or a cancel that
                        // lands after the read wakes this registration.
                        control.waker.register(task.waker());
                        if control.queued.load(Ordering::Acquire) != 0 || control.is_cancelled() {
                            // A poke first: its timer is not polled at all.
                            return std::task::Poll::Ready(());
                        }
                        // Woken by the timer: its state says so, without a second poll
                        // (which would cost as much as the first, about 130
                        // instructions a run).
                        if polled && sleep.is_elapsed() {
                            return std::task::Poll::Ready(());
                        }
                        polled = true;
                        sleep.as_mut().poll(task)
                    })
                    .await;
                    continue;
                };

            let started = now;
            cell.board.begin_run(started);
            let result = match deadline {
                None => Some(catch_unwind(run_periodic(svc, cx.for_run(reason, batch))).await),
                // Boxed: its future (about 420 bytes) would otherwise sit in every
                // driver's task, though only a poke with a deadline runs it.
                Some(deadline) => Box::pin(run_until(&cx, svc, reason, batch, deadline)).await,
            };
            let outcome = outcome_of(reason, result, &cell);
            // One clock read per run, after it (so the tick starts sooner): the wall
            // times of its start, its end and the next run all derive from it, without
            // a read of the wall clock or a date built (see `WallNanos`).
            let ended = Instant::now();
            let elapsed = ended.saturating_duration_since(started);
            control.end();
            let consumed = consumed.then_some(started);
            due = schedule.next_due(missed_ticks, anchor, due, consumed, ended, &clock);
            // One status update per run end: the record, the next run and the state.
            let ended_wall = clock.wall_nanos_at(ended, ended);
            let record = cell.board.finish_run(
                reason,
                elapsed,
                outcome,
                ended_wall,
                NextRun::At(due),
                ServiceState::Idle,
                !waiters.is_empty(),
            );
            if let Some(record) = record {
                for w in waiters {
                    let _ = w.send(Ok(record.clone()));
                }
            }
            // Code the token was handed to may have cancelled it (once per run, and
            // only once it was handed out: the check takes the token's lock).
            if cx.cancelled_by_user() {
                break;
            }
            next_slot = cell.board.next_history_word();
            fresh = Some(ended);
        }

        control.close(&cell.spec.name);
        // A caller's run still in progress: the service has stopped when it ends.
        if control.is_running() {
            control.wait_here(false).await;
        }
        cell.board.set_next_run(None);
        // Its own code cancelled its token, the host did not: it has stopped, and
        // says so (it showed `idle`, its next run none, for good; found by a probe).
        if !control.is_cancelled() {
            tracing::info!(
                "service stopped: its own code cancelled its token; its schedule has ended"
            );
            cell.board.set_state(ServiceState::Stopped);
        }
    }
}

/// Loads a word of each line a scheduled run is about to write, on the driver's
/// wake-up, before the first locked instruction of its turn (the waker's
/// registration): the service's own line, the status's hot line, its change signal,
/// its history's lock and the slot its run goes to, and the context's count. With
/// 10,000 services each is cold, and on x86 a locked instruction waits for every
/// earlier load: reached one after the other, across the turn's locked
/// instructions, each line cost a miss of its own; loaded here, their misses
/// overlap. `next_slot` is the history's slot as the last run left it, kept by the
/// driver: loaded at once, not behind the cell's line and the ring's (B6: CPU per
/// run −6.5 %, then −6 % with the history's slot and −6.5 % with it kept;
/// docs/benchmarks/round-21.md and round-22.md). The control's
/// line needs no load: the registration's own fetch of it starts with these
/// (loading it too measured no difference).
#[inline(always)]
fn warm<T>(
    service: &Arc<T>,
    cell: &ServiceCell,
    cx: &ServiceContext,
    next_slot: Option<&std::sync::atomic::AtomicU32>,
) {
    std::hint::black_box((
        next_slot.map(|w| w.load(Ordering::Relaxed)),
        Arc::strong_count(service),
        cell.board.touch(),
        cx.touch(),
    ));
}

/// A poked run with a deadline: at the deadline its own token (a child of the
/// service's) is cancelled, and after the action grace its future is dropped (`None`).
async fn run_until<T: PeriodicService>(
    cx: &ServiceContext,
    svc: &T,
    reason: RunReason,
    batch: Option<BatchRequest>,
    deadline: Instant,
) -> Option<std::result::Result<std::result::Result<(), crate::error::BoxError>, String>> {
    let token = Arc::new(cx.token().child_token());
    let run_cx = cx.with_token(Arc::clone(&token), reason, batch);
    let fut = catch_unwind(run_periodic(svc, run_cx));
    tokio::pin!(fut);
    tokio::select! {
        r = &mut fut => return Some(r),
        _ = tokio::time::sleep_until(deadline) => {}
    }
    token.cancel();
    let grace = cx
        .host_inner()
        .map_or(std::time::Duration::from_secs(1), |h| h.config.action_grace);
    match tokio::time::timeout(grace, &mut fut).await {
        Ok(r) => Some(r),
        Err(_) => {
            tracing::warn!(
                ?reason,
                "a poked run ignored its cancelled token past its deadline; its future was dropped"
            );
            None
        }
    }
}

/// Whether this host may run a scheduled tick of a cluster singleton: not while
/// another host holds its lease.
async fn may_run(cx: &ServiceContext, cell: &ServiceCell) -> bool {
    match cx.host_inner().and_then(|h| h.transport.clone()) {
        Some(t) => t.may_run(&cell.spec.name).await,
        None => true,
    }
}
