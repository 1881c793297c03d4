//! Concurrency slots: how many actions of a service may run at once
//! (`max_concurrency`), shared by its mailbox workers and by callers that run an
//! action themselves (`action::inline`).
//!
//! A counter instead of `tokio::sync::Semaphore`: taking and giving back a free slot
//! is one atomic operation each, with no lock; waiters are woken only when some exist.
//!
//! The same word counts the runs in flight (`ServiceStatus::in_flight`) in its high
//! half: a caller running an action itself takes its slot and counts its run with one
//! atomic write, and gives both back with one (a word both cores write under load,
//! so each write fewer is a cache-line transfer fewer).

use crate::sync::{AtomicU64, AtomicUsize, Notify, Ordering, seqcst_fence};
use std::sync::Arc;

use crate::registry::ServiceCell;

/// One run in flight, in the high half of [`Slots`]' word.
const RUN: u64 = 1 << 32;
/// The low half: slots taken.
const TAKEN: u64 = RUN - 1;

/// The slots of one service, and its actions' counts.
///
/// Laid out (`repr(C)`, on a line of its own) so that the counts of finished actions
/// share the line of the slots' word: a caller that runs an action itself took its
/// slot on that line a moment before it counts the action, so the count is written
/// where the core already holds the line instead of on one more line both cores
/// write.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Slots {
    /// Slots taken (low 32 bits) and runs in flight (high 32 bits).
    word: AtomicU64,
    /// Actions that succeeded since the host started (`ServiceHistory`).
    succeeded: AtomicU64,
    /// Actions that failed (errors, panics, timeouts) since the host started.
    failed: AtomicU64,
    /// At most `TAKEN` (more could not be counted in the low half).
    max: u64,
    /// Tasks waiting for a slot (or for all of them to be free).
    waiting: AtomicUsize,
    freed: Notify,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            max: u64::try_from(max).unwrap_or(TAKEN).clamp(1, TAKEN),
            word: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Actions running now.
    pub(crate) fn used(&self) -> usize {
        (self.word.load(Ordering::SeqCst) & TAKEN) as usize
    }

    /// Runs in flight: counted by [`run_started`](Self::run_started) and
    /// [`try_take_running`](Self::try_take_running).
    pub(crate) fn running(&self) -> usize {
        (self.word.load(Ordering::Relaxed) >> 32) as usize
    }

    /// Counts a finished action of the service.
    pub(crate) fn count_action(&self, failed: bool) {
        let counter = if failed {
            &self.failed
        } else {
            &self.succeeded
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Actions that succeeded and failed since the host started.
    pub(crate) fn actions_counted(&self) -> (u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
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

    /// Counts a run in flight in a slot already taken (a worker's).
    pub(crate) fn run_started(&self) {
        self.word.fetch_add(RUN, Ordering::Relaxed);
    }

    /// Counts a run out of flight (its slot stays taken).
    pub(crate) fn run_ended(&self) {
        self.word.fetch_sub(RUN, Ordering::Relaxed);
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
    use super::Slots;

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
        slots.run_started();
        assert_eq!((slots.used(), slots.running()), (2, 2));
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
