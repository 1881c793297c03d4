//! Each service keeps its last runs (bounded) and counts its actions; the host counts
//! finished work per second and per hour.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::testing;
use koan::{
    BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions, config::Config,
    error::ErrorKind, service::RunReason, status::RunOutcome,
};

/// Every 10 s; every third run fails.
#[derive(Default)]
struct Flaky {
    n: AtomicU32,
}

impl Service for Flaky {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("flaky").every(Duration::from_secs(10))
    }
}

impl PeriodicService for Flaky {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        let n = self.n.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::time::sleep(Duration::from_millis(u64::from(n) * 100)).await;
        if n.is_multiple_of(3) {
            return Err(format!("run {n} failed").into());
        }
        Ok(())
    }
}

/// A host running [`Flaky`] that keeps `history_size` runs per service.
fn flaky_keeping(history_size: usize) -> anyhow::Result<koan::HostHandle> {
    let config = Config::builder()
        .toml(
            "test",
            &format!("[koan.background_services]\nhistory_size = {history_size}\n"),
        )?
        .build();
    Ok(testing::host()
        .config(config)
        .instance(Flaky::default())
        .build()?
        .start())
}

#[tokio::test(start_paused = true)]
async fn a_service_keeps_its_last_runs_newest_first() -> anyhow::Result<()> {
    let host = flaky_keeping(4)?;
    testing::wait_runs(&host, "flaky", 6).await;
    let h = host.history("FLAKY")?;
    assert_eq!(h.service, "flaky");
    assert_eq!(h.capacity, 4);
    // Runs 6, 5, 4, 3: the two oldest were forgotten.
    let durations: Vec<u64> = h.runs.iter().map(|r| r.duration_ms).collect();
    assert_eq!(durations, [600, 500, 400, 300]);
    assert!(h.runs.iter().all(|r| r.reason == RunReason::Scheduled));
    let failed: Vec<bool> = h.runs.iter().map(|r| r.outcome.is_failure()).collect();
    assert_eq!(failed, [true, false, false, true]);
    assert_eq!(
        h.runs[0].outcome,
        RunOutcome::Failed {
            error: "run 6 failed".into()
        }
    );
    // Newest first, one period apart.
    let gap = h.runs[0].started_at - h.runs[1].started_at;
    assert_eq!(gap.num_milliseconds(), 10_000);
    // The status's last run is the newest one kept.
    let status = host.status("flaky")?;
    assert_eq!((status.runs, status.last_run.as_ref()), (6, h.runs.first()));

    // The same runs in the host's per-hour and per-second counts.
    let t = host.throughput();
    let ok: u64 = t.per_hour.iter().map(|b| b.succeeded).sum();
    let bad: u64 = t.per_hour.iter().map(|b| b.failed).sum();
    assert_eq!((ok, bad), (4, 2));
    assert_eq!(t.per_second.len(), 120);
    assert_eq!(t.per_hour.len(), 24);
    assert_eq!(
        t.per_second.last().map(|b| b.start.timestamp()),
        Some(t.now.timestamp())
    );
    testing::stop(&host).await?;
    Ok(())
}

/// A service that keeps no runs still shows its last one in its status.
#[tokio::test(start_paused = true)]
async fn without_a_history_the_status_still_has_the_last_run() -> anyhow::Result<()> {
    let host = flaky_keeping(0)?;
    let status = testing::wait_runs(&host, "flaky", 3).await;
    let last = status.last_run.expect("the third run");
    assert_eq!(last.duration_ms, 300);
    let failed = RunOutcome::Failed {
        error: "run 3 failed".into(),
    };
    assert_eq!(last.outcome, failed);
    assert_eq!(status.last_error.as_deref(), Some("run 3 failed"));
    assert_eq!((status.failures, status.consecutive_failures), (1, 1));
    assert!(host.history("flaky")?.runs.is_empty());
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_default_keeps_fifty_and_an_unknown_service_is_an_error() -> anyhow::Result<()> {
    let host = testing::host().instance(Flaky::default()).build()?.start();
    let h = host.history("flaky")?;
    assert_eq!(h.capacity, koan::status::DEFAULT_HISTORY_SIZE);
    assert_eq!(koan::status::DEFAULT_HISTORY_SIZE, 50);
    let e = host.history("nope").expect_err("no such service");
    assert_eq!(e.kind(), ErrorKind::UnknownService);
    testing::stop(&host).await?;
    Ok(())
}

#[test]
fn a_history_size_past_the_limit_is_refused() {
    let config = Config::builder()
        .toml(
            "test",
            "[koan.background_services]\nhistory_size = 100001\n",
        )
        .expect("toml")
        .build();
    let e = koan::Host::builder()
        .config(config)
        .build()
        .expect_err("refused");
    assert!(e.message().contains("at most 10000"), "{}", e.message());
}

/// Every 10 s; fails with a 1.2 MB error (an upstream's HTML page quoted whole).
#[derive(Default)]
struct Verbose;

impl Service for Verbose {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("verbose").every(Duration::from_secs(10))
    }
}

impl PeriodicService for Verbose {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Err(format!("upstream said: {}", "é<p>".repeat(240_000)).into())
    }
}

/// A run's error is kept cut (its start, and how long it was): a 1.2 MB one was
/// kept whole in the status, each history entry and the registry's heartbeat,
/// which then passed the broker's `max_payload`, and the whole host dropped out
/// of the cluster (found by a probe).
#[tokio::test(start_paused = true)]
async fn a_runs_long_error_is_kept_cut() -> anyhow::Result<()> {
    let host = testing::host().instance(Verbose).build()?.start();
    testing::wait_runs(&host, "verbose", 2).await;
    let status = host.status("verbose")?;
    let last = status.last_error.expect("a last error");
    assert!(last.len() < 9 * 1024, "{}", last.len());
    assert!(last.starts_with("upstream said: é<p>"));
    assert!(
        last.ends_with("… (1200015 bytes; the service's status keeps the first 8192)"),
        "{}",
        &last[last.len() - 80..]
    );
    for run in host.history("verbose")?.runs {
        let RunOutcome::Failed { error } = run.outcome else {
            panic!("a failed run: {run:?}");
        };
        assert_eq!(error, last);
    }
    Ok(())
}
