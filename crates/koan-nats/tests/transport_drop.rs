//! A host that stops lets go of the cluster: once it has stopped and its
//! transport is dropped, every task it started ends — its followers of the
//! cluster's buckets among them (the cancels' watch a worker begins with its
//! first job, the outcomes' watch of a host awaiting one, the records' watch of
//! a host whose listing is read) — and with the last of them its connection,
//! without waiting for a follower's next periodic turn. And a host that enqueues
//! jobs and leaves them to run (their tickets dropped) keeps nothing for them
//! while they wait in the cluster.

mod common;

use common::{Echo, Stopped, enqueue, holder_and_client};
use koan::job::{JobQuery, JobState};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueued_and_left_to_run_cost_their_host_no_task_while_they_wait()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    // One run at a time, held: every job after the first waits in the cluster.
    let (_worker, client, runs) = holder_and_client(&server, Stopped::Succeeds).await?;
    let metrics = tokio::runtime::Handle::current().metrics();
    let first = enqueue(&client.host, "hold", ()).await?.id().to_owned();
    wait_for("the first job to run", async || {
        Ok((runs.started() == 1).then_some(()))
    })
    .await?;
    let before = metrics.num_alive_tasks();
    let mut ids = Vec::new();
    for _ in 0..200 {
        // Enqueued and left: the ticket is dropped at once.
        ids.push(enqueue(&client.host, "hold", ()).await?.id().to_owned());
    }
    // Before, each waiting job kept a task (and a waiter whose key the host read
    // every minute) on the host that enqueued it, until the job ended.
    wait_for("the client's tasks to be as many as before", async || {
        Ok((metrics.num_alive_tasks() <= before).then_some(()))
    })
    .await?;
    // The jobs are the cluster's all the same: each is queued, and read by its id.
    for id in [&first, &ids[0], &ids[199]] {
        let r = within("a job by id", client.host.jobs().get(id)).await??;
        assert!(
            matches!(r.state, JobState::Queued | JobState::Running),
            "{r:?}"
        );
    }
    Ok(())
}
