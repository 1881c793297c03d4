//! Health and readiness when services' checks hang, and while a critical service
//! waits to restart (found by a probe): a service's own health route never
//! answered when its `health()` hung; readiness checked services one after
//! another, 5 s for each hanging one (N × 5 s); and a critical service down between
//! restarts left the host ready.

use std::time::Duration;

use koan::health::{HealthReport, HealthStatus};
use koan::testing::within;
use koan::{
    Background, BackgroundService, BoxError, Service, ServiceContext, ServiceOptions,
    status::ServiceState,
};
use tokio::time::Instant;

/// A service whose `health()` and `is_ready()` never answer.
struct Hanging<const N: u8>;

impl<const N: u8> Service for Hanging<N> {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named(format!("hanging-{N}")).critical(N == 0)
    }
    async fn health(&self) -> HealthReport {
        std::future::pending().await
    }
    async fn is_ready(&self) -> bool {
        std::future::pending().await
    }
}

impl<const N: u8> BackgroundService for Hanging<N> {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn hanging_checks_are_cut_at_5_s_all_at_once() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .instance(Hanging::<0>)
        .instance(Hanging::<1>)
        .instance(Hanging::<2>)
        .instance(Hanging::<3>)
        .build()?
        .start();
    host.started().await?;

    let t0 = Instant::now();
    let ready = within("readiness", host.ready()).await;
    assert_eq!(t0.elapsed(), Duration::from_secs(5), "{ready:?}");
    assert!(!ready.ready);
    assert_eq!(ready.reasons.len(), 4, "{ready:?}");
    assert!(
        ready.reasons.contains(
            &"service `hanging-0` did not answer its health check and `is_ready()` within 5s"
                .to_owned()
        ) && ready
            .reasons
            .contains(&"service `hanging-3` did not answer `is_ready()` within 5s".to_owned()),
        "{ready:?}"
    );

    let t0 = Instant::now();
    let health = within("a service's health", host.service("hanging-2").health()).await?;
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    assert_eq!(health.report.status, HealthStatus::Unhealthy);
    assert_eq!(
        health.report.description.as_deref(),
        Some("the health check did not answer within 5s")
    );
    koan::testing::stop(&host).await?;
    Ok(())
}

/// A critical service that fails at once, restarted after 10 s.
struct Flaky;

impl Service for Flaky {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("flaky")
            .critical(true)
            .backoff(koan::service::Backoff {
                initial: Duration::from_secs(10),
                ..koan::service::Backoff::default()
            })
    }
}

impl BackgroundService for Flaky {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Err("no connection".into())
    }
}

#[tokio::test(start_paused = true)]
async fn a_critical_service_waiting_to_restart_makes_the_host_unready() -> anyhow::Result<()> {
    let host = koan::testing::host().instance(Flaky).build()?.start();
    host.started().await?;
    koan::testing::wait_state(&host, "flaky", ServiceState::Restarting).await;
    let ready = host.ready().await;
    assert_eq!(
        ready.reasons,
        ["critical service `flaky` is down, waiting to restart"],
        "{ready:?}"
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
