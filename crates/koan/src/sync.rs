//! The synchronization primitives of the hand-written concurrency (`action/slots.rs`,
//! `event/ring.rs`): the standard ones and tokio's `Notify`, or under
//! `--cfg koan_loom` loom's, so a loom model checks the real code.

#[cfg(not(koan_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(koan_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock};
#[cfg(not(koan_loom))]
pub(crate) use tokio::sync::Notify;

#[cfg(koan_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(koan_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock};
#[cfg(koan_loom)]
pub(crate) use notify::Notify;

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
/// `notify_waiters`) on loom's primitives: a `Notified` completes once
/// `notify_waiters` was called after it was created.
#[cfg(koan_loom)]
mod notify {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use loom::sync::Mutex;

    #[derive(Debug, Default)]
    pub(crate) struct Notify {
        state: Mutex<(u64, Vec<Waker>)>,
    }

    impl Notify {
        pub(crate) fn new() -> Self {
            Notify::default()
        }

        pub(crate) fn notified(&self) -> Notified<'_> {
            let epoch = self.state.lock().map(|s| s.0).unwrap_or(0);
            Notified {
                notify: self,
                epoch,
            }
        }

        pub(crate) fn notify_waiters(&self) {
            let wakers = match self.state.lock() {
                Ok(mut s) => {
                    s.0 += 1;
                    std::mem::take(&mut s.1)
                }
                Err(_) => return,
            };
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    #[derive(Debug)]
    pub(crate) struct Notified<'a> {
        notify: &'a Notify,
        epoch: u64,
    }

    impl Notified<'_> {
        /// Registered from creation on: nothing to do.
        pub(crate) fn enable(self: Pin<&mut Self>) -> bool {
            false
        }
    }

    impl Future for Notified<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let Ok(mut s) = self.notify.state.lock() else {
                return Poll::Ready(());
            };
            if s.0 != self.epoch {
                return Poll::Ready(());
            }
            s.1.push(cx.waker().clone());
            Poll::Pending
        }
    }
}
