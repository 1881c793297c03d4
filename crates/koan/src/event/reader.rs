//! A ring reader: one subscriber of one event with `Overflow::Wait`, reading the
//! event's shared ring with its own cursor (B5's path: one emitter, many readers).
//!
//! A ring reader has exactly one route (`EventBus::add` gives a ring only to those),
//! so its loop is written for that route and its runner alone. Per batch of events
//! in hand, not per event: the panic catch (a panic ends the batch's run at its
//! event, is recorded, and the rest of the batch goes on), the delivered count, and
//! the cursor's move.

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::bus::{Route, Shared, Sub};
use super::deliver::{finish, record, record_slow, route_passes};
use super::handler::Runner;
use super::ring::{Cursor, Hold, Ring};

/// Reads the ring for one subscriber until it closes: each event's handler runs on
/// the borrowed envelope; one that does not finish at once keeps a reference and
/// is awaited before the subscriber moves on (its order holds).
///
/// The cursor moves once per batch of events in hand, not per event (an atomic swap
/// and a fence on a line the emitter reads), and before awaiting a handler left
/// running, so the emitter is never held back by more than the events in hand.
/// `delivered` is the count of the ring's event (every event with an interned key
/// in this ring has that key: the emitter finds the ring through it).
///
/// Shaped so that no slip can make it spin without awaiting (a spinning task keeps a
/// paused clock from moving, and a test's bounds from firing): the events in hand are
/// a range, iterated (each poll takes from it), not a cursor stepped by hand; and the
/// ring's wait is asserted to return new events (a wait that returned none would be
/// asked again at once).
pub(super) async fn read_ring(
    ring: Arc<Ring>,
    cursor: Arc<Cursor>,
    sub: Arc<Sub>,
    delivered: metrics::Counter,
) {
    let mut runners = sub.runners();
    let (Some(route), Some(runner)) = (sub.routes.first(), runners.first_mut()) else {
        // Not reached: a ring reader has one route. It must not hold the emitter.
        tracing::error!(subscriber = sub.id, "event ring reader without a route");
        ring.leave(&cursor);
        return;
    };
    let runner = &mut **runner;
    let mut from = cursor.next();
    let mut held: Option<Shared> = None;
    // The ring's block in hand: one reference count per block of events, not a lock
    // per event.
    let mut hold = Hold::default();
    while let Some(tail) = std::future::poll_fn(|cx| ring.poll_ready(from, cx)).await {
        debug_assert!(
            tail > from,
            "the ring's wait returned no new event ({from}..{tail})"
        );
        // Handlers are started on the events in hand within one poll, until one is
        // left running: it is awaited (its event's position returned), then the
        // rest of the range goes on. Each poll takes at least one event out of the
        // range or ends it.
        let mut events = from..tail;
        loop {
            let (at, stopped) = std::future::poll_fn(|cx| {
                let mut batch = Batch {
                    ring: &ring,
                    hold: &mut hold,
                    sub: &sub,
                    route,
                    runner: &mut *runner,
                    held: &mut held,
                    delivered: 0,
                    stopped: false,
                };
                let at = batch.run(&mut events, cx);
                if batch.delivered > 0 {
                    delivered.increment(batch.delivered);
                }
                Poll::Ready((at, batch.stopped))
            })
            .await;
            // Its subscription is dropped (and has left the ring, or is leaving).
            if stopped {
                return;
            }
            let (Some(pos), Some(env)) = (at, held.take()) else {
                break;
            };
            // Everything before this event is done: the emitter may go on.
            ring.advance(&cursor, pos);
            // Nor is a handler left running polled again once it is dropped.
            if sub.gone() {
                return;
            }
            record(&env, finish(runner).await);
        }
        ring.advance(&cursor, tail);
        from = tail;
    }
}

/// One poll's run of the handler over the events in hand.
struct Batch<'a> {
    ring: &'a Ring,
    hold: &'a mut Hold,
    sub: &'a Sub,
    route: &'a Route,
    runner: &'a mut dyn Runner,
    /// The envelope of the handler left running.
    held: &'a mut Option<Shared>,
    /// Handlers that succeeded on a local event (counted once, by the caller).
    delivered: u64,
    /// The subscription was found dropped: the reader ends.
    stopped: bool,
}

impl Batch<'_> {
    /// Starts the handler on each event of `events` in turn, until one is left
    /// running (its position returned, its envelope in `held`), the range ends,
    /// or the subscription is found dropped (`stopped`).
    /// One panic catch for the whole run: a panic is recorded for its event, what
    /// is left of that handler dropped, and the run goes on with the next event.
    fn run(&mut self, events: &mut Range<u64>, cx: &mut Context<'_>) -> Option<u64> {
        let plain = self.route.filter.is_none() && self.route.once.is_none();
        loop {
            let mut at = None;
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                for pos in events.by_ref() {
                    at = Some(pos);
                    if self.start(pos, plain, cx) {
                        return (!self.stopped).then_some(pos);
                    }
                }
                None
            }));
            let panic = match run {
                Ok(done) => return done,
                Err(panic) => panic,
            };
            // What is left of its future is dropped (a panic there is caught too).
            if std::panic::catch_unwind(AssertUnwindSafe(|| self.runner.clear())).is_err() {
                tracing::error!("an event handler's future panicked when dropped");
            }
            let message = crate::util::panic_message(panic);
            if let Some(pos) = at {
                self.ring
                    .with(self.hold, pos, |env| record(env, Err(message)));
            }
        }
    }

    /// Starts the handler on the event at `pos` (if its route takes it) and polls it
    /// once; `true` when it is left running, or when the subscription is dropped
    /// (`stopped`: no handler starts after).
    #[inline]
    fn start(&mut self, pos: u64, plain: bool, cx: &mut Context<'_>) -> bool {
        // Every event of this ring is of the subscriber's service and its route's
        // name: one key per name regardless of case, one ring per key.
        let read = self.ring.with(self.hold, pos, |env| {
            // One load and a branch per event, on a line no one writes while the
            // subscription lives: a flag per batch let a handler run on the rest of
            // the batch after its `drop` returned.
            if self.sub.gone() {
                self.stopped = true;
                return true;
            }
            if !plain && !route_passes(self.route, env) {
                return false;
            }
            match self.runner.start(env, cx) {
                Poll::Ready(Ok(())) if env.key.is_some() => {
                    self.delivered += 1;
                    false
                }
                Poll::Ready(outcome) => {
                    record_slow(env, Ok(outcome));
                    false
                }
                Poll::Pending => {
                    *self.held = Some(Arc::clone(env));
                    true
                }
            }
        });
        read.unwrap_or_else(|| {
            // Overwritten: its subscription was dropped (its flag is set before it
            // leaves the ring, and the emitter overwrites nothing a reader in the
            // ring has not passed). The reader ends, without a word.
            if self.sub.gone() {
                self.stopped = true;
                return true;
            }
            // Cannot happen otherwise. Said loudly if it ever does.
            tracing::error!(
                subscriber = self.sub.id,
                pos,
                "event ring slot overwritten before it was read; event skipped"
            );
            false
        })
    }
}
