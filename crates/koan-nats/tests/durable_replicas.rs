//! koan's streams and buckets on a 3-server JetStream cluster: kept on three
//! servers, so that the work stream's leader killed leaves a cluster that still
//! takes and runs jobs (with one copy, every enqueue was refused "no stream found"
//! for as long as that server was down; a probe), and streams made with one copy
//! raised to three by the next host to start.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::{Holder, Stopped, enqueue};
use koan_nats::{ConnectionState, NatsOptions};
use koan_test_support::nats::{Member, NatsCluster, announced, test_options};
use koan_test_support::{wait_for, wait_for_within, within};

/// Every stream koan makes: the work streams and the buckets' streams.
const STREAMS: [&str; 9] = [
    "KOAN_WORK",
    "KOAN_DELAYED",
    "KOAN_DLQ",
    "KOAN_STRANDED",
    "KV_koan_registry",
    "KV_koan_outcomes",
    "KV_koan_leases",
    "KV_koan_jobs",
    "KV_koan_cancels",
];

/// A worker running `Holder` and a client that sees it, on the cluster.
async fn worker_and_client(opts: NatsOptions) -> anyhow::Result<(Member, Member, common::Runs)> {
    let (holder, runs) = Holder::new(Stopped::Fails);
    let (w, c) = Member::worker_and_client(opts, "Holder", |b| b.instance(holder)).await?;
    Ok((w, c, runs))
}

/// How many servers keep each of koan's streams, as `member` reads them: the
/// configured count and the servers the stream's group has (its leader and
/// the replicas it lists).
async fn copies(member: &Member) -> anyhow::Result<Vec<(String, usize, usize)>> {
    let js = jetstream::new(member.nats.client().clone());
    let mut all = Vec::new();
    for name in STREAMS {
        let info = js.get_stream(name).await?.info().await?.clone();
        let group = info.cluster.map_or(0, |c| c.replicas.len() + 1);
        all.push((name.to_owned(), info.config.num_replicas, group));
    }
    Ok(all)
}

/// Waits (bounded) until every one of koan's streams is set to, and kept on, `n`
/// servers (a stream's new copies join its group a moment after its update).
async fn kept_on(member: &Member, n: usize) -> anyhow::Result<()> {
    let mut last = Vec::new();
    let waited = wait_for(&format!("every stream on {n} servers"), async || {
        last = copies(member).await?;
        Ok(last
            .iter()
            .all(|(_, set, group)| (*set, *group) == (n, n))
            .then_some(()))
    })
    .await;
    waited.map_err(|e| anyhow::anyhow!("{e}; last seen (stream, set, group): {last:?}"))
}

/// How many servers the durable consumer `name` of `stream` is kept on.
async fn consumer_copies(member: &Member, stream: &str, name: &str) -> anyhow::Result<usize> {
    let js = jetstream::new(member.nats.client().clone());
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await?
        .get_consumer(name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = consumer.info().await?;
    Ok(info.cluster.as_ref().map_or(0, |c| c.replicas.len() + 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_streams_leader_killed_leaves_a_cluster_that_takes_jobs() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start().await?;
    let (_w, client, runs) = worker_and_client(test_options(&cluster.urls())).await?;
    let first = enqueue(&client.host, "busy", 0u64).await?;
    within("the first job's outcome", first.outcome()).await??;

    // Read now, checked once the enqueue below has said what one copy does.
    let before = copies(&client).await?;
    let consumer = consumer_copies(&client, "KOAN_WORK", "koan-work-holder").await?;

    let js = jetstream::new(client.nats.client().clone());
    let info = js.get_stream("KOAN_WORK").await?.info().await?.clone();
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .ok_or_else(|| anyhow::anyhow!("KOAN_WORK names no leader"))?;
    cluster.node(&leader)?.kill();

    // The client back on a live server, the stream's new leader elected, and
    // the worker heard from again (its heartbeats may have gone to the killed
    // server's bucket leader). With one copy the stream never comes back: the
    // wait gives up, and the enqueue below says why.
    let elected = wait_for_within(
        Duration::from_secs(20),
        "KOAN_WORK's new leader",
        async || {
            if client.nats.connection_state() != ConnectionState::Connected {
                return Ok(None);
            }
            let Ok(mut stream) = js.get_stream("KOAN_WORK").await else {
                return Ok(None);
            };
            let now = stream.info().await.ok().and_then(|i| i.cluster.clone());
            Ok(now
                .and_then(|c| c.leader)
                .filter(|l| *l != leader)
                .map(|_| ()))
        },
    )
    .await;
    if elected.is_ok() {
        announced(&client.host, "Holder", 1).await?;
    }
    let second = enqueue(&client.host, "busy", 0u64).await;
    let second = second.map_err(|e| anyhow::anyhow!("with {leader} down: {e}"))?;
    let id = second.id().to_owned();
    // A failover's bound, not `within`'s 30 s: the worker's pull sent to the
    // killed server ends only at its own timeout (10 s), and the outcomes'
    // bucket and the client's watch of it may each be electing a leader too.
    let outcome = tokio::time::timeout(Duration::from_secs(90), second.outcome())
        .await
        .map_err(|_| anyhow::anyhow!("the second job's outcome: none within 90 s"));
    if outcome.is_err() {
        // What the job came to, to tell a stalled worker from a lost outcome.
        let record = client.host.jobs().get(&id).await;
        eprintln!("runs started: {}; its record: {record:?}", runs.started());
    }
    outcome??;
    assert_eq!(runs.started(), 2);

    // Chosen by the cluster's size, with nothing configured; the work consumer
    // follows its stream.
    let three: Vec<_> = STREAMS.iter().map(|s| ((*s).to_owned(), 3, 3)).collect();
    assert_eq!(before, three);
    assert_eq!(consumer, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_made_with_one_copy_are_raised_to_the_clusters_count() -> anyhow::Result<()> {
    let cluster = NatsCluster::start().await?;
    let mut one = test_options(&cluster.urls());
    one.replicas = Some(1);
    let (w, c, _runs) = worker_and_client(one)
        .await
        .map_err(|e| e.context("at R1"))?;
    kept_on(&c, 1).await?;
    w.stop().await?;
    c.stop().await?;

    // The next host, configured to choose, raises them.
    let (_w, client, _runs) = worker_and_client(test_options(&cluster.urls()))
        .await
        .map_err(|e| e.context("raised"))?;
    kept_on(&client, 3).await?;
    // Its consumers follow (the server moves them with the stream).
    wait_for("koan-work-holder on three servers", async || {
        let n = consumer_copies(&client, "KOAN_WORK", "koan-work-holder").await?;
        Ok((n == 3).then_some(()))
    })
    .await?;
    Ok(())
}
