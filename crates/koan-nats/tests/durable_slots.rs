//! A worker takes no more durable jobs than its service runs at once
//! (`max_concurrency`): while its runs are busy, the other jobs wait in the
//! stream, where any instance could take them — not in this host, stranded with
//! it should it die. The next job is asked for as soon as a run is over.

mod common;

use common::{Stopped, enqueue, holder_and_client, job_reaches};
use koan::job::JobState;
use koan_test_support::nats::Member;
use koan_test_support::nats::NatsServer;
use koan_test_support::{wait_for, within};

/// What the Holder's work consumer holds: (stored and not yet delivered,
/// delivered and not yet acknowledged).
async fn consumer_holds(member: &Member) -> anyhow::Result<(u64, usize)> {
    let js = async_nats::jetstream::new(member.nats.client().clone());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("KOAN_WORK")
        .await?
        .get_consumer("koan-work-holder")
        .await
        .map_err(|e| anyhow::anyhow!("the Holder's work consumer: {e}"))?;
    let info = consumer.info().await?;
    Ok((info.num_pending, info.num_ack_pending))
}

/// Waits (bounded) until the consumer counts `jobs` in all (waiting and
/// delivered: a job stored or ended a moment ago is counted a moment later);
/// what it holds then.
async fn consumer_counts(member: &Member, jobs: u64) -> anyhow::Result<(u64, usize)> {
    wait_for(
        &format!("the work consumer to count {jobs} jobs"),
        async || {
            let (waiting, delivered) = consumer_holds(member).await?;
            Ok((waiting + delivered as u64 == jobs).then_some((waiting, delivered)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_leaves_the_other_jobs_in_the_stream() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    // `Holder` runs one at a time; its `hold` lasts until its token fires.
    let (_w, member, runs) = holder_and_client(&server, Stopped::Fails).await?;
    let client = &member.host;
    let mut tickets = Vec::new();
    for _ in 0..3 {
        tickets.push(enqueue(client, "hold", ()).await?);
    }
    wait_for("a run to start", async || {
        Ok((runs.started() == 1).then_some(()))
    })
    .await?;

    // One delivered (the running one), two waiting in the stream — and it stays
    // so, read again and again while the run holds its slot.
    let held = consumer_counts(&member, 3).await?;
    assert_eq!(held, (2, 1), "(waiting in the stream, delivered)");
    for _ in 0..10 {
        assert_eq!(consumer_holds(&member).await?, (2, 1));
    }
    assert_eq!(runs.started(), 1, "no second run while the first holds");

    // The first job (the stream's oldest) is the running one; cancelled, its run
    // ends at the next progress check, its slot frees, and the next job is taken.
    let first = tickets.remove(0);
    job_reaches(client, first.id(), JobState::Running).await?;
    within("cancel", client.jobs().cancel(first.id())).await??;
    wait_for("the next run to start", async || {
        Ok((runs.started() == 2).then_some(()))
    })
    .await?;
    // The cancelled job's message ended.
    let held = consumer_counts(&member, 2).await?;
    assert_eq!(held, (1, 1), "(waiting in the stream, delivered)");
    let outcome = within("the cancelled job's outcome", first.outcome()).await?;
    assert!(outcome.is_err(), "a cancelled job does not succeed");
    Ok(())
}
