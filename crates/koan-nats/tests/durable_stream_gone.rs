//! Jobs refused because the broker has no stream to store them in (in a cluster,
//! the node holding the work stream's only copy is down): the enqueue names the
//! cause, and `/health` says new jobs are refused. A probe saw every enqueue of a
//! 3-host cluster answered 503 for 30 s while every host's health and readiness
//! said pass, and nothing was logged but on the host whose own node died. A
//! stream gone while the connection stays up is made again by the consumers.

mod common;

use common::{Stopped, enqueue, holder_and_client};
use koan_test_support::nats::{NatsServer, transport_said};
use koan_test_support::{wait_for, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_refused_for_want_of_a_stream_are_said_in_health() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_worker, client, _runs) = holder_and_client(&server, Stopped::Fails).await?;
    let health = client.host.health().await;
    assert_eq!(
        health.status,
        koan::health::HealthStatus::Healthy,
        "{health:?}"
    );

    // The work stream is gone, as when its server is down.
    let js = async_nats::jetstream::new(client.nats.client().clone());
    js.delete_stream("KOAN_WORK").await?;
    let refused = enqueue(&client.host, "busy", 1u64)
        .await
        .expect_err("no stream to store it in");
    assert!(
        refused.to_string().contains("not stored by JetStream")
            && refused.to_string().contains("`KOAN_WORK` is unreachable"),
        "{refused}"
    );

    let said = transport_said(&client.host).await;
    assert_eq!(
        client.host.health().await.status,
        koan::health::HealthStatus::Degraded,
        "{said}"
    );
    assert!(
        said.contains("could not store a new job") && said.contains("new jobs are refused"),
        "{said}"
    );
    // The consumers, failing for want of the stream, make it again while the
    // connection stays up: jobs are taken again (only a reconnect made it, so
    // every enqueue was refused for good; a re-probe).
    let ticket = wait_for("the work stream made again", async || {
        Ok(enqueue(&client.host, "busy", 1u64).await.ok())
    })
    .await?;
    within("the job's outcome", ticket.outcome()).await??;
    client.stop().await?;
    Ok(())
}
