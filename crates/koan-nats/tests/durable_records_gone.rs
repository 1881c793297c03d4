//! Enqueues while the bucket of the cluster's job records (`koan_jobs`) has no
//! stream (deleted, or its server down): the broker says so at once, and so does
//! the enqueue. Before, async-nats' create followed the refused write with a read
//! of the key that nothing answered, and every enqueue waited out the
//! connection's request timeout (10 s) — then, with a storage budget, failed
//! `service_unavailable` "failed to create key in store: timed out", and without
//! one was accepted with its record unwritten and nothing said but a log line
//! (found by a probe).

mod common;

use common::{Holder, Stopped, enqueue, holder_and_client, stream_holds};
use koan::error::ErrorKind;
use koan_test_support::nats::{Member, NatsServer, test_options, transport_said};
use koan_test_support::{refused, within};

/// Deletes the stream of the job records' bucket, as an operator's slip or a
/// lost server would.
async fn records_gone(m: &Member) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(m.nats.client().clone());
    js.delete_stream("KV_koan_jobs").await?;
    Ok(())
}

/// With a storage budget, a job's record is written before its message: the
/// enqueue is refused `store_unavailable`, naming the bucket and the broker's
/// answer, and nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_without_the_records_stream_is_refused_naming_it() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.storage_budget_bytes = Some(64 * 1024 * 1024);
    let (holder, runs) = Holder::new(Stopped::Fails);
    let (worker, client) =
        Member::worker_and_client(opts, "Holder", |b| b.instance(holder)).await?;
    records_gone(&client).await?;

    let e = refused(
        "an enqueue",
        client.host.service("Holder").action("busy", 1u64).enqueue(),
        ErrorKind::StoreUnavailable,
    )
    .await?;
    let said = e.message();
    assert!(
        said.contains("not stored")
            && said.contains("no stream for the cluster's job records (bucket `koan_jobs`")
            && said.contains("no stream found"),
        "{said}"
    );
    stream_holds(&client, "KOAN_WORK", 0).await?;
    assert_eq!(runs.started(), 0);
    worker.stop().await?;
    client.stop().await?;
    Ok(())
}

/// Without a budget, a job's message and record go out together: the job is
/// stored and runs, and `/health` says its record could not be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_taken_without_the_records_stream_is_said_in_health() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client, runs) = holder_and_client(&server, Stopped::Fails).await?;
    records_gone(&client).await?;

    let ticket = enqueue(&client.host, "busy", 1u64).await?;
    within("its outcome", ticket.outcome()).await??;
    assert_eq!(runs.started(), 1);
    let said = transport_said(&client.host).await;
    assert!(
        said.contains("could not store a job's record")
            && said.contains("no stream found")
            && said.contains("their records are not written"),
        "{said}"
    );
    worker.stop().await?;
    client.stop().await?;
    Ok(())
}
