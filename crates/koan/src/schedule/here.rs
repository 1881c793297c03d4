//! A poke run on its caller's own task, when the driver is idle.
//!
//! A poke through the driver costs a wake-up of the driver's task before the run can
//! start (B4: most of a poke's latency). When nothing runs and nothing is queued,
//! nothing would run before this poke anyway, so the caller takes the service (the
//! same `running` flag the driver takes, see [`PeriodicControl`]) and runs the tick
//! itself, through the same steps as the driver: the state `Running`, the run inside
//! the service's span with its panics caught, its record, the state `Idle`. Runs still
//! never overlap: pokes that arrive meanwhile are queued (coalesced) for the driver,
//! which also waits for the caller's run before a scheduled tick, and a tick that fell
//! due during it is handled as after any poked run. A run is never lost to its caller
//! going away: if the caller's future is dropped mid-run, the run finishes on a task
//! of its own, still holding the service. Only a caller on the driver's own runtime
//! runs a poke itself (`control.rs`, `on_runtime`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::time::Instant;

use super::control::{PeriodicControl, Poke, TriggerOutcome, answer};
use crate::error::{BoxError, Error, Result};
use crate::registry::{NextRun, RunOutcome, ServiceCell, ServiceState};
use crate::service::{BatchRequest, RunReason};

/// A run's result with its panic caught (`Err(message)`).
pub(crate) type Caught = std::result::Result<std::result::Result<(), BoxError>, String>;

/// A run of the service started by a caller, its type erased: set by the driver,
/// which knows the service's type.
pub(crate) type HereFuture = Pin<Box<dyn Future<Output = Caught> + Send>>;

/// How a caller runs a periodic service itself (the driver builds it, see
/// [`PeriodicControl::set_here`]).
pub(crate) trait RunHere: Send + Sync {
    /// A run for `reason`, in the service's span, its panics caught.
    fn start(&self, reason: RunReason, batch: Option<BatchRequest>) -> HereFuture;

    /// Whether code the run lent the service's token to cancelled it (after a run,
    /// on the task that ran it): the service then stops, as after a driver's run.
    fn cancelled_by_user(&self) -> bool;
}

/// A caller's run in progress.
struct Running {
    here: Arc<dyn RunHere>,
    reason: RunReason,
    started: Instant,
    fut: HereFuture,
}

impl Running {
    /// Polls the run; at its end records it and gives the service back. A run the
    /// stopped host abandoned (its driver aborted after the grace) is dropped and
    /// answered `ShuttingDown`, as a queued poke's caller is then.
    fn poll_run(
        &mut self,
        cell: &ServiceCell,
        control: &PeriodicControl,
        cx: &mut Context<'_>,
    ) -> Poll<Result<TriggerOutcome>> {
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(caught) => {
                let outcome = super::driver::outcome_of(self.reason, Some(caught), cell);
                Poll::Ready(self.finish(cell, control, outcome))
            }
            Poll::Pending if control.here_abandoned(cx.waker()) => Poll::Ready(Err(
                Error::shutting_down(&format!("run of `{}`", cell.spec.name)),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Records the run's end as the driver records its own, then gives the service
    /// back.
    fn finish(
        &mut self,
        cell: &ServiceCell,
        control: &PeriodicControl,
        outcome: RunOutcome,
    ) -> Result<TriggerOutcome> {
        let ended = Instant::now();
        let elapsed = ended.saturating_duration_since(self.started);
        let ended_wall = cell.spec.clock.wall_nanos_at(ended, ended);
        let record = cell.board.finish_run(
            self.reason,
            elapsed,
            outcome,
            ended_wall,
            NextRun::Keep,
            ServiceState::Idle,
            true,
        );
        control.end_here(ended, self.here.cancelled_by_user());
        match record {
            Some(record) => answer(record, false, &cell.spec.name),
            None => Err(Error::shutting_down(&format!(
                "run of `{}`",
                cell.spec.name
            ))),
        }
    }
}

/// A poke run on its caller's task; resolves to the poke's answer.
pub(crate) struct Here<'a> {
    cell: &'a Arc<ServiceCell>,
    control: &'a Arc<PeriodicControl>,
    /// `None` once the run finished.
    run: Option<Running>,
}

impl std::fmt::Debug for Here<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Here")
            .field("service", &self.cell.spec.name)
            .field("finished", &self.run.is_none())
            .finish()
    }
}

/// Starts `poke`'s run on the caller's task, in the service
/// [`PeriodicControl::poke_or_run`] took for it.
pub(crate) fn run<'a>(
    cell: &'a Arc<ServiceCell>,
    control: &'a Arc<PeriodicControl>,
    here: Arc<dyn RunHere>,
    poke: Poke,
) -> Here<'a> {
    let started = Instant::now();
    cell.board.begin_run(started);
    let reason = poke.reason();
    let batch = match poke {
        Poke::ProcessBatch(b) => Some(b),
        _ => None,
    };
    let fut = here.start(reason, batch);
    Here {
        cell,
        control,
        run: Some(Running {
            here,
            reason,
            started,
            fut,
        }),
    }
}

impl Future for Here<'_> {
    type Output = Result<TriggerOutcome>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(run) = &mut this.run else {
            return Poll::Pending;
        };
        let answer = ready!(run.poll_run(this.cell, this.control, cx));
        this.run = None;
        Poll::Ready(answer)
    }
}

impl Drop for Here<'_> {
    fn drop(&mut self) {
        // The caller stopped waiting while the run runs: it finishes on a task of its
        // own, holding the service until then.
        let Some(mut run) = self.run.take() else {
            return;
        };
        let (cell, control) = (Arc::clone(self.cell), Arc::clone(self.control));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(std::future::poll_fn(move |cx| {
                    run.poll_run(&cell, &control, cx).map(drop)
                }));
            }
            // No runtime to finish it on: the run is dropped, and recorded as such.
            Err(_) => {
                let _ = run.finish(&cell, &control, RunOutcome::Cancelled);
            }
        }
    }
}

/// Loom model (`RUSTFLAGS="--cfg koan_loom" cargo test -p koan --lib loom`): a caller
/// that runs its poke itself and a driver with a scheduled run due share the
/// control's `running` flag.
#[cfg(all(test, koan_loom))]
mod loom_model {
    use std::sync::Arc;

    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::{HereFuture, RunHere};
    use crate::schedule::control::{PeriodicControl, Poke, PokeStart};
    use crate::service::{BatchRequest, RunReason};

    struct Nothing;

    impl RunHere for Nothing {
        fn start(&self, _reason: RunReason, _batch: Option<BatchRequest>) -> HereFuture {
            Box::pin(async { Ok(Ok(())) })
        }

        fn cancelled_by_user(&self) -> bool {
            false
        }
    }

    /// One run: never two at once.
    fn run(running: &AtomicUsize) {
        assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two at once");
        running.fetch_sub(1, Ordering::SeqCst);
    }

    /// The driver's turns (as `drive_loop` takes them) until the service is
    /// cancelled: a caller's run first, then queued runs, then the one scheduled run
    /// due, else asleep until a poke or the cancel.
    async fn driver(control: &PeriodicControl, running: &AtomicUsize, ticked: &AtomicBool) {
        let mut due = true;
        loop {
            if control.is_cancelled() {
                break;
            }
            if control.is_running() {
                control.wait_here(true).await;
                continue;
            }
            if let Some(cmd) = control.begin_command() {
                run(running);
                control.end();
                for w in cmd.waiters {
                    let _ = w.send(Err(crate::error::Error::shutting_down("the model's run")));
                }
                continue;
            }
            if due {
                if control.begin_scheduled() {
                    run(running);
                    control.end();
                    due = false;
                    ticked.store(true, Ordering::SeqCst);
                }
                continue;
            }
            std::future::poll_fn(|task| {
                control.waker.register(task.waker());
                if control.queued.load(Ordering::Acquire) != 0 || control.is_cancelled() {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            })
            .await;
        }
        control.close("svc");
        if control.is_running() {
            control.wait_here(false).await;
        }
    }

    /// A caller pokes while the driver's scheduled run is due: the caller runs it
    /// itself or queues it, never two runs at once, a queued poke is run (not
    /// stranded behind a caller's run), the driver waiting for a caller's run is
    /// woken by its end (its scheduled run comes before the cancel), and it stops at
    /// the cancel.
    #[test]
    fn loom_a_caller_running_its_poke_and_a_driver_due_to_run() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(model.preemption_bound.map_or(3, |b| b.min(3)));
        model.check(|| {
            let control = Arc::new(PeriodicControl::new(4));
            control.set_here(Arc::new(Nothing));
            let running = Arc::new(AtomicUsize::new(0));
            let ticked = Arc::new(AtomicBool::new(false));
            let driver_thread = {
                let (control, running, ticked) = (
                    Arc::clone(&control),
                    Arc::clone(&running),
                    Arc::clone(&ticked),
                );
                loom::thread::spawn(move || {
                    loom::future::block_on(driver(&control, &running, &ticked))
                })
            };
            match control.poke_or_run("svc", Poke::Trigger) {
                Ok(PokeStart::Here(_, _)) => {
                    run(&running);
                    control.end_here(tokio::time::Instant::now(), false);
                }
                Ok(PokeStart::Queued(mut receipt)) => {
                    // Answered by the driver's run, before any cancel.
                    while receipt.rx.try_recv().is_err() {
                        loom::thread::yield_now();
                    }
                }
                Err(e) => panic!("refused: {e}"),
            }
            // The scheduled run happens without the cancel's wake-up: a driver that
            // waited for the caller's run was woken by its end.
            while !ticked.load(Ordering::SeqCst) {
                loom::thread::yield_now();
            }
            control.cancel();
            driver_thread
                .join()
                .expect("the driver stops at the cancel");
        });
    }
}
