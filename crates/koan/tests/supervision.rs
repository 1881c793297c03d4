//! Supervision of background services: restarts with backoff, the intensity limit,
//! restart policies, critical failures and caught panics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::testing;
use koan::{
    Background, BackgroundService, BoxError, HostHandle, Service, ServiceContext, ServiceOptions,
    error::ErrorKind, health::HealthStatus, host::HostExit, service::Backoff, service::Intensity,
    service::RestartPolicy, service::RunReason, status::ServiceState, status::ServiceStatus,
};
use tokio::time::Instant;

fn no_jitter(initial: Duration, max: Duration) -> Backoff {
    Backoff {
        initial,
        max,
        factor: 2.0,
        jitter: 0.0,
    }
}

fn assert_gaps(starts: &[Instant], expected: &[Duration]) {
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.len(), expected.len(), "gaps: {gaps:?}");
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(
            *gap >= *want && *gap <= *want + Duration::from_millis(5),
            "gaps {gaps:?}, expected {expected:?}"
        );
    }
}

/// What a flaky service records, shared with the test.
#[derive(Default)]
struct Record {
    fails_left: AtomicU32,
    starts: Mutex<Vec<Instant>>,
    reasons: Mutex<Vec<RunReason>>,
}

impl Record {
    fn failing(times: u32) -> Arc<Self> {
        Arc::new(Record {
            fails_left: AtomicU32::new(times),
            ..Record::default()
        })
    }

    fn starts(&self) -> Vec<Instant> {
        self.starts.lock().expect("starts lock").clone()
    }

    /// Notes a start; true when this run should fail.
    fn begin(&self, cx: &ServiceContext) -> bool {
        self.starts
            .lock()
            .expect("starts lock")
            .push(Instant::now());
        self.reasons.lock().expect("reasons lock").push(cx.reason());
        self.fails_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Fails as often as its record says, then runs until stopped. `OPTS` picks options.
struct Flaky<const OPTS: u8> {
    record: Arc<Record>,
}

impl<const OPTS: u8> Service for Flaky<OPTS> {
    type Kind = Background;
    fn options() -> ServiceOptions {
        let base = ServiceOptions::named("flaky");
        match OPTS {
            // Exponential backoff 1 s, 2 s, 4 s, … without jitter.
            0 => base.backoff(no_jitter(Duration::from_secs(1), Duration::from_secs(60))),
            // Capped at 3 s.
            1 => base.backoff(no_jitter(Duration::from_secs(1), Duration::from_secs(3))),
            // At most 2 restarts within a minute.
            2 => base
                .backoff(no_jitter(Duration::from_secs(1), Duration::from_secs(60)))
                .intensity(Intensity {
                    max_restarts: 2,
                    within: Duration::from_secs(60),
                }),
            // At most 1 restart within 5 s, but every restart waits 10 s: the window
            // slides past each one.
            3 => base
                .backoff(Backoff {
                    initial: Duration::from_secs(10),
                    max: Duration::from_secs(10),
                    factor: 1.0,
                    jitter: 0.0,
                })
                .intensity(Intensity {
                    max_restarts: 1,
                    within: Duration::from_secs(5),
                }),
            // Never restart.
            4 => base.restart(RestartPolicy::Never),
            // Never restart, and critical.
            5 => base.restart(RestartPolicy::Never).critical(true),
            _ => base,
        }
    }
}

/// A flaky service with options `OPTS` that fails `fails` times, and its record.
fn flaky<const OPTS: u8>(fails: u32) -> (Flaky<OPTS>, Arc<Record>) {
    let record = Record::failing(fails);
    let service = Flaky {
        record: Arc::clone(&record),
    };
    (service, record)
}

/// A test host running a flaky service with options `OPTS` that fails `fails`
/// times (not yet waited on), and the service's record.
fn start_flaky<const OPTS: u8>(fails: u32) -> anyhow::Result<(HostHandle, Arc<Record>)> {
    let (flaky, record) = flaky::<OPTS>(fails);
    Ok((testing::host().instance(flaky).build()?.start(), record))
}

/// Waits until `flaky` has failed for good, and checks its last error gives both its
/// run's error and `why` it was not restarted; its status.
async fn failed_for_good(host: &HostHandle, why: &str) -> ServiceStatus {
    let status = testing::wait_state(host, "flaky", ServiceState::Failed).await;
    let error = status.last_error.as_deref().expect("the reason it failed");
    assert!(
        error.contains("connection refused") && error.contains(why),
        "{error}"
    );
    status
}

/// Stops the host, as the last step of a test.
async fn stop(host: &HostHandle) -> anyhow::Result<()> {
    Ok(testing::stop(host).await?)
}

/// Waits until `service` has been restarted at least `restarts` times and runs again.
async fn running_after(host: &HostHandle, service: &str, restarts: u32) -> ServiceStatus {
    testing::wait_until(host, service, |s| {
        s.restarts >= restarts && s.state == ServiceState::Running
    })
    .await
}

impl<const OPTS: u8> BackgroundService for Flaky<OPTS> {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        if self.record.begin(&cx) {
            return Err("connection refused".into());
        }
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_service_is_restarted_with_exponential_backoff() -> anyhow::Result<()> {
    let (host, record) = start_flaky::<0>(3)?;

    let status = running_after(&host, "flaky", 3).await;
    assert_eq!(status.restarts, 3);
    assert_eq!(status.failures, 3);
    assert_eq!(
        status.runs, 3,
        "three failed runs finished; the fourth is running"
    );
    assert_eq!(status.consecutive_failures, 3);
    assert_eq!(status.last_error.as_deref(), Some("connection refused"));
    assert_gaps(
        &record.starts(),
        &[
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4),
        ],
    );
    assert_eq!(
        *record.reasons.lock().expect("reasons lock"),
        [
            RunReason::Start,
            RunReason::Restart,
            RunReason::Restart,
            RunReason::Restart
        ]
    );

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn the_backoff_is_capped_at_its_max() -> anyhow::Result<()> {
    let (host, record) = start_flaky::<1>(4)?;

    running_after(&host, "flaky", 4).await;
    assert_gaps(
        &record.starts(),
        &[
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_secs(3),
        ],
    );
    stop(&host).await
}

#[test]
fn backoff_jitter_stays_within_its_spread() {
    let backoff = Backoff {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(1000),
        factor: 2.0,
        jitter: 0.1,
    };
    for attempt in 0..4 {
        let base = 10.0 * 2f64.powi(attempt);
        for _ in 0..200 {
            let d = backoff.delay(attempt as u32).as_secs_f64();
            assert!(
                d >= base * 0.9 - 1e-9 && d <= base * 1.1 + 1e-9,
                "attempt {attempt}: {d} outside ±10 % of {base}"
            );
        }
    }
    let exact = Backoff {
        jitter: 0.0,
        ..backoff
    };
    assert_eq!(exact.delay(2), Duration::from_secs(40));
    assert_eq!(exact.delay(20), Duration::from_secs(1000), "capped at max");
}

#[tokio::test(start_paused = true)]
async fn exceeding_the_intensity_limit_leaves_the_service_failed() -> anyhow::Result<()> {
    let (host, record) = start_flaky::<2>(u32::MAX)?;

    let status = failed_for_good(&host, "restart intensity exceeded").await;
    assert_eq!(status.runs, 3, "the start and two restarts");
    assert_eq!(status.restarts, 2);
    assert_eq!(status.failures, 3);

    // It stays failed: no more runs however long we wait.
    testing::advance(Duration::from_secs(600)).await;
    let status = host.status("flaky")?;
    assert_eq!(status.state, ServiceState::Failed);
    assert_eq!(status.runs, 3);
    assert_eq!(record.starts().len(), 3);
    // A non-critical failure does not stop the host.
    assert!(host.exit().is_none());
    assert_eq!(
        host.services::<Flaky<2>>().health().await?.report.status,
        HealthStatus::Unhealthy
    );

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn restarts_spread_wider_than_the_window_never_exhaust_the_intensity() -> anyhow::Result<()> {
    let (host, record) = start_flaky::<3>(4)?;

    let status = testing::wait_until(&host, "flaky", |s| {
        s.restarts >= 4 && s.state == ServiceState::Running || s.state == ServiceState::Failed
    })
    .await;
    assert_eq!(status.state, ServiceState::Running, "{status:?}");
    assert_eq!(status.restarts, 4);
    assert_gaps(&record.starts(), &[Duration::from_secs(10); 4]);

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn restart_policy_never_leaves_the_service_failed() -> anyhow::Result<()> {
    let (host, record) = start_flaky::<4>(1)?;

    let status = failed_for_good(&host, "restart policy: never").await;
    assert_eq!(status.runs, 1);
    assert_eq!(status.restarts, 0);

    testing::advance(Duration::from_secs(120)).await;
    assert_eq!(record.starts().len(), 1, "never restarted");
    assert_eq!(host.status("flaky")?.state, ServiceState::Failed);
    stop(&host).await
}

/// Returns `Ok` at once twice, then runs until stopped; restart policy `always`.
#[derive(Default)]
struct Returns {
    runs: AtomicU32,
}

impl Service for Returns {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("returns")
            .restart(RestartPolicy::Always)
            .backoff(no_jitter(Duration::from_secs(1), Duration::from_secs(60)))
    }
}

impl BackgroundService for Returns {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        if self.runs.fetch_add(1, Ordering::SeqCst) < 2 {
            return Ok(());
        }
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn restart_policy_always_restarts_after_a_clean_return() -> anyhow::Result<()> {
    let host = testing::host().service::<Returns>().build()?.start();
    let status = running_after(&host, "returns", 2).await;
    assert_eq!(status.restarts, 2);
    assert_eq!(status.runs, 2);
    assert_eq!(status.failures, 0);
    stop(&host).await
}

/// Runs until stopped; stands next to a critical service.
#[derive(Default)]
struct Bystander;

impl Service for Bystander {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("bystander")
    }
}

impl BackgroundService for Bystander {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_critical_failure_stops_the_host_with_exit_code_2() -> anyhow::Result<()> {
    let (flaky, _record) = flaky::<5>(1);
    let host = testing::host()
        .service::<Bystander>()
        .instance(flaky)
        .build()?
        .start();

    let exit = koan::testing::within("the host to exit", host.wait()).await;
    assert_eq!(exit.exit_code(), 2);
    assert!(!exit.is_success());
    match &exit {
        HostExit::CriticalFailure { service, error } => {
            assert_eq!(service, "flaky");
            assert!(error.contains("connection refused"), "{error}");
        }
        other => panic!("expected CriticalFailure, got {other:?}"),
    }
    let err = exit
        .into_result()
        .expect_err("a critical failure is an error");
    assert_eq!(err.kind(), ErrorKind::CriticalFailure);
    assert!(err.message().contains("`flaky`"), "{}", err.message());
    assert_eq!(err.exit_code(), 2, "the code a `main` returns for it");

    assert_eq!(host.status("flaky")?.state, ServiceState::Failed);
    assert_eq!(host.status("bystander")?.state, ServiceState::Stopped);
    assert!(!host.live().await);
    Ok(())
}

/// Panics on its first run, then runs until stopped.
#[derive(Default)]
struct Panicky {
    reasons: Mutex<Vec<RunReason>>,
}

impl Service for Panicky {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("panicky")
    }
}

impl BackgroundService for Panicky {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let first = {
            let mut reasons = self.reasons.lock().expect("reasons lock");
            reasons.push(cx.reason());
            reasons.len() == 1
        };
        if first {
            panic!("boom");
        }
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_run_is_caught_and_the_service_restarted() -> anyhow::Result<()> {
    let host = testing::host().service::<Panicky>().build()?.start();
    let status = running_after(&host, "panicky", 1).await;
    assert_eq!(status.restarts, 1);
    assert_eq!(status.failures, 1);
    let error = status.last_error.expect("the panic is recorded");
    assert!(error.contains("boom"), "{error}");
    assert!(host.live().await, "the host survived the panic");
    stop(&host).await
}

/// A background service that failed and was restarted counts as recovered once it has
/// stayed up for the intensity window: its health goes back to healthy.
#[tokio::test(start_paused = true)]
async fn a_restarted_service_that_stays_up_recovers_its_health() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct FailsOnce(AtomicU32);
    impl koan::Service for FailsOnce {
        type Kind = koan::Background;
        fn options() -> koan::ServiceOptions {
            koan::ServiceOptions::named("fails-once")
                .backoff(koan::service::Backoff {
                    jitter: 0.0,
                    ..koan::service::Backoff::default()
                })
                .intensity(koan::service::Intensity {
                    max_restarts: 5,
                    within: std::time::Duration::from_secs(60),
                })
        }
    }
    impl koan::BackgroundService for FailsOnce {
        async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("first start fails".into());
            }
            cx.cancelled().await;
            Ok(())
        }
    }
    let host = koan::testing::host()
        .service::<FailsOnce>()
        .build()?
        .start();
    host.started().await?;
    koan::testing::wait_until(&host, "fails-once", |s| {
        s.restarts == 1 && s.state == koan::status::ServiceState::Running
    })
    .await;
    let h = host.service("fails-once").health().await?;
    assert_eq!(
        h.report.status,
        koan::health::HealthStatus::Degraded,
        "just restarted: still degraded"
    );
    let status =
        koan::testing::wait_until(&host, "fails-once", |s| s.consecutive_failures == 0).await;
    assert_eq!(status.restarts, 1);
    assert_eq!(
        host.service("fails-once").health().await?.report.status,
        koan::health::HealthStatus::Healthy
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
