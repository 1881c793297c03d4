//! Durable jobs cancelled from another host. One that runs: its record (in the
//! cluster's `koan_jobs` bucket) says `cancelled` at once, the worker stops the run
//! through its handler's token when it hears of the cancel (or at its next progress
//! check), and whoever awaits the
//! job is told it was cancelled. One that waits in JetStream, on a worker that
//! follows the cluster's cancels (`koan_cancels`), before and after the broker
//! restarted, and when its record cannot be read: dropped unrun.

mod common;

use std::time::Duration;

use common::{Holder, Runs, Stopped, enqueue, holder_and_client};
use koan::HostHandle;
use koan::job::JobTicket;
use koan::{error::ErrorKind, job::JobState};
use koan_nats::ConnectionState;
use koan_test_support::nats::{Member, NatsServer, test_options};
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
    cancelled_behind_a_run(&member.host, &runs, 1).await
}

/// The same after the broker restarted (file storage) under a worker that had
/// followed the cancels: its watch is begun anew once the connection is back,
/// and trusted only once caught up; a cancel written after the restart still
/// keeps the job from running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_a_job_cancelled_while_it_waits_is_dropped_unrun()
-> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.memory_storage = false;
    opts.ack_wait = Duration::from_secs(1);
    let (holder, runs) = Holder::new(Stopped::Succeeds);
    let (w, member) = Member::worker_and_client(opts, "Holder", |b| b.instance(holder)).await?;
    // A job run: the worker follows the cancels from its first job on.
    let warm = enqueue(&member.host, "busy", 0u64).await?;
    within("the first job", warm.outcome()).await??;

    server.restart()?;
    for m in [&w, &member] {
        wait_for("the connection to be back", async || {
            Ok((m.nats.connection_state() == ConnectionState::Connected).then_some(()))
        })
        .await?;
    }
    cancelled_behind_a_run(&member.host, &runs, 2).await
}

/// A job cancelled while it waits, whose record then cannot be read (its
/// entry overwritten with bytes that are not a record): the worker, which heard
/// of the cancel, does not run it on a guess; it is dropped as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_whose_record_cannot_be_read_is_not_run() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, runs) = holder_and_client(&server, Stopped::Succeeds).await?;
    let (first, second) = cancel_behind_a_run(&member.host).await?;
    let js = async_nats::jetstream::new(member.nats.client().clone());
    let records = js.get_key_value("koan_jobs").await?;
    records.put(second.id(), "not a record".into()).await?;
    free_the_slot_and_see_it_dropped(&member.host, &runs, 1, &first, second).await
}

/// [`cancel_behind_a_run`], then [`free_the_slot_and_see_it_dropped`]: the
/// second job's record says `cancelled` after.
async fn cancelled_behind_a_run(
    client: &HostHandle,
    runs: &Runs,
    started: u32,
) -> anyhow::Result<()> {
    let (first, second) = cancel_behind_a_run(client).await?;
    let id = second.id().to_owned();
    free_the_slot_and_see_it_dropped(client, runs, started, &first, second).await?;
    let after = within("the record", client.jobs().get(&id)).await??;
    assert_eq!(after.state, JobState::Cancelled, "{after:?}");
    Ok(())
}

/// Holds `Holder`'s one slot with a job and cancels a second that waits behind
/// it: the two jobs' tickets.
async fn cancel_behind_a_run(client: &HostHandle) -> anyhow::Result<(JobTicket, JobTicket)> {
    let first = enqueue(client, "hold", ()).await?;
    common::job_reaches(client, first.id(), JobState::Running).await?;
    let second = enqueue(client, "hold", ()).await?;
    let cancelled = within("cancel", client.jobs().cancel(second.id())).await??;
    assert_eq!(cancelled.state, JobState::Cancelled);
    Ok((first, second))
}

/// Frees the slot (the first job cancelled too) and checks the second was
/// dropped unrun: `started` runs in all, its waiter told it was cancelled.
async fn free_the_slot_and_see_it_dropped(
    client: &HostHandle,
    runs: &Runs,
    started: u32,
    first: &JobTicket,
    second: JobTicket,
) -> anyhow::Result<()> {
    within("cancel the first", client.jobs().cancel(first.id())).await??;
    let outcome = within("the second's outcome", second.outcome()).await?;
    let e = outcome.err().map(|e| (e.kind(), e.to_string()));
    assert!(
        matches!(&e, Some((ErrorKind::JobState, m)) if m.contains("cancelled")),
        "{e:?}"
    );
    assert_eq!(runs.started(), started, "the second job did not run");
    Ok(())
}

/// An id no job can have (no key of the cluster's records can be made of it) is
/// an unknown job to every operation: `404`, not `503` as if the broker were down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_no_job_can_have_is_unknown_to_every_operation() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, _) = holder_and_client(&server, Stopped::Fails).await?;
    let jobs = member.host.jobs();
    for id in ["..", ".a", "a.", "a..b", ".", "a*b.>"] {
        let kinds = [
            jobs.get(id).await.map(drop),
            jobs.cancel(id).await.map(drop),
            jobs.retry(id).await.map(drop),
            jobs.delete(id).await,
        ]
        .map(|r| r.map_err(|e| (e.kind(), e.message().to_owned())));
        for r in kinds {
            let (kind, why) = r.expect_err("no such job");
            assert_eq!(kind, ErrorKind::UnknownJob, "{id:?}: {why}");
        }
    }
    Ok(())
}

/// A running job cancelled from another host is stopped when its worker hears of
/// the cancel through the cluster's cancels it follows, not at its next progress
/// check: with `ack_wait` 120 s that check comes 40 s in, past this test's
/// patience.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_stopped_when_its_worker_hears_of_the_cancel() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.ack_wait = Duration::from_secs(120);
    let (holder, runs) = Holder::new(Stopped::Fails);
    let (_w, member) = Member::worker_and_client(opts, "Holder", |b| b.instance(holder)).await?;
    let client = &member.host;
    // A job first: the worker follows the cluster's cancels from then on.
    let first = enqueue(client, "busy", 0u64).await?;
    within("the first job", first.outcome()).await??;
    let ticket = enqueue(client, "hold", ()).await?;
    let id = ticket.id().to_owned();
    wait_for("the job to run", async || {
        Ok((runs.started() == 2).then_some(()))
    })
    .await?;

    let cancelled = within("cancel", client.jobs().cancel(&id)).await??;
    assert_eq!(cancelled.state, JobState::Cancelled);
    let e = within("the outcome", ticket.outcome())
        .await?
        .expect_err("cancelled");
    assert!(koan::job::is_cancelled(&e), "{e}");
    assert!(runs.stopped(), "its handler saw its token");
    Ok(())
}

/// A cancel reaching a job whose run has ended (its outcome stored, the commit
/// point) before its record says so answers that the job ended, and leaves it:
/// it answered "cancelled", and the record lost the result (as in the host's
/// own store; found by a probe there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_the_outcome_is_stored_says_the_job_ended() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, _runs) = holder_and_client(&server, Stopped::Fails).await?;
    let client = &member.host;
    let ticket = enqueue(client, "busy", 1u64).await?;
    let id = ticket.id().to_owned();
    within("the outcome", ticket.outcome()).await??;
    // Its record as it is between the outcome's write and its own: running.
    let js = async_nats::jetstream::new(member.nats.client().clone());
    let records = js.get_key_value("koan_jobs").await?;
    let entry = records
        .get(&id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    let mut record: serde_json::Value = serde_json::from_slice(&entry)?;
    record["state"] = "running".into();
    records
        .put(&id, serde_json::to_vec(&record)?.into())
        .await?;

    let e = within("cancel", client.jobs().cancel(&id))
        .await?
        .expect_err("the job ended");
    assert_eq!(e.kind(), ErrorKind::JobState, "{e}");
    assert!(e.to_string().contains("succeeded"), "{e}");
    let after = within("the record", client.jobs().get(&id)).await??;
    assert_ne!(after.state, JobState::Cancelled, "{after:?}");
    Ok(())
}
