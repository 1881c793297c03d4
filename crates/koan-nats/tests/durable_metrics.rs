//! Cluster jobs are counted in `/metrics` as the host store's are
//! (`koan_jobs_finished_total{service,state}`): they were not counted at all
//! (found by a probe). One test: the recorder is the process's.

use std::sync::Arc;

use koan::testing::Counters;
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{eventually, within};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_cluster_jobs_are_counted() -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    metrics::set_global_recorder(Arc::clone(&counters))
        .map_err(|e| anyhow::anyhow!("a recorder: {e}"))?;
    let server = NatsServer::start()?;
    let (worker, client) = Member::worker_and_client(test_options(&server.url()), "Echo", |b| {
        b.service::<common::Echo>()
    })
    .await?;
    for n in 0..3u32 {
        let t = within(
            "an enqueue",
            client.host.service("Echo").action("echo", n).enqueue(),
        )
        .await??;
        within("its outcome", t.outcome()).await??;
    }
    let labels = [("service", "Echo"), ("state", "succeeded")];
    eventually("three counted", || async {
        counters.get("koan_jobs_finished_total", &labels) == 3
    })
    .await?;
    client.stop().await?;
    worker.stop().await
}
