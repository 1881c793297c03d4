//! The periodic driver: one task per periodic service that serializes scheduled runs
//! with pokes (`trigger`, `check-queue`, `process-batch`), so runs never overlap.
//!
//! A poke that arrives while a run is in progress is *coalesced*: every such `trigger`
//! (or `check-queue`) joins one follow-up run, and its caller learns that it was merged.
//! An idle driver is woken at once through an [`AtomicWaker`], never by polling: the
//! poke side sets its state (the queue's length, the service's cancelled flag), then
//! wakes; the driver registers its waker, then reads that state.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Schedule;
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{RunOutcome, RunRecord, ServiceCell, ServiceState};
use crate::service::{BatchRequest, PeriodicRun, RunReason, ServiceContext};
use crate::util::catch_unwind;

/// A request for an unscheduled run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Poke {
    Trigger,
    CheckQueue,
    ProcessBatch(BatchRequest),
}

impl Poke {
    fn reason(&self) -> RunReason {
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
        match &record.outcome {
            RunOutcome::Success => Ok(TriggerOutcome {
                coalesced: self.coalesced,
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
}

struct Command {
    poke: Poke,
    waiters: Waiters,
    /// When the run must stop: the latest of its callers' deadlines, `None` as soon
    /// as one caller waits without a deadline.
    deadline: Option<Instant>,
}

/// The callers waiting for one run: usually one, so no allocation for it.
#[derive(Default)]
struct Waiters {
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
pub(crate) struct PeriodicControl {
    state: Mutex<DriverState>,
    /// The length of `state.queue`, written under its lock, read without.
    queued: AtomicUsize,
    /// Whether a run is in progress (a poke then says it was coalesced): a flag, so
    /// that a scheduled run takes no lock to begin or end.
    running: AtomicBool,
    /// The driver's task, woken after `queued` (or the service's cancelled flag) is set.
    waker: AtomicWaker,
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
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
        }
    }

    /// Wakes the driver to look again (its service was cancelled, say).
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DriverState> {
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
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        if st.closed {
            return Err(Error::shutting_down(&format!("poke of `{service}`")));
        }
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

    fn begin_command(&self) -> Option<Command> {
        // Most wake-ups are the schedule's: no lock when nothing is queued.
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut st = self.lock();
        let cmd = st.queue.pop_front()?;
        self.queued.store(st.queue.len(), Ordering::Release);
        self.running.store(true, Ordering::Release);
        Some(cmd)
    }

    fn begin_scheduled(&self) {
        self.running.store(true, Ordering::Release);
    }

    fn end(&self) {
        self.running.store(false, Ordering::Release);
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

/// The driver task of one periodic service.
pub(crate) async fn drive(
    cell: Arc<ServiceCell>,
    run: Arc<dyn PeriodicRun>,
    control: Arc<PeriodicControl>,
    schedule: Schedule,
    cx: ServiceContext,
) {
    let clock = cell.spec.clock.clone();
    let opts = &cell.spec.options;
    let start = Instant::now();
    let anchor = crate::util::after(start, opts.initial_delay);
    let mut due = schedule.first_due(start, opts.initial_delay, opts.run_on_startup, &clock);
    cell.board.set_next_run(Some(clock.wall_at(due)));
    cell.board.mark_started(ServiceState::Idle);
    tracing::info!(schedule = %schedule.describe(), "periodic service started");

    // One timer for the driver's life, moved to each due time (a fresh timer per
    // period costs a registration and a removal under the timer wheel's lock).
    let sleep = tokio::time::sleep_until(due);
    tokio::pin!(sleep);
    // The end of the last run, read a moment ago: the next turn needs no clock read.
    let mut fresh: Option<Instant> = None;
    loop {
        // `ServiceCell::cancel` sets this flag, then wakes the driver.
        if cell.life.is_cancelled() {
            break;
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
                if !may_run(&cx, &cell).await {
                    // A singleton whose lease another host holds: that host runs this tick.
                    due = schedule.next_due(opts.missed_ticks, anchor, due, true, now, &clock);
                    cell.board.set_next_run(Some(clock.wall_at(due)));
                    continue;
                }
                control.begin_scheduled();
                (RunReason::Scheduled, None, Waiters::default(), true, None)
            } else {
                // Moved only when it changed or has fired: a stale deadline cannot make
                // the timer fire again at every turn of the loop, and a poke's turn
                // leaves the armed timer alone.
                if sleep.deadline() != due || sleep.is_elapsed() {
                    sleep.as_mut().reset(due);
                }
                std::future::poll_fn(|task| {
                    // Registered before the state is read: a poke or a cancel that
                    // lands after the read wakes this registration.
                    control.waker.register(task.waker());
                    if control.queued.load(Ordering::Acquire) != 0 || cell.life.is_cancelled() {
                        // A poke first: its timer is not polled at all.
                        return std::task::Poll::Ready(());
                    }
                    sleep.as_mut().poll(task)
                })
                .await;
                continue;
            };

        cell.board.set_state(ServiceState::Running);
        let started = now;
        let result = match deadline {
            None => Some(catch_unwind(run.run(cx.for_run(reason, batch))).await),
            Some(deadline) => run_until(&cx, &run, reason, batch, deadline).await,
        };
        let outcome = match result {
            None => RunOutcome::TimedOut,
            Some(Ok(Ok(()))) => RunOutcome::Success,
            Some(Ok(Err(e))) => {
                tracing::warn!(?reason, error = %e, "periodic run failed");
                RunOutcome::Failed {
                    error: e.to_string(),
                }
            }
            Some(Err(panic)) => {
                tracing::error!(?reason, panic = %panic, "periodic run panicked");
                RunOutcome::Panicked { message: panic }
            }
        };
        // One pair of clock reads per run, after it (so the tick starts sooner): the
        // wall times of its start, its end and the next run all derive from it.
        let ended = Instant::now();
        let ended_wall = clock.now();
        let elapsed = ended.saturating_duration_since(started);
        let started_wall = Clock::wall_at_from(started, ended, ended_wall);
        control.end();
        due = schedule.next_due(opts.missed_ticks, anchor, due, consumed, ended, &clock);
        // One status update per run end: the record, the next run and the state.
        let record = cell.board.finish_run(
            reason,
            started_wall,
            elapsed,
            outcome,
            ended_wall,
            Some(Clock::wall_at_from(due, ended, ended_wall)),
            ServiceState::Idle,
        );
        for w in waiters {
            let _ = w.send(Ok(record.clone()));
        }
        // Code the token was handed to may have cancelled it (once per run: the
        // check takes the token's lock).
        if cx.is_cancelled() {
            break;
        }
        fresh = Some(ended);
    }

    control.close(&cell.spec.name);
    cell.board.set_next_run(None);
}

/// A poked run with a deadline: at the deadline its own token (a child of the
/// service's) is cancelled, and after the action grace its future is dropped (`None`).
async fn run_until(
    cx: &ServiceContext,
    run: &Arc<dyn PeriodicRun>,
    reason: RunReason,
    batch: Option<BatchRequest>,
    deadline: Instant,
) -> Option<std::result::Result<std::result::Result<(), crate::error::BoxError>, String>> {
    let token = Arc::new(cx.token().child_token());
    let run_cx = cx.with_token(Arc::clone(&token), reason, batch);
    let fut = catch_unwind(run.run(run_cx));
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

/// Whether this host may run a scheduled tick: always, unless the service is a
/// cluster singleton whose lease another host holds.
async fn may_run(cx: &ServiceContext, cell: &ServiceCell) -> bool {
    if !cell.spec.options.singleton {
        return true;
    }
    match cx.host_inner().and_then(|h| h.transport.clone()) {
        Some(t) => t.may_run(&cell.spec.name).await,
        None => true,
    }
}
