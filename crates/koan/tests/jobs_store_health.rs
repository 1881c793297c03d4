//! A job store that fails the runner shows in the host's health and readiness:
//! `/health` degraded with the store's words, not ready while it lasts, and well
//! again once the store answers. Before, health said `pass` throughout while every
//! accepted job waited (a corrupt file, a lock held elsewhere; found by a probe).
//! And a run's end that the store refuses for a moment is recorded once it
//! answers, not run again; a store that refuses enqueues shows in health too.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::store::{Twist, Twisted, Work};
use koan::HostHandle;
use koan::health::HealthStatus;
use koan::job::{Claim, ClaimRequest, Claimed, Finish, JobState, JobStore, MemoryJobStore};
use koan::testing::within;
use koan::transport::BoxFuture;

/// The memory store, whose claims fail while `broken` is set, whose pushes fail
/// while `full` is, and whose first `refusals` finishes fail.
#[derive(Default)]
struct Breakable {
    broken: AtomicBool,
    full: AtomicBool,
    refusals: AtomicU32,
}

impl Twist for Breakable {
    fn push<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        job: koan::job::NewJob,
    ) -> BoxFuture<'a, koan::Result<koan::job::Pushed>> {
        if self.full.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(koan::Error::new(
                koan::error::ErrorKind::StoreUnavailable,
                "database or disk is full",
            ))));
        }
        inner.push(job)
    }
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
    fn finish<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        claim: &Claim,
        how: Finish,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, koan::Result<bool>> {
        if self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Box::pin(std::future::ready(Err(koan::Error::new(
                koan::error::ErrorKind::StoreUnavailable,
                "database or disk is full",
            ))));
        }
        inner.finish(claim, how, now)
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
    let logs = common::logs::Logs::default();
    let _logs = logs.capture();
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
    // Ten seconds of failing passes: said once (each pass's warning, once a second
    // for each service, filled a full disk's log; found by a probe).
    koan::testing::pass(Duration::from_secs(10)).await;
    logs.assert_lines("the job store fails the runner", 1, "malformed");

    // The store answers again: so does the host, and the log says so.
    store.twist.broken.store(false, Ordering::SeqCst);
    store_check(&host, false).await;
    logs.assert_lines("the job store answers the runner again", 1, "INFO");
    assert_eq!(host.health().await.status, HealthStatus::Healthy);
    assert!(host.ready().await.ready);
    koan::testing::stop(&host).await?;
    Ok(())
}

/// A store that refuses enqueues (a full disk) while the runner's passes, with
/// nothing due, go well: health says so (for a minute after the last refusal), and
/// is well again once a job is stored. Before, it said `pass` while every enqueue
/// was a 503 (found by a probe).
#[tokio::test(start_paused = true)]
async fn a_store_that_refuses_enqueues_shows_in_health() -> anyhow::Result<()> {
    let store = Twisted::new(Breakable::default());
    let host = koan::testing::host()
        .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
        .instance(Work)
        .build()?
        .start();
    host.started().await?;
    store.twist.full.store(true, Ordering::SeqCst);
    let e = within(
        "an enqueue",
        host.service("Work").action("double", 2u32).enqueue(),
    )
    .await
    .expect_err("the store is full");
    assert_eq!(e.kind(), koan::error::ErrorKind::StoreUnavailable, "{e}");
    let health = host.health().await;
    assert_eq!(health.status, HealthStatus::Degraded);
    let said = health.jobs.and_then(|r| r.description).unwrap_or_default();
    assert!(
        said.contains("refused an enqueue") && said.contains("disk is full"),
        "{said}"
    );
    // Not in readiness: nothing would clear it once traffic is taken away.
    assert!(host.ready().await.ready);

    store.twist.full.store(false, Ordering::SeqCst);
    within(
        "an enqueue",
        host.service("Work").action("double", 2u32).enqueue(),
    )
    .await?;
    assert_eq!(host.health().await.status, HealthStatus::Healthy);
    assert!(host.ready().await.ready);
    koan::testing::stop(&host).await?;
    Ok(())
}

/// A run's end that the store refuses twice (a full disk for a moment) is recorded
/// at the third try: the job succeeds in one attempt. Before, it was left to lapse
/// and ran again, its history blaming its host (found by a probe).
#[tokio::test(start_paused = true)]
async fn a_run_whose_end_the_store_refuses_for_a_moment_is_not_run_again() -> anyhow::Result<()> {
    let store = Twisted::new(Breakable::default());
    store.twist.refusals.store(2, Ordering::SeqCst);
    let host = koan::testing::host()
        .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
        .instance(Work)
        .build()?
        .start();
    host.started().await?;
    let ticket = host.service("Work").action("double", 21).enqueue().await?;
    let id = ticket.id().to_owned();
    assert_eq!(ticket.outcome().await?.value::<u32>()?, 42);
    let job = host.jobs().get(&id).await?;
    assert_eq!(
        (job.state, job.attempts),
        (JobState::Succeeded, 1),
        "{job:?}"
    );
    assert_eq!(store.twist.refusals.load(Ordering::SeqCst), 0);
    koan::testing::stop(&host).await?;
    Ok(())
}
