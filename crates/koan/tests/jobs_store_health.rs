//! A job store that fails the runner shows in the host's health and readiness:
//! `/health` degraded with the store's words, not ready while it lasts, and well
//! again once the store answers. Before, health said `pass` throughout while every
//! accepted job waited (a corrupt file, a lock held elsewhere; found by a probe).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::store::{Twist, Twisted};
use koan::health::HealthStatus;
use koan::job::{ClaimRequest, Claimed, JobStore, MemoryJobStore};
use koan::testing::within;
use koan::transport::BoxFuture;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{HostHandle, ServiceContext};

/// The memory store, whose claims fail while `broken` is set.
#[derive(Default)]
struct Breakable {
    broken: AtomicBool,
}

impl Twist for Breakable {
    fn claim<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        request: ClaimRequest,
    ) -> BoxFuture<'a, koan::Result<Vec<Claimed>>> {
        if self.broken.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(koan::Error::new(
                koan::error::ErrorKind::StoreUnavailable,
                "database disk image is malformed",
            ))));
        }
        inner.claim(request)
    }
}

#[derive(Default)]
struct Work;

impl Service for Work {
    type Kind = Background;
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "double",
            |_svc: Arc<Self>, n: u32, _cx: ActionContext| async move { Ok::<_, BoxError>(n * 2) },
        );
    }
}

impl BackgroundService for Work {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Waits until the host's health says the store is failing (`true`) or not.
async fn store_check(host: &HostHandle, failing: bool) {
    within("the store's health", async {
        while host.health().await.jobs.is_some() != failing {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_shows_in_health_and_readiness() -> anyhow::Result<()> {
    let store = Twisted::new(Breakable::default());
    let host = koan::testing::host()
        .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
        .instance(Work)
        .build()?
        .start();
    host.started().await?;
    assert!(host.ready().await.ready);

    store.twist.broken.store(true, Ordering::SeqCst);
    store_check(&host, true).await;
    let health = host.health().await;
    assert_eq!(health.status, HealthStatus::Degraded);
    let report = health.jobs.expect("the store's report");
    let said = report.description.unwrap_or_default();
    assert!(
        said.contains("the job store is failing") && said.contains("malformed"),
        "{said}"
    );
    let ready = host.ready().await;
    assert!(!ready.ready, "{ready:?}");
    assert!(
        ready.reasons.iter().any(|r| r.contains("malformed")),
        "{ready:?}"
    );

    // The store answers again: so does the host.
    store.twist.broken.store(false, Ordering::SeqCst);
    store_check(&host, false).await;
    assert_eq!(host.health().await.status, HealthStatus::Healthy);
    assert!(host.ready().await.ready);
    koan::testing::stop(&host).await?;
    Ok(())
}
