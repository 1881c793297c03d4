//! A durable job cancelled from another host while it runs: its record (in the
//! cluster's `koan_jobs` bucket) says `cancelled` at once, the worker stops the run
//! through its handler's token at its next progress check, and whoever awaits the
//! job is told it was cancelled.

mod common;

use common::{Stopped, enqueue, holder_and_client};
use koan::{error::ErrorKind, job::JobState};
use koan_test_support::nats::NatsServer;
use koan_test_support::{wait_for, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_cancelled_from_another_host_stops_and_says_so() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    // Its run fails when stopped, as a run cut short would.
    let (_w, member, runs) = holder_and_client(&server, Stopped::Fails).await?;
    let client = &member.host;
    let ticket = enqueue(client, "hold", ()).await?;
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
    assert!(runs.stopped(), "the handler saw its token cancelled");
    assert_eq!(runs.started(), 1, "run once");
    let after = within("the record", client.jobs().get(&id)).await??;
    assert_eq!(after.state, JobState::Cancelled, "{after:?}");
    Ok(())
}

/// A job cancelled while it waits in JetStream behind a run, on a worker that is
/// up and follows the cluster's cancels: the worker takes it without reading its
/// record (`cancels.rs`), so it is the cancel's marker that keeps it from
/// running. It is dropped unrun and its waiter told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_it_waits_behind_a_run_is_dropped_unrun() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, runs) = holder_and_client(&server, Stopped::Succeeds).await?;
    let client = &member.host;
    // The first job holds the worker's one slot; the second waits in the stream.
    let first = enqueue(client, "hold", ()).await?;
    common::job_reaches(client, first.id(), JobState::Running).await?;
    let second = enqueue(client, "hold", ()).await?;
    let id = second.id().to_owned();
    let cancelled = within("cancel", client.jobs().cancel(&id)).await??;
    assert_eq!(cancelled.state, JobState::Cancelled);

    // The first ends (cancelled too): the slot is free and the second is taken.
    within("cancel the first", client.jobs().cancel(first.id())).await??;
    let outcome = within("the second's outcome", second.outcome()).await?;
    let e = outcome.err().map(|e| (e.kind(), e.to_string()));
    assert!(
        matches!(&e, Some((ErrorKind::JobState, m)) if m.contains("cancelled")),
        "{e:?}"
    );
    assert_eq!(runs.started(), 1, "only the first job ran");
    let after = within("the record", client.jobs().get(&id)).await??;
    assert_eq!(after.state, JobState::Cancelled, "{after:?}");
    Ok(())
}
