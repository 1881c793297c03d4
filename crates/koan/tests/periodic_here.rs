//! A poke of an idle periodic service runs on its caller's task (no wake-up of the
//! driver): what that must not change — runs never overlap, pokes during it are
//! coalesced, a tick due during it follows the missed-tick policy, a caller going
//! away or a host stopping loses nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::schedule::MissedTickPolicy;
use koan::service::RunReason;
use koan::status::{RunOutcome, ServiceState};
use koan::{BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions, testing};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What a run saw: why it ran, the task it ran on, and when (tokio's clock).
type Seen = Arc<Mutex<Vec<(RunReason, Option<tokio::task::Id>, Instant)>>>;

/// Every `OPTS`: 0 hourly; 1 every 10 s, `Skip`; 2 every 10 s, `CatchUpOnce`; 3
/// every millisecond.
/// A triggered run waits on the gate (a scheduled one does not); every run counts
/// how many run at once.
struct Gated<const OPTS: u8> {
    gate: Arc<Semaphore>,
    seen: Seen,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    stopped_cleanly: Arc<AtomicBool>,
}

impl<const OPTS: u8> Service for Gated<OPTS> {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        let opts = ServiceOptions::named("gated");
        match OPTS {
            0 => opts.every(Duration::from_secs(3600)),
            1 => opts
                .every(Duration::from_secs(10))
                .missed_ticks(MissedTickPolicy::Skip),
            2 => opts
                .every(Duration::from_secs(10))
                .missed_ticks(MissedTickPolicy::CatchUpOnce),
            _ => opts.every(Duration::from_millis(1)),
        }
    }
}

impl<const OPTS: u8> PeriodicService for Gated<OPTS> {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let at_once = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(at_once, Ordering::SeqCst);
        self.seen.lock().expect("seen lock").push((
            cx.reason(),
            tokio::task::try_id(),
            Instant::now(),
        ));
        let result = if cx.reason() == RunReason::Trigger {
            tokio::select! {
                permit = self.gate.acquire() => permit.map(|p| p.forget()).map_err(BoxError::from),
                () = cx.token().cancelled() => {
                    // Stopping: it takes a moment, well within the grace.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.stopped_cleanly.store(true, Ordering::SeqCst);
                    Ok(())
                }
            }
        } else {
            Ok(())
        };
        self.now.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

struct Probe {
    gate: Arc<Semaphore>,
    seen: Seen,
    most: Arc<AtomicUsize>,
    stopped_cleanly: Arc<AtomicBool>,
}

impl Probe {
    fn reasons(&self) -> Vec<RunReason> {
        self.seen
            .lock()
            .expect("seen lock")
            .iter()
            .map(|(r, _, _)| *r)
            .collect()
    }
}

async fn start<const OPTS: u8>() -> anyhow::Result<(koan::HostHandle, Probe)> {
    let probe = Probe {
        gate: Arc::new(Semaphore::new(0)),
        seen: Arc::default(),
        most: Arc::default(),
        stopped_cleanly: Arc::default(),
    };
    let svc = Gated::<OPTS> {
        gate: Arc::clone(&probe.gate),
        seen: Arc::clone(&probe.seen),
        now: Arc::default(),
        most: Arc::clone(&probe.most),
        stopped_cleanly: Arc::clone(&probe.stopped_cleanly),
    };
    let host = testing::host().instance(svc).build()?.start();
    host.started().await?;
    Ok((host, probe))
}

fn spawn_trigger<const OPTS: u8>(
    host: &koan::HostHandle,
) -> tokio::task::JoinHandle<koan::Result<koan::schedule::TriggerOutcome>> {
    let host = host.clone();
    tokio::spawn(async move { host.services::<Gated<OPTS>>().trigger().await })
}

#[tokio::test(start_paused = true)]
async fn a_trigger_of_an_idle_service_runs_on_the_callers_task() -> anyhow::Result<()> {
    let (host, probe) = start::<0>().await?;
    probe.gate.add_permits(2);
    let caller = {
        let host = host.clone();
        tokio::spawn(async move {
            let outcome = host.services::<Gated<0>>().trigger().await;
            (tokio::task::id(), outcome)
        })
    };
    let (caller_id, outcome) = testing::within("the trigger", caller).await?;
    let outcome = outcome?;
    assert!(!outcome.coalesced);
    assert_eq!(outcome.run.reason, RunReason::Trigger);
    assert_eq!(outcome.run.outcome, RunOutcome::Success);
    let ran_on = probe.seen.lock().expect("seen lock")[0].1;
    assert_eq!(ran_on, Some(caller_id), "the run is its caller's, no hop");
    // By name too, and the status is as after a driver's run.
    let by_name = host.service("gated").trigger().await?;
    assert!(!by_name.coalesced);
    let status = host.status("gated")?;
    assert_eq!(
        (status.runs, status.state),
        (2, ServiceState::Idle),
        "{status:?}"
    );
    assert!(status.next_run.is_some(), "the next tick is still planned");
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_callers_run_join_one_run_after_it() -> anyhow::Result<()> {
    let (host, probe) = start::<0>().await?;
    let first = spawn_trigger::<0>(&host);
    testing::wait_state(&host, "gated", ServiceState::Running).await;
    let (two, three) = (spawn_trigger::<0>(&host), spawn_trigger::<0>(&host));
    testing::settle().await;
    assert_eq!(host.status("gated")?.queue_depth, 1, "merged into one run");

    probe.gate.add_permits(2);
    let first = testing::within("the first trigger", first).await??;
    let two = testing::within("the second trigger", two).await??;
    let three = testing::within("the third trigger", three).await??;
    assert!(!first.coalesced);
    assert!(two.coalesced && three.coalesced);
    assert_eq!(two.run, three.run, "one run served both");
    assert_eq!(probe.reasons(), [RunReason::Trigger, RunReason::Trigger]);
    assert_eq!(probe.most.load(Ordering::SeqCst), 1, "runs never overlap");
    testing::stop(&host).await?;
    Ok(())
}

/// On a 10 s grid, a trigger at 15 s whose run lasts until 25 s: the tick due at
/// 20 s fell due during it. Returns the runs' reasons and start times (from the start).
async fn tick_due_during_a_callers_run<const OPTS: u8>()
-> anyhow::Result<Vec<(RunReason, Duration)>> {
    let t0 = Instant::now();
    let (host, probe) = start::<OPTS>().await?;
    testing::wait_runs(&host, "gated", 1).await;
    testing::advance(Duration::from_secs(5)).await;
    let trigger = spawn_trigger::<OPTS>(&host);
    testing::wait_state(&host, "gated", ServiceState::Running).await;
    testing::advance(Duration::from_secs(10)).await;
    probe.gate.add_permits(1);
    testing::within("the trigger", trigger).await??;
    testing::wait_runs(&host, "gated", 3).await;
    testing::stop(&host).await?;
    assert_eq!(probe.most.load(Ordering::SeqCst), 1, "runs never overlap");
    let seen = probe.seen.lock().expect("seen lock");
    Ok(seen.iter().map(|(r, _, at)| (*r, *at - t0)).collect())
}

#[tokio::test(start_paused = true)]
async fn a_tick_due_during_a_callers_run_is_skipped_under_skip() -> anyhow::Result<()> {
    let runs = tick_due_during_a_callers_run::<1>().await?;
    let s = Duration::from_secs;
    assert_eq!(
        runs[..3],
        [
            (RunReason::Scheduled, s(10)),
            (RunReason::Trigger, s(15)),
            (RunReason::Scheduled, s(30)),
        ],
        "the tick at 20 s is skipped, the grid resumes at 30 s: {runs:?}"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_tick_due_during_a_callers_run_runs_once_after_it_under_catch_up_once()
-> anyhow::Result<()> {
    let runs = tick_due_during_a_callers_run::<2>().await?;
    let s = Duration::from_secs;
    assert_eq!(
        runs[..3],
        [
            (RunReason::Scheduled, s(10)),
            (RunReason::Trigger, s(15)),
            (RunReason::Scheduled, s(25)),
        ],
        "the tick missed at 20 s runs once, when the trigger's run ends: {runs:?}"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_callers_run_finishes_when_its_caller_goes_away() -> anyhow::Result<()> {
    let (host, probe) = start::<0>().await?;
    let caller = spawn_trigger::<0>(&host);
    testing::wait_state(&host, "gated", ServiceState::Running).await;
    caller.abort();
    assert!(caller.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(
        host.status("gated")?.state,
        ServiceState::Running,
        "the run goes on"
    );

    probe.gate.add_permits(2);
    let status = testing::wait_runs(&host, "gated", 1).await;
    assert_eq!(status.state, ServiceState::Idle);
    assert_eq!(
        status.last_run.map(|r| (r.reason, r.outcome)),
        Some((RunReason::Trigger, RunOutcome::Success))
    );
    // The service was given back: the next trigger runs.
    let next = testing::within("the next trigger", spawn_trigger::<0>(&host)).await??;
    assert!(!next.coalesced);
    assert_eq!(probe.reasons().len(), 2);
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_host_stops_after_a_callers_run_that_ends_within_the_grace() -> anyhow::Result<()> {
    let (host, probe) = start::<0>().await?;
    let caller = spawn_trigger::<0>(&host);
    testing::wait_state(&host, "gated", ServiceState::Running).await;
    host.shutdown();
    assert!(
        testing::within("the host to exit", host.wait())
            .await
            .is_success()
    );
    assert!(
        probe.stopped_cleanly.load(Ordering::SeqCst),
        "the host waited for the run to stop"
    );
    let outcome = testing::within("the trigger", caller).await??;
    assert_eq!(outcome.run.outcome, RunOutcome::Success);
    assert_eq!(host.status("gated")?.state, ServiceState::Stopped);
    Ok(())
}

/// Many callers on two threads, triggering as fast as they can while the driver
/// ticks every millisecond: every trigger is answered and no two runs overlap,
/// whoever runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_triggers_never_overlap() -> anyhow::Result<()> {
    let (host, probe) = start::<3>().await?;
    probe.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                let svc = host.services::<Gated<3>>();
                for _ in 0..200 {
                    svc.trigger().await?;
                }
                Ok::<(), koan::Error>(())
            })
        })
        .collect();
    for caller in callers {
        testing::within("a caller", caller).await??;
    }
    assert_eq!(probe.most.load(Ordering::SeqCst), 1, "runs never overlap");
    // Counted once the host has stopped: the driver ticks on after the callers,
    // and a tick in progress has been seen but not yet counted.
    testing::stop(&host).await?;
    let runs = host.status("gated")?.runs;
    assert_eq!(runs, probe.reasons().len() as u64, "every run counted once");
    Ok(())
}
