//! Durable work and a stopping host: jobs that arrive while the only instance of a
//! service stops are not dead-lettered nor answered `ShuttingDown` — they wait in the
//! stream and the next instance does them. A job whose handler ignores its token is
//! released when its host has stopped, not left running on a host that is gone.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{job_reaches, stream_holds};
use koan::host::HostBuilder;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, job::JobState,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::within;

#[derive(Default)]
struct Worker;

impl Service for Worker {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Worker")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "work",
            |_s: Arc<Self>, n: u32, _cx: ActionContext| async move { Ok::<_, BoxError>(n * 10) },
        );
    }
}

impl BackgroundService for Worker {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Takes a while to stop, so its host is "stopping" for that long.
#[derive(Default)]
struct SlowStop;

impl Service for SlowStop {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("SlowStop")
    }
}

impl BackgroundService for SlowStop {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_arriving_while_the_only_instance_stops_wait_for_the_next() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let join =
        |build: fn(HostBuilder) -> HostBuilder| Member::join(test_options(&server.url()), build);
    let mut a = join(|b| b.service::<Worker>().service::<SlowStop>()).await?;
    let b = join(|b| b).await?;
    let first = b
        .host
        .service("Worker")
        .action("work", 1u32)
        .enqueue()
        .await?;
    assert_eq!(
        within("outcome", first.outcome()).await??.value::<u32>()?,
        10
    );

    // A is asked to stop; its node stays attached while SlowStop takes its time.
    a.host.shutdown();
    let mut tickets = Vec::new();
    for n in 2..=6u32 {
        tickets.push(b.host.service("Worker").action("work", n).enqueue().await?);
    }
    a.host.wait().await;
    a.node.take().expect("attached").detach().await;

    // Nothing was dead-lettered for the shutdown.
    let js = async_nats::jetstream::new(b.nats.client().clone());
    let mut dlq = js.get_stream("KOAN_DLQ").await?;
    assert_eq!(
        dlq.info().await?.state.messages,
        0,
        "no dead letters for a stopping host"
    );

    // The next instance does them all.
    let c = join(|b| b.service::<Worker>()).await?;
    for (t, n) in tickets.into_iter().zip(2..=6u32) {
        let out = within("outcome after restart", t.outcome()).await??;
        assert_eq!(out.value::<u32>()?, n * 10);
    }
    c.stop().await?;
    b.stop().await
}

/// Its `stall` never ends, not even at its token.
#[derive(Default)]
struct Stubborn;

impl Service for Stubborn {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Stubborn")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "stall",
            |_s: Arc<Self>, (): (), _cx: ActionContext| async move {
                std::future::pending::<()>().await;
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Stubborn {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Joins A (hosting `Stubborn`, grace 300 ms) and a client B; B enqueues `stall`,
/// which runs on A; then A stops, its grace ending with the handler still running.
/// B and the job's ticket.
async fn stall_then_stop_its_host(
    opts: &koan_nats::NatsOptions,
) -> anyhow::Result<(Member, koan::job::JobTicket)> {
    let a = Member::join(opts.clone(), |b| {
        b.service::<Stubborn>()
            .shutdown_grace(Duration::from_millis(300))
    })
    .await?;
    let b = Member::join(opts.clone(), |b| b).await?;
    let ticket = within(
        "enqueue",
        b.host.service("Stubborn").action("stall", ()).enqueue(),
    )
    .await??;
    job_reaches(&b.host, ticket.id(), JobState::Running).await?;
    a.host.shutdown();
    within("A to stop", a.host.wait()).await?;
    Ok((b, ticket))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_handler_ignores_its_token_is_released_when_the_host_has_stopped()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let opts = test_options(&server.url());
    // A stops; its grace ends with the handler still running: the job is dropped
    // there and released, not left `running` on a host that is gone.
    let (b, ticket) = stall_then_stop_its_host(&opts).await?;
    let id = ticket.id().to_owned();
    let released = job_reaches(&b.host, &id, JobState::Queued).await?;
    assert_eq!(
        released.attempts, 0,
        "a release is not an attempt: {released:?}"
    );
    Ok(())
}

/// Answers `stall` at once: another build of `Stubborn`'s service.
#[derive(Default)]
struct Finisher;

impl Service for Finisher {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Stubborn")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "stall",
            |_s: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>(7u32) },
        );
    }
}

impl BackgroundService for Finisher {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A stop is not a run: a job released by a stopping host at its last delivery
/// (`max_deliver` 1 here), which JetStream would never deliver again, is published
/// anew and runs on the next instance — rolling restarts do not use up a long
/// job's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_released_at_its_last_delivery_still_runs_elsewhere() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.max_deliver = 1;
    let (b, ticket) = stall_then_stop_its_host(&opts).await?;
    let c = Member::join(opts, |b| b.service::<Finisher>()).await?;
    let out = within("the job's outcome", ticket.outcome()).await??;
    assert_eq!(out.value::<u32>()?, 7, "run on the next instance");
    // no message left behind.
    stream_holds(&b, "KOAN_WORK", 0).await?;
    // not dead-lettered.
    stream_holds(&b, "KOAN_DLQ", 0).await?;
    c.stop().await?;
    b.stop().await
}

/// A stop is not a failure either: a handler that ends at its token with an error
/// when its host stops (its work not done) hands the job back, at its last
/// delivery too, rather than use up an attempt and end it dead with its record
/// `running` — rolling restarts of well-behaved handlers do not kill their jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_handler_fails_at_its_hosts_stop_runs_on_the_next_instance()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.max_deliver = 1;
    let (holder, runs) = common::Holder::new(common::Stopped::Fails);
    let (a, client) =
        Member::worker_and_client(opts.clone(), "Holder", |b| b.instance(holder)).await?;
    let ticket = common::enqueue(&client.host, "hold", ()).await?;
    let id = ticket.id().to_owned();
    koan_test_support::wait_for("the job to run", async || {
        Ok((runs.started() == 1).then_some(()))
    })
    .await?;
    a.stop().await?;
    assert!(runs.stopped(), "the handler saw its token");

    let (mut next, next_runs) = common::Holder::new(common::Stopped::Fails);
    next.holds = false;
    let b = Member::join(opts, |b| b.instance(next)).await?;
    within("the job's outcome", ticket.outcome()).await??;
    assert_eq!(next_runs.started(), 1, "run again on the next instance");
    let done = job_reaches(&client.host, &id, JobState::Succeeded).await?;
    assert_eq!(done.attempts, 1, "a stop is not an attempt: {done:?}");
    stream_holds(&b, "KOAN_DLQ", 0).await?;
    b.stop().await
}

/// A stop is not an attempt, however often it comes (`max_deliver` 5 here): a job
/// whose host is stopped twice mid-run, then run to its end, has used one attempt,
/// and its history keeps both stopped runs, ended `shutting_down`. Before, each
/// stop was a delivery and so an attempt ("attempts 4/3"), and the history lost
/// the stopped runs (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_of_its_hosts_use_up_no_attempt_and_stay_in_the_history() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let opts = test_options(&server.url());
    let (holder, runs) = common::Holder::new(common::Stopped::Fails);
    let (mut a, client) =
        Member::worker_and_client(opts.clone(), "Holder", |b| b.instance(holder)).await?;
    let ticket = common::enqueue(&client.host, "hold", ()).await?;
    let id = ticket.id().to_owned();
    let mut started = 1;
    koan_test_support::wait_for("the job to run", async || {
        Ok((runs.started() == 1).then_some(()))
    })
    .await?;
    for _ in 0..1 {
        a.stop().await?;
        let (again, again_runs) = common::Holder::new(common::Stopped::Fails);
        a = Member::join(opts.clone(), |b| b.instance(again)).await?;
        koan_test_support::wait_for("the job to run again", async || {
            Ok((again_runs.started() == 1).then_some(()))
        })
        .await?;
        started += 1;
    }
    a.stop().await?;
    let (mut last, last_runs) = common::Holder::new(common::Stopped::Fails);
    last.holds = false;
    let b = Member::join(opts, |b| b.instance(last)).await?;
    within("the job's outcome", ticket.outcome()).await??;
    assert_eq!((started, last_runs.started()), (2, 1));
    let done = job_reaches(&client.host, &id, JobState::Succeeded).await?;
    assert_eq!(done.attempts, 1, "stops are not attempts: {done:?}");
    let stopped = done
        .history
        .iter()
        .filter(|h| h.error.as_ref().is_some_and(|e| e.error == "shutting_down"))
        .count();
    assert_eq!((done.history.len(), stopped), (3, 2), "{:?}", done.history);
    assert!(
        done.history.iter().all(|h| h.attempt == 1),
        "{:?}",
        done.history
    );
    b.stop().await
}
