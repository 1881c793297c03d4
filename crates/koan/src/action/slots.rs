//! Concurrency slots: how many actions of a service may run at once
//! (`max_concurrency`), shared by its mailbox workers and by callers that run an
//! action themselves (`action::inline`).
//!
//! A counter instead of `tokio::sync::Semaphore`: taking and giving back a free slot
//! is one atomic operation each, with no lock; waiters are woken only when some exist.

use crate::sync::{AtomicUsize, Notify, Ordering, seqcst_fence};
use std::sync::Arc;

use crate::registry::ServiceCell;

/// The slots of one service.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    used: AtomicUsize,
    /// Tasks waiting for a slot (or for all of them to be free).
    waiting: AtomicUsize,
    freed: Notify,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            max: max.max(1),
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Actions running now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes a slot if one is free; give it back with [`release`](Self::release).
    pub(crate) fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                (u < self.max).then_some(u + 1)
            })
            .is_ok()
    }

    /// Gives a slot back, waking whoever waits for one.
    pub(crate) fn release(&self) {
        self.used.fetch_sub(1, Ordering::SeqCst);
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

/// A slot held by a caller running an action itself; owns its service, so it can
/// move into the run and is given back whenever that run is dropped.
#[derive(Debug)]
pub(crate) struct CellSlot(pub(crate) Arc<ServiceCell>);

impl Drop for CellSlot {
    fn drop(&mut self) {
        self.0.queue.slots.release();
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
