//! A durable job cancelled from another host while it runs: its record (in the
//! cluster's `koan_jobs` bucket) says `cancelled` at once, the worker stops the run
//! through its handler's token at its next progress check, and whoever awaits the
//! job is told it was cancelled.

use koan::transport::HostLink as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind, job::JobState,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{eventually, wait_for, within};

/// Holds each run until its token is cancelled.
struct Holder {
    started: Arc<AtomicU32>,
    stopped: Arc<AtomicBool>,
}

impl Service for Holder {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Holder").max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                svc.started.fetch_add(1, Ordering::SeqCst);
                cx.cancelled().await;
                svc.stopped.store(true, Ordering::SeqCst);
                Err::<(), BoxError>("stopped".into())
            },
        );
    }
}

impl BackgroundService for Holder {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_cancelled_from_another_host_stops_and_says_so() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.ack_wait = Duration::from_secs(1);
    let (started, stopped) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let worker = Holder {
        started: Arc::clone(&started),
        stopped: Arc::clone(&stopped),
    };
    let _w = Member::join(opts.clone(), |b| b.instance(worker)).await?;
    let member = Member::join(opts, |b| b).await?;
    let client = &member.host;
    eventually("the worker to be announced", || async {
        client.instances().await.is_ok_and(|l| {
            l.iter()
                .any(|i| i.services.iter().any(|s| s.name == "Holder"))
        })
    })
    .await?;
    let ticket = within(
        "enqueue",
        client.service("Holder").action("hold", ()).enqueue(),
    )
    .await??;
    let id = ticket.id().to_owned();

    // The record says running, attempt 1, on the worker's host.
    let running = wait_for("the record to say running", async || {
        let r = client.jobs().get(&id).await?;
        Ok((r.state == JobState::Running).then_some(r))
    })
    .await?;
    assert_eq!(running.attempts, 1, "{running:?}");
    assert_eq!(running.history.len(), 1, "{running:?}");

    let cancelled = within("cancel", client.jobs().cancel(&id)).await??;
    assert_eq!(cancelled.state, JobState::Cancelled);
    let again = within("cancel again", client.jobs().cancel(&id)).await?;
    assert_eq!(
        again.map_err(|e| e.kind()).err(),
        Some(ErrorKind::JobState),
        "a cancelled job cannot be cancelled again"
    );

    // The run is stopped through its token; the waiter hears it was cancelled.
    let outcome = within("the outcome", ticket.outcome()).await?;
    let e = outcome.err().map(|e| (e.kind(), e.to_string()));
    assert!(
        matches!(&e, Some((ErrorKind::JobState, m)) if m.contains("cancelled")),
        "{e:?}"
    );
    assert!(
        stopped.load(Ordering::SeqCst),
        "the handler saw its token cancelled"
    );
    assert_eq!(started.load(Ordering::SeqCst), 1, "run once");
    let after = within("the record", client.jobs().get(&id)).await??;
    assert_eq!(after.state, JobState::Cancelled, "{after:?}");
    Ok(())
}
