//! A durable job's first record (`queued`, in the `koan_jobs` bucket every
//! instance lists) is sent with its message, and stays only when the message is
//! stored now: a job the work stream refuses, or the repeat of a key whose job
//! is stored already, leaves no record of its own behind — the cluster's view
//! never shows a job that was not accepted.

mod common;

use async_nats::jetstream::kv::Store;
use common::{Stopped, holder_and_client, job_reaches};
use futures_util::TryStreamExt;
use koan::job::JobState;
use koan_test_support::nats::{Member, NatsServer};
use koan_test_support::within;

/// The cluster's job records as `member` reads the bucket itself.
async fn records(member: &Member) -> anyhow::Result<Store> {
    let js = async_nats::jetstream::new(member.nats.client().clone());
    js.get_key_value("koan_jobs")
        .await
        .map_err(|e| anyhow::anyhow!("the koan_jobs bucket: {e}"))
}

/// The keys the bucket holds a record under (deleted ones left out).
async fn record_keys(member: &Member) -> anyhow::Result<Vec<String>> {
    let keys = records(member).await?.keys().await?;
    Ok(within("the bucket's keys", keys.try_collect::<Vec<_>>()).await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_work_stream_refuses_leaves_no_record() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, runs) = holder_and_client(&server, Stopped::Fails).await?;
    // An operator caps the work stream's messages below any job's size; the
    // records bucket takes them as before.
    let js = async_nats::jetstream::new(member.nats.client().clone());
    let mut config = js
        .get_stream("KOAN_WORK")
        .await?
        .info()
        .await?
        .config
        .clone();
    config.max_message_size = 64;
    js.update_stream(config).await?;

    let refused = member
        .host
        .service("Holder")
        .action("busy", 0)
        .enqueue()
        .await;
    let e = refused
        .err()
        .ok_or_else(|| anyhow::anyhow!("a job the stream refuses was accepted"))?;
    assert!(
        e.message().contains("not stored"),
        "the answer says the job is not stored: {e}"
    );
    // Taken back before the answer: nothing to wait for.
    assert_eq!(record_keys(&member).await?, Vec::<String>::new());
    assert_eq!(runs.started(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repeat_of_a_stored_key_does_not_bring_back_a_deleted_record() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, runs) = holder_and_client(&server, Stopped::Fails).await?;
    let client = &member.host;
    let keyed = || {
        client
            .service("Holder")
            .action("busy", 0)
            .idempotency_key("nightly-1")
            .enqueue()
    };
    let first = within("enqueue", keyed()).await??;
    let id = first.id().to_owned();
    within("the outcome", first.outcome()).await??;
    job_reaches(client, &id, JobState::Succeeded).await?;
    // The operator forgets the finished job; its key is repeated within
    // JetStream's duplicate window, so its message is not stored again.
    within("delete", client.jobs().delete(&id)).await??;
    assert_eq!(record_keys(&member).await?, Vec::<String>::new());
    let repeat = within("enqueue again", keyed()).await??;
    assert_eq!(repeat.id(), id);
    assert!(!repeat.created(), "the repeat is the first job");
    assert_eq!(
        record_keys(&member).await?,
        Vec::<String>::new(),
        "no `queued` record for a job that will not run again"
    );
    assert_eq!(runs.started(), 1);
    Ok(())
}
