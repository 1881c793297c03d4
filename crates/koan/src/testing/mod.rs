//! Test support (feature `test-util`): hosts whose clock follows tokio's paused clock,
//! and waiting for states and runs instead of sleeping.
//!
//! ```
//! # use std::time::Duration;
//! # use koan::{BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions};
//! # #[derive(Default)] struct Cleanup;
//! # impl Service for Cleanup {
//! #     type Kind = Periodic;
//! #     fn options() -> ServiceOptions { ServiceOptions::default().every(Duration::from_secs(60)) }
//! # }
//! # impl PeriodicService for Cleanup {
//! #     async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> { Ok(()) }
//! # }
//! #[tokio::test(start_paused = true)]
//! # async fn _t() {}
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() {
//!     let host = koan::testing::host().service::<Cleanup>().build().unwrap().start();
//!     // The paused clock jumps ahead while everything waits: three minutes pass at once.
//!     koan::testing::wait_runs(&host, "Cleanup", 3).await;
//!     host.shutdown();
//!     host.wait().await;
//! }
//! ```

mod counters;

pub use counters::Counters;

use std::time::Duration;

use crate::error::Result;
use crate::host::{Environment, HostBuilder, HostHandle};
use crate::registry::{ServiceState, ServiceStatus};

/// A host builder for tests: status times and cron schedules follow tokio's clock
/// (pause it with `#[tokio::test(start_paused = true)]`), the environment is
/// `testing`, and the shutdown grace is 5 s.
pub fn host() -> HostBuilder {
    host_at(chrono::Utc::now())
}

/// [`host`], its wall clock starting at `start` (then following tokio's): a test of
/// a cron schedule can begin at 01:59 and see its 02:00 run two minutes later,
/// whenever it runs. Without it the wall clock starts at the real time, and a daily
/// run falls anywhere in the next 24 hours.
pub fn host_at(start: chrono::DateTime<chrono::Utc>) -> HostBuilder {
    HostBuilder::new()
        .following_tokio_clock(start)
        .environment(Environment::TESTING)
        .shutdown_grace(Duration::from_secs(5))
}

/// How long every waiting helper here waits before it fails: 25 hours of tokio's
/// clock, room for a daily schedule's next run, an hour's delay or backoff, and a
/// grace period. On a paused clock an idle runtime jumps there timer by timer, so a
/// behaviour that never comes fails in about a second instead of hanging the test.
/// (One hour was too short for a daily cron, and tied with a job delayed an hour:
/// found by a probe.)
pub const WAIT_LIMIT: Duration = Duration::from_secs(25 * 3600);

/// Waits until `service`'s status satisfies `pred`, and returns that status.
///
/// # Panics
/// When there is no such service, or when [`WAIT_LIMIT`] passes first (the message
/// shows the last status seen).
pub async fn wait_until(
    host: &HostHandle,
    service: &str,
    pred: impl FnMut(&ServiceStatus) -> bool,
) -> ServiceStatus {
    wait_for(
        host,
        service,
        "a status that satisfies the test's condition",
        pred,
    )
    .await
}

/// Waits until `service` is in `state`.
///
/// # Panics
/// As [`wait_until`].
pub async fn wait_state(host: &HostHandle, service: &str, state: ServiceState) -> ServiceStatus {
    let what = format!("state {state:?}");
    wait_for(host, service, &what, |s| s.state == state).await
}

/// Waits until `service` has finished at least `runs` runs.
///
/// # Panics
/// As [`wait_until`].
pub async fn wait_runs(host: &HostHandle, service: &str, runs: u64) -> ServiceStatus {
    let what = format!("at least {runs} finished runs");
    wait_for(host, service, &what, |s| s.runs >= runs).await
}

/// Waits for `future`, for at most [`WAIT_LIMIT`] of tokio's clock.
///
/// # Panics
/// When the limit passes first; the message says it was waiting for `what`.
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT_LIMIT, future).await {
        Ok(output) => output,
        Err(_) => panic!(
            "gave up after {} of tokio's clock waiting for {what}",
            crate::util::fmt_duration(WAIT_LIMIT)
        ),
    }
}

/// The loop behind the status waits: `what` names the condition in the panic message.
async fn wait_for(
    host: &HostHandle,
    service: &str,
    what: &str,
    mut pred: impl FnMut(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let cell = match host.inner.registry.find(service) {
        Ok(c) => std::sync::Arc::clone(c),
        Err(e) => panic!("{e}"),
    };
    let limit = tokio::time::Instant::now() + WAIT_LIMIT;
    let mut watch = cell.board.watch();
    loop {
        let status = cell.to_status(watch.current());
        if pred(&status) {
            return status;
        }
        match tokio::time::timeout_at(limit, watch.changed()).await {
            Ok(()) => {}
            Err(_) => panic!(
                "gave up after {} of tokio's clock waiting for `{service}` to reach {what}; \
                 its status is {:?} after {} runs ({} failures, {} restarts), last run {:?}",
                crate::util::fmt_duration(WAIT_LIMIT),
                status.state,
                status.runs,
                status.failures,
                status.restarts,
                status.last_run.map(|r| r.outcome),
            ),
        }
    }
}

/// Advances the paused clock by `by` at once and lets woken tasks run: every timer
/// due within `by` fires once, late, at its end, so a periodic service runs once
/// for the whole jump (its missed runs skipped, by its `missed_ticks` policy). To
/// see each run at its own time, [`pass`] the time instead.
pub async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    settle().await;
}

/// Lets `by` of the paused clock pass timer by timer: each run, retry and delay
/// due within it happens at its own time, as in production (an hour of a 30 s
/// schedule is 120 runs; [`advance`] by an hour makes one). On a paused clock it
/// costs no real time but the work done.
pub async fn pass(by: Duration) {
    tokio::time::sleep(by).await;
    settle().await;
}

/// Lets the tasks that are ready run, and what they wake in turn, without moving
/// tokio's clock: for asserting that something did *not* happen ("a fourth handler did
/// not start"), where there is no event to wait for.
///
/// What it guarantees, on tokio's current-thread runtime (the one
/// `#[tokio::test]` builds): each [`yield_now`](tokio::task::yield_now) of the caller
/// is deferred until the scheduler has run its queue until empty, or for tokio's event
/// interval (61 polls by default), and then polled its driver (timers due at the
/// current instant fire, ready I/O is read). `settle` yields 64 times, so
/// a cascade of wake-ups among tasks that ends within that many driver polls (and about
/// 61 × 64 task polls) has run when it returns. It does not wait for work on other
/// threads (`spawn_blocking`, `std::thread`): wait for its result instead.
///
/// Why not wait for the runtime to be idle: tokio shows idleness only by auto-advancing a
/// paused clock (a `sleep` of 1 ns returns only once no task can run), which moves the
/// clock by its millisecond resolution; a schedule anchored to the start then runs a
/// millisecond off its grid, and tests that pin exact offsets (a catch-up run at
/// 110 s, its next run 10 s later) would see 9.999 s.
pub async fn settle() {
    for _ in 0..SETTLE_ROUNDS {
        tokio::task::yield_now().await;
    }
}

/// How many scheduler rounds [`settle`] gives the runtime.
const SETTLE_ROUNDS: usize = 64;

/// Shuts the host down and returns how it exited.
///
/// # Panics
/// When the host has not stopped within [`WAIT_LIMIT`].
pub async fn stop(host: &HostHandle) -> Result<()> {
    host.shutdown();
    within("the host to stop", host.wait()).await.into_result()
}

/// Waits (up to 120 s of tokio's clock, in steps of 10 ms) until job `id` is in
/// `state`, and returns its record.
///
/// # Panics
/// When the job is unknown, the store fails, or the state is not reached in time
/// (the message names the state it was in).
pub async fn wait_for_job(
    host: &HostHandle,
    id: &str,
    state: crate::job::JobState,
) -> crate::job::JobRecord {
    let limit = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let record = match host.jobs().get(id).await {
            Ok(r) => r,
            Err(e) => panic!("waiting for job {id} to be {state}: {e}"),
        };
        if record.state == state {
            return record;
        }
        if tokio::time::Instant::now() >= limit {
            panic!(
                "job {id} did not become {state} within {:?} of tokio's clock; it is {}",
                WAIT_LIMIT, record.state
            );
        }
        // Often enough for a test's timing, rarely enough for the limit's hours.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A queued job record of `service` (one action `a`, no parameters, made now):
/// for tests of job stores, listings and views.
pub fn job_record(id: &str, service: &str) -> crate::job::JobRecord {
    let now = chrono::Utc::now();
    crate::job::NewJob {
        id: id.to_owned(),
        service: service.to_owned(),
        steps: vec![crate::job::JobStep {
            action: "a".into(),
            params: serde_json::Value::Null,
            timeout_ms: None,
        }],
        priority: 0,
        correlation_id: id.to_owned(),
        idempotency_key: None,
        created_at: now,
        run_at: now,
        max_attempts: 1,
    }
    .into_record()
}
