//! A host that stops lets go of the cluster: once it has stopped and its
//! transport is dropped, every task it started ends — its followers of the
//! cluster's buckets among them (the cancels' watch a worker begins with its
//! first job, the outcomes' watch of a host awaiting one, the records' watch of
//! a host whose listing is read) — and with the last of them its connection,
//! without waiting for a follower's next periodic turn.

mod common;

use common::Echo;
use koan::job::JobQuery;
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{wait_for, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_hosts_and_dropped_transports_leave_no_task_behind() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let opts = test_options(&server.url());
    let (worker, client) = Member::worker_and_client(opts, "Echo", |b| b.instance(Echo)).await?;
    // A durable job run: the worker follows the cluster's cancels from its first
    // job on, the client the outcomes while it awaits one.
    let ticket = within(
        "enqueue",
        client.host.service("Echo").action("echo", 7).enqueue(),
    )
    .await??;
    let out = within("the outcome", ticket.outcome()).await??;
    assert_eq!(out.json()?, serde_json::json!(7));
    // The client's listing of the cluster's jobs: it follows their records too.
    let page = within("the listing", client.host.jobs().list(JobQuery::default())).await??;
    assert_eq!(page.jobs.len(), 1, "{page:?}");
    worker.stop().await?;
    client.stop().await?;
    wait_for("every task of the two hosts to end", async || {
        let alive = metrics.num_alive_tasks();
        Ok((alive <= before).then_some(()))
    })
    .await?;
    Ok(())
}
