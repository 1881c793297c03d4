//! A job delivered again after its outcome was recorded, with nothing left to
//! say so (the broker lost the ack and the delivery count: a cluster node killed
//! with the work stream's only copy), runs again: delivery is at least once. That
//! second run is now said (a warning and `koan_jobs_ran_again_total`), where a
//! probe found 2 of 1,310 jobs run twice and nothing anywhere saying it, their
//! records showing one run. One test: the recorder is the process's.

use std::sync::Arc;

use koan::testing::Counters;
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{eventually, within};
use serde_json::json;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_again_after_its_outcome_was_recorded_is_counted() -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    metrics::set_global_recorder(Arc::clone(&counters))
        .map_err(|e| anyhow::anyhow!("a recorder: {e}"))?;
    let server = NatsServer::start()?;
    let (worker, client) = Member::worker_and_client(test_options(&server.url()), "Echo", |b| {
        b.service::<common::Echo>()
    })
    .await?;
    let js = async_nats::jetstream::new(client.nats.client().clone());

    // As the broker left it: the job's outcome recorded by another host's run,
    // and the job delivered again as if for the first time.
    let id = koan::job::new_job_id();
    let outcomes = js.get_key_value("koan_outcomes").await?;
    let first = json!({ "id": id, "host": "1-other", "attempts": 1, "ok": 7 });
    outcomes
        .put(id.as_str(), serde_json::to_vec(&first)?.into())
        .await?;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", id.as_str());
    let ack = js
        .publish_with_headers("koan.work.echo.echo", h, "7".into())
        .await?;
    within("the PubAck", ack.into_future()).await??;

    eventually("the second run counted", || async {
        counters.get("koan_jobs_ran_again_total", &[]) == 1
    })
    .await?;
    // The first run's outcome stands.
    let kept = outcomes.get(id.as_str()).await?.unwrap_or_default();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&kept)?["host"],
        "1-other"
    );
    client.stop().await?;
    worker.stop().await
}
