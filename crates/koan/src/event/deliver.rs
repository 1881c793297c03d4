//! How a subscriber's handlers run on an event: which routes take it (names,
//! filter, `once`), each handler started on the borrowed envelope, its end logged
//! and counted — for channel subscribers, and the pieces ring readers
//! ([`super::reader`]) share.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::bus::{Route, Shared, Sub};
use super::envelope::EventEnvelope;
use super::handler::{Outcome, Runner};

fn route_names(route: &Route, env: &EventEnvelope) -> bool {
    route
        .event
        .as_deref()
        .is_none_or(|e| same_name(e, &env.name))
}

/// Names match regardless of case; the usual case, the same spelling, is checked
/// first (one `memcmp`, against a byte-by-byte case fold: B5's profile, ≈ 60
/// instructions of a delivery's 720).
pub(super) fn same_name(a: &str, b: &str) -> bool {
    a == b || a.eq_ignore_ascii_case(b)
}

/// Whether `route` takes `env`: its name, its filter, and `once` (which it uses up).
pub(super) fn route_takes(route: &Route, env: &EventEnvelope) -> bool {
    route_names(route, env) && route_passes(route, env)
}

/// Whether `route` takes `env` of a name it is known to match: its filter, and
/// `once` (which it uses up).
pub(super) fn route_passes(route: &Route, env: &EventEnvelope) -> bool {
    if let Some(filter) = &route.filter {
        let pass = std::panic::catch_unwind(AssertUnwindSafe(|| filter(env)));
        if !matches!(pass, Ok(true)) {
            if pass.is_err() {
                tracing::error!(event = %env.name, "event filter panicked; event skipped for that subscriber");
            }
            return false;
        }
    }
    if let Some(fired) = &route.once
        && fired.swap(true, Ordering::AcqRel)
    {
        return false;
    }
    true
}

/// Starts the handler on `env` (`Some`) or polls the one left running (`None`); a
/// panic is caught, its message the outcome.
#[inline]
fn step(
    runner: &mut dyn Runner,
    env: Option<&EventEnvelope>,
    cx: &mut Context<'_>,
) -> Poll<Result<Outcome, String>> {
    let polled = std::panic::catch_unwind(AssertUnwindSafe(|| match env {
        Some(env) => runner.start(env, cx),
        None => runner.resume(cx),
    }));
    match polled {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
        Err(panic) => {
            // What is left of its future is dropped (a panic there is caught too).
            if std::panic::catch_unwind(AssertUnwindSafe(|| runner.clear())).is_err() {
                tracing::error!("an event handler's future panicked when dropped");
            }
            Poll::Ready(Err(crate::util::panic_message(panic)))
        }
    }
}

/// Polls the handler `runner` left running to its end.
pub(super) async fn finish(runner: &mut dyn Runner) -> Result<Outcome, String> {
    std::future::poll_fn(|cx| step(runner, None, cx)).await
}

/// Runs one handler on one event; failures and panics are logged and counted.
pub(super) async fn deliver_one(runner: &mut dyn Runner, env: Shared) {
    let mut started = false;
    let outcome = std::future::poll_fn(|cx| {
        let first = (!std::mem::replace(&mut started, true)).then_some(&*env);
        step(runner, first, cx)
    })
    .await;
    record(&env, outcome);
}

/// Logs and counts how a handler ended on `env`. The usual end, a local event's
/// handler that succeeded, is one count inline; the rest is out of line.
#[inline]
pub(super) fn record(env: &EventEnvelope, outcome: Result<Outcome, String>) {
    if let (Ok(Ok(())), Some(k)) = (&outcome, &env.key) {
        k.delivered.increment(1);
        return;
    }
    record_slow(env, outcome);
}

#[cold]
#[inline(never)]
pub(super) fn record_slow(env: &EventEnvelope, outcome: Result<Outcome, String>) {
    let (service, name, key) = (&env.service, &env.name, &env.key);
    let failed = match outcome {
        Ok(Ok(())) => false,
        // Said once by the handler's own warning; counted below.
        Ok(Err(e)) if e.is::<super::misfit::Skipped>() => true,
        Ok(Err(e)) => {
            let error = crate::util::with_causes(&*e);
            tracing::warn!(service = %service, event = %name, error = %error, "event handler failed");
            true
        }
        Err(panic) => {
            tracing::error!(service = %service, event = %name, panic = %panic, "event handler panicked");
            true
        }
    };
    match (key, failed) {
        (Some(k), true) => k.failed.increment(1),
        (Some(k), false) => k.delivered.increment(1),
        (None, _) => {
            let metric = if failed {
                "koan_event_handler_failures_total"
            } else {
                "koan_events_delivered_total"
            };
            metrics::counter!(metric, "service" => service.to_string(), "event" => name.to_string()).increment(1);
        }
    }
}

pub(super) async fn deliver(
    sub: &Sub,
    tx: &mpsc::Sender<(usize, Shared)>,
    route: usize,
    env: Shared,
    wait: bool,
) {
    if wait {
        let _ = tx.send((route, env)).await;
        return;
    }
    if let Err(mpsc::error::TrySendError::Full((_, env))) = tx.try_send((route, env)) {
        if let Some(dropped) = sub.dropped.hit() {
            tracing::warn!(
                service = %env.service,
                event = %env.name,
                subscriber = sub.id,
                dropped,
                "subscriber buffer full; event dropped (overflow policy: drop-newest; said at \
                 the 1st, 2nd, 4th, … drop, each counted in `koan_events_dropped_total`); to \
                 keep every event, subscribe with `.overflow(Overflow::Wait)` or a larger \
                 `.buffer(n)`"
            );
        }
        match &env.key {
            Some(k) => k.dropped.increment(1),
            None => metrics::counter!("koan_events_dropped_total", "service" => env.service.to_string(), "event" => env.name.to_string()).increment(1),
        }
    }
}
