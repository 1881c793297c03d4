//! A startup service cut short is told through its token and given time to end,
//! as every other service is: the host's grace when the host stops, an action's
//! grace past its own timeout. It was dropped at once, its token cancelled only
//! after: a migration stopped by a SIGTERM could not roll back, and the log said
//! nothing (found by a probe).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use koan::host::HostExit;
use koan::testing::{self, within};
use koan::{BoxError, Service, ServiceContext, ServiceOptions, Startup, StartupService};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A migration with a timeout of `TIMEOUT` seconds: waits for its token (or for
/// ever, when `deaf`), then takes half a second to roll back and says it did.
struct Migration<const TIMEOUT: u64> {
    deaf: bool,
    running: Arc<Notify>,
    rolled_back: Arc<AtomicBool>,
}

impl<const TIMEOUT: u64> Migration<TIMEOUT> {
    fn new(deaf: bool) -> Self {
        Migration {
            deaf,
            running: Arc::default(),
            rolled_back: Arc::default(),
        }
    }
}

impl<const TIMEOUT: u64> Service for Migration<TIMEOUT> {
    type Kind = Startup;

    fn options() -> ServiceOptions {
        ServiceOptions::named("migration").timeout(Duration::from_secs(TIMEOUT))
    }
}

impl<const TIMEOUT: u64> StartupService for Migration<TIMEOUT> {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.running.notify_one();
        if self.deaf {
            std::future::pending::<()>().await;
        }
        cx.cancelled().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.rolled_back.store(true, Ordering::SeqCst);
        Err("stopped; rolled back".into())
    }
}

/// A host of `migration` with a grace of 10 s, started.
fn start<const TIMEOUT: u64>(migration: Migration<TIMEOUT>) -> anyhow::Result<koan::HostHandle> {
    let host = testing::host()
        .shutdown_grace(Duration::from_secs(10))
        .instance(migration)
        .build()?
        .start();
    Ok(host)
}

#[tokio::test(start_paused = true)]
async fn a_startup_service_stopped_by_the_host_is_told_and_may_roll_back() -> anyhow::Result<()> {
    let migration = Migration::<3600>::new(false);
    let (running, rolled_back) = (
        Arc::clone(&migration.running),
        Arc::clone(&migration.rolled_back),
    );
    let host = start(migration)?;
    within("the migration to run", running.notified()).await;

    host.shutdown();
    let exit = within("the host to stop", host.wait()).await;
    assert!(
        matches!(exit, HostExit::Stopped),
        "a stop asked for: {exit:?}"
    );
    assert!(
        rolled_back.load(Ordering::SeqCst),
        "its roll-back ran to its end"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_startup_service_that_ignores_its_token_is_dropped_after_the_grace() -> anyhow::Result<()>
{
    let migration = Migration::<3600>::new(true);
    let (running, rolled_back) = (
        Arc::clone(&migration.running),
        Arc::clone(&migration.rolled_back),
    );
    let host = start(migration)?;
    within("the migration to run", running.notified()).await;

    let t0 = Instant::now();
    host.shutdown();
    within("the host to stop", host.wait()).await;
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(10),
        "the host's grace, no more"
    );
    assert!(!rolled_back.load(Ordering::SeqCst));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_startup_service_past_its_timeout_is_told_and_may_roll_back() -> anyhow::Result<()> {
    let migration = Migration::<2>::new(false);
    let rolled_back = Arc::clone(&migration.rolled_back);
    let host = start(migration)?;
    let e = host
        .started()
        .await
        .expect_err("its timeout fails the startup");
    assert!(e.message().contains("timeout of 2s"), "{e}");
    within("the host to stop", host.wait()).await;
    // Its roll-back takes half a second: within the action grace (1 s by default).
    assert!(
        rolled_back.load(Ordering::SeqCst),
        "its roll-back ran to its end"
    );
    Ok(())
}
