//! Running an action on the caller's own task when its service is idle.
//!
//! A call through the mailbox costs two task wake-ups (caller → worker → caller),
//! and on a multi-thread runtime those are often cross-thread: the largest part of an
//! in-process call. When nothing is queued and a concurrency slot is free, nothing
//! would run before this action anyway, so the caller takes the slot and runs the
//! action itself, through the same code as a worker (deadline, panics, metrics,
//! ledger). Nothing overtakes queued work, `max_concurrency` holds (workers and
//! callers share the slots), and a running action is never lost to its caller going
//! away: if the caller's future is dropped mid-run, the action is handed to a task
//! of its own and finishes there, still holding its slot. At the end of the host's
//! grace it is stopped, as a worker's is, and its caller answered `ShuttingDown`
//! (it ran on, and its caller waited for ever, after the host said it had stopped;
//! found by a probe).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio_util::sync::WaitForCancellationFutureOwned;

use super::mailbox::Job;
use super::reply::{self, ReplyRx};
use super::run::Run;
use super::slots::CellSlot;
use crate::error::Result;
use crate::host::HostInner;
use crate::payload::Payload;
use crate::registry::ServiceCell;

/// Takes a concurrency slot for the caller when the service is idle: nothing queued
/// and a slot free; the run is counted in flight with it. The caller must then
/// [`run`] its job.
pub(crate) fn take_slot(cell: &ServiceCell) -> bool {
    idle_slot(&cell.queue.mailbox, &cell.queue.slots)
}

/// The rule of [`take_slot`]: nothing queued, and a slot free.
///
/// A busy service (every slot taken) is seen from the slots' word alone, read
/// without a write: its call is queued without a look at the mailbox's count, whose
/// line the push then writes once instead of reading it first (B3: 64 callers on
/// a service of one slot queue nearly every call).
fn idle_slot(mailbox: &super::mailbox::Mailbox, slots: &super::slots::Slots) -> bool {
    !slots.is_full() && mailbox.is_empty() && slots.try_take_running()
}

/// Runs `job` on the caller's task, in the slot [`take_slot`] took (and counted).
#[inline]
pub(crate) fn run(host: &Arc<HostInner>, cell: Arc<ServiceCell>, mut job: Job) -> InlineRun {
    // Without a deadline the run itself hands back the outcome. With one, the caller
    // is answered at the deadline through a channel while the handler has its grace.
    let rx = job.deadline.map(|_| {
        let (tx, rx) = reply::channel();
        job.reply = Some(tx);
        rx
    });
    // Accepted a moment ago: its acceptance time is its start time.
    let started = job.enqueued_at;
    let run = Run::start(host, &cell, job, started);
    InlineRun {
        run: Some(Counted {
            run,
            slot: CellSlot(cell),
        }),
        rx,
        aborted: None,
    }
}

/// A run on a caller's slot, counted in flight: dropped, it drops the run, then
/// counts it out and gives the slot back (fields drop in order).
struct Counted {
    run: Run,
    slot: CellSlot,
}

impl Drop for Counted {
    /// Dropped before it finished (its task aborted at the end of the grace), the
    /// run answers its job, naming the action (see `Run::abandon`).
    fn drop(&mut self) {
        self.run.abandon(&self.slot.0);
    }
}

impl Counted {
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Payload>>> {
        self.run.poll_run(&self.slot.0, cx)
    }
}

/// An action running on its caller's task; resolves to its outcome.
pub(crate) struct InlineRun {
    /// `None` once the run finished.
    run: Option<Counted>,
    /// The outcome when the action has a deadline.
    rx: Option<ReplyRx>,
    /// The end of the host's grace for the service, watched once the run has
    /// waited (a run done at its first poll costs nothing more).
    aborted: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl std::fmt::Debug for InlineRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineRun")
            .field("finished", &self.run.is_none())
            .finish()
    }
}

impl Future for InlineRun {
    /// `None` only if the outcome was lost (the host went away mid-answer).
    type Output = Option<Result<Payload>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(run) = &mut self.run
            && let Poll::Ready(outcome) = run.poll_run(cx)
        {
            self.run = None;
            // Otherwise it went through the channel (at its deadline), and is there
            // by now: taken without registering the task's waker.
            return Poll::Ready(outcome.or_else(|| reply::try_take(self.rx.as_mut()?)));
        }
        if let Some(stopped) = self.stop_at_grace_end(cx) {
            return Poll::Ready(stopped);
        }
        // With a deadline the outcome can come before the run ends: the caller is
        // answered while the handler gets its grace (which `Drop` lets finish).
        match &mut self.rx {
            Some(rx) => Pin::new(rx).poll(cx).map(|r| r.ok()),
            None => Poll::Pending,
        }
    }
}

impl InlineRun {
    /// Stops the run once the host's grace for its service ran out: the caller's
    /// answer, `ShuttingDown` naming the action (through the channel, with a
    /// deadline: the dropped run answers it).
    #[cold]
    fn stop_at_grace_end(&mut self, cx: &mut Context<'_>) -> Option<Option<Result<Payload>>> {
        let run = self.run.as_ref()?;
        let aborted = self
            .aborted
            .get_or_insert_with(|| Box::pin(run.slot.0.life.abort_token().cancelled_owned()));
        if aborted.as_mut().poll(cx).is_pending() {
            return None;
        }
        let run = self.run.take()?;
        let service = &run.slot.0.spec.name;
        let what = match run.run.action(&run.slot.0) {
            Some(name) => format!("action `{name}` of `{service}`"),
            None => format!("an action of `{service}`"),
        };
        drop(run);
        let stopped = crate::error::Error::stopped_while_running(&what);
        Some(match self.rx.as_mut() {
            Some(rx) => reply::try_take(rx).or(Some(Err(stopped))),
            None => Some(Err(stopped)),
        })
    }
}

impl Drop for InlineRun {
    fn drop(&mut self) {
        // The caller stopped waiting (or was answered at its deadline) while the
        // action still runs: it finishes on a task of its own, or stops at the end
        // of the host's grace.
        if let Some(mut run) = self.run.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let aborted = run.slot.0.life.abort_token();
            let mut unfinished = Unfinished(Some(Arc::clone(&run.slot.0)));
            rt.spawn(async move {
                tokio::select! {
                    _ = std::future::poll_fn(|cx| run.poll_run(cx)) => {}
                    () = aborted.cancelled() => {}
                }
                unfinished.ended();
            });
        }
    }
}

/// The service of an action handed to a task of its own on its caller's runtime,
/// until it ended. Dropped before, the task was: the runtime shut down under it,
/// and the action stopped unfinished — said, where it went without a word (a
/// probe: a thread with a runtime of its own gave up on its call and dropped the
/// runtime; the action had started, and never ended). The handler's timers and
/// sockets are that runtime's, so it cannot finish elsewhere.
struct Unfinished(Option<Arc<ServiceCell>>);

impl Unfinished {
    fn ended(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(cell) = self.0.take()
            && !cell.life.aborted()
        {
            tracing::warn!(
                service = %cell.spec.name,
                "an action its caller ran itself was stopped unfinished: the caller's own runtime shut down under it; call from the host's runtime, or with `spawn()`, for work that must outlive its caller's runtime"
            );
        }
    }
}

/// Loom model (`RUSTFLAGS="--cfg koan_loom" cargo test -p koan --lib loom`): a
/// caller that runs its action itself and a worker that takes queued work share the
/// service's slots.
#[cfg(all(test, koan_loom))]
mod loom_model {
    use std::sync::Arc;

    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::mpsc;

    use super::idle_slot;
    use crate::action::mailbox::Mailbox;
    use crate::action::mailbox::loom_model::job;
    use crate::action::slots::Slots;

    /// What the models share: a service of one slot, and the runs in progress.
    struct Service {
        mailbox: Arc<Mailbox>,
        slots: Arc<Slots>,
        running: Arc<AtomicUsize>,
    }

    impl Service {
        fn new() -> Self {
            Service {
                mailbox: crate::action::mailbox::loom_model::mailbox(),
                slots: Arc::new(Slots::new(1)),
                running: Arc::new(AtomicUsize::new(0)),
            }
        }

        /// A worker that sends each job it runs; with `keep_slot`, it goes on to
        /// the next queued job in the slot it holds (`Mailbox::next_in_slot`, as
        /// `run_worker` does).
        fn worker(&self, keep_slot: bool, tx: mpsc::Sender<i32>) -> loom::thread::JoinHandle<()> {
            let (mailbox, slots, running) = (
                Arc::clone(&self.mailbox),
                Arc::clone(&self.slots),
                Arc::clone(&self.running),
            );
            loom::thread::spawn(move || {
                loom::future::block_on(async {
                    while let Some((mut job, slot)) = mailbox.next(|| slots.take()).await {
                        loop {
                            run(&running);
                            tx.send(job.priority).expect("the model listens");
                            match keep_slot.then(|| mailbox.next_in_slot()).flatten() {
                                Some(next) => job = next,
                                None => break,
                            }
                        }
                        drop(slot);
                    }
                })
            })
        }
    }

    /// One run: never two at once.
    fn run(running: &AtomicUsize) {
        assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two at once");
        running.fetch_sub(1, Ordering::SeqCst);
    }

    /// One slot, a worker, a queued job and a second caller who runs inline when the
    /// service looks idle and queues otherwise: never two runs at once, every job
    /// runs once (a job queued while the caller runs inline is not stranded: the
    /// caller's release wakes the worker), and the worker returns at the close.
    #[test]
    fn loom_an_inline_caller_and_a_worker_share_one_slot() {
        loom::model(|| {
            let svc = Service::new();
            let (tx, rx) = mpsc::channel();
            let worker = svc.worker(false, tx);
            let (mailbox, slots) = (&svc.mailbox, &svc.slots);
            mailbox.push(job(1)).expect("room for it");
            let inline = idle_slot(mailbox, slots);
            if inline {
                run(&svc.running);
                assert_eq!(slots.running(), 1, "the caller's run counted in flight");
                slots.release_running();
            } else {
                mailbox.push(job(2)).expect("room for it");
            }
            let mut taken = vec![rx.recv().expect("job 1 runs")];
            if !inline {
                taken.push(rx.recv().expect("job 2 runs"));
            }
            taken.sort_unstable();
            assert_eq!(taken, if inline { vec![1] } else { vec![1, 2] });
            assert!(mailbox.close().is_empty(), "nothing left queued");
            worker.join().expect("the worker returns after the close");
        });
    }

    /// As above, with the worker going straight on to the next queued job in the slot
    /// it holds and the caller trying to run inline twice: still never two runs at
    /// once, every job runs once, and a job queued as the worker finds the queue
    /// empty is not stranded; with the caller's jobs under the mailbox's lock
    /// (priorities 2 and 3) and in its lock-free lane (priority 0).
    #[test]
    fn loom_a_worker_keeping_its_slot_for_the_next_job_and_an_inline_caller() {
        for ids in [[2, 3], [0, 0]] {
            keeping_its_slot(ids);
        }
    }

    fn keeping_its_slot(ids: [i32; 2]) {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(model.preemption_bound.map_or(3, |b| b.min(3)));
        model.check(move || {
            let svc = Service::new();
            let (tx, rx) = mpsc::channel();
            let worker = svc.worker(true, tx);
            let (mailbox, slots) = (&svc.mailbox, &svc.slots);
            mailbox.push(job(1)).expect("room for it");
            let mut expected = vec![1];
            for id in ids {
                if idle_slot(mailbox, slots) {
                    run(&svc.running);
                    slots.release_running();
                } else {
                    mailbox.push(job(id)).expect("room for it");
                    expected.push(id);
                }
            }
            let mut taken: Vec<i32> = expected
                .iter()
                .map(|_| rx.recv().expect("a queued job runs"))
                .collect();
            taken.sort_unstable();
            expected.sort_unstable();
            assert_eq!(taken, expected);
            assert!(mailbox.close().is_empty(), "nothing left queued");
            worker.join().expect("the worker returns after the close");
        });
    }
}
