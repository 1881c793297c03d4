//! What a host watches of the cluster's durable jobs, and when: the `koan_jobs`
//! records only while its listing is read (a page not marked stale holds every
//! record the bucket holds), the `koan_outcomes` only while it awaits an outcome; each
//! watch ends `watch_idle` after its last use. A host that does neither (a
//! worker) receives none of the cluster's record or outcome writes.

mod common;

use std::time::Duration;

use common::Echo;
use koan::job::{JobPage, JobQuery, JobState};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{wait_for, within};

const RECORDS: &str = "KV_koan_jobs";
const OUTCOMES: &str = "KV_koan_outcomes";

/// How many consumers of `stream` (a bucket's) have a subscriber: the hosts that
/// watch the bucket.
async fn followers(m: &Member, stream: &str) -> anyhow::Result<usize> {
    let js = async_nats::jetstream::new(m.nats.client().clone());
    let stream = js.get_stream(stream).await?;
    let mut consumers = stream.consumers();
    let mut bound = 0;
    while let Some(info) = futures_util::StreamExt::next(&mut consumers).await {
        bound += usize::from(info?.push_bound);
    }
    Ok(bound)
}

async fn followers_become(m: &Member, stream: &str, n: usize) -> anyhow::Result<()> {
    wait_for(&format!("{n} hosts to watch {stream}"), async || {
        Ok((followers(m, stream).await? == n).then_some(()))
    })
    .await
}

/// The first page of `m`'s listing not marked stale (listed again while it is:
/// a page is stale only while the view has not read the bucket).
async fn fresh_listing(m: &Member) -> anyhow::Result<JobPage> {
    wait_for("a listing not marked stale", async || {
        let page = m.host.jobs().list(JobQuery::default()).await?;
        Ok((!page.stale).then_some(page))
    })
    .await
}

/// A worker hosting `Echo` and a client, each watching for a second after use.
async fn cluster(server: &NatsServer) -> anyhow::Result<(Member, Member)> {
    let mut opts = test_options(&server.url());
    opts.watch_idle = Duration::from_secs(1);
    Member::worker_and_client(opts, "Echo", |b| b.service::<Echo>()).await
}

/// Waits until `m` reads every job of `ids` as succeeded (a job's record is
/// finished a moment after its outcome).
async fn all_succeeded(m: &Member, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        wait_for(&format!("job {id}'s record to be final"), async || {
            let r = m.host.jobs().get(id).await?;
            Ok((r.state == JobState::Succeeded).then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// Enqueues `echo(n)` from `client` and awaits its outcome; the job's id.
async fn echo(client: &Member, n: u32) -> anyhow::Result<String> {
    let ticket = within(
        "enqueue",
        client.host.service("Echo").action("echo", n).enqueue(),
    )
    .await??;
    let id = ticket.id().to_owned();
    let out = within("the outcome", ticket.outcome()).await??;
    assert_eq!(out.value::<u32>()?, n);
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_follows_the_cluster_s_job_records_only_while_it_is_listed() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client) = cluster(&server).await?;
    let mut ids = Vec::new();
    for n in 0..5u32 {
        ids.push(echo(&client, n).await?);
    }
    // Every job's record says so, read from the bucket.
    all_succeeded(&worker, &ids).await?;
    // Every job was recorded, accepted by the client and run by the worker; no
    // host has listed, so none follows the records.
    assert_eq!(followers(&client, RECORDS).await?, 0);

    // The worker's listing reads the bucket: a page not marked stale holds every
    // job, succeeded (the first already, unless the watch took past its bound).
    let page = fresh_listing(&worker).await?;
    let mut listed: Vec<String> = page.jobs.iter().map(|r| r.id.clone()).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    assert!(
        page.jobs.iter().all(|r| r.state == JobState::Succeeded),
        "{page:?}"
    );
    let counts = within("the counts", worker.host.jobs().counts(Some("Echo"))).await??;
    assert_eq!(counts.get(JobState::Succeeded), 5);
    assert_eq!(followers(&client, RECORDS).await?, 1);

    // Not listed for a second: it stops following, and a listing reads them again.
    followers_become(&client, RECORDS, 0).await?;
    let again = fresh_listing(&worker).await?;
    assert_eq!(again.jobs.len(), 5, "{again:?}");
    assert_eq!(followers(&client, RECORDS).await?, 1);
    Ok(())
}

/// A host holds at most `view_max_records` of the cluster's records: past it,
/// its listing and counts cover the most recently written and say they are
/// partial, and a job it left out is still read by its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_past_the_host_s_cap_says_it_is_partial() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let opts = test_options(&server.url());
    let (worker, client) =
        Member::worker_and_client(opts.clone(), "Echo", |b| b.service::<Echo>()).await?;
    let mut small = opts;
    small.view_max_records = 3;
    let lister = Member::join(small, |b| b).await?;
    let mut ids = Vec::new();
    for n in 0..6u32 {
        ids.push(echo(&client, n).await?);
    }
    all_succeeded(&worker, &ids).await?;
    let page = fresh_listing(&lister).await?;
    assert!(page.partial, "{page:?}");
    assert_eq!(page.jobs.len(), 3, "{page:?}");
    let counts = within("the counts", lister.host.jobs().counts(None)).await??;
    assert!(counts.partial);
    assert_eq!(counts.get(JobState::Succeeded), 3);
    // Every job, held or not, is read by its id.
    for id in &ids {
        let r = within("a job by id", lister.host.jobs().get(id)).await??;
        assert_eq!(r.state, JobState::Succeeded);
    }
    // A host with room lists them all, not partial.
    let all = fresh_listing(&worker).await?;
    assert!(!all.partial);
    assert_eq!(all.jobs.len(), 6, "{all:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_of_an_empty_cluster_is_fresh() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let m = Member::join(test_options(&server.url()), |b| b).await?;
    // Its watch delivers nothing: the view is caught up as soon as it begins.
    let page = fresh_listing(&m).await?;
    assert!(page.jobs.is_empty(), "{page:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_host_awaiting_outcomes_watches_them_and_only_while_it_does() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_worker, client) = cluster(&server).await?;
    assert_eq!(followers(&client, OUTCOMES).await?, 0, "no one awaits yet");
    echo(&client, 1).await?;
    // The client's watch, kept for a while; the worker, which wrote the outcome,
    // has none.
    assert_eq!(followers(&client, OUTCOMES).await?, 1);
    followers_become(&client, OUTCOMES, 0).await?;
    // Awaited again: a watch begins again, and the outcome arrives.
    echo(&client, 2).await?;
    assert_eq!(followers(&client, OUTCOMES).await?, 1);
    Ok(())
}
