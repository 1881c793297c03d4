//! The synchronization primitives of the hand-written concurrency (`action/slots.rs`,
//! `action/mailbox/`, `event/ring.rs`, `schedule/control.rs`): the standard ones,
//! tokio's `Notify`, futures' `AtomicWaker` and crossbeam's `ArrayQueue`, or under
//! `--cfg koan_loom` loom's (a locked queue for the last), so a loom model checks the
//! real code.

#[cfg(not(koan_loom))]
pub(crate) use crossbeam_queue::ArrayQueue;
#[cfg(not(koan_loom))]
pub(crate) use futures_util::task::AtomicWaker;
#[cfg(not(koan_loom))]
pub(crate) use std::sync::atomic::fence;
#[cfg(not(koan_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(koan_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock};
#[cfg(not(koan_loom))]
pub(crate) use tokio::sync::Notify;

#[cfg(koan_loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(koan_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock};
#[cfg(koan_loom)]
pub(crate) use notify::Notify;

/// `crossbeam-queue`'s `ArrayQueue` (`new`, `push`, `pop`) as a locked queue of the
/// same bound: loom sees the protocol around the queue, and takes the queue itself
/// as linearizable (which is crossbeam's to prove).
#[cfg(koan_loom)]
#[derive(Debug)]
pub(crate) struct ArrayQueue<T>(Mutex<std::collections::VecDeque<T>>, usize);

#[cfg(koan_loom)]
impl<T> ArrayQueue<T> {
    pub(crate) fn new(cap: usize) -> Self {
        ArrayQueue(Mutex::new(std::collections::VecDeque::new()), cap)
    }

    /// `value` back when the queue is full.
    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= self.1 {
            return Err(value);
        }
        q.push_back(value);
        Ok(())
    }

    pub(crate) fn pop(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

/// `futures`' `AtomicWaker` (`register`, `wake`) on loom's.
#[cfg(koan_loom)]
#[derive(Debug, Default)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(koan_loom)]
impl AtomicWaker {
    pub(crate) fn new() -> Self {
        AtomicWaker(loom::future::AtomicWaker::new())
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}

/// Under loom, a SeqCst fence after a SeqCst operation that a later SeqCst load on
/// another thread pairs with; nothing otherwise. Loom models SeqCst loads and stores
/// as AcqRel (loom issues #180, #220), so without it a loom model reports a lost
/// wake-up the real SeqCst order rules out; real builds pay nothing.
#[inline(always)]
pub(crate) fn seqcst_fence() {
    #[cfg(koan_loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The part of `tokio::sync::Notify` the code uses (`notified`, `enable`,
/// `notify_one`, `notify_waiters`) on loom's primitives, with tokio's semantics: a
/// `Notified` completes once `notify_waiters` was called after it was created, or
/// once it took a `notify_one` — sent to the longest-registered waiter (registered
/// by `enable` or a poll), or left as the one permit the next waiter to register
/// takes. A waiter dropped with a `notify_one` it did not take passes it on.
#[cfg(koan_loom)]
mod notify {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use loom::sync::Mutex;

    #[derive(Debug, Default)]
    struct State {
        /// `notify_waiters` calls so far.
        epoch: u64,
        /// A `notify_one` that found no waiter.
        permit: bool,
        next_id: u64,
        /// Registered waiters, oldest first.
        waiting: Vec<(u64, Option<Waker>)>,
        /// Waiters given a `notify_one`, not yet polled.
        woken: Vec<u64>,
    }

    impl State {
        fn notify_one(&mut self) {
            if self.waiting.is_empty() {
                self.permit = true;
                return;
            }
            let (id, waker) = self.waiting.remove(0);
            self.woken.push(id);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct Notify {
        state: Mutex<State>,
    }

    impl Notify {
        pub(crate) fn new() -> Self {
            Notify::default()
        }

        pub(crate) fn notified(&self) -> Notified<'_> {
            let epoch = self.state.lock().map(|s| s.epoch).unwrap_or(0);
            Notified {
                notify: self,
                epoch,
                id: None,
                done: false,
            }
        }

        pub(crate) fn notify_one(&self) {
            if let Ok(mut s) = self.state.lock() {
                s.notify_one();
            }
        }

        pub(crate) fn notify_waiters(&self) {
            let waiting = match self.state.lock() {
                Ok(mut s) => {
                    s.epoch += 1;
                    std::mem::take(&mut s.waiting)
                }
                Err(_) => return,
            };
            waiting
                .into_iter()
                .filter_map(|(_, w)| w)
                .for_each(Waker::wake);
        }
    }

    #[derive(Debug)]
    pub(crate) struct Notified<'a> {
        notify: &'a Notify,
        epoch: u64,
        /// Set once registered.
        id: Option<u64>,
        done: bool,
    }

    impl Notified<'_> {
        /// Registers for `notify_one` (taking a permit left over); whether it is done.
        pub(crate) fn enable(self: Pin<&mut Self>) -> bool {
            self.get_mut().check(None)
        }

        fn check(&mut self, waker: Option<&Waker>) -> bool {
            if self.done {
                return true;
            }
            let Ok(mut s) = self.notify.state.lock() else {
                self.done = true;
                return true;
            };
            let woken = self.id.and_then(|id| s.woken.iter().position(|w| *w == id));
            if s.epoch != self.epoch || woken.is_some() {
                if let Some(i) = woken {
                    s.woken.remove(i);
                }
                if let Some(id) = self.id
                    && let Some(i) = s.waiting.iter().position(|(w, _)| *w == id)
                {
                    s.waiting.remove(i);
                }
                self.done = true;
                return true;
            }
            match self.id {
                Some(id) => {
                    if let (Some(waker), Some(entry)) =
                        (waker, s.waiting.iter_mut().find(|(w, _)| *w == id))
                    {
                        entry.1 = Some(waker.clone());
                    }
                }
                None if s.permit => {
                    s.permit = false;
                    self.done = true;
                    return true;
                }
                None => {
                    let id = s.next_id;
                    s.next_id += 1;
                    s.waiting.push((id, waker.cloned()));
                    self.id = Some(id);
                }
            }
            false
        }
    }

    impl Future for Notified<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.get_mut().check(Some(cx.waker())) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Drop for Notified<'_> {
        fn drop(&mut self) {
            let (Some(id), false) = (self.id, self.done) else {
                return;
            };
            let Ok(mut s) = self.notify.state.lock() else {
                return;
            };
            s.waiting.retain(|(w, _)| *w != id);
            if let Some(i) = s.woken.iter().position(|w| *w == id) {
                s.woken.remove(i);
                s.notify_one();
            }
        }
    }
}
