//! `HostHandle::started()` waits on the host's notifications, not on a timer: on a
//! paused clock, waiting for startup moves time only as far as startup itself does.

use std::time::Duration;

use koan::{BoxError, Service, ServiceContext, ServiceOptions, Startup, StartupService};
use tokio::time::Instant;

#[derive(Default)]
struct Instant0;

impl Service for Instant0 {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Instant0")
    }
}

impl StartupService for Instant0 {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[derive(Default)]
struct WarmUp;

impl Service for WarmUp {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named("WarmUp")
    }
}

impl StartupService for WarmUp {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(1234)).await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_for_an_instant_startup_does_not_move_the_clock() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let host = koan::testing::host().service::<Instant0>().build()?.start();
    host.started().await?;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(host.is_started());
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn waiting_for_startup_moves_the_clock_exactly_as_far_as_startup() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let host = koan::testing::host().service::<WarmUp>().build()?.start();
    host.started().await?;
    assert_eq!(t0.elapsed(), Duration::from_millis(1234));
    koan::testing::stop(&host).await?;
    Ok(())
}
