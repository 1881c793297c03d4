//! Jobs that wait or run longer than the cluster keeps a record nobody writes to
//! (`outcome_ttl`, here 6 s): their records are written again while they wait or
//! run — delayed far ahead, queued behind a long backlog, or running long — so
//! they are read by id and cancelled all along, and a cancel holds however long
//! before its job's time it was made.

mod common;

use std::time::Duration;

use common::{Stopped, enqueue, job_reaches, stream_holds};
use koan::job::JobState;
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{wait_for, within};

/// How many more jobs wait, delayed or queued behind the others: more than
/// their records' keeper keeps at once.
const BACKLOG: u32 = 80;

/// How long the test cluster's buckets keep an entry not written to.
const KEEP: Duration = Duration::from_secs(6);

/// A worker running a `Holder` and a client, with buckets that keep an entry
/// [`KEEP`]; and what the holder's runs do.
async fn cluster(server: &NatsServer) -> anyhow::Result<(Member, Member, common::Runs)> {
    let (holder, runs) = common::Holder::new(Stopped::Fails);
    let (w, client) =
        Member::worker_and_client(options(server), "Holder", |b| b.instance(holder)).await?;
    Ok((w, client, runs))
}

/// The options of the test cluster's members.
fn options(server: &NatsServer) -> koan_nats::NatsOptions {
    let mut opts = test_options(&server.url());
    opts.outcome_ttl = KEEP;
    opts.ack_wait = Duration::from_secs(3);
    opts
}

/// Waits until an entry written to the records' bucket now has been forgotten by
/// it: every record written before and not since is forgotten too.
async fn records_written_until_now_forgotten(m: &Member) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(m.nats.client().clone());
    let bucket = js.get_key_value("koan_jobs").await?;
    bucket.put("probe", "{}".into()).await?;
    wait_for("the probe to be forgotten", async || {
        Ok(bucket.get("probe").await?.is_none().then_some(()))
    })
    .await
}

/// Enqueues `busy` (0 ms) from `client`, due after `delay`.
async fn later(client: &Member, delay: Duration) -> anyhow::Result<String> {
    let job = client
        .host
        .service("Holder")
        .action("busy", 0u64)
        .delay(delay)
        .enqueue();
    Ok(within("enqueue", job).await??.id().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_due_long_after_its_record_would_be_forgotten_is_read_and_cancelled()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client, runs) = cluster(&server).await?;
    let id = later(&client, Duration::from_secs(600)).await?;
    // More, kept by the same instance at once.
    let mut others = Vec::new();
    for _ in 0..BACKLOG {
        others.push(later(&client, Duration::from_secs(600)).await?);
    }
    records_written_until_now_forgotten(&client).await?;

    let r = within("get", worker.host.jobs().get(&id)).await??;
    assert_eq!(r.state, JobState::Scheduled, "{r:?}");
    for other in &others {
        let r = within("get", worker.host.jobs().get(other)).await??;
        assert_eq!(r.state, JobState::Scheduled, "{r:?}");
    }
    let r = within("cancel", client.host.jobs().cancel(&id)).await??;
    assert_eq!(r.state, JobState::Cancelled, "{r:?}");
    // Dropped by the instance that moves the service's due jobs, at its next
    // turn, long before its time; never run.
    stream_holds(&client, "KOAN_DELAYED", u64::from(BACKLOG)).await?;
    assert_eq!(runs.started(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_cancelled_long_before_its_time_never_runs() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let (_worker, client, runs) = cluster(&server).await?;
    let request = client.host.service("Holder").action("busy", 0u64);
    let ticket = within(
        "enqueue",
        request.delay(KEEP + Duration::from_secs(4)).enqueue(),
    )
    .await??;
    let jobs = client.host.jobs();
    let id = ticket.id().to_owned();
    let r = within("cancel", jobs.cancel(&id)).await??;
    assert_eq!(r.state, JobState::Cancelled, "{r:?}");
    let told = within("the outcome", ticket.outcome()).await?;
    assert!(told.is_err_and(|e| koan::job::is_cancelled(&e)));
    // The cancel's marker and record, unless written again, are forgotten
    // before the job is due.
    records_written_until_now_forgotten(&client).await?;

    stream_holds(&client, "KOAN_DELAYED", 0).await?;
    stream_holds(&client, "KOAN_WORK", 0).await?;
    assert_eq!(runs.started(), 0, "a cancelled job ran");
    // Past the cluster's retention: unknown, also on the host that accepted it.
    let e = within("get", jobs.get(&id)).await?.expect_err("forgotten");
    assert_eq!(e.kind(), koan::error::ErrorKind::UnknownJob, "{e}");
    // While the cluster cannot be asked, that host answers what it heard:
    // cancelled, not dead.
    server.kill();
    let remembered = within("get", jobs.get(&id)).await??;
    assert_eq!(remembered.state, JobState::Cancelled, "{remembered:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_longer_than_its_record_would_be_kept_is_read_and_cancelled()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client, runs) = cluster(&server).await?;
    let ticket = enqueue(&client.host, "hold", ()).await?;
    let id = ticket.id().to_owned();
    job_reaches(&client.host, &id, JobState::Running).await?;
    records_written_until_now_forgotten(&client).await?;

    let r = within("get", worker.host.jobs().get(&id)).await??;
    assert_eq!(r.state, JobState::Running, "{r:?}");
    let r = within("cancel", client.host.jobs().cancel(&id)).await??;
    assert_eq!(r.state, JobState::Cancelled, "{r:?}");
    let e = within("the outcome", ticket.outcome())
        .await?
        .expect_err("cancelled");
    assert!(e.message().contains("cancelled"), "{e}");
    assert!(runs.stopped(), "the run was stopped by its token");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_behind_a_long_run_are_read_and_cancelled_and_their_cancels_hold()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client, runs) = cluster(&server).await?;
    let jobs = client.host.jobs();
    // Read on the host that did not enqueue them, as an operator anywhere would.
    let read = worker.host.jobs();
    // The holder runs one job at a time: the others wait in the work queue,
    // delivered to no one.
    let holding = enqueue(&client.host, "hold", ()).await?;
    job_reaches(&client.host, holding.id(), JobState::Running).await?;
    let waiting = enqueue(&client.host, "busy", 0u64).await?;
    let cancelled_early = enqueue(&client.host, "busy", 0u64).await?;
    within("cancel", jobs.cancel(cancelled_early.id())).await??;
    // A backlog behind them, longer than one turn of the keeper keeps at once.
    let mut backlog = Vec::new();
    for _ in 0..BACKLOG {
        backlog.push(enqueue(&client.host, "busy", 0u64).await?);
    }
    // Unless written again, their records and the early cancel's marker are
    // forgotten now.
    records_written_until_now_forgotten(&client).await?;

    let r = within("get", read.get(waiting.id())).await??;
    assert_eq!(r.state, JobState::Queued, "{r:?}");
    let r = within("cancel", jobs.cancel(waiting.id())).await??;
    assert_eq!(r.state, JobState::Cancelled, "{r:?}");
    let r = within("get", read.get(cancelled_early.id())).await??;
    assert_eq!(r.state, JobState::Cancelled, "{r:?}");
    for ticket in &backlog {
        let r = within("get", read.get(ticket.id())).await??;
        assert_eq!(r.state, JobState::Queued, "{r:?}");
    }
    // The slot freed, the cancelled jobs are dropped unrun, and the backlog runs.
    within("cancel", jobs.cancel(holding.id())).await??;
    for ticket in [waiting, cancelled_early] {
        let e = within("the outcome", ticket.outcome())
            .await?
            .expect_err("cancelled");
        assert!(e.message().contains("cancelled"), "{e}");
    }
    for ticket in backlog {
        within("the outcome", ticket.outcome()).await??;
    }
    stream_holds(&client, "KOAN_WORK", 0).await?;
    assert_eq!(
        runs.started(),
        1 + BACKLOG,
        "only the holding job and the backlog ran"
    );
    Ok(())
}

/// With no instance of their service running, for longer than a record not
/// written to is kept, its jobs' records are kept by another host: a queued
/// job cancelled then never runs, and each is read by id all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_service_no_instance_runs_keep_their_records_and_cancels() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client, _) = cluster(&server).await?;
    // Reads on a host that enqueued nothing, as an operator anywhere would.
    let reader = Member::join(options(&server), |b| b).await?;
    let jobs = client.host.jobs();
    let delayed = later(&client, Duration::from_secs(600)).await?;
    worker.stop().await?;
    let queued = enqueue(&client.host, "busy", 0u64).await?;
    let cancelled = enqueue(&client.host, "busy", 0u64).await?;
    within("cancel", jobs.cancel(cancelled.id())).await??;
    records_written_until_now_forgotten(&client).await?;

    let read = reader.host.jobs();
    for (id, state) in [
        (cancelled.id(), JobState::Cancelled),
        (delayed.as_str(), JobState::Scheduled),
        (queued.id(), JobState::Queued),
    ] {
        let r = within("get", read.get(id)).await??;
        assert_eq!(r.state, state, "{r:?}");
    }
    // An instance comes back: the cancelled job is dropped unrun, the queued one
    // runs, and the other waits for its time.
    let (holder, runs) = common::Holder::new(Stopped::Fails);
    let _back = Member::join(options(&server), |b| b.instance(holder)).await?;
    within("the outcome", queued.outcome()).await??;
    let e = within("the outcome", cancelled.outcome())
        .await?
        .expect_err("cancelled");
    assert!(e.to_string().contains("cancelled"), "{e}");
    stream_holds(&client, "KOAN_WORK", 0).await?;
    stream_holds(&client, "KOAN_DELAYED", 1).await?;
    let r = within("get", read.get(&delayed)).await??;
    assert_eq!(r.state, JobState::Scheduled, "{r:?}");
    assert_eq!(runs.started(), 1, "only the queued job ran");
    Ok(())
}
