//! `Services::<T>::instance()`: a test reaches the service value the host runs, and
//! asking for a type the host does not run is a clear error.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::{
    Background, BackgroundService, BoxError, Periodic, PeriodicService, Service, ServiceContext,
    ServiceOptions, error::ErrorKind,
};

#[derive(Default)]
struct Counter {
    ticks: AtomicU32,
}

impl Service for Counter {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Counter").every(Duration::from_secs(60))
    }
}

impl PeriodicService for Counter {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Elsewhere;

impl Service for Elsewhere {
    type Kind = Background;
}

impl BackgroundService for Elsewhere {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_test_reads_the_state_of_the_instance_the_host_runs() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Counter>().build()?.start();
    host.started().await?;
    let counter = host.services::<Counter>().instance()?;
    assert_eq!(counter.ticks.load(Ordering::Relaxed), 0);

    host.services::<Counter>().trigger().await?;
    host.services::<Counter>().trigger().await?;
    assert_eq!(counter.ticks.load(Ordering::Relaxed), 2);
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_type_the_host_does_not_run_is_an_unknown_service() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Counter>().build()?.start();
    host.started().await?;
    let e = host
        .services::<Elsewhere>()
        .instance()
        .expect_err("Elsewhere is not registered");
    assert_eq!(e.kind(), ErrorKind::UnknownService);
    assert!(
        e.message().contains("services_instance::Elsewhere"),
        "names the type: {e}"
    );
    assert!(e.message().contains("services: Counter"), "lists them: {e}");
    koan::testing::stop(&host).await?;
    Ok(())
}
