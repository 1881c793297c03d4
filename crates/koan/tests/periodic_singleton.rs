//! Periodic services and the cluster-singleton lease (a tick runs only where the
//! lease is held; a service that is no singleton never asks), and with the same
//! counting service: a stop that wakes an idle driver at once, and a trigger
//! enqueued as a job.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use koan::host::HostBuilder;
use koan::testing;
use koan::{
    BoxError, HostHandle, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions,
    status::ServiceState, transport::RemoteCall, transport::Transport,
};
use tokio::time::Instant;

/// A transport that holds (or not) every singleton lease; it reaches no other host.
#[derive(Debug)]
struct Lease {
    held: bool,
    asked: AtomicUsize,
}

impl Transport for Lease {
    fn call(
        &self,
        call: RemoteCall,
    ) -> koan::transport::BoxFuture<'_, koan::Result<serde_json::Value>> {
        Box::pin(async move {
            Err(koan::Error::new(
                koan::error::ErrorKind::ServiceUnavailable,
                format!("no other host runs `{}`", call.service),
            ))
        })
    }

    fn may_run(&self, _service: &str) -> koan::transport::BoxFuture<'_, bool> {
        let asked = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let held = self.held;
        Box::pin(async move {
            // A driver whose skipped ticks never move on (a broken `next_due`) asks
            // again at the same instant forever without awaiting anything else: the
            // answer stalls after 100 asks, so the driver waits instead of spinning,
            // the test's hand-moved clock goes on and it fails on the count.
            if asked > 100 {
                std::future::pending::<()>().await;
            }
            held
        })
    }
}

/// Every 10 s; counts its ticks. `SINGLETON` says whether it needs the lease.
struct Tally<const SINGLETON: bool> {
    ticks: Arc<AtomicUsize>,
}

impl<const SINGLETON: bool> Service for Tally<SINGLETON> {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("tally")
            .every(Duration::from_secs(10))
            .singleton(SINGLETON)
    }
}

impl<const SINGLETON: bool> PeriodicService for Tally<SINGLETON> {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        // A runaway schedule (a tick at every instant) stalls here instead of spinning
        // the runtime, so the paused clock moves on and the test fails on the count.
        if self.ticks.fetch_add(1, Ordering::SeqCst) >= 100 {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

impl<const SINGLETON: bool> Tally<SINGLETON> {
    /// Starts a new `Tally` on the host `host` builds; returns the host and the count
    /// of ticks.
    async fn start(host: HostBuilder) -> anyhow::Result<(HostHandle, Arc<AtomicUsize>)> {
        let ticks = Arc::new(AtomicUsize::new(0));
        let tally = Tally::<SINGLETON> {
            ticks: Arc::clone(&ticks),
        };
        let host = host.instance(tally).build()?.start();
        host.started().await?;
        Ok((host, ticks))
    }
}

/// Ticks of a `Tally` over one minute under a transport that does or does not hold
/// the lease, and how often the transport was asked.
async fn tally_for_a_minute<const SINGLETON: bool>(held: bool) -> anyhow::Result<(usize, usize)> {
    let lease = Arc::new(Lease {
        held,
        asked: AtomicUsize::new(0),
    });
    let transport = Arc::clone(&lease) as Arc<dyn Transport>;
    let (host, ticks) = Tally::<SINGLETON>::start(testing::host().transport(transport)).await?;
    // Just past the tick at 60 s, moved by hand: a runaway driver that never lets the
    // runtime idle cannot hold back a paused clock that is advanced explicitly.
    for _ in 0..121 {
        testing::advance(Duration::from_millis(500)).await;
    }
    let status = host.status("tally")?;
    let started = status.started_at.expect("a started service");
    let next = status.next_run.expect("a next run");
    assert!(
        next > started + chrono::Duration::seconds(60),
        "the next run ({next}) moves on with the schedule (started {started})"
    );
    testing::stop(&host).await?;
    Ok((
        ticks.load(Ordering::SeqCst),
        lease.asked.load(Ordering::SeqCst),
    ))
}

#[tokio::test(start_paused = true)]
async fn a_singleton_without_the_lease_skips_its_ticks() -> anyhow::Result<()> {
    let (ticks, asked) = tally_for_a_minute::<true>(false).await?;
    assert_eq!(ticks, 0, "another host holds the lease: it runs the ticks");
    assert_eq!(asked, 6, "the lease is checked at each tick");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_singleton_with_the_lease_runs_its_ticks() -> anyhow::Result<()> {
    let (ticks, asked) = tally_for_a_minute::<true>(true).await?;
    assert_eq!((ticks, asked), (6, 6));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_service_that_is_no_singleton_never_asks_for_the_lease() -> anyhow::Result<()> {
    let (ticks, asked) = tally_for_a_minute::<false>(false).await?;
    assert_eq!((ticks, asked), (6, 0));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_stopping_host_wakes_an_idle_driver_at_once() -> anyhow::Result<()> {
    let (host, ticks) = Tally::<false>::start(testing::host()).await?;
    testing::wait_state(&host, "tally", ServiceState::Idle).await;

    // The driver sleeps until its tick at 10 s, past the 5 s grace: only its wake-up
    // lets it see the stop.
    let t0 = Instant::now();
    testing::stop(&host).await?;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "stopping took {:?}: the driver was aborted at the end of the grace",
        t0.elapsed()
    );
    assert_eq!(
        host.status("tally")?.next_run,
        None,
        "the driver ended itself"
    );
    assert_eq!(ticks.load(Ordering::SeqCst), 0);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_trigger_enqueued_as_a_job_is_stored_under_its_action_name() -> anyhow::Result<()> {
    let (host, ticks) = Tally::<false>::start(testing::host()).await?;
    let ticket = host
        .service("tally")
        .action("trigger", serde_json::Value::Null)
        .enqueue()
        .await?;
    let record = testing::wait_for_job(&host, ticket.id(), koan::job::JobState::Succeeded).await;
    assert_eq!(record.action, "trigger");
    assert_eq!(ticks.load(Ordering::SeqCst), 1);
    testing::stop(&host).await?;
    Ok(())
}
