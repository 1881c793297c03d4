//! Concurrency slots: how many actions of a service may run at once
//! (`max_concurrency`), shared by its mailbox workers and by callers that run an
//! action themselves (`action::inline`).
//!
//! A counter instead of `tokio::sync::Semaphore`: taking and giving back a free slot
//! is one atomic operation each, with no lock; waiters are woken only when some exist.
//!
//! The same word counts the callers' runs in flight (`ServiceStatus::in_flight`) in
//! its high half: a caller running an action itself takes its slot and counts its run
//! with one atomic write, and gives both back with one (a word both cores write under
//! load, so each write fewer is a cache-line transfer fewer). A worker's runs are
//! counted apart (see [`Slots`]).

use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Notify, Ordering, seqcst_fence};
use std::sync::Arc;

use crate::registry::ServiceCell;

/// One caller's run in flight, in the high half of [`Slots`]' word.
const RUN: u64 = 1 << 32;
/// The low half: slots taken.
const TAKEN: u64 = RUN - 1;

/// The slots of one service, and its actions' counts.
///
/// Laid out (`repr(C)`, on lines of their own) by who writes what:
/// - a caller that runs an action itself takes its slot on the word's line a moment
///   before it counts the action, so its counts sit beside the word, written where
///   its core already holds the line;
/// - a mailbox worker keeps its slot from job to job while jobs wait, and counts its
///   runs and their outcomes on a line of its own ([`WorkerCounts`]). On the word's line,
///   which every caller reads to learn whether the service is busy, its three writes
///   a job would pass that line to the worker's core and back on every call (B3).
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Slots {
    /// Slots taken (low 32 bits) and callers' runs in flight (high 32 bits).
    word: AtomicU64,
    /// The actions its callers ran themselves.
    callers: Counts,
    /// At most `TAKEN` (more could not be counted in the low half).
    max: u64,
    /// Tasks waiting for a slot (or for all of them to be free).
    waiting: AtomicUsize,
    freed: Notify,
    /// The workers' runs in flight, and the actions they ran.
    workers: WorkerCounts,
    /// Set while every slot is held for a service not started ([`Slots::closed`]).
    closed: AtomicBool,
}

/// Actions that succeeded and failed (errors, panics, timeouts) since the host
/// started (`ServiceHistory`).
#[derive(Debug, Default)]
struct Counts {
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn add(&self, failed: bool) {
        let counter = if failed {
            &self.failed
        } else {
            &self.succeeded
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Succeeded and failed.
    fn get(&self) -> (u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// What a service's mailbox workers write at each job, on a line of its own.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct WorkerCounts {
    running: AtomicU64,
    counts: Counts,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            max: u64::try_from(max).unwrap_or(TAKEN).clamp(1, TAKEN),
            word: AtomicU64::new(0),
            callers: Counts::default(),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
            workers: WorkerCounts::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// Slots of `max` that are all taken until [`open`](Self::open): a service's,
    /// whose callers may not run its actions themselves before its workers start
    /// (after the host's startup services finished). Its calls wait in its
    /// mailbox until then; before, a caller ran an action on an idle service while
    /// a startup service (a migration) still ran (found by a probe). No check on
    /// the call's path: a closed service is a full one.
    pub(crate) fn closed(max: usize) -> Self {
        let slots = Slots::new(max);
        slots.word.store(slots.max, Ordering::Relaxed);
        slots.closed.store(true, Ordering::Relaxed);
        slots
    }

    /// While the slots are [`closed`](Self::closed): takes one more for a caller that
    /// runs the action itself though the service has not started (a startup
    /// service's call: its phase runs before any worker, and its call would wait
    /// for them until its timeout). Counted as [`try_take_running`]'s, and given
    /// back alike; [`open`](Self::open) leaves it taken.
    ///
    /// [`try_take_running`]: Self::try_take_running
    pub(crate) fn take_while_closed(&self) -> bool {
        if !self.closed.load(Ordering::SeqCst) {
            return false;
        }
        self.word.fetch_add(1 + RUN, Ordering::SeqCst);
        true
    }

    /// Gives the slots of [`closed`](Self::closed) free (once; after that, nothing).
    pub(crate) fn open(&self) {
        if self.closed.swap(false, Ordering::SeqCst) {
            self.release_subtracting(self.max);
        }
    }

    /// Actions running now.
    pub(crate) fn used(&self) -> usize {
        (self.word.load(Ordering::SeqCst) & TAKEN) as usize
    }

    /// Runs in flight: counted by [`run_started`](Self::run_started) and
    /// [`try_take_running`](Self::try_take_running).
    pub(crate) fn running(&self) -> usize {
        let callers = self.word.load(Ordering::Relaxed) >> 32;
        let workers = self.workers.running.load(Ordering::Relaxed);
        (callers + workers) as usize
    }

    /// Counts a finished action of the service, run by a mailbox worker
    /// (`by_worker`) or by its caller.
    pub(crate) fn count_action(&self, failed: bool, by_worker: bool) {
        let counts = if by_worker {
            &self.workers.counts
        } else {
            &self.callers
        };
        counts.add(failed);
    }

    /// Actions that succeeded and failed since the host started.
    pub(crate) fn actions_counted(&self) -> (u64, u64) {
        let (callers, workers) = (self.callers.get(), self.workers.counts.get());
        (callers.0 + workers.0, callers.1 + workers.1)
    }

    /// Whether every slot is taken (a look, without a write).
    pub(crate) fn is_full(&self) -> bool {
        self.word.load(Ordering::Relaxed) & TAKEN >= self.max
    }

    /// Takes a slot if one is free; give it back with [`release`](Self::release).
    pub(crate) fn try_take(&self) -> bool {
        self.take_adding(1)
    }

    /// Takes a slot if one is free and counts a run in flight in the same write;
    /// give both back with [`release_running`](Self::release_running).
    pub(crate) fn try_take_running(&self) -> bool {
        self.take_adding(1 + RUN)
    }

    fn take_adding(&self, add: u64) -> bool {
        self.word
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w & TAKEN < self.max).then_some(w + add)
            })
            .is_ok()
    }

    /// Counts a worker's run in flight, in a slot it already holds.
    pub(crate) fn run_started(&self) {
        self.workers.running.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a worker's run out of flight (its slot stays taken).
    pub(crate) fn run_ended(&self) {
        self.workers.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Gives a slot back, waking whoever waits for one.
    pub(crate) fn release(&self) {
        self.release_subtracting(1);
    }

    /// Counts a run out of flight and gives its slot back, in one write.
    pub(crate) fn release_running(&self) {
        self.release_subtracting(1 + RUN);
    }

    fn release_subtracting(&self, sub: u64) {
        self.word.fetch_sub(sub, Ordering::SeqCst);
        seqcst_fence();
        // Paired with the SeqCst increment of `waiting` before a waiter's last check:
        // either that check sees this slot free, or this load sees the waiter.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Waits until `ready()` holds, re-checking after every release.
    async fn wait_until(&self, ready: impl Fn() -> bool) {
        if ready() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        seqcst_fence();
        let _waiting = Waiting(&self.waiting);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if ready() {
                return;
            }
            freed.await;
        }
    }

    /// Waits for a free slot and takes it.
    pub(crate) async fn take(&self) -> Slot<'_> {
        self.wait_until(|| self.try_take()).await;
        Slot(self)
    }

    /// Waits until no action runs (used at shutdown).
    pub(crate) async fn all_free(&self) {
        self.wait_until(|| self.used() == 0).await;
    }
}

/// Counts a waiter out again, also when its future is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A slot held by a worker; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A slot held by a caller running an action itself, with its run counted in flight
/// (taken by [`Slots::try_take_running`]); owns its service, so it can move into the
/// run, and is counted out and given back whenever that run is dropped.
#[derive(Debug)]
pub(crate) struct CellSlot(pub(crate) Arc<ServiceCell>);

impl Drop for CellSlot {
    fn drop(&mut self) {
        self.0.queue.slots.release_running();
    }
}

#[cfg(all(test, not(koan_loom)))]
mod tests {
    use super::{Ordering, Slots};

    /// The runs in flight share the slots' word without changing what a slot is:
    /// a caller's slot and run come and go together, a worker's run is counted apart
    /// from the slot it holds, and a full service refuses either kind of take (and
    /// says it is full without a take).
    #[test]
    fn runs_in_flight_are_counted_beside_the_slots() {
        let slots = Slots::new(2);
        assert!(!slots.is_full());
        assert!(slots.try_take_running());
        assert!(!slots.is_full(), "one of two slots taken");
        assert_eq!((slots.used(), slots.running()), (1, 1));
        assert!(slots.try_take());
        assert_eq!((slots.used(), slots.running()), (2, 1));
        assert!(
            !slots.try_take_running() && !slots.try_take(),
            "both slots taken"
        );
        assert!(slots.is_full());
        let word = slots.word.load(Ordering::Relaxed);
        slots.run_started();
        assert_eq!((slots.used(), slots.running()), (2, 2));
        assert_eq!(
            slots.word.load(Ordering::Relaxed),
            word,
            "a worker's run is counted off the word's line"
        );
        slots.release_running();
        assert_eq!((slots.used(), slots.running()), (1, 1));
        assert!(!slots.is_full(), "a slot free, whatever runs in flight");
        slots.run_ended();
        slots.release();
        assert_eq!((slots.used(), slots.running()), (0, 0));
        assert_eq!(
            Slots::new(usize::MAX).max,
            super::TAKEN,
            "clamped to the low half"
        );
    }

    /// A service not started is full for its callers until its slots are opened,
    /// once: a second open frees nothing a run holds.
    #[test]
    fn closed_slots_are_full_until_opened_once() {
        let slots = Slots::closed(2);
        assert!(slots.is_full() && !slots.try_take_running() && !slots.try_take());
        slots.open();
        assert_eq!((slots.used(), slots.is_full()), (0, false));
        assert!(slots.try_take() && slots.try_take());
        slots.open();
        assert_eq!((slots.used(), slots.is_full()), (2, true), "opened once");
    }

    /// A service's action counts add up whoever ran the action, and what a worker
    /// writes at each job lies on a line apart from the word every caller reads.
    #[test]
    fn a_workers_counts_lie_off_the_line_callers_read() {
        let slots = Slots::new(1);
        slots.count_action(false, true);
        slots.count_action(false, false);
        slots.count_action(true, true);
        assert_eq!(slots.actions_counted(), (2, 1));
        assert_eq!(slots.workers.counts.get(), (1, 1), "the workers' on theirs");
        assert_eq!(slots.callers.get(), (1, 0), "the callers' beside the word");
        let word = std::mem::offset_of!(Slots, word);
        let workers = std::mem::offset_of!(Slots, workers);
        assert_eq!(word, 0);
        assert!(workers >= 64 && workers % 64 == 0, "at {workers}");
    }
}

/// Loom models (`RUSTFLAGS="--cfg koan_loom" cargo test -p koan --lib --release loom`).
#[cfg(all(test, koan_loom))]
mod loom_model {
    use std::sync::Arc;

    use super::Slots;

    /// A release never leaves a waiter asleep: the task waiting for the only slot
    /// gets it, whatever the interleaving of its last check and the release.
    #[test]
    fn loom_a_release_wakes_the_task_waiting_for_the_slot() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(1));
            assert!(slots.try_take());
            let waiter = {
                let slots = Arc::clone(&slots);
                loom::thread::spawn(move || {
                    loom::future::block_on(async {
                        let _slot = slots.take().await;
                    })
                })
            };
            slots.release();
            waiter.join().expect("the waiter ends");
            assert_eq!(slots.used(), 0);
        });
    }

    /// `all_free` (shutdown) returns once the last of two running actions ends.
    #[test]
    fn loom_all_free_wakes_when_the_last_slot_comes_back() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(2));
            assert!(slots.try_take());
            assert!(slots.try_take());
            let releasers: Vec<_> = (0..2)
                .map(|_| {
                    let slots = Arc::clone(&slots);
                    loom::thread::spawn(move || slots.release())
                })
                .collect();
            loom::future::block_on(slots.all_free());
            assert_eq!(slots.used(), 0);
            for r in releasers {
                r.join().expect("a releaser ends");
            }
        });
    }
}
