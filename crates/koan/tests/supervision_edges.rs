//! Supervision at its edges: a failure exactly at the end of the intensity window,
//! what a clean return is recorded as, and backoff settings that are not numbers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::testing;
use koan::{
    Background, BackgroundService, BoxError, Service, ServiceContext, ServiceOptions,
    service::Backoff, service::Intensity, service::RestartPolicy, status::RunOutcome,
    status::ServiceState,
};
use tokio::time::Instant;

/// A fixed delay between restarts.
fn fixed(delay: Duration) -> Backoff {
    Backoff {
        initial: delay,
        max: delay,
        factor: 1.0,
        jitter: 0.0,
    }
}

/// Fails at once as often as `fails_left` says, then runs until stopped. At most one
/// restart within 10 s; `EDGE` picks the delay before each restart: exactly 10 s (so
/// each failure lands exactly on the edge of the window) or 1 ms more.
struct OnTheEdge<const EDGE: bool> {
    fails_left: AtomicU32,
    starts: Arc<Mutex<Vec<Instant>>>,
}

impl<const EDGE: bool> Service for OnTheEdge<EDGE> {
    type Kind = Background;
    fn options() -> ServiceOptions {
        let delay = if EDGE {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(10_001)
        };
        ServiceOptions::named("edge")
            .backoff(fixed(delay))
            .intensity(Intensity {
                max_restarts: 1,
                within: Duration::from_secs(10),
            })
    }
}

impl<const EDGE: bool> BackgroundService for OnTheEdge<EDGE> {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.starts
            .lock()
            .expect("starts lock")
            .push(Instant::now());
        let failing = self
            .fails_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err("connection refused".into());
        }
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_exactly_at_the_end_of_the_window_still_counts() -> anyhow::Result<()> {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let host = testing::host()
        .instance(OnTheEdge::<true> {
            fails_left: AtomicU32::new(3),
            starts: Arc::clone(&starts),
        })
        .build()?
        .start();
    let status = testing::wait_state(&host, "edge", ServiceState::Failed).await;
    let offsets: Vec<Duration> = starts
        .lock()
        .expect("starts lock")
        .iter()
        .map(|s| *s - t0)
        .collect();
    assert_eq!(offsets, [Duration::ZERO, Duration::from_secs(10)]);
    // The failures at 0 s and 10 s are within 10 s of each other: the window is closed.
    assert_eq!((status.runs, status.restarts), (2, 1), "{status:?}");
    let error = status.last_error.expect("the reason it failed");
    assert!(error.contains("restart intensity exceeded"), "{error}");
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_failure_just_past_the_window_is_restarted() -> anyhow::Result<()> {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let host = testing::host()
        .instance(OnTheEdge::<false> {
            fails_left: AtomicU32::new(3),
            starts: Arc::clone(&starts),
        })
        .build()?
        .start();
    let status = testing::wait_until(&host, "edge", |s| {
        s.state == ServiceState::Failed || s.restarts == 3 && s.state == ServiceState::Running
    })
    .await;
    assert_eq!(status.state, ServiceState::Running, "{status:?}");
    assert_eq!((status.restarts, status.failures), (3, 3));
    testing::stop(&host).await?;
    Ok(())
}

/// Returns `Ok` at once, or, when `WAIT`, once it is told to stop.
struct Returns<const WAIT: bool>;

impl<const WAIT: bool> Service for Returns<WAIT> {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("returns").restart(RestartPolicy::Never)
    }
}

impl<const WAIT: bool> BackgroundService for Returns<WAIT> {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        if WAIT {
            cx.cancelled().await;
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_clean_return_is_a_success_and_the_service_stops() -> anyhow::Result<()> {
    let host = testing::host().instance(Returns::<false>).build()?.start();
    let status = testing::wait_state(&host, "returns", ServiceState::Stopped).await;
    let last = status.last_run.expect("the finished run");
    assert_eq!(last.outcome, RunOutcome::Success, "{last:?}");
    assert_eq!((status.runs, status.failures), (1, 0));
    assert_eq!(status.last_error, None);
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_return_when_told_to_stop_is_recorded_as_cancelled() -> anyhow::Result<()> {
    let host = testing::host().instance(Returns::<true>).build()?.start();
    testing::wait_state(&host, "returns", ServiceState::Running).await;
    testing::stop(&host).await?;
    let status = host.status("returns")?;
    let last = status.last_run.expect("the finished run");
    assert_eq!(last.outcome, RunOutcome::Cancelled, "{last:?}");
    assert_eq!(status.failures, 0);
    Ok(())
}

#[test]
fn a_jitter_that_is_not_a_number_means_no_jitter() {
    let backoff = Backoff {
        jitter: f64::NAN,
        ..fixed(Duration::from_secs(3))
    };
    assert_eq!(backoff.delay(0), Duration::from_secs(3));
    assert_eq!(backoff.delay(7), Duration::from_secs(3));
}

#[test]
fn an_unbounded_backoff_saturates_instead_of_panicking() {
    let backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::MAX,
        factor: 2.0,
        jitter: 0.1,
    };
    assert!(backoff.delay(200) > Duration::from_secs(1 << 60));
    // An infinite factor saturates at the cap (no jitter: one exact answer).
    let wild = Backoff {
        factor: f64::INFINITY,
        jitter: 0.0,
        ..backoff
    };
    assert_eq!(wild.delay(3), Duration::MAX);
    // An infinite jitter counts as the whole delay's spread, whatever the draw.
    let spread = Backoff {
        jitter: f64::INFINITY,
        ..fixed(Duration::from_secs(3))
    };
    for attempt in 0..200 {
        assert!(spread.delay(attempt) <= Duration::from_secs(6), "{attempt}");
    }
}

/// Cancels the token it hands out, then returns `Ok` or (`FAIL`) an error; has an
/// action, and is critical.
struct CancelsItself<const FAIL: bool>;

impl<const FAIL: bool> Service for CancelsItself<FAIL> {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("cancels-itself")
            .critical(!FAIL)
            .restart(RestartPolicy::Always)
    }
    fn actions(a: &mut koan::Actions<Self>) {
        a.action(
            "wait",
            |_: Arc<Self>, (): (), cx: koan::ActionContext| async move {
                cx.cancelled().await;
                Err::<(), BoxError>("stopped".into())
            },
        );
    }
}

impl<const FAIL: bool> BackgroundService for CancelsItself<FAIL> {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.token().cancel();
        if FAIL {
            return Err("lost its connection".into());
        }
        Ok(())
    }
}

/// A service whose own code cancels its token has stopped, and says so: not
/// restarted, `stopped` (or `failed`, naming why, when it returned an error), a
/// critical one makes the host unready, and a call says the service stopped, not
/// that the host is shutting down. Before, it showed `running` for ever, ready,
/// "failed while stopping" in the log, and calls were refused as `shutting_down`,
/// which a client retries for ever (found by a probe).
#[tokio::test(start_paused = true)]
async fn a_service_whose_own_code_cancels_its_token_has_stopped() -> anyhow::Result<()> {
    let host = testing::host()
        .instance(CancelsItself::<false>)
        .build()?
        .start();
    host.started().await?;
    let status = testing::wait_state(&host, "cancels-itself", ServiceState::Stopped).await;
    assert_eq!((status.restarts, status.runs), (0, 1), "{status:?}");
    let ready = host.ready().await;
    assert_eq!(
        ready.reasons,
        ["critical service `cancels-itself` has stopped"]
    );
    // Health says it too (it said `pass` while readiness failed; found by a probe).
    let health = testing::within("health", host.health()).await;
    assert_eq!(
        health.status,
        koan::health::HealthStatus::Unhealthy,
        "{health:?}"
    );
    let own = &health.services[0].report;
    assert!(
        own.description
            .as_deref()
            .is_some_and(|d| d.contains("the service has stopped")),
        "{own:?}"
    );
    let e = testing::within(
        "a call",
        host.service("cancels-itself").action("wait", ()).execute(),
    )
    .await
    .expect_err("stopped");
    assert_eq!(e.kind(), koan::error::ErrorKind::ServiceUnavailable, "{e}");
    assert!(
        e.message().contains("its own code cancelled its token"),
        "{e}"
    );
    // Stopped as the host stops: not a failure of health.
    host.shutdown();
    let _ = testing::within("stop", host.wait()).await;
    let health = testing::within("health", host.health()).await;
    assert_eq!(
        health.services[0].report.status,
        koan::health::HealthStatus::Healthy
    );

    let host = testing::host()
        .instance(CancelsItself::<true>)
        .build()?
        .start();
    host.started().await?;
    let status = testing::wait_state(&host, "cancels-itself", ServiceState::Failed).await;
    assert_eq!(status.restarts, 0, "{status:?}");
    assert_eq!(
        status.last_error.as_deref(),
        Some("lost its connection (its own code cancelled its token; not restarted)")
    );
    testing::stop(&host).await?;
    Ok(())
}
