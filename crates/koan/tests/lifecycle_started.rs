//! `HostHandle::started()` waits on the host's notifications, not on a timer: on a
//! paused clock, waiting for startup moves time only as far as startup itself does.

use std::time::Duration;

use koan::{BoxError, Service, ServiceContext, ServiceOptions, Startup, StartupService};
use tokio::time::Instant;

/// A startup service whose run takes `MS` milliseconds (none at all for 0).
#[derive(Default)]
struct WarmUp<const MS: u64>;

impl<const MS: u64> Service for WarmUp<MS> {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named("WarmUp")
    }
}

impl<const MS: u64> StartupService for WarmUp<MS> {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        if MS > 0 {
            tokio::time::sleep(Duration::from_millis(MS)).await;
        }
        Ok(())
    }
}

/// How far the clock moved while waiting for a host running `WarmUp::<MS>` to start.
async fn startup_took<const MS: u64>() -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let host = koan::testing::host()
        .service::<WarmUp<MS>>()
        .build()?
        .start();
    host.started().await?;
    let took = t0.elapsed();
    assert!(host.is_started());
    koan::testing::stop(&host).await?;
    Ok(took)
}

#[tokio::test(start_paused = true)]
async fn waiting_for_an_instant_startup_does_not_move_the_clock() -> anyhow::Result<()> {
    assert_eq!(startup_took::<0>().await?, Duration::ZERO);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn waiting_for_startup_moves_the_clock_exactly_as_far_as_startup() -> anyhow::Result<()> {
    let took = startup_took::<1234>().await?;
    assert_eq!(took, Duration::from_millis(1234));
    Ok(())
}
