//! Periodic services at their edges: a cron that never fires again, a run that ends
//! exactly on a tick, pokes queued behind a run (merged or not, and what the caller is
//! told). The cluster-singleton lease is in `periodic_singleton.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{every_10s_missing_ticks, started};
use koan::testing;
use koan::{
    BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions,
    service::BatchRequest, service::RunReason, status::ServiceState,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Counts its ticks. Its cron fires once, two minutes after the host is built: its
/// year field names this year (a cron that never fires at all is refused when the
/// host is built).
struct Never {
    ticks: Arc<AtomicUsize>,
}

impl Service for Never {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        let at = chrono::Utc::now() + chrono::Duration::seconds(120);
        ServiceOptions::named("never").cron(at.format("%S %M %H %d %m * %Y").to_string())
    }
}

impl PeriodicService for Never {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.ticks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_cron_past_its_last_time_parks_the_service_a_century_away() -> anyhow::Result<()> {
    let ticks = Arc::new(AtomicUsize::new(0));
    let never = Never {
        ticks: Arc::clone(&ticks),
    };
    let host = started(never).await?;
    let status = testing::wait_state(&host, "never", ServiceState::Idle).await;
    let started = status.started_at.expect("a started service");
    let first = status.next_run.expect("its one run");
    assert!(first - started <= chrono::Duration::seconds(121), "{first}");

    // Its one time comes: one tick, then the service is parked a century away.
    let wait = (first - started).to_std()? + Duration::from_secs(60);
    tokio::time::sleep(wait).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 1);
    let status = host.status("never")?;
    let next = status.next_run.expect("a parked next run");
    assert!(
        next - first >= chrono::Duration::days(99 * 365),
        "parked only until {next} (ran at {first})"
    );

    // A day passes: not one tick more.
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 1, "the past cron fired again");
    let status = host.status("never")?;
    assert_eq!((status.runs, status.state), (1, ServiceState::Idle));
    testing::stop(&host).await?;
    Ok(())
}

/// Every 10 s; the first tick takes exactly one period, so it ends on the next tick.
struct OnTheTick<const POLICY: u8> {
    starts: Arc<Mutex<Vec<Instant>>>,
    first_end: Arc<Mutex<Option<Instant>>>,
}

impl<const POLICY: u8> Service for OnTheTick<POLICY> {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        every_10s_missing_ticks("on-the-tick", POLICY)
    }
}

impl<const POLICY: u8> PeriodicService for OnTheTick<POLICY> {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        let (first, runaway) = {
            let mut starts = self.starts.lock().expect("starts lock");
            starts.push(Instant::now());
            (starts.len() == 1, starts.len() > 100)
        };
        // A runaway schedule (a run at every instant) stalls here instead of spinning
        // the runtime, so the test sees the runs and fails instead of hanging.
        if runaway {
            std::future::pending::<()>().await;
        }
        if first {
            tokio::time::sleep(Duration::from_secs(10)).await;
            *self.first_end.lock().expect("end lock") = Some(Instant::now());
        }
        Ok(())
    }
}

/// The offsets of the first three runs from the start, once the first run is seen to
/// end exactly on a tick (20 s).
async fn on_the_tick<const POLICY: u8>() -> anyhow::Result<Vec<Duration>> {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let first_end = Arc::new(Mutex::new(None));
    let t0 = Instant::now();
    let host = testing::host()
        .instance(OnTheTick::<POLICY> {
            starts: Arc::clone(&starts),
            first_end: Arc::clone(&first_end),
        })
        .build()?
        .start();
    testing::wait_runs(&host, "on-the-tick", 3).await;
    testing::stop(&host).await?;
    let end = first_end
        .lock()
        .expect("end lock")
        .expect("the first run ended");
    assert_eq!(
        end - t0,
        Duration::from_secs(20),
        "the run ends exactly on a tick"
    );
    let starts = starts.lock().expect("starts lock");
    Ok(starts.iter().take(3).map(|at| *at - t0).collect())
}

fn secs(values: &[u64]) -> Vec<Duration> {
    values.iter().map(|s| Duration::from_secs(*s)).collect()
}

/// One test per missed-tick policy (`OnTheTick`'s `POLICY`), with the offsets in
/// seconds of its first three runs.
macro_rules! on_the_tick_tests {
    ($($(#[$doc:meta])* $test:ident: $policy:literal => $offsets:expr;)*) => {$(
        $(#[$doc])*
        #[tokio::test(start_paused = true)]
        async fn $test() -> anyhow::Result<()> {
            assert_eq!(on_the_tick::<$policy>().await?, secs(&$offsets));
            Ok(())
        }
    )*};
}

on_the_tick_tests! {
    /// The tick at 20 s fell due while the run was in progress: dropped.
    skip_drops_the_tick_a_run_ends_exactly_on: 0 => [10, 30, 40];
    catch_up_once_runs_the_tick_a_run_ends_exactly_on: 1 => [10, 20, 30];
    delay_starts_a_full_period_after_a_run_that_ends_on_a_tick: 2 => [10, 30, 40];
}

/// The reason and batch of each run, in order.
type Runs = Arc<Mutex<Vec<(RunReason, Option<BatchRequest>)>>>;

/// Each run takes a permit the test hands out; notes its reason and batch.
struct Held<const OPTS: u8> {
    gate: Arc<Semaphore>,
    runs: Runs,
}

impl<const OPTS: u8> Service for Held<OPTS> {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        match OPTS {
            // Scheduled every 10 s.
            0 => ServiceOptions::named("held").every(Duration::from_secs(10)),
            // Only on demand (hourly).
            _ => ServiceOptions::named("held").every(Duration::from_secs(3600)),
        }
    }
}

impl<const OPTS: u8> Held<OPTS> {
    async fn note(&self, cx: &ServiceContext) -> Result<(), BoxError> {
        self.runs
            .lock()
            .expect("runs lock")
            .push((cx.reason(), cx.batch().cloned()));
        self.gate.acquire().await?.forget();
        Ok(())
    }
}

impl<const OPTS: u8> PeriodicService for Held<OPTS> {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.note(&cx).await
    }

    async fn process_batch(
        &self,
        _batch: BatchRequest,
        cx: ServiceContext,
    ) -> Result<(), BoxError> {
        self.note(&cx).await
    }
}

fn held<const OPTS: u8>() -> (Held<OPTS>, Arc<Semaphore>, Runs) {
    let gate = Arc::new(Semaphore::new(0));
    let runs: Runs = Arc::default();
    let svc = Held {
        gate: Arc::clone(&gate),
        runs: Arc::clone(&runs),
    };
    (svc, gate, runs)
}

/// A started host running `Held::<OPTS>`, with the gate its runs wait on and the
/// runs it saw.
async fn start_held<const OPTS: u8>() -> anyhow::Result<(koan::HostHandle, Arc<Semaphore>, Runs)> {
    let (svc, gate, runs) = held::<OPTS>();
    let host = testing::host().instance(svc).build()?.start();
    host.started().await?;
    Ok((host, gate, runs))
}

/// A trigger of `Held::<OPTS>` on a task of its own (it may wait behind a held run).
fn spawn_trigger<const OPTS: u8>(
    host: &koan::HostHandle,
) -> tokio::task::JoinHandle<koan::Result<koan::schedule::TriggerOutcome>> {
    let host = host.clone();
    tokio::spawn(async move { host.services::<Held<OPTS>>().trigger().await })
}

#[tokio::test(start_paused = true)]
async fn process_batch_pokes_queued_behind_a_run_each_get_their_own_run() -> anyhow::Result<()> {
    type H = Held<1>;
    let (host, gate, runs) = start_held::<1>().await?;

    // A first run, held open.
    let first = spawn_trigger::<1>(&host);
    testing::wait_state(&host, "held", ServiceState::Running).await;

    // Two batches with different arguments queue behind it.
    let batch = |n: u32| BatchRequest::new(Some(n), Some(format!("batch-{n}")));
    let spawn_batch = |n: u32| {
        let host = host.clone();
        tokio::spawn(async move { host.services::<H>().process_batch(batch(n)).await })
    };
    let one = spawn_batch(1);
    testing::settle().await;
    let two = spawn_batch(2);
    testing::settle().await;
    assert_eq!(
        host.status("held")?.queue_depth,
        2,
        "two runs wait, not one"
    );

    gate.add_permits(3);
    let first = testing::within("the first run", first).await??;
    let one = testing::within("the first batch", one).await??;
    let two = testing::within("the second batch", two).await??;
    assert!(!first.coalesced);
    assert!(!one.coalesced, "a batch is never merged");
    assert!(!two.coalesced, "a batch is never merged");
    assert_eq!(
        *runs.lock().expect("runs lock"),
        [
            (RunReason::Trigger, None),
            (RunReason::ProcessBatch, Some(batch(1))),
            (RunReason::ProcessBatch, Some(batch(2))),
        ]
    );
    assert_eq!(host.status("held")?.runs, 3);
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_trigger_during_a_scheduled_run_is_coalesced_and_one_after_it_is_not()
-> anyhow::Result<()> {
    type H = Held<0>;
    let (host, gate, runs) = start_held::<0>().await?;

    // The scheduled run at 10 s, held open.
    testing::wait_state(&host, "held", ServiceState::Running).await;
    let during = spawn_trigger::<0>(&host);
    testing::settle().await;
    gate.add_permits(2);
    let during = testing::within("the trigger during the scheduled run", during).await??;
    assert!(
        during.coalesced,
        "a trigger during a scheduled run waits for it: coalesced"
    );
    assert_eq!(during.run.reason, RunReason::Trigger);

    // Idle again before the next tick: a trigger now runs at once, not coalesced.
    let status = testing::wait_until(&host, "held", |s| {
        s.runs == 2 && s.state == ServiceState::Idle
    })
    .await;
    assert_eq!(status.last_run.map(|r| r.reason), Some(RunReason::Trigger));
    gate.add_permits(1);
    let after = testing::within(
        "a trigger of the idle service",
        host.services::<H>().trigger(),
    )
    .await?;
    assert!(
        !after.coalesced,
        "a trigger of an idle service is not coalesced"
    );
    assert_eq!(
        runs.lock()
            .expect("runs lock")
            .iter()
            .map(|(r, _)| *r)
            .collect::<Vec<_>>(),
        [RunReason::Scheduled, RunReason::Trigger, RunReason::Trigger]
    );
    testing::stop(&host).await?;
    Ok(())
}

/// Two triggers merged into one queued run, with timeouts of 2 s and 5 s: the run
/// keeps the later deadline (its token is cancelled at 5 s, and a run that ignores
/// it is dropped after the 1 s action grace), not the earlier one, nor none.
#[tokio::test(start_paused = true)]
async fn triggers_merged_behind_a_run_keep_the_later_deadline() -> anyhow::Result<()> {
    let (host, gate, _runs) = start_held::<1>().await?;

    // A first run without a deadline, held open.
    let first = spawn_trigger::<1>(&host);
    testing::wait_state(&host, "held", ServiceState::Running).await;
    let t0 = Instant::now();
    let trigger = |secs: u64| {
        let host = host.clone();
        tokio::spawn(async move {
            host.service("held")
                .action("trigger", ())
                .timeout(Duration::from_secs(secs))
                .execute()
                .await
        })
    };
    let early = trigger(2);
    testing::settle().await;
    let late = trigger(5);
    testing::settle().await;
    assert_eq!(host.status("held")?.queue_depth, 1, "the two are merged");

    // The first run ends; the merged one starts and never finishes by itself.
    gate.add_permits(1);
    testing::within("the first run", first).await??;
    let status = testing::within(
        "the merged run, dropped after its later deadline",
        testing::wait_runs(&host, "held", 2),
    )
    .await;
    assert_eq!(
        status.last_run.map(|r| r.outcome),
        Some(koan::status::RunOutcome::TimedOut)
    );
    let ended = t0.elapsed();
    assert!(
        ended >= Duration::from_secs(6)
            && ended <= Duration::from_secs(6) + Duration::from_millis(10),
        "dropped at the later deadline (5 s) plus the grace (1 s), not at {ended:?}"
    );
    for caller in [early, late] {
        let e = testing::within("a merged caller", caller)
            .await?
            .expect_err("the run timed out");
        assert_eq!(e.kind(), koan::error::ErrorKind::Timeout, "{e}");
    }
    testing::stop(&host).await?;
    Ok(())
}
