//! Shutdown: cooperative stop within the grace period, abort after it, reverse order
//! (one priority's services together).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::testing;
use koan::{
    Background, BackgroundService, BoxError, Service, ServiceContext, ServiceOptions,
    host::HostExit, status::RunOutcome, status::ServiceState,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

fn assert_within(actual: Duration, expected: Duration) {
    assert!(
        actual >= expected && actual <= expected + Duration::from_millis(50),
        "expected about {expected:?}, got {actual:?}"
    );
}

/// Stops when asked, after one second of cleanup.
struct Cooperative {
    cleaned_up: Arc<AtomicBool>,
}

impl Service for Cooperative {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("cooperative")
    }
}

impl Cooperative {
    /// A new `Cooperative`, and the flag it sets once its cleanup ran to the end.
    fn new() -> (Cooperative, Arc<AtomicBool>) {
        let cleaned_up = Arc::new(AtomicBool::new(false));
        let service = Cooperative {
            cleaned_up: Arc::clone(&cleaned_up),
        };
        (service, cleaned_up)
    }
}

impl BackgroundService for Cooperative {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.cleaned_up.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Ignores cancellation; the guard it holds tells the test when its future is dropped.
struct Stubborn {
    guard: Mutex<Option<oneshot::Sender<()>>>,
}

impl Service for Stubborn {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("stubborn")
    }
}

impl BackgroundService for Stubborn {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        let _guard = self.guard.lock().expect("guard lock").take();
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_cooperative_service_stops_within_the_grace_period() -> anyhow::Result<()> {
    let (cooperative, cleaned_up) = Cooperative::new();
    let host = testing::host().instance(cooperative).build()?.start();
    host.started().await?;
    testing::wait_state(&host, "cooperative", ServiceState::Running).await;

    let t0 = Instant::now();
    host.shutdown();
    let exit = koan::testing::within("the host to exit", host.wait()).await;
    assert!(matches!(exit, HostExit::Stopped), "{exit:?}");
    assert_eq!(exit.exit_code(), 0);
    assert!(exit.is_success());
    // It took its one second of cleanup, well within the 5 s grace.
    assert_within(t0.elapsed(), Duration::from_secs(1));
    assert!(cleaned_up.load(Ordering::SeqCst), "cleanup ran to the end");

    let status = host.status("cooperative")?;
    assert_eq!(status.state, ServiceState::Stopped);
    assert_eq!(status.failures, 0);
    assert_eq!(
        status.last_run.expect("the finished run").outcome,
        RunOutcome::Cancelled
    );
    assert!(!host.live().await, "a stopped host is not live");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_service_ignoring_cancellation_is_aborted_after_the_grace() -> anyhow::Result<()> {
    let (tx, mut dropped) = oneshot::channel::<()>();
    let (cooperative, cleaned_up) = Cooperative::new();
    let host = testing::host()
        .shutdown_grace(Duration::from_secs(5))
        .instance(Stubborn {
            guard: Mutex::new(Some(tx)),
        })
        .instance(cooperative)
        .build()?
        .start();
    host.started().await?;
    testing::wait_state(&host, "stubborn", ServiceState::Running).await;
    testing::wait_state(&host, "cooperative", ServiceState::Running).await;

    let t0 = Instant::now();
    host.shutdown();
    // Let the host begin its shutdown (and start the grace) before moving the clock.
    testing::settle().await;
    // Before the grace elapses the stubborn service is still there.
    testing::advance(Duration::from_secs(4)).await;
    assert!(host.exit().is_none(), "the host waits out the grace");
    assert!(
        matches!(dropped.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
        "not aborted before the grace elapsed"
    );

    let exit = koan::testing::within("the host to exit", host.wait()).await;
    assert!(exit.is_success(), "{exit:?}");
    assert_within(t0.elapsed(), Duration::from_secs(5));
    // Its future was dropped: the guard's sender is gone.
    assert!(dropped.await.is_err(), "the aborted run was dropped");
    assert_eq!(host.status("stubborn")?.state, ServiceState::Stopped);
    assert!(cleaned_up.load(Ordering::SeqCst));
    assert_eq!(host.status("cooperative")?.state, ServiceState::Stopped);
    Ok(())
}

/// Logs its start and its stop; several priorities of it run side by side.
struct Ordered<const PRIORITY: i32> {
    log: Arc<Mutex<Vec<String>>>,
}

impl<const PRIORITY: i32> Service for Ordered<PRIORITY> {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named(format!("p{PRIORITY}")).priority(PRIORITY)
    }
}

impl<const PRIORITY: i32> BackgroundService for Ordered<PRIORITY> {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.log
            .lock()
            .expect("log lock")
            .push(format!("start:p{PRIORITY}"));
        cx.cancelled().await;
        // Stopping takes a moment, so a concurrent stop would interleave.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.log
            .lock()
            .expect("log lock")
            .push(format!("stop:p{PRIORITY}"));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn services_stop_in_reverse_start_order() -> anyhow::Result<()> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let host = testing::host()
        .instance(Ordered::<100> {
            log: Arc::clone(&log),
        })
        .instance(Ordered::<300> {
            log: Arc::clone(&log),
        })
        .instance(Ordered::<200> {
            log: Arc::clone(&log),
        })
        .build()?
        .start();
    host.started().await?;
    for name in ["p100", "p200", "p300"] {
        testing::wait_state(&host, name, ServiceState::Running).await;
    }

    testing::stop(&host).await?;
    let entries = log.lock().expect("log lock").clone();
    assert_eq!(
        entries,
        [
            "start:p300",
            "start:p200",
            "start:p100",
            "stop:p100",
            "stop:p200",
            "stop:p300",
        ]
    );
    for name in ["p100", "p200", "p300"] {
        assert_eq!(host.status(name)?.state, ServiceState::Stopped, "{name}");
    }
    Ok(())
}

/// Services of one priority started together, and stop together: three that each
/// take 100 ms to stop are all done within a grace of 250 ms (one after another, the
/// third would be aborted), and the higher priority still stops after them.
#[tokio::test(start_paused = true)]
async fn services_of_one_priority_stop_together() -> anyhow::Result<()> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut builder = testing::host().shutdown_grace(Duration::from_millis(250));
    for name in ["a", "b", "c"] {
        let service = Ordered::<100> {
            log: Arc::clone(&log),
        };
        builder = builder.instance_named(name, service);
    }
    let host = builder
        .instance(Ordered::<300> {
            log: Arc::clone(&log),
        })
        .build()?
        .start();
    host.started().await?;
    for name in ["a", "b", "c", "p300"] {
        testing::wait_state(&host, name, ServiceState::Running).await;
    }

    let t0 = Instant::now();
    testing::stop(&host).await?;
    assert_within(t0.elapsed(), Duration::from_millis(200));
    let entries = log.lock().expect("log lock").clone();
    assert_eq!(
        entries[4..],
        ["stop:p100", "stop:p100", "stop:p100", "stop:p300"],
        "{entries:?}"
    );
    for name in ["a", "b", "c", "p300"] {
        assert_eq!(host.status(name)?.state, ServiceState::Stopped, "{name}");
    }
    Ok(())
}

/// A startup service that waits for the host to stop it.
#[derive(Default)]
struct SlowMigration;

impl Service for SlowMigration {
    type Kind = koan::Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named("migration").timeout(Duration::from_secs(3600))
    }
}

impl koan::StartupService for SlowMigration {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_requested_during_startup_is_a_clean_stop() -> anyhow::Result<()> {
    let (cooperative, cleaned_up) = Cooperative::new();
    let host = testing::host()
        .service::<SlowMigration>()
        .instance(cooperative)
        .build()?
        .start();
    testing::wait_state(&host, "migration", ServiceState::Running).await;

    host.shutdown();
    let exit = koan::testing::within("the host to exit", host.wait()).await;
    assert!(
        matches!(exit, HostExit::Stopped),
        "a requested stop is not a startup failure: {exit:?}"
    );
    assert_eq!(exit.exit_code(), 0);
    let err = host.started().await.expect_err("startup never finished");
    assert_eq!(err.kind(), koan::error::ErrorKind::ShuttingDown);

    let migration = host.status("migration")?;
    assert_eq!(migration.state, ServiceState::Stopped);
    assert_eq!(
        migration.last_run.expect("the cut-short run").outcome,
        RunOutcome::Cancelled
    );
    // The background service was never started.
    assert_eq!(host.status("cooperative")?.state, ServiceState::Pending);
    assert!(!cleaned_up.load(Ordering::SeqCst));
    Ok(())
}

/// A periodic service whose tick never ends and ignores cancellation.
#[derive(Default)]
struct Wedged;

impl Service for Wedged {
    type Kind = koan::Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("wedged").every(Duration::from_secs(3600))
    }
}

impl koan::PeriodicService for Wedged {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn runs_waiting_behind_an_aborted_periodic_run_are_answered() -> anyhow::Result<()> {
    let host = testing::host().service::<Wedged>().build()?.start();
    host.started().await?;

    let trigger = || {
        let host = host.clone();
        tokio::spawn(async move { host.services::<Wedged>().trigger().await })
    };
    let running = trigger();
    testing::wait_state(&host, "wedged", ServiceState::Running).await;
    let queued = trigger();
    testing::settle().await;
    assert_eq!(host.status("wedged")?.queue_depth, 1);

    let t0 = Instant::now();
    host.shutdown();
    assert!(
        koan::testing::within("the host to exit", host.wait())
            .await
            .is_success()
    );
    assert_within(t0.elapsed(), Duration::from_secs(5));

    // Both callers get an answer (instead of waiting forever).
    for (what, task) in [("running", running), ("queued", queued)] {
        let answer = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .map_err(|_| anyhow::anyhow!("the {what} trigger was never answered"))??;
        let err = answer.expect_err("the run did not complete");
        assert_eq!(
            err.kind(),
            koan::error::ErrorKind::ShuttingDown,
            "{what}: {err}"
        );
    }
    Ok(())
}
