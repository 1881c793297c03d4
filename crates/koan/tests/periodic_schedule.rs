//! Periodic services: schedules, on-demand runs, coalescing and missed ticks.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Timelike;
use common::{every_10s_missing_ticks, started};
use koan::testing;
use koan::{
    BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions, error::ErrorKind,
    service::BatchRequest, service::RunReason, status::RunOutcome, status::ServiceState,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// More runs than any test here expects: a runaway schedule (a run at every instant).
const RUNAWAY: usize = 100;

/// Stalls the run that is the `runs`-th of its service when that is a runaway count.
///
/// A schedule that never moves on (a broken `next_due`) runs the service again at the
/// same instant forever: without this stall, the driver would spin without ever
/// awaiting, a paused clock would never move, and the test (with the rest of its
/// binary) would hang instead of failing. Stalled, the runtime idles, the clock jumps,
/// and the test's bounded wait or its assertion on the runs fails.
async fn stall_if_runaway(runs: usize) {
    if runs > RUNAWAY {
        std::future::pending::<()>().await;
    }
}

/// What a periodic service saw, shared with the test.
#[derive(Default)]
struct Seen {
    ticks: Mutex<Vec<(Instant, RunReason)>>,
}

impl Seen {
    /// Notes a run; stalls it when it is a runaway one ([`stall_if_runaway`]).
    async fn note(&self, cx: &ServiceContext) {
        let runs = {
            let mut ticks = self.ticks.lock().expect("ticks lock");
            ticks.push((Instant::now(), cx.reason()));
            ticks.len()
        };
        stall_if_runaway(runs).await;
    }

    /// Offsets of the ticks from `t0`.
    fn offsets(&self, t0: Instant) -> Vec<Duration> {
        self.ticks
            .lock()
            .expect("ticks lock")
            .iter()
            .map(|(at, _)| *at - t0)
            .collect()
    }

    fn reasons(&self) -> Vec<RunReason> {
        self.ticks
            .lock()
            .expect("ticks lock")
            .iter()
            .map(|(_, r)| *r)
            .collect()
    }
}

fn secs(values: &[u64]) -> Vec<Duration> {
    values.iter().map(|s| Duration::from_secs(*s)).collect()
}

/// Asserts that each offset matches the expected one to the millisecond the timer
/// wheel rounds to.
fn assert_offsets(actual: &[Duration], expected: &[Duration]) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "runs at {actual:?}, expected {expected:?}"
    );
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            *a >= *e && *a <= *e + Duration::from_millis(5),
            "runs at {actual:?}, expected {expected:?}"
        );
    }
}

/// A periodic service that notes each tick. `OPTS` picks its schedule.
struct Ticker<const OPTS: u8> {
    seen: Arc<Seen>,
}

impl<const OPTS: u8> Service for Ticker<OPTS> {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        let base = ServiceOptions::named("ticker");
        match OPTS {
            // Every 10 s, first run after a 5 s delay plus one period.
            0 => base
                .every(Duration::from_secs(10))
                .initial_delay(Duration::from_secs(5)),
            // Every 10 s, first run right after the 5 s delay.
            1 => base
                .every(Duration::from_secs(10))
                .initial_delay(Duration::from_secs(5))
                .run_on_startup(true),
            // Every hour, first run at start.
            2 => base.every(Duration::from_secs(3600)).run_on_startup(true),
            // Every 10 s.
            3 => base.every(Duration::from_secs(10)),
            // Every 10 s on the wall clock's seconds.
            4 => base.cron("*/10 * * * * *"),
            // Every hour.
            _ => base.every(Duration::from_secs(3600)),
        }
    }
}

/// A host running `Ticker::<OPTS>`, started now: the host, the ticker's runs, and
/// the moment it started (the origin of the runs' offsets).
fn start_ticker<const OPTS: u8>() -> anyhow::Result<(koan::HostHandle, Arc<Seen>, Instant)> {
    let seen = Arc::new(Seen::default());
    let t0 = Instant::now();
    let ticker = Ticker::<OPTS> {
        seen: Arc::clone(&seen),
    };
    let host = testing::host().instance(ticker).build()?.start();
    Ok((host, seen, t0))
}

impl<const OPTS: u8> PeriodicService for Ticker<OPTS> {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.seen.note(&cx).await;
        Ok(())
    }
}

/// The offsets of the first `n` runs of `Ticker::<OPTS>` from its start, and their
/// reasons.
async fn first_runs<const OPTS: u8>(n: u64) -> anyhow::Result<(Vec<Duration>, Vec<RunReason>)> {
    let (host, seen, t0) = start_ticker::<OPTS>()?;
    let status = testing::wait_runs(&host, "ticker", n).await;
    assert_eq!(status.runs, n);
    let runs = (seen.offsets(t0), seen.reasons());
    testing::stop(&host).await?;
    Ok(runs)
}

/// One test per schedule (`Ticker`'s `OPTS`), with the offsets in seconds of its
/// first runs, all scheduled.
macro_rules! first_runs_tests {
    ($($test:ident: $opts:literal => $offsets:expr;)*) => {$(
        #[tokio::test(start_paused = true)]
        async fn $test() -> anyhow::Result<()> {
            let expected = secs(&$offsets);
            let (offsets, reasons) = first_runs::<$opts>(expected.len() as u64).await?;
            assert_offsets(&offsets, &expected);
            assert_eq!(reasons, vec![RunReason::Scheduled; expected.len()]);
            Ok(())
        }
    )*};
}

first_runs_tests! {
    initial_delay_postpones_the_first_period: 0 => [15, 25];
    run_on_startup_runs_right_after_the_initial_delay: 1 => [5, 15];
    run_on_startup_without_delay_runs_at_once: 2 => [0];
    an_interval_runs_once_per_period: 3 => [10, 20, 30, 40, 50];
}

#[tokio::test(start_paused = true)]
async fn a_cron_schedule_follows_the_paused_clock() -> anyhow::Result<()> {
    let (host, seen, _) = start_ticker::<4>()?;
    let status = testing::wait_runs(&host, "ticker", 4).await;
    assert_eq!(status.runs, 4);

    let ticks = seen.ticks.lock().expect("ticks lock").clone();
    let gaps: Vec<Duration> = ticks.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert_offsets(&gaps, &secs(&[10, 10, 10]));
    // Every run started on a wall-clock second divisible by ten.
    let last = status.last_run.expect("a finished run");
    assert_eq!(last.started_at.second() % 10, 0, "{last:?}");
    let next = status.next_run.expect("a next run");
    assert_eq!(next.second() % 10, 0, "{next:?}");
    // The run started within the timer's millisecond of its due time.
    let until_next = (next - last.started_at).num_milliseconds();
    assert!(
        (9_995..=10_000).contains(&until_next),
        "next {next}, last {}",
        last.started_at
    );
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_stall_causes_one_run_and_no_burst() -> anyhow::Result<()> {
    let (host, seen, t0) = start_ticker::<3>()?;
    testing::wait_runs(&host, "ticker", 1).await;
    testing::settle().await;

    // Ten periods pass at once.
    tokio::time::advance(Duration::from_secs(100)).await;
    let status = testing::wait_runs(&host, "ticker", 2).await;
    testing::settle().await;
    assert_eq!(
        host.status("ticker")?.runs,
        2,
        "one run for the stall, no burst"
    );
    assert_offsets(&seen.offsets(t0), &secs(&[10, 110]));

    let last = status.last_run.expect("the catch-up run");
    let next = status.next_run.expect("a next run");
    assert!(next > last.started_at, "next run {next} is in the future");
    assert_eq!((next - last.started_at).num_seconds(), 10);
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn trigger_runs_an_idle_service_at_once() -> anyhow::Result<()> {
    let (host, seen, _) = start_ticker::<5>()?;
    host.started().await?;
    testing::wait_state(&host, "ticker", ServiceState::Idle).await;

    let t0 = Instant::now();
    let outcome = testing::within("a trigger", host.services::<Ticker<5>>().trigger()).await?;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "ran without waiting a period"
    );
    assert!(!outcome.coalesced);
    assert_eq!(outcome.run.reason, RunReason::Trigger);
    assert!(outcome.run.outcome.is_success());
    assert_eq!(host.status("ticker")?.runs, 1);
    assert_eq!(seen.reasons(), [RunReason::Trigger]);

    // The by-name alias works as well.
    let out = testing::within(
        "a `trigger-now` call",
        host.service("ticker")
            .action("trigger-now", serde_json::Value::Null)
            .execute(),
    )
    .await?
    .value::<koan::schedule::TriggerOutcome>()?;
    assert_eq!(out.run.reason, RunReason::Trigger);
    assert_eq!(host.status("ticker")?.runs, 2);
    testing::stop(&host).await?;
    Ok(())
}

/// Each tick takes a permit the test hands out, so the test decides when runs end.
struct Gated {
    gate: Arc<Semaphore>,
    ticks: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
}

impl Service for Gated {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("gated").every(Duration::from_secs(3600))
    }
}

impl PeriodicService for Gated {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        self.gate.acquire().await?.forget();
        self.ticks.fetch_add(1, Ordering::SeqCst);
        self.active.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_run_coalesce_into_one_follow_up_run() -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(0));
    let ticks = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let host = testing::host()
        .instance(Gated {
            gate: Arc::clone(&gate),
            ticks: Arc::clone(&ticks),
            active: Arc::new(AtomicUsize::new(0)),
            max_active: Arc::clone(&max_active),
        })
        .build()?
        .start();
    host.started().await?;

    // A first run, held open by the gate.
    let first = {
        let host = host.clone();
        tokio::spawn(async move { host.services::<Gated>().trigger().await })
    };
    testing::wait_state(&host, "gated", ServiceState::Running).await;

    // Five more triggers while it runs.
    let joiners: Vec<_> = (0..5)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.services::<Gated>().trigger().await })
        })
        .collect();
    testing::settle().await;
    assert_eq!(
        host.status("gated")?.queue_depth,
        1,
        "merged into one pending run"
    );

    // End the first run: the follow-up starts and is the only one.
    gate.add_permits(1);
    let first = testing::within("the first trigger", first).await??;
    assert!(!first.coalesced);
    testing::wait_until(&host, "gated", |s| {
        s.runs == 1 && s.state == ServiceState::Running
    })
    .await;
    assert_eq!(host.status("gated")?.queue_depth, 0);

    gate.add_permits(1);
    let mut runs = Vec::new();
    for j in joiners {
        let outcome = testing::within("a trigger merged into the follow-up", j).await??;
        assert!(outcome.coalesced, "a trigger during a run is coalesced");
        assert_eq!(outcome.run.reason, RunReason::Trigger);
        runs.push(outcome.run);
    }
    assert!(runs.windows(2).all(|w| w[0] == w[1]), "all joined one run");

    testing::settle().await;
    assert_eq!(ticks.load(Ordering::SeqCst), 2, "exactly one follow-up run");
    assert_eq!(host.status("gated")?.runs, 2);
    assert_eq!(max_active.load(Ordering::SeqCst), 1, "runs never overlap");
    testing::stop(&host).await?;
    Ok(())
}

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
