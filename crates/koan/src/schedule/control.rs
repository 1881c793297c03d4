//! The poke side of a periodic driver: requests for unscheduled runs (`trigger`,
//! `check-queue`, `process-batch`), queued or coalesced, and their receipts.
//!
//! A poke that arrives while a run is in progress is *coalesced*: every such `trigger`
//! (or `check-queue`) joins one follow-up run, and its caller learns that it was merged.
//! The poke side sets its state (the queue's length), then wakes the driver through an
//! [`AtomicWaker`] — or, when nothing runs and nothing is queued, runs the poke on its
//! own task (see [`super::here`]).

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::here::RunHere;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{RunOutcome, RunRecord};
use crate::service::{BatchRequest, RunReason};
use crate::sync::{AtomicBool, AtomicUsize, AtomicWaker, Mutex, MutexGuard, Ordering};

/// A request for an unscheduled run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Poke {
    Trigger,
    CheckQueue,
    ProcessBatch(BatchRequest),
}

impl Poke {
    pub(super) fn reason(&self) -> RunReason {
        match self {
            Poke::Trigger => RunReason::Trigger,
            Poke::CheckQueue => RunReason::CheckQueue,
            Poke::ProcessBatch(_) => RunReason::ProcessBatch,
        }
    }

    /// The built-in action this poke stands for.
    pub(crate) fn action_name(&self) -> &'static str {
        match self {
            Poke::Trigger => crate::well_known::actions::TRIGGER,
            Poke::CheckQueue => crate::well_known::actions::CHECK_QUEUE,
            Poke::ProcessBatch(_) => crate::well_known::actions::PROCESS_BATCH,
        }
    }

    fn merges_with(&self, other: &Poke) -> bool {
        matches!(
            (self, other),
            (Poke::Trigger, Poke::Trigger) | (Poke::CheckQueue, Poke::CheckQueue)
        )
    }
}

/// How a poke starts: run by its caller, or queued for the driver.
pub(crate) enum PokeStart {
    /// The caller runs it now, on its own task (see [`super::here`]).
    Here(Arc<dyn RunHere>, Poke),
    /// The driver runs it; its outcome arrives through the receipt.
    Queued(PokeReceipt),
}

/// What the run that served a poke ended with.
pub(crate) type PokeResult = Result<RunRecord>;

/// The answer to a trigger, check-queue or process-batch: whether the request was
/// merged into a run already due, and the run that served it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TriggerOutcome {
    /// True when the request arrived during a run (or joined a pending one) and was
    /// merged into a single follow-up run.
    pub coalesced: bool,
    /// The run that served the request.
    pub run: RunRecord,
}

/// An accepted poke: whether it was merged, and where its run's outcome will arrive.
#[derive(Debug)]
pub(crate) struct PokeReceipt {
    pub(crate) coalesced: bool,
    pub(crate) rx: oneshot::Receiver<PokeResult>,
}

impl PokeReceipt {
    /// Waits for the run; a run that failed is an error of kind `Handler`/`Panic`.
    pub(crate) async fn outcome(self, service: &str) -> Result<TriggerOutcome> {
        let record = self
            .rx
            .await
            .map_err(|_| Error::shutting_down(&format!("run of `{service}`")))??;
        answer(record, self.coalesced, service)
    }
}

/// A poke's answer once its run ended: a run that failed is an error of kind
/// `Handler`/`Panic`.
pub(super) fn answer(record: RunRecord, coalesced: bool, service: &str) -> Result<TriggerOutcome> {
    match &record.outcome {
        RunOutcome::Success => Ok(TriggerOutcome {
            coalesced,
            run: record,
        }),
        RunOutcome::Panicked { message } => Err(Error::new(
            ErrorKind::Panic,
            format!("the run of `{service}` panicked: {message}"),
        )),
        RunOutcome::TimedOut => Err(Error::new(
            ErrorKind::Timeout,
            format!("the run of `{service}` timed out"),
        )),
        RunOutcome::Cancelled => Err(Error::shutting_down(&format!("run of `{service}`"))),
        RunOutcome::Failed { error } => Err(Error::new(
            ErrorKind::Handler,
            format!("the run of `{service}` failed: {error}"),
        )),
    }
}

pub(super) struct Command {
    pub(super) poke: Poke,
    pub(super) waiters: Waiters,
    /// When the run must stop: the latest of its callers' deadlines, `None` as soon
    /// as one caller waits without a deadline.
    pub(super) deadline: Option<Instant>,
}

/// The callers waiting for one run: usually one, so no allocation for it.
#[derive(Default)]
pub(super) struct Waiters {
    first: Option<oneshot::Sender<PokeResult>>,
    more: Vec<oneshot::Sender<PokeResult>>,
}

impl Waiters {
    fn one(tx: oneshot::Sender<PokeResult>) -> Self {
        Waiters {
            first: Some(tx),
            more: Vec::new(),
        }
    }

    /// Whether no caller waits (a scheduled run).
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none() && self.more.is_empty()
    }

    fn push(&mut self, tx: oneshot::Sender<PokeResult>) {
        match self.first {
            None => self.first = Some(tx),
            Some(_) => self.more.push(tx),
        }
    }
}

impl IntoIterator for Waiters {
    type Item = oneshot::Sender<PokeResult>;
    type IntoIter = std::iter::Chain<
        std::option::IntoIter<oneshot::Sender<PokeResult>>,
        std::vec::IntoIter<oneshot::Sender<PokeResult>>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.more)
    }
}

#[derive(Default)]
struct DriverState {
    closed: bool,
    queue: VecDeque<Command>,
}

/// The shared side of a periodic driver: pokes go in here.
///
/// Laid out for the driver: what it reads or writes at every run (its waker, the
/// queue's length, the running and cancelled flags, whether a caller ran) shares the
/// first cache line; with 10,000 services each run's lines are cold (B6).
#[repr(C, align(64))]
pub(crate) struct PeriodicControl {
    /// The driver's task, woken after `queued` (or `cancelled`) is set.
    pub(super) waker: AtomicWaker,
    /// The length of `state.queue`, written under its lock, read without.
    pub(super) queued: AtomicUsize,
    /// Whether a run is in progress (a poke then says it was coalesced), and who may
    /// start one: the driver, or a caller that runs its poke itself (see [`here`]).
    /// Taken under the state's lock by a poke or a queued run, and without it (by a
    /// compare-and-swap) by a scheduled one, so that no two runs overlap.
    ///
    /// [`here`]: super::here
    running: AtomicBool,
    /// Set by [`cancel`](Self::cancel): the driver reads it beside `queued` (the
    /// service's own flag, in `Lifetime`, is a cache line a run touches for nothing
    /// else).
    cancelled: AtomicBool,
    /// Set when a caller's run ended; the driver then reads [`here_ended`](Self::here_ended).
    here_ran: AtomicBool,
    /// Set by the driver while it waits for a caller's run to end: that end wakes it.
    blocked: AtomicBool,
    state: Mutex<DriverState>,
    /// When the last run a caller ran itself ended: a tick that fell due during it is
    /// handled as after any poked run (skipped, or run once, per the policy).
    here_ended: Mutex<Option<Instant>>,
    /// How a caller runs the service itself, set by the driver when it starts.
    /// With the runtime its driver runs on: only a caller on it runs a poke itself.
    here: OnceLock<(Arc<dyn RunHere>, Option<tokio::runtime::Id>)>,
    /// The task of a caller whose run is in progress, woken when it is abandoned.
    here_waker: AtomicWaker,
    /// Set when the driver is gone (stopped, or aborted after the grace): a caller's
    /// run still in progress is then dropped and answered `ShuttingDown`.
    abandoned: AtomicBool,
    capacity: usize,
}

impl std::fmt::Debug for PeriodicControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeriodicControl")
            .field("pending", &self.pending())
            .finish()
    }
}

impl PeriodicControl {
    pub(crate) fn new(capacity: usize) -> Self {
        PeriodicControl {
            state: Mutex::new(DriverState::default()),
            queued: AtomicUsize::new(0),
            running: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            here_ran: AtomicBool::new(false),
            here_ended: Mutex::new(None),
            here: OnceLock::new(),
            abandoned: AtomicBool::new(false),
            here_waker: AtomicWaker::new(),
            cancelled: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
        }
    }

    /// Tells the driver that its service is stopping, and wakes it.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, DriverState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs waiting (not counting the one in progress).
    pub(crate) fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    /// Asks for a run. Never blocks: the run is queued or merged, or the caller is told
    /// `Busy` / `ShuttingDown` at once.
    ///
    /// With a `deadline` (its caller's timeout), the run's token is cancelled then, and
    /// after the action grace its future is dropped — unless another caller merged
    /// into the same run waits longer or without a deadline.
    pub(crate) fn poke(
        &self,
        service: &str,
        poke: Poke,
        deadline: Option<Instant>,
    ) -> Result<PokeReceipt> {
        let st = self.lock();
        if st.closed {
            return Err(Error::shutting_down(&format!("poke of `{service}`")));
        }
        self.queue(st, service, poke, deadline)
    }

    /// Asks for a run without a deadline, which the caller runs itself when nothing
    /// runs and nothing is queued ([`PokeStart::Here`]): the driver's wake-up is the
    /// largest part of a poke otherwise. Else as [`poke`](Self::poke).
    pub(crate) fn poke_or_run(&self, service: &str, poke: Poke) -> Result<PokeStart> {
        let st = self.lock();
        if st.closed {
            return Err(Error::shutting_down(&format!("poke of `{service}`")));
        }
        if st.queue.is_empty()
            && let Some((here, runtime)) = self.here.get()
            && on_runtime(*runtime)
            && self
                .running
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::Acquire)
                .is_ok()
        {
            drop(st);
            return Ok(PokeStart::Here(Arc::clone(here), poke));
        }
        self.queue(st, service, poke, None).map(PokeStart::Queued)
    }

    /// Queues `poke` (or merges it into a queued run of its kind).
    fn queue(
        &self,
        mut st: MutexGuard<'_, DriverState>,
        service: &str,
        poke: Poke,
        deadline: Option<Instant>,
    ) -> Result<PokeReceipt> {
        let (tx, rx) = oneshot::channel();
        let mut coalesced = self.running.load(Ordering::Acquire);
        if let Some(cmd) = st.queue.iter_mut().find(|c| c.poke.merges_with(&poke)) {
            cmd.deadline = match (cmd.deadline, deadline) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            cmd.waiters.push(tx);
            return Ok(PokeReceipt {
                coalesced: true,
                rx,
            });
        }
        if st.queue.len() >= self.capacity {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "`{service}` already has {} runs waiting (its capacity); retry later",
                    st.queue.len()
                ),
            ));
        }
        coalesced &= poke.merges_with(&poke);
        st.queue.push_back(Command {
            poke,
            waiters: Waiters::one(tx),
            deadline,
        });
        self.queued.store(st.queue.len(), Ordering::Release);
        drop(st);
        self.waker.wake();
        Ok(PokeReceipt { coalesced, rx })
    }

    pub(super) fn begin_command(&self) -> Option<Command> {
        // Most wake-ups are the schedule's: no lock when nothing is queued.
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut st = self.lock();
        // A caller's run in progress: the driver waits for its end.
        if self.running.load(Ordering::Acquire) {
            return None;
        }
        let cmd = st.queue.pop_front()?;
        self.queued.store(st.queue.len(), Ordering::Release);
        self.running.store(true, Ordering::Release);
        Some(cmd)
    }

    /// Takes the service for a scheduled run; `false` while a caller runs it.
    pub(super) fn begin_scheduled(&self) -> bool {
        self.running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::Acquire)
            .is_ok()
    }

    pub(super) fn end(&self) {
        self.running.store(false, Ordering::Release);
    }

    /// Whether a run is in progress (at the driver's turn: a caller's).
    pub(super) fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// How a caller runs the service itself: set once, by its driver.
    pub(super) fn set_here(&self, here: Arc<dyn RunHere>) {
        // (No runtime: a model's driver, whose callers may all run their pokes.)
        let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        let _ = self.here.set((here, runtime));
    }

    /// Waits (the driver) until a caller's run has ended, or the service is cancelled
    /// when `or_cancelled`.
    pub(super) async fn wait_here(&self, or_cancelled: bool) {
        // Set before `running` is read, and read by the run's end after it clears
        // `running` (both sequentially consistent): one of the two sees the other.
        self.blocked.store(true, Ordering::SeqCst);
        crate::sync::seqcst_fence();
        std::future::poll_fn(|task| {
            self.waker.register(task.waker());
            if !self.is_running() || (or_cancelled && self.is_cancelled()) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        self.blocked.store(false, Ordering::Relaxed);
    }

    /// A caller's run ended at `ended`: the service is free again, and the driver is
    /// woken when it has queued runs or waits for this end. With `stop`, the run
    /// cancelled its own token: the driver stops, as after a run of its own.
    pub(crate) fn end_here(&self, ended: Instant, stop: bool) {
        *self.here_ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(ended);
        self.here_ran.store(true, Ordering::Release);
        self.running.store(false, Ordering::SeqCst);
        crate::sync::seqcst_fence();
        if stop {
            self.cancel();
        } else if self.queued.load(Ordering::SeqCst) != 0 || self.blocked.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// The driver is gone: a caller's run in progress is abandoned (see `here`).
    pub(super) fn abandon_here(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.here_waker.wake();
    }

    /// Whether the driver is gone; `task` (a caller running its poke) is woken when
    /// it goes.
    pub(super) fn here_abandoned(&self, task: &std::task::Waker) -> bool {
        self.here_waker.register(task);
        self.abandoned.load(Ordering::SeqCst)
    }

    /// When the last run a caller ran itself ended, once.
    pub(super) fn take_here_ended(&self) -> Option<Instant> {
        // A load first: the driver asks at every scheduled run, a caller rarely ran.
        if !self.here_ran.load(Ordering::Acquire) || !self.here_ran.swap(false, Ordering::Acquire) {
            return None;
        }
        self.here_ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Refuses new pokes and answers every queued one `ShuttingDown`.
    pub(crate) fn close(&self, service: &str) {
        let drained: Vec<Command> = {
            let mut st = self.lock();
            st.closed = true;
            self.queued.store(0, Ordering::Release);
            st.queue.drain(..).collect()
        };
        for cmd in drained {
            for w in cmd.waiters {
                let _ = w.send(Err(Error::shutting_down(&format!("run of `{service}`"))));
            }
        }
    }
}

/// Whether the caller runs on `runtime`, the service's driver's. A caller on
/// another runtime (a thread with a runtime of its own) queues its poke for the
/// driver: run on its task, the tick was that runtime's, and stopped with it —
/// a caller that gave up and dropped its runtime left the service `running` for
/// good, every later trigger waiting (found by a probe).
fn on_runtime(runtime: Option<tokio::runtime::Id>) -> bool {
    runtime.is_none_or(|id| tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == id))
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::PeriodicControl;

    /// What the driver touches at every run lies in the control's first cache line.
    #[test]
    fn the_drivers_fields_share_one_cache_line() {
        assert_eq!(align_of::<PeriodicControl>(), 64);
        let end = offset_of!(PeriodicControl, blocked) + size_of::<bool>();
        assert!(end <= 64, "the driver's fields end at byte {end}");
    }
}
