//! A route's handler and the runner each subscriber task keeps for it.
//!
//! A handler's future used to be boxed on every delivery (an allocation, a poll
//! through a pointer, a free: ≈ 250 instructions of B5's ≈ 550 per delivery),
//! though almost every one finishes at its first poll. The typed handler knows its
//! future's type, so each subscriber task keeps one slot of that type per route,
//! allocated once: a delivery writes its future there, polls it in place and empties
//! the slot when it finishes. A future still running is polled to its end in the
//! same slot before the subscriber's next event (a subscriber's handlers run one
//! event at a time), so the slot is free again when the next event starts.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use super::envelope::EventEnvelope;
use super::subscribe::HandlerOutput;
use crate::error::BoxError;

/// How a handler ended: `Ok(())`, or the error it returned.
pub(crate) type Outcome = Result<(), BoxError>;

/// One route's handler; shared by the route and the runners made from it.
pub(crate) type Handler = Arc<dyn StartHandler>;

/// Makes the runner of one route's handler for one subscriber task.
pub(crate) trait StartHandler: Send + Sync {
    /// A runner with its own (empty) slot for the handler's future.
    fn runner(self: Arc<Self>) -> Box<dyn Runner>;
}

/// Runs one route's handler, one event at a time.
pub(crate) trait Runner: Send {
    /// Starts the handler on `env` (it takes out what its future needs: the envelope
    /// is only borrowed) and polls it once. `Pending`: it is kept, to be polled with
    /// [`resume`](Runner::resume) until it ends, before the next `start`.
    fn start(&mut self, env: &EventEnvelope, cx: &mut Context<'_>) -> Poll<Outcome>;
    /// Polls the handler left running by `start`.
    fn resume(&mut self, cx: &mut Context<'_>) -> Poll<Outcome>;
    /// Drops the handler left running (after it panicked).
    fn clear(&mut self);
}

/// A handler from `make`, which starts it on an envelope: the handler's future, or
/// (`Err`) how it ended without one (a payload that does not fit its type).
pub(crate) fn handler<M, Fut>(make: M) -> Handler
where
    M: Fn(&EventEnvelope) -> Result<Fut, BoxError> + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    Arc::new(Starter {
        make,
        _fut: PhantomData,
    })
}

struct Starter<M, Fut> {
    make: M,
    _fut: PhantomData<fn() -> Fut>,
}

impl<M, Fut> StartHandler for Starter<M, Fut>
where
    M: Fn(&EventEnvelope) -> Result<Fut, BoxError> + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    fn runner(self: Arc<Self>) -> Box<dyn Runner> {
        Box::new(Slot {
            starter: self,
            fut: Box::pin(None),
        })
    }
}

/// The runner: the handler and the slot its future runs in (pinned on the heap
/// once, reused by every delivery; `Pin::set` and `as_pin_mut`, no `unsafe`).
struct Slot<M, Fut> {
    starter: Arc<Starter<M, Fut>>,
    fut: Pin<Box<Option<Fut>>>,
}

impl<M, Fut> Runner for Slot<M, Fut>
where
    M: Fn(&EventEnvelope) -> Result<Fut, BoxError> + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    fn start(&mut self, env: &EventEnvelope, cx: &mut Context<'_>) -> Poll<Outcome> {
        match (self.starter.make)(env) {
            Ok(fut) => {
                self.fut.set(Some(fut));
                self.resume(cx)
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn resume(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let Some(fut) = self.fut.as_mut().as_pin_mut() else {
            // Not reached: resumed only after a `start` that returned `Pending`.
            return Poll::Ready(Ok(()));
        };
        let out = ready!(fut.poll(cx));
        // Dropped as soon as it ends, as a boxed future was.
        self.fut.set(None);
        Poll::Ready(out.into_result())
    }

    fn clear(&mut self) {
        self.fut.set(None);
    }
}
