//! A job's record behind its run's stored outcome — its write after the outcome
//! lost to a kill, a timeout or a full bucket — is answered as the outcome says
//! the job ended, by a read of the job and by a listing, and brought in line in
//! the bucket. A probe's burst left 84 of 165 finished jobs saying `queued` or
//! `running` until their records expired. An older run's outcome, which a retry
//! by hand leaves for a moment under the record it set `queued`, ends nothing.

mod common;

use async_nats::jetstream::kv::Store;
use common::{Stopped, holder_and_client};
use koan::job::{JobQuery, JobRecord, JobState};
use koan_test_support::nats::{Member, NatsServer};
use koan_test_support::{wait_for, within};

async fn records(member: &Member) -> anyhow::Result<Store> {
    let js = async_nats::jetstream::new(member.nats.client().clone());
    js.get_key_value("koan_jobs")
        .await
        .map_err(|e| anyhow::anyhow!("the koan_jobs bucket: {e}"))
}

/// The record of `id` as the bucket holds it.
async fn stored(bucket: &Store, id: &str) -> anyhow::Result<JobRecord> {
    let bytes = within("the record", bucket.get(id))
        .await??
        .ok_or_else(|| anyhow::anyhow!("no record of {id}"))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// A job of `Holder` run to success, its record final in the bucket: its id.
async fn succeeded(member: &Member, bucket: &Store) -> anyhow::Result<String> {
    let job = within(
        "enqueue",
        member.host.service("Holder").action("busy", 0).enqueue(),
    )
    .await??;
    let id = job.id().to_owned();
    within("the outcome", job.outcome()).await??;
    wait_for("the worker's record write", async || {
        Ok((stored(bucket, &id).await?.state == JobState::Succeeded).then_some(()))
    })
    .await?;
    Ok(id)
}

/// `r` as JSON, as an operator reads it (`null` and no result alike).
fn json(r: &JobRecord) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(r)?)
}

/// The first page of the jobs in `state`, as `member` lists them.
async fn listed(member: &Member, state: JobState) -> anyhow::Result<koan::job::JobPage> {
    let query = JobQuery {
        state: Some(state),
        ..JobQuery::default()
    };
    Ok(member.host.jobs().list(query).await?)
}

/// Writes `r` over the record of its job, as a lost write would have left it.
async fn put(bucket: &Store, r: &JobRecord) -> anyhow::Result<()> {
    within("put", bucket.put(&r.id, serde_json::to_vec(r)?.into())).await??;
    Ok(())
}

/// The record as a run's `running` write left it ten seconds ago, its end write
/// lost; told apart by its priority.
fn left_running(ended: &JobRecord) -> JobRecord {
    let mut behind = ended.clone();
    let ten_ago = chrono::TimeDelta::seconds(10);
    behind.state = JobState::Running;
    behind.run_at -= ten_ago;
    behind.finished_at = None;
    behind.result = None;
    behind.priority = 7;
    let last = behind.history.last_mut().expect("a run");
    last.finished_at = None;
    last.started_at -= ten_ago;
    behind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_one_write_was_lost_is_read_as_ended_and_brought_in_line()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, member, _runs) = holder_and_client(&server, Stopped::Fails).await?;
    let bucket = records(&member).await?;
    let id = succeeded(&member, &bucket).await?;
    let ended = stored(&bucket, &id).await?;
    // A short run's one write (its claim and its end) lost: the enqueuer's
    // `queued` record stands.
    let mut queued = ended.clone();
    queued.state = JobState::Queued;
    queued.attempts = 0;
    queued.history.clear();
    queued.finished_at = None;
    queued.result = None;
    queued.instance = None;
    put(&bucket, &queued).await?;

    // Answered from its outcome once it has stood 2 s (the run's own write
    // follows an outcome within milliseconds).
    let read = wait_for("the read to answer the job ended", async || {
        let r = within("get", member.host.jobs().get(&id)).await??;
        Ok(r.state.is_final().then_some(r))
    })
    .await?;
    assert_eq!(read.state, JobState::Succeeded, "{read:?}");
    assert_eq!(json(&read)?["result"], json(&ended)?["result"]);
    assert!(read.finished_at.is_some());
    // The run counted, where it ran (it said "0 of 3" attempts, no host: a review).
    assert_eq!(read.attempts, 1, "{read:?}");
    assert_eq!(read.history.len(), 1, "{read:?}");
    assert_eq!(read.history[0].instance, worker.id(), "{read:?}");
    // Its end is the outcome's time, not the read's (it was a new one at each read).
    let again = within("get", member.host.jobs().get(&id)).await??;
    assert_eq!(again.finished_at, read.finished_at);
    assert!(read.finished_at <= Some(chrono::Utc::now()));
    // Written in line once it has said so for 2 s (not at once: the run's own
    // write may be under way), the next read after that writes it.
    let aligned = wait_for("the record brought in line", async || {
        within("get", member.host.jobs().get(&id)).await??;
        let r = stored(&bucket, &id).await?;
        Ok((r.state == JobState::Succeeded).then_some(r))
    })
    .await?;
    assert_eq!((aligned.attempts, aligned.history.len()), (1, 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_left_running_after_its_outcome_is_listed_as_ended() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, _runs) = holder_and_client(&server, Stopped::Fails).await?;
    let bucket = records(&member).await?;
    let id = succeeded(&member, &bucket).await?;
    let ended = stored(&bucket, &id).await?;
    put(&bucket, &left_running(&ended)).await?;
    // Once the view has heard the write, and it has stood for 2 s, a listing
    // answers the job ended and leaves it out of `running`.
    let mine = wait_for("the listing to answer the job ended", async || {
        let all = member.host.jobs().list(JobQuery::default()).await?;
        Ok(all
            .jobs
            .into_iter()
            .find(|r| r.id == id && r.priority == 7 && r.state.is_final()))
    })
    .await?;
    assert_eq!(mine.state, JobState::Succeeded, "{mine:?}");
    assert_eq!(json(&mine)?["result"], json(&ended)?["result"]);
    let running = listed(&member, JobState::Running).await?;
    assert!(
        running.jobs.iter().all(|r| r.id != id),
        "a job that ended is not listed running: {running:?}"
    );
    // Counted as it ended, and listed under its state.
    let counts = member.host.jobs().counts(None).await?;
    assert_eq!(
        (
            counts.get(JobState::Running),
            counts.get(JobState::Succeeded)
        ),
        (0, 1),
        "{counts:?}"
    );
    let succeeded = listed(&member, JobState::Succeeded).await?;
    assert!(succeeded.jobs.iter().any(|r| r.id == id), "{succeeded:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_runs_outcome_does_not_end_a_record_queued_again() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, _runs) = holder_and_client(&server, Stopped::Fails).await?;
    let bucket = records(&member).await?;
    let id = succeeded(&member, &bucket).await?;
    // As a retry by hand leaves it for a moment: the record queued again, the
    // first run's outcome not yet removed.
    let mut queued = stored(&bucket, &id).await?;
    koan::job::apply_retry(
        &mut queued,
        chrono::Utc::now() - chrono::TimeDelta::seconds(10),
    );
    put(&bucket, &queued).await?;
    let read = within("get", member.host.jobs().get(&id)).await??;
    assert_eq!(read.state, JobState::Queued, "{read:?}");
    assert_eq!(stored(&bucket, &id).await?.state, JobState::Queued);
    Ok(())
}

/// A retry or a delete of a job whose record is behind its outcome acts on the
/// job as a read answers it: a read said "succeeded" while a retry said "is
/// running" (the retry and the delete read the bucket's record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_behind_its_outcome_is_retried_and_deleted_as_it_reads() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, _runs) = holder_and_client(&server, Stopped::Fails).await?;
    let bucket = records(&member).await?;
    let id = succeeded(&member, &bucket).await?;
    put(&bucket, &left_running(&stored(&bucket, &id).await?)).await?;
    let retried = within("retry", member.host.jobs().retry(&id)).await??;
    assert_eq!(retried.state, JobState::Queued, "{retried:?}");
    let again = succeeded_again(&bucket, &id).await?;
    put(&bucket, &left_running(&again)).await?;
    within("delete", member.host.jobs().delete(&id)).await??;
    assert!(within("the record", bucket.get(&id)).await??.is_none());
    Ok(())
}

/// A job whose record is behind its outcome is deleted even when the record cannot
/// be written in line first (its bucket full): refused as `queued`, deleting
/// finished jobs — the way out of a full cluster — was closed (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_behind_its_outcome_is_deleted_when_its_bucket_is_full() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, _runs) = holder_and_client(&server, Stopped::Fails).await?;
    let bucket = records(&member).await?;
    let id = succeeded(&member, &bucket).await?;
    put(&bucket, &left_running(&stored(&bucket, &id).await?)).await?;
    let js = async_nats::jetstream::new(member.nats.client().clone());
    let info = js.get_stream("KV_koan_jobs").await?.info().await?.clone();
    let mut full = info.config.clone();
    full.max_bytes = i64::try_from(info.state.bytes)?;
    js.update_stream(full).await?;
    within("delete", member.host.jobs().delete(&id)).await??;
    assert!(within("the record", bucket.get(&id)).await??.is_none());
    Ok(())
}

/// The record of `id` once its retry has run to success in the bucket.
async fn succeeded_again(bucket: &Store, id: &str) -> anyhow::Result<JobRecord> {
    wait_for("the retry to succeed", async || {
        let r = stored(bucket, id).await?;
        Ok((r.state == JobState::Succeeded && r.attempts >= 2).then_some(r))
    })
    .await
}
