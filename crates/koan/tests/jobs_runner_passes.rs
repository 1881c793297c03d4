//! The job runner's passes through a store that counts what it is asked: a host of
//! many services asks `claim` only of the services with due jobs when the store can
//! say which (`JobStore::live_services`), and every service when it cannot.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::store::{Twist, Twisted, Work};
use koan::HostHandle;
use koan::job::{ClaimRequest, Claimed, JobStore, LiveServices, MemoryJobStore};
use koan::testing::within;
use koan::transport::BoxFuture;

/// How many services the host runs.
const SERVICES: usize = 40;

/// The memory store, counting the claims it is asked for; it answers
/// `live_services` only when `live` is set (else the trait's default: it cannot tell).
struct Counting {
    claims: AtomicUsize,
    live: bool,
}

impl Twist for Counting {
    fn claim<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        request: ClaimRequest,
    ) -> BoxFuture<'a, koan::Result<Vec<Claimed>>> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        inner.claim(request)
    }
    fn live_services<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
    ) -> BoxFuture<'a, koan::Result<Option<LiveServices>>> {
        if self.live {
            inner.live_services()
        } else {
            Box::pin(std::future::ready(Ok(None)))
        }
    }
}

/// Starts `SERVICES` instances of `Work` on `store`.
async fn start(store: Arc<Twisted<Counting>>) -> anyhow::Result<HostHandle> {
    let mut b = koan::testing::host().job_store(store);
    for i in 0..SERVICES {
        b = b.instance_named(format!("w{i}"), Work);
    }
    let host = b.build()?.start();
    host.started().await?;
    Ok(host)
}

/// Runs one job on `w7`, then lets the runner make five more passes (one a second,
/// on the paused clock); returns the claims asked for after the job was done.
async fn claims_after_a_job(live: bool) -> anyhow::Result<usize> {
    let store = Twisted::new(Counting {
        claims: AtomicUsize::new(0),
        live,
    });
    let host = start(Arc::clone(&store)).await?;
    let ticket = host.service("w7").action("double", 21u32).enqueue().await?;
    let out = within("the job's outcome", ticket.outcome()).await?;
    assert_eq!(out.json()?, serde_json::json!(42), "the job ran on w7");
    let before = store.twist.claims.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let after = store.twist.claims.load(Ordering::SeqCst) - before;
    koan::testing::stop(&host).await?;
    Ok(after)
}

/// With a store that says which services have live jobs, an idle pass asks none.
#[tokio::test(start_paused = true)]
async fn a_pass_asks_only_the_services_with_live_jobs() -> anyhow::Result<()> {
    let claims = claims_after_a_job(true).await?;
    assert_eq!(
        claims, 0,
        "no job is left, so five passes over {SERVICES} services ask no claim"
    );
    Ok(())
}

/// A store that cannot tell (the trait's default) is asked of every service each
/// pass, as before, and its jobs still run.
#[tokio::test(start_paused = true)]
async fn a_store_that_cannot_tell_is_asked_of_every_service() -> anyhow::Result<()> {
    let claims = claims_after_a_job(false).await?;
    assert!(
        claims >= 5 * SERVICES,
        "five passes ask each of {SERVICES} services: {claims} claims"
    );
    Ok(())
}
