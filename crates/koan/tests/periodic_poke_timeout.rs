//! A poke's timeout cancels its run as an action's does: at the deadline the run's
//! token is cancelled; a run that ignores it is dropped after the action grace and
//! recorded as timed out. The service itself goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::{
    BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions, error::ErrorKind,
    status::RunOutcome,
};
use tokio::time::Instant;

#[derive(Default)]
struct Slow {
    /// Runs that saw their token cancelled.
    stopped: Arc<AtomicU32>,
    /// Ignore the token (sleep an hour) instead of honouring it.
    stubborn: bool,
    /// Ignore the token, and end well 10 ms after the run started.
    late: bool,
}

impl Service for Slow {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::default().every(Duration::from_secs(24 * 3600))
    }
}

impl PeriodicService for Slow {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        if self.late {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Ok(());
        }
        if self.stubborn {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        cx.cancelled().await;
        self.stopped.fetch_add(1, Ordering::SeqCst);
        Err("stopped by the deadline".into())
    }
}

/// The first run's end, within a minute of tokio's clock (so a run that is never
/// stopped fails the test instead of hanging it).
async fn runs(host: &koan::HostHandle) -> anyhow::Result<koan::status::ServiceStatus> {
    tokio::time::timeout(
        Duration::from_secs(60),
        koan::testing::wait_runs(host, "Slow", 1),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the run did not end within 60 s: its deadline did not stop it"))
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_trigger_cancels_its_run() -> anyhow::Result<()> {
    let svc = Slow::default();
    let stopped = Arc::clone(&svc.stopped);
    let host = koan::testing::host().instance(svc).build()?.start();
    host.started().await?;
    let t0 = Instant::now();
    let e = host
        .service("Slow")
        .action("trigger", ())
        .timeout(Duration::from_secs(2))
        .execute()
        .await
        .expect_err("times out");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    let status = koan::testing::wait_runs(&host, "Slow", 1).await;
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        1,
        "the run saw its token cancelled"
    );
    assert_eq!(
        status.last_run.map(|r| r.outcome),
        Some(RunOutcome::Failed {
            error: "stopped by the deadline".to_owned()
        })
    );
    // The service goes on: its own token was not cancelled.
    assert_eq!(host.status("Slow")?.state, koan::status::ServiceState::Idle);
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_run_ignoring_its_cancelled_token_is_dropped_after_the_grace() -> anyhow::Result<()> {
    let svc = Slow {
        stubborn: true,
        ..Slow::default()
    };
    let host = koan::testing::host().instance(svc).build()?.start();
    host.started().await?;
    let t0 = Instant::now();
    host.service("Slow")
        .action("trigger", ())
        .timeout(Duration::from_secs(2))
        .execute()
        .await
        .expect_err("times out");
    let status = runs(&host).await?;
    // Dropped at the deadline plus the 1 s action grace, not after the hour.
    assert!(t0.elapsed() <= Duration::from_secs(3) + Duration::from_millis(10));
    assert_eq!(
        status.last_run.map(|r| r.outcome),
        Some(RunOutcome::TimedOut)
    );
    koan::testing::stop(&host).await?;
    Ok(())
}

/// A stored trigger whose run ends well a little past its deadline (within the
/// action grace): the job's attempt says what the run did, and it is not run
/// again. Before, the attempt was recorded `timeout` at the deadline while the run
/// went on and succeeded, and the job's retry ran the tick a second time (found by
/// a probe: `trigger?wait=false&timeout=1ms`, 2 runs in 2 of 4 tries).
#[tokio::test(start_paused = true)]
async fn a_stored_trigger_is_recorded_as_its_run_ended_and_not_run_again() -> anyhow::Result<()> {
    let svc = Slow {
        late: true,
        ..Slow::default()
    };
    let host = koan::testing::host().instance(svc).build()?.start();
    host.started().await?;
    let ticket = host
        .service("Slow")
        .action("trigger", ())
        .timeout(Duration::from_millis(1))
        .enqueue()
        .await?;
    let id = ticket.id().to_owned();
    ticket.outcome().await?;
    let job = host.jobs().get(&id).await?;
    assert_eq!(job.attempts, 1, "{job:?}");
    // A minute on: no second run.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(host.status("Slow")?.runs, 1);
    koan::testing::stop(&host).await?;
    Ok(())
}
