//! `koan.nats.url` as a comma-separated list of servers: the client connects to
//! one that answers (the list was refused as one address, "invalid port
//! number"; a probe), and `/health` names the server it is on. On a single
//! server koan's streams keep one copy.

use async_nats::jetstream;
use koan_test_support::nats::{Member, NatsServer, test_options, transport_said};
use koan_test_support::{free_port, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_whose_first_server_is_down_connects_to_the_next() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let list = format!("{dead}, {}", server.url());
    let member = Member::join(test_options(&list), |b| b).await?;
    let said = transport_said(&member.host).await;
    assert_eq!(
        said,
        format!("connected to NATS at {} (of {list})", server.url())
    );

    let js = jetstream::new(member.nats.client().clone());
    let work = within("KOAN_WORK", js.get_stream("KOAN_WORK")).await??;
    assert_eq!(work.cached_info().config.num_replicas, 1);
    member.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_entry_in_the_list_is_named() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let list = format!("{},nats://127.0.0.1:port", server.url());
    let refused = koan_nats::NatsTransport::connect(test_options(&list)).await;
    let e = refused
        .err()
        .ok_or_else(|| anyhow::anyhow!("a bad entry was accepted"))?;
    assert!(e.message().contains("`nats://127.0.0.1:port`"), "{e}");
    Ok(())
}
