//! The cluster's job listing on each host: a host follows the `koan_jobs` bucket
//! only while its listing is read (a worker never asked receives none of the
//! cluster's record writes), its first listing reads every record the bucket
//! holds, and a view not read for `job_view_idle` stops following.

use std::sync::Arc;
use std::time::Duration;

use koan::job::{JobQuery, JobState};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{wait_for, within};

#[derive(Default)]
struct Echo;

impl Service for Echo {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Echo").max_concurrency(4)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "echo",
            |_svc: Arc<Self>, n: u32, _cx: ActionContext| async move { Ok::<u32, BoxError>(n) },
        );
    }
}

impl BackgroundService for Echo {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// How many consumers of the records' stream have a subscriber: the hosts that
/// follow the cluster's job records.
async fn followers(m: &Member) -> anyhow::Result<usize> {
    let js = async_nats::jetstream::new(m.nats.client().clone());
    let stream = js.get_stream("KV_koan_jobs").await?;
    let mut consumers = stream.consumers();
    let mut bound = 0;
    while let Some(info) = futures_util::StreamExt::next(&mut consumers).await {
        bound += usize::from(info?.push_bound);
    }
    Ok(bound)
}

async fn followers_become(m: &Member, n: usize) -> anyhow::Result<()> {
    wait_for(
        &format!("{n} hosts to follow the job records"),
        async || Ok((followers(m).await? == n).then_some(())),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_follows_the_cluster_s_job_records_only_while_it_is_listed() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.job_view_idle = Duration::from_secs(1);
    let (worker, client) = Member::worker_and_client(opts, "Echo", |b| b.service::<Echo>()).await?;

    let mut ids = Vec::new();
    for n in 0..5u32 {
        let ticket = within(
            "enqueue",
            client.host.service("Echo").action("echo", n).enqueue(),
        )
        .await??;
        ids.push(ticket.id().to_owned());
        within("the outcome", ticket.outcome()).await??;
    }
    // Every job was recorded, accepted by the client and run by the worker; no
    // host has listed, so none follows the records.
    assert_eq!(followers(&client).await?, 0);

    // The worker's first listing answers every job, succeeded, at once: it reads
    // the bucket before it answers.
    let page = within("the listing", worker.host.jobs().list(JobQuery::default())).await??;
    assert!(!page.stale, "{page:?}");
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
    assert_eq!(followers(&client).await?, 1);

    // Not listed for a second: it stops following, and a listing reads them again.
    followers_become(&client, 0).await?;
    let again = within("the listing", worker.host.jobs().list(JobQuery::default())).await??;
    assert!(!again.stale, "{again:?}");
    assert_eq!(again.jobs.len(), 5, "{again:?}");
    assert_eq!(followers(&client).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_listing_of_an_empty_cluster_is_not_stale() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let m = Member::join(test_options(&server.url()), |b| b).await?;
    let page = within("the listing", m.host.jobs().list(JobQuery::default())).await??;
    assert!(!page.stale, "{page:?}");
    assert!(page.jobs.is_empty(), "{page:?}");
    Ok(())
}
