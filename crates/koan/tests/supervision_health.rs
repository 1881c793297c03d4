//! The health of a background service that failed, was restarted and runs again:
//! degraded while its restart window still counts the failures, not unhealthy.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::health::HealthStatus;
use koan::status::ServiceState;
use koan::{BackgroundService, BoxError, ServiceContext, testing};

/// Returns an error twice, panics once, then runs until stopped.
#[derive(Default)]
struct Crashy(AtomicU32);

impl koan::Service for Crashy {
    type Kind = koan::Background;
    fn options() -> koan::ServiceOptions {
        koan::ServiceOptions::named("crashy").critical(true)
    }
}

impl BackgroundService for Crashy {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        match self.0.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => return Err("crash".into()),
            2 => panic!("panic crash"),
            _ => {}
        }
        cx.cancelled().await;
        Ok(())
    }
}

/// Running again after three failed runs, a critical service is degraded (naming
/// what it went through), and the host ready; it was unhealthy, and the host
/// unready, until the intensity window (60 s) had passed (a probe).
#[tokio::test(start_paused = true)]
async fn a_service_running_again_after_failed_runs_is_degraded_not_unhealthy() -> anyhow::Result<()>
{
    let host = testing::host().service::<Crashy>().build()?.start();
    host.started().await?;
    let status = testing::wait_until(&host, "crashy", |s| {
        s.restarts == 3 && s.state == ServiceState::Running
    })
    .await;
    assert_eq!((status.failures, status.consecutive_failures), (3, 3));
    testing::pass(Duration::from_secs(8)).await;

    let health = testing::within("health", host.service("crashy").health()).await?;
    let report = &health.report;
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    let description = report.description.as_deref().unwrap_or_default();
    assert!(
        description.contains("running again after 3 failed runs")
            && description.contains("restarted 3 times"),
        "{description}"
    );
    assert_eq!(report.error.as_deref(), Some("panicked: panic crash"));
    let ready = testing::within("readiness", host.ready()).await;
    assert!(ready.ready, "{:?}", ready.reasons);
    assert_eq!(
        testing::within("host health", host.health()).await.status,
        HealthStatus::Degraded
    );

    // The window still counts them: once it has passed, healthy.
    testing::wait_until(&host, "crashy", |s| s.consecutive_failures == 0).await;
    let health = testing::within("health", host.service("crashy").health()).await?;
    assert_eq!(health.report.status, HealthStatus::Healthy, "{health:?}");
    testing::stop(&host).await?;
    Ok(())
}
