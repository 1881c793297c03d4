//! Health (per service and for the host) and the fields of a service's status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use koan::testing;
use koan::{
    Background, BackgroundService, BoxError, Periodic, PeriodicService, Service, ServiceContext,
    ServiceOptions, error::ErrorKind, health::HealthReport, health::HealthStatus,
    health::HealthThresholds, service::RestartPolicy, service::RunReason, service::ServiceKind,
    status::RunOutcome, status::ServiceState,
};

/// A periodic service whose ticks fail while the switch is on.
struct Switchable {
    failing: Arc<AtomicBool>,
}

impl Service for Switchable {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("switchable")
            .every(Duration::from_secs(3600))
            .health_thresholds(HealthThresholds {
                degraded_after: 2,
                unhealthy_after: 4,
            })
    }
}

impl PeriodicService for Switchable {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        if self.failing.load(Ordering::SeqCst) {
            Err("upstream timed out".into())
        } else {
            Ok(())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failed_ticks_turn_degraded_then_unhealthy_and_recover() -> anyhow::Result<()> {
    let failing = Arc::new(AtomicBool::new(true));
    let host = testing::host()
        .instance(Switchable {
            failing: Arc::clone(&failing),
        })
        .build()?
        .start();
    host.started().await?;
    let svc = host.services::<Switchable>();
    assert_eq!(svc.health().await?.report.status, HealthStatus::Healthy);

    // (failed runs so far, expected health)
    let steps = [
        (1, HealthStatus::Healthy),
        (2, HealthStatus::Degraded),
        (3, HealthStatus::Degraded),
        (4, HealthStatus::Unhealthy),
        (5, HealthStatus::Unhealthy),
    ];
    for (n, expected) in steps {
        let err = svc.trigger().await.expect_err("the tick fails");
        assert_eq!(err.kind(), ErrorKind::Handler);
        let health = svc.health().await?;
        assert_eq!(
            health.report.status, expected,
            "after {n} failures: {health:?}"
        );
        assert_eq!(host.status("switchable")?.consecutive_failures, n);
        if expected != HealthStatus::Healthy {
            assert_eq!(health.report.error.as_deref(), Some("upstream timed out"));
        }
    }
    // A non-critical unhealthy service makes the host only degraded.
    assert_eq!(host.health().await.status, HealthStatus::Degraded);

    failing.store(false, Ordering::SeqCst);
    svc.trigger().await?;
    let health = svc.health().await?;
    assert_eq!(health.report.status, HealthStatus::Healthy, "{health:?}");
    let status = host.status("switchable")?;
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!((status.runs, status.failures), (6, 5));
    assert_eq!(host.health().await.status, HealthStatus::Healthy);

    testing::stop(&host).await?;
    Ok(())
}

const HEALTHY: u8 = 0;
const DEGRADED: u8 = 1;
const UNHEALTHY: u8 = 2;

/// A background service reporting whatever health the test sets. `CRITICAL` marks it.
struct Reporter<const CRITICAL: bool> {
    health: Arc<AtomicU8>,
}

impl<const CRITICAL: bool> Service for Reporter<CRITICAL> {
    type Kind = Background;
    fn options() -> ServiceOptions {
        let name = if CRITICAL { "core" } else { "extra" };
        ServiceOptions::named(name).critical(CRITICAL)
    }

    async fn health(&self) -> HealthReport {
        match self.health.load(Ordering::SeqCst) {
            HEALTHY => HealthReport::healthy("fine"),
            DEGRADED => HealthReport::degraded("slow"),
            _ => HealthReport::unhealthy("down").with_error("no connection"),
        }
    }
}

impl<const CRITICAL: bool> BackgroundService for Reporter<CRITICAL> {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn host_health_is_the_worst_of_critical_and_caps_the_others_at_degraded() -> anyhow::Result<()>
{
    let core = Arc::new(AtomicU8::new(HEALTHY));
    let extra = Arc::new(AtomicU8::new(HEALTHY));
    let host = testing::host()
        .instance(Reporter::<true> {
            health: Arc::clone(&core),
        })
        .instance(Reporter::<false> {
            health: Arc::clone(&extra),
        })
        .build()?
        .start();
    host.started().await?;

    // (core, extra, host)
    let cases = [
        (HEALTHY, HEALTHY, HealthStatus::Healthy),
        (HEALTHY, DEGRADED, HealthStatus::Degraded),
        (HEALTHY, UNHEALTHY, HealthStatus::Degraded),
        (DEGRADED, HEALTHY, HealthStatus::Degraded),
        (DEGRADED, UNHEALTHY, HealthStatus::Degraded),
        (UNHEALTHY, HEALTHY, HealthStatus::Unhealthy),
        (UNHEALTHY, UNHEALTHY, HealthStatus::Unhealthy),
    ];
    for (c, e, expected) in cases {
        core.store(c, Ordering::SeqCst);
        extra.store(e, Ordering::SeqCst);
        let health = host.health().await;
        assert_eq!(health.status, expected, "core {c}, extra {e}: {health:?}");
        assert_eq!(health.services.len(), 2);
        let extra_report = health
            .services
            .iter()
            .find(|s| s.service == "extra")
            .expect("extra is reported");
        // Each service's own report is kept as is.
        assert!(!extra_report.critical);
        let want = [
            HealthStatus::Healthy,
            HealthStatus::Degraded,
            HealthStatus::Unhealthy,
        ][usize::from(e)];
        assert_eq!(extra_report.report.status, want);
    }
    let core_report = host.services::<Reporter<true>>().health().await?;
    assert!(core_report.critical);
    assert_eq!(core_report.report.error.as_deref(), Some("no connection"));

    testing::stop(&host).await?;
    Ok(())
}

/// Fails once and is not restarted.
#[derive(Default)]
struct Doomed;

impl Service for Doomed {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("doomed").restart(RestartPolicy::Never)
    }
}

impl BackgroundService for Doomed {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Err("disk full".into())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_service_is_unhealthy() -> anyhow::Result<()> {
    let host = testing::host().service::<Doomed>().build()?.start();
    testing::wait_state(&host, "doomed", ServiceState::Failed).await;

    let health = host.services::<Doomed>().health().await?;
    assert_eq!(health.report.status, HealthStatus::Unhealthy);
    assert!(
        health
            .report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("disk full")),
        "{health:?}"
    );
    // Non-critical: the host is degraded, not unhealthy, and still live.
    assert_eq!(host.health().await.status, HealthStatus::Degraded);
    assert!(host.live().await);

    testing::stop(&host).await?;
    Ok(())
}

/// Every 10 s; each tick takes 250 ms and fails while the switch is on.
struct Timed {
    failing: Arc<AtomicBool>,
}

impl Service for Timed {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("timed").every(Duration::from_secs(10))
    }
}

impl PeriodicService for Timed {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if self.failing.load(Ordering::SeqCst) {
            return Err("bad row".into());
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn status_fields_are_filled() -> anyhow::Result<()> {
    let failing = Arc::new(AtomicBool::new(false));
    let host = testing::host()
        .instance(Timed {
            failing: Arc::clone(&failing),
        })
        .build()?
        .start();

    let before = host.status("timed")?;
    assert_eq!(before.kind, ServiceKind::Periodic);
    assert!(before.last_run.is_none());
    assert_eq!(before.runs, 0);

    let status = testing::wait_runs(&host, "timed", 1).await;
    assert_eq!(status.name, "timed");
    assert!(status.enabled);
    assert!(!status.critical);
    assert_eq!(status.state, ServiceState::Idle);
    assert_eq!(status.runs, 1);
    assert_eq!(status.failures, 0);
    assert_eq!(status.restarts, 0);
    assert!(status.last_error.is_none());

    let started_at = status.started_at.expect("started_at is set");
    let last = status.last_run.expect("last_run is set");
    assert_eq!(last.reason, RunReason::Scheduled);
    assert_eq!(last.outcome, RunOutcome::Success);
    assert_eq!(last.duration_ms, 250);
    let after_start = (last.started_at - started_at).num_milliseconds();
    assert!((10_000..=10_005).contains(&after_start), "{after_start} ms");
    let next = status.next_run.expect("next_run is set");
    let until_next = (next - last.started_at).num_milliseconds();
    assert!((9_995..=10_000).contains(&until_next), "{until_next} ms");

    failing.store(true, Ordering::SeqCst);
    let status = testing::wait_runs(&host, "timed", 2).await;
    assert_eq!(status.runs, 2);
    assert_eq!(status.failures, 1);
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(status.last_error.as_deref(), Some("bad row"));
    let last = status.last_run.clone().expect("last_run is set");
    assert_eq!(
        last.outcome,
        RunOutcome::Failed {
            error: "bad row".to_owned()
        }
    );
    assert_eq!(last.duration_ms, 250);

    // Status is serializable the way dashboards read it.
    let json = serde_json::to_value(&status)?;
    assert_eq!(json["state"], "idle");
    assert_eq!(json["last_run"]["outcome"], "failed");

    testing::stop(&host).await?;
    let stopped = host.status("timed")?;
    assert_eq!(stopped.state, ServiceState::Stopped);
    assert!(stopped.next_run.is_none(), "no next run once stopped");
    Ok(())
}
