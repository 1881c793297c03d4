//! The durable consumers' settings follow the configuration: a host started with
//! another `ack_wait` or `max_deliver` than the host that made the consumer updates
//! it (the latest to start sets them), instead of the first one's settings staying
//! for ever while the new configuration is ignored in silence. So do the dead
//! letters' limits, which keep a poison source from filling the server's storage.
//! The buckets kept for `outcome_ttl` keep the age they were made with.

use std::time::Duration;

use koan_nats::NatsTransport;
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::services::Echo;
use koan_test_support::{eventually, within};

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

/// `KOAN_DLQ`'s age and size limits.
async fn dead_letter_limits(js: &async_nats::jetstream::Context) -> Option<(Duration, i64)> {
    let mut stream = js.get_stream("KOAN_DLQ").await.ok()?;
    let info = stream.info().await.ok()?;
    Some((info.config.max_age, info.config.max_bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_kept_within_the_latest_host_s_limits() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    let first = test_options(&server.url());
    let _a = Member::join(first.clone(), |b| b).await?;
    let seven_days = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(
        dead_letter_limits(&js).await,
        Some((seven_days, 256 * 1024 * 1024))
    );

    let mut small = first;
    small.dead_letter_retention = Duration::from_secs(3600);
    small.dead_letter_max_bytes = 64 * 1024;
    let _b = Member::join(small, |b| b).await?;
    eventually(
        "the dead letters' limits updated to the second host's",
        || async { dead_letter_limits(&js).await == Some((Duration::from_secs(3600), 64 * 1024)) },
    )
    .await?;

    // 200 dead letters of 1 KB: the stream keeps the newest within 64 KB.
    for i in 0..200u32 {
        js.publish("koan.dlq.echo.echo", vec![b'x'; 1024].into())
            .await?
            .await
            .map_err(|e| anyhow::anyhow!("dead letter {i}: {e}"))?;
    }
    let mut stream = js.get_stream("KOAN_DLQ").await?;
    let state = stream.info().await?.state.clone();
    assert!(state.bytes <= 64 * 1024, "{state:?}");
    assert!(state.messages > 0 && state.messages < 200, "{state:?}");
    assert_eq!(state.last_sequence, 200, "the newest kept: {state:?}");
    Ok(())
}

/// The age limits of the buckets kept for `outcome_ttl`: outcomes, records, cancels.
async fn outcome_ages(js: &async_nats::jetstream::Context) -> Vec<Duration> {
    let mut ages = Vec::new();
    for bucket in ["KV_koan_outcomes", "KV_koan_jobs", "KV_koan_cancels"] {
        if let Ok(mut stream) = js.get_stream(bucket).await
            && let Ok(info) = stream.info().await
        {
            ages.push(info.config.max_age);
        }
    }
    ages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_records_and_cancels_keep_the_age_they_were_made_with() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
    let mut first = test_options(&server.url());
    first.outcome_ttl = Duration::from_secs(600);
    let _a = Member::join(first.clone(), |b| b).await?;
    let made = Duration::from_secs(600);
    assert_eq!(outcome_ages(&js).await, [made; 3]);

    // Another age configured on a later host: every host reads the buckets' own
    // (how often a waiting job's record is written again depends on it), so it
    // stays, and the later host says so in its log.
    let mut other = first;
    other.outcome_ttl = Duration::from_secs(3600);
    let _b = Member::join(other, |b| b).await?;
    assert_eq!(outcome_ages(&js).await, [made; 3]);
    Ok(())
}

/// Dead letters' limit more than the server's JetStream storage can reserve: the
/// host refuses to start, naming the setting to lower. Before, it said "is the
/// server started with -js?", which pointed the wrong way (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_limit_the_server_cannot_reserve_names_the_setting() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.dead_letter_max_bytes = 1 << 50;
    let e = within("connect", NatsTransport::connect(opts))
        .await?
        .expect_err("a petabyte of dead letters");
    assert!(
        e.message().contains("KOAN_DLQ")
            && e.message().contains("koan.nats.dead_letter_max_mb")
            && !e.message().contains("-js"),
        "{e}"
    );
    Ok(())
}
