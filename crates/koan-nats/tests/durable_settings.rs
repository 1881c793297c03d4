//! The durable consumers' settings follow the configuration: a host started with
//! another `ack_wait` or `max_deliver` than the host that made the consumer updates
//! it (the latest to start sets them), instead of the first one's settings staying
//! for ever while the new configuration is ignored in silence.

use std::time::Duration;

use koan_test_support::eventually;
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::services::Echo;

/// The work consumer of `Echo`: its `ack_wait` and `max_deliver`, once it exists.
async fn settings(js: &async_nats::jetstream::Context) -> Option<(Duration, i64)> {
    let stream = js.get_stream("KOAN_WORK").await.ok()?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("koan-work-echo").await.ok()?;
    let info = consumer.info().await.ok()?;
    Some((info.config.ack_wait, info.config.max_deliver))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_host_s_ack_wait_and_max_deliver_apply() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
    let first = test_options(&server.url());
    let (ack_wait, max_deliver) = (first.ack_wait, first.max_deliver);
    let _a = Member::join(first.clone(), |b| b.service::<Echo>()).await?;
    eventually(
        "the consumer made with the first host's settings",
        || async { settings(&js).await == Some((ack_wait, max_deliver)) },
    )
    .await?;

    let mut changed = first;
    changed.ack_wait = ack_wait + Duration::from_secs(2);
    changed.max_deliver = max_deliver + 1;
    let _b = Member::join(changed.clone(), |b| b.service::<Echo>()).await?;
    eventually(
        "the consumer updated to the second host's settings",
        || async { settings(&js).await == Some((changed.ack_wait, changed.max_deliver)) },
    )
    .await?;
    Ok(())
}
