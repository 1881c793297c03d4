//! Edges found in review: durations too large to add to a clock, enqueue to a service
//! that exists nowhere, and a health check that never answers.

use std::sync::Arc;
use std::time::Duration;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind, health::HealthReport, health::HealthStatus,
};

#[derive(Default)]
struct Echo;

impl Service for Echo {
    type Kind = Background;
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "echo",
            |_s: Arc<Self>, n: u32, _cx: ActionContext| async move { Ok::<_, BoxError>(n) },
        );
    }
}

impl BackgroundService for Echo {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Its health check never answers.
#[derive(Default)]
struct Stuck;

impl Service for Stuck {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Stuck").critical(true)
    }
    async fn health(&self) -> HealthReport {
        std::future::pending().await
    }
}

impl BackgroundService for Stuck {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn huge_durations_mean_never_not_a_panic() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<Echo>()
        .shutdown_grace(Duration::MAX)
        .startup_timeout(Duration::MAX)
        .build()?
        .start();
    host.started().await?;
    let n: u32 = host
        .services::<Echo>()
        .action("echo", 7u32)
        .timeout(Duration::MAX)
        .execute()
        .await?
        .value()?;
    assert_eq!(n, 7);
    let t = host
        .services::<Echo>()
        .action("echo", 8u32)
        .timeout(Duration::MAX)
        .spawn()?;
    assert_eq!(t.outcome().await?.value::<u32>()?, 8);
    // A grace of "forever" still lets a cooperative host stop.
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn enqueue_to_a_service_that_exists_nowhere_is_refused_at_once() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Echo>().build()?.start();
    host.started().await?;
    let err = host
        .service("Nope")
        .action("echo", 1u32)
        .spawn()
        .expect_err("no such service");
    assert_eq!(err.kind(), ErrorKind::UnknownService);
    assert!(err.message().contains("Echo"), "{err}");
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_health_check_that_never_answers_counts_as_unhealthy() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<Echo>()
        .service::<Stuck>()
        .build()?
        .start();
    host.started().await?;
    let health = host.health().await;
    assert_eq!(health.status, HealthStatus::Unhealthy);
    let stuck = health
        .services
        .iter()
        .find(|s| s.service == "Stuck")
        .expect("listed");
    assert!(
        stuck
            .report
            .description
            .as_deref()
            .unwrap_or("")
            .contains("did not answer")
    );
    let echo = health
        .services
        .iter()
        .find(|s| s.service == "Echo")
        .expect("listed");
    assert_eq!(echo.report.status, HealthStatus::Healthy);
    let ready = host.ready().await;
    assert!(!ready.ready);
    assert!(
        ready.reasons.iter().any(|r| r.contains("Stuck")),
        "{:?}",
        ready.reasons
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
