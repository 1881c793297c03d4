//! A durable job whose run ended while the broker refused its outcome (its storage
//! full): the worker keeps the job, with progress acks, and stores the outcome
//! once the broker takes it again; the job ran once. Before, it was handed back
//! after a second and ran again at each delivery: a probe with JetStream's storage
//! full saw each of 535 jobs run 5 times, then end `dead`, "none of its runs
//! ended". Meanwhile it runs no other job (its whole backlog ran, each outcome
//! held in memory).

mod common;

use std::time::Duration;

use common::{Stopped, enqueue, holder_and_client, record_stored};
use koan_test_support::nats::{NatsServer, transport_said, work_messages};
use koan_test_support::{wait_for, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_outcome_the_full_broker_refuses_is_not_run_again() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client, runs) = holder_and_client(&server, Stopped::Fails).await?;
    // A first job, so that the outcomes' stream holds some bytes.
    within(
        "a first job",
        enqueue(&client.host, "busy", 1u64).await?.outcome(),
    )
    .await??;

    // The outcomes' stream takes no byte more, as when JetStream's storage is full.
    let js = async_nats::jetstream::new(client.nats.client().clone());
    let mut stream = js.get_stream("KV_koan_outcomes").await?;
    let info = stream.info().await?;
    let mut config = info.config.clone();
    config.max_bytes = i64::try_from(info.state.bytes)?;
    js.update_stream(config.clone()).await?;

    let before = runs.started();
    let ticket = enqueue(&client.host, "busy", 1u64).await?;
    wait_for("its run", async || {
        Ok((runs.started() > before).then_some(()))
    })
    .await?;
    // Six more, behind it: while its outcome is refused, the worker takes at
    // most the one it asked for as the run ended, and one more asked for as that
    // one ended before the refusal was heard (the slot is given back as a run
    // ends, while its outcome is being stored; on a loaded machine a 1 ms run
    // and its pull can beat the broker's answer). Before, it ran its whole
    // backlog, each outcome held in memory (found by a probe).
    let mut more = Vec::new();
    for _ in 0..6 {
        more.push(enqueue(&client.host, "busy", 1u64).await?);
    }
    // Refused for three seconds: three redeliveries' time (with `ack_wait` 1 s),
    // had the job been handed back after a second as before.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        runs.started() <= before + 3,
        "{} ran meanwhile",
        runs.started() - before
    );
    // The worker's health says why (it said nothing of the broker's storage).
    let health = worker.host.health().await;
    let said = health
        .transport
        .and_then(|t| t.description)
        .unwrap_or_default();
    assert_eq!(
        health.status,
        koan::health::HealthStatus::Degraded,
        "{said}"
    );
    assert!(
        said.contains("refused to store a job's outcome") && said.contains("want of room"),
        "{said}"
    );
    config.max_bytes = -1;
    js.update_stream(config).await?;

    within("the outcome", ticket.outcome()).await??;
    for ticket in more {
        within("the next outcomes", ticket.outcome()).await??;
    }
    assert_eq!(runs.started(), before + 7, "each job ran once");
    client.stop().await?;
    worker.stop().await
}

/// With `storage_budget_mb`, every stream and bucket gets its share as its
/// `max_bytes` (a stream's limit reserves nothing: one unbounded stream filled the
/// server and every write failed alike; found by a probe), those made before
/// included; and an enqueue refused at the work queue's share is said in health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_budget_bounds_every_stream_and_a_full_queue_is_said() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client, _runs) = holder_and_client(&server, Stopped::Fails).await?;
    let js = async_nats::jetstream::new(client.nats.client().clone());
    // The cancels' bucket holding more than its share will be (5 % of 32 MiB,
    // some 1.7 MB): 100 markers of 20 KB.
    let cancels = js.get_key_value("koan_cancels").await?;
    for n in 0..100 {
        cancels
            .put(format!("k{n}"), vec![b'x'; 20_000].into())
            .await?;
    }
    // A host started later with a budget of 32 MiB sets the limits.
    let mut opts = koan_test_support::nats::test_options(&server.url());
    opts.storage_budget_bytes = Some(32 * 1024 * 1024);
    let budgeted = koan_test_support::nats::Member::join(opts, |b| b).await?;
    // Nothing the cancels' bucket held is dropped: its limit is what it holds.
    let info = js
        .get_stream("KV_koan_cancels")
        .await?
        .info()
        .await?
        .clone();
    assert_eq!(info.state.messages, 100, "{info:?}");
    assert_eq!(info.config.max_bytes, i64::try_from(info.state.bytes)?);
    let mut sum = 0;
    for name in [
        "KOAN_WORK",
        "KOAN_DELAYED",
        "KOAN_STRANDED",
        "KOAN_DLQ",
        "KV_koan_outcomes",
        "KV_koan_jobs",
        "KV_koan_registry",
        "KV_koan_leases",
    ] {
        let max = js.get_stream(name).await?.info().await?.config.max_bytes;
        assert!(max > 0, "{name} is bounded: {max}");
        sum += max;
    }
    assert!(sum <= 32 * 1024 * 1024, "{sum}");
    assert_eq!(
        js.get_stream("KOAN_WORK")
            .await?
            .info()
            .await?
            .config
            .max_bytes,
        32 * 1024 * 1024 / 100 * 25
    );

    // The records' bucket nearly full: a job is refused before it is sent (it
    // would find no room for its record or outcome), and the host says why.
    let first = enqueue(&client.host, "busy", 1u64).await?;
    let first_id = first.id().to_owned();
    within("a job with a record", first.outcome()).await??;
    // Its record's last write done (it follows the outcome), before the bucket's
    // limit is set under what it holds then.
    record_stored(&client, &first_id, koan::job::JobState::Succeeded).await?;
    let mut records = js.get_stream("KV_koan_jobs").await?;
    let info = records.info().await?.clone();
    let mut config = info.config.clone();
    config.max_bytes = i64::try_from(info.state.bytes)? + 10;
    js.update_stream(config.clone()).await?;
    let refused = refused_enqueue(&budgeted.host).await;
    assert!(
        refused.to_string().contains("job records fill"),
        "{refused}"
    );
    // A full store, as a host's full disk is: the same kind.
    assert_eq!(
        refused.kind(),
        koan::error::ErrorKind::StoreUnavailable,
        "{refused}"
    );
    let said = transport_said(&budgeted.host).await;
    assert!(said.contains("this host refused a new job"), "{said}");
    // Room by the check (under 90 %) but not for one more record: refused too,
    // nothing sent (its record is written first; sent together, accepted jobs
    // had no record and answered 404: a probe). The check's last answer is kept a
    // second.
    config.max_bytes = i64::try_from(info.state.bytes)? + 300;
    js.update_stream(config.clone()).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let in_queue = work_messages(&js).await?;
    let refused = refused_enqueue(&budgeted.host).await;
    assert!(
        refused.to_string().contains("its record cannot be written")
            && refused.to_string().contains("job records bucket is full"),
        "{refused}"
    );
    assert_eq!(
        refused.kind(),
        koan::error::ErrorKind::StoreUnavailable,
        "{refused}"
    );
    let now_in_queue = work_messages(&js).await?;
    assert_eq!(now_in_queue, in_queue, "nothing sent");
    config.max_bytes = info.config.max_bytes;
    js.update_stream(config).await?;
    budgeted.stop().await?;

    // The work queue's share full: an enqueue is refused, and health says why.
    let mut work = js.get_stream("KOAN_WORK").await?;
    let info = work.info().await?;
    let mut config = info.config.clone();
    config.max_bytes = i64::try_from(info.state.bytes)?.max(1);
    js.update_stream(config).await?;
    let refused = client
        .host
        .service("Holder")
        .action("busy", vec![0u8; 4096])
        .enqueue()
        .await
        .expect_err("the queue is full");
    assert!(refused.to_string().contains("maximum bytes"), "{refused}");
    assert_eq!(
        refused.kind(),
        koan::error::ErrorKind::StoreUnavailable,
        "{refused}"
    );
    let said = transport_said(&client.host).await;
    assert!(said.contains("refused to store a new job"), "{said}");
    client.stop().await?;
    worker.stop().await
}

/// `Holder`'s `busy` enqueued from `host`, which must refuse it.
async fn refused_enqueue(host: &koan::HostHandle) -> koan::Error {
    host.service("Holder")
        .action("busy", 1u64)
        .enqueue()
        .await
        .expect_err("no room for its record")
}
