//! Periodic services: schedules, on-demand runs and coalescing. Batches, the queue
//! check, missed ticks and failing runs are in `periodic_runs.rs`.

mod common;
#[path = "common/ticker.rs"]
mod ticker;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Timelike;
use koan::testing;
use koan::{
    BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions,
    service::RunReason, status::ServiceState,
};
use ticker::*;
use tokio::sync::Semaphore;
use tokio::time::Instant;

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

/// Cancels the token it was handed on its second run.
struct CancelsItself {
    runs: Arc<AtomicUsize>,
}

impl Service for CancelsItself {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("cancels-itself").every(Duration::from_secs(10))
    }
}

impl PeriodicService for CancelsItself {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        if self.runs.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
            cx.token().cancel();
        }
        Ok(())
    }
}

/// A run that cancels its service's token (code the token was handed to may) stops
/// the schedule: no third run, no next run, and a poke is refused as shutting down.
#[tokio::test(start_paused = true)]
async fn a_run_that_cancels_its_token_ends_the_schedule() -> anyhow::Result<()> {
    let runs = Arc::new(AtomicUsize::new(0));
    let host = common::started(CancelsItself {
        runs: Arc::clone(&runs),
    })
    .await?;
    testing::wait_runs(&host, "cancels-itself", 2).await;
    testing::advance(Duration::from_secs(60)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "ran after its token was cancelled"
    );
    let status = host.status("cancels-itself")?;
    assert_eq!((status.runs, status.next_run), (2, None));
    // Stopped, and shown so (it showed `idle` for good; found by a probe).
    assert_eq!(status.state, koan::status::ServiceState::Stopped);
    let err = host
        .services::<CancelsItself>()
        .trigger()
        .await
        .expect_err("a poke after the schedule ended");
    assert_eq!(err.kind(), koan::error::ErrorKind::ShuttingDown, "{err}");
    testing::stop(&host).await?;
    Ok(())
}
