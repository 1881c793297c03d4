//! Periodic services, continued: `process_batch` and `check_queue`, missed ticks under
//! each policy, and runs that fail.

mod common;
#[path = "common/ticker.rs"]
mod ticker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{every_10s_missing_ticks, started};
use koan::testing;
use koan::{
    BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions, error::ErrorKind,
    service::BatchRequest, service::RunReason, status::RunOutcome, status::ServiceState,
};
use ticker::*;
use tokio::time::Instant;

/// What [`Batches`] received, shared with the test.
#[derive(Default)]
struct BatchLog {
    /// Runs of any kind, for [`stall_if_runaway`].
    runs: AtomicUsize,
    ticks: AtomicUsize,
    checks: AtomicUsize,
    /// The argument of `process_batch`, and what the context said.
    batches: Mutex<Vec<(BatchRequest, Option<BatchRequest>)>>,
}

/// Overrides `check_queue` and `process_batch`, noting what each received.
struct Batches {
    log: Arc<BatchLog>,
}

impl Service for Batches {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("batches").every(Duration::from_secs(3600))
    }
}

impl Batches {
    async fn count_run(&self) {
        stall_if_runaway(self.log.runs.fetch_add(1, Ordering::SeqCst) + 1).await;
    }
}

impl PeriodicService for Batches {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.count_run().await;
        self.log.ticks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn check_queue(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.count_run().await;
        if cx.reason() != RunReason::CheckQueue {
            return Err(format!("check_queue ran for {:?}", cx.reason()).into());
        }
        self.log.checks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn process_batch(&self, batch: BatchRequest, cx: ServiceContext) -> Result<(), BoxError> {
        self.count_run().await;
        if batch.filter.as_deref() == Some("poison") {
            return Err("poison batch".into());
        }
        self.log
            .batches
            .lock()
            .expect("batches lock")
            .push((batch, cx.batch().cloned()));
        Ok(())
    }
}

impl Batches {
    /// A started host running a new `Batches`, and its log.
    async fn start() -> anyhow::Result<(koan::HostHandle, Arc<BatchLog>)> {
        let log = Arc::new(BatchLog::default());
        let batches = Batches {
            log: Arc::clone(&log),
        };
        Ok((started(batches).await?, log))
    }
}

#[tokio::test(start_paused = true)]
async fn process_batch_passes_its_arguments() -> anyhow::Result<()> {
    let (host, log) = Batches::start().await?;

    let request = BatchRequest {
        batch_size: Some(50),
        filter: Some("high-priority".to_owned()),
    };
    let outcome = testing::within(
        "a process-batch",
        host.services::<Batches>().process_batch(request.clone()),
    )
    .await?;
    assert_eq!(outcome.run.reason, RunReason::ProcessBatch);
    assert!(outcome.run.outcome.is_success());
    assert!(!outcome.coalesced);

    // The same through the by-name API with JSON parameters.
    let json = testing::within(
        "a by-name process-batch",
        host.service("batches")
            .action(
                "process-batch",
                serde_json::json!({ "batchSize": 7, "filter": "low" }),
            )
            .execute(),
    )
    .await?
    .value::<koan::schedule::TriggerOutcome>()?;
    assert_eq!(json.run.reason, RunReason::ProcessBatch);

    let expected_json = BatchRequest::new(Some(7), Some("low".to_owned()));
    assert_eq!(
        *log.batches.lock().expect("batches lock"),
        [
            (request.clone(), Some(request)),
            (expected_json.clone(), Some(expected_json)),
        ]
    );
    assert_eq!(log.ticks.load(Ordering::SeqCst), 0, "tick was not called");

    // A failing batch reaches the caller as a handler error and counts as a failure.
    let err = testing::within(
        "a poisoned process-batch",
        host.services::<Batches>()
            .process_batch(BatchRequest::new(None, Some("poison".to_owned()))),
    )
    .await
    .expect_err("the run failed");
    assert_eq!(err.kind(), ErrorKind::Handler);
    assert!(err.message().contains("poison batch"), "{}", err.message());
    let status = host.status("batches")?;
    assert_eq!((status.runs, status.failures), (3, 1));
    assert!(matches!(
        status.last_run.map(|r| r.outcome),
        Some(RunOutcome::Failed { .. })
    ));

    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn check_queue_runs_its_own_handler() -> anyhow::Result<()> {
    let (host, log) = Batches::start().await?;

    let outcome =
        testing::within("a check-queue", host.services::<Batches>().check_queue()).await?;
    assert_eq!(outcome.run.reason, RunReason::CheckQueue);
    assert!(outcome.run.outcome.is_success());
    assert_eq!(log.checks.load(Ordering::SeqCst), 1);
    assert_eq!(log.ticks.load(Ordering::SeqCst), 0);
    assert!(log.batches.lock().expect("batches lock").is_empty());
    assert_eq!(host.status("batches")?.runs, 1);

    // The built-in default of `check_queue` is `tick`.
    let seen = Arc::new(Seen::default());
    let other = testing::host()
        .instance(Ticker::<5> {
            seen: Arc::clone(&seen),
        })
        .build()?
        .start();
    other.started().await?;
    testing::within("a check-queue", other.services::<Ticker<5>>().check_queue()).await?;
    assert_eq!(seen.reasons(), [RunReason::CheckQueue]);

    testing::stop(&other).await?;
    testing::stop(&host).await?;
    Ok(())
}

/// Every 10 s; its first run takes 35 s, so it misses ticks at 20, 30 and 40 s.
struct Slow<const POLICY: u8> {
    seen: Arc<Seen>,
}

impl<const POLICY: u8> Service for Slow<POLICY> {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        every_10s_missing_ticks("slow", POLICY)
    }
}

impl<const POLICY: u8> PeriodicService for Slow<POLICY> {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let first = self.seen.ticks.lock().expect("ticks lock").is_empty();
        self.seen.note(&cx).await;
        if first {
            tokio::time::sleep(Duration::from_secs(35)).await;
        }
        Ok(())
    }
}

async fn slow_run_offsets<const POLICY: u8>() -> anyhow::Result<Vec<Duration>> {
    let seen = Arc::new(Seen::default());
    let t0 = Instant::now();
    let host = testing::host()
        .instance(Slow::<POLICY> {
            seen: Arc::clone(&seen),
        })
        .build()?
        .start();
    testing::wait_runs(&host, "slow", 3).await;
    testing::stop(&host).await?;
    Ok(seen.offsets(t0))
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_skip_resumes_on_the_grid() -> anyhow::Result<()> {
    assert_offsets(&slow_run_offsets::<0>().await?, &secs(&[10, 50, 60]));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_catch_up_once_runs_once_at_once() -> anyhow::Result<()> {
    assert_offsets(&slow_run_offsets::<1>().await?, &secs(&[10, 45, 50]));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_delay_starts_the_period_after_the_run() -> anyhow::Result<()> {
    assert_offsets(&slow_run_offsets::<2>().await?, &secs(&[10, 55, 65]));
    Ok(())
}

/// Every 10 s; each tick is quick.
struct Brief<const POLICY: u8> {
    seen: Arc<Seen>,
}

impl<const POLICY: u8> Service for Brief<POLICY> {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        every_10s_missing_ticks("brief", POLICY)
    }
}

impl<const POLICY: u8> PeriodicService for Brief<POLICY> {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.seen.note(&cx).await;
        Ok(())
    }
}

/// The offsets of the first four runs when the process stops for 45 s after the
/// first: on the paused clock, time jumps while the driver cannot run, so the tick
/// due at 20 s starts at 55 s, late, with those of 30, 40 and 50 s missed.
async fn paused_run_offsets<const POLICY: u8>() -> anyhow::Result<Vec<Duration>> {
    let seen = Arc::new(Seen::default());
    let t0 = Instant::now();
    let host = testing::host()
        .instance(Brief::<POLICY> {
            seen: Arc::clone(&seen),
        })
        .build()?
        .start();
    testing::wait_runs(&host, "brief", 1).await;
    testing::settle().await;
    tokio::time::advance(Duration::from_secs(45)).await;
    testing::wait_runs(&host, "brief", 4).await;
    testing::stop(&host).await?;
    Ok(seen.offsets(t0))
}

#[tokio::test(start_paused = true)]
async fn after_a_pause_skip_runs_once_late_then_keeps_the_grid() -> anyhow::Result<()> {
    assert_offsets(&paused_run_offsets::<0>().await?, &secs(&[10, 55, 60, 70]));
    Ok(())
}

/// The late run is the one follow-up for all the ticks missed: it ran a second time
/// in the same instant, the ticks due before it started counted as missed by it
/// (found by a tester who stopped a process for 45 s).
#[tokio::test(start_paused = true)]
async fn after_a_pause_catch_up_once_runs_once_late_then_keeps_the_grid() -> anyhow::Result<()> {
    assert_offsets(&paused_run_offsets::<1>().await?, &secs(&[10, 55, 60, 70]));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn after_a_pause_delay_runs_once_late_then_a_period_after_it() -> anyhow::Result<()> {
    assert_offsets(&paused_run_offsets::<2>().await?, &secs(&[10, 55, 65, 75]));
    Ok(())
}

/// Panics on its first tick only.
#[derive(Default)]
struct Fragile {
    calls: AtomicUsize,
}

impl Service for Fragile {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("fragile").every(Duration::from_secs(3600))
    }
}

impl PeriodicService for Fragile {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        let calls = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if calls == 1 {
            panic!("index out of bounds");
        }
        stall_if_runaway(calls).await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_tick_is_caught_and_the_service_goes_on() -> anyhow::Result<()> {
    let host = testing::host().service::<Fragile>().build()?.start();
    host.started().await?;

    let err = testing::within("a trigger", host.services::<Fragile>().trigger())
        .await
        .expect_err("the tick panicked");
    assert_eq!(err.kind(), ErrorKind::Panic);
    assert!(
        err.message().contains("index out of bounds"),
        "{}",
        err.message()
    );
    let status = testing::wait_state(&host, "fragile", ServiceState::Idle).await;
    assert_eq!((status.runs, status.failures), (1, 1));
    assert!(matches!(
        status.last_run.map(|r| r.outcome),
        Some(RunOutcome::Panicked { .. })
    ));

    let outcome = testing::within("a second trigger", host.services::<Fragile>().trigger()).await?;
    assert!(outcome.run.outcome.is_success());
    assert_eq!(host.status("fragile")?.consecutive_failures, 0);
    testing::stop(&host).await?;
    Ok(())
}
