//! Remote calls while this host's link to the cluster is down: refused at once,
//! saying so, and never sent later behind the caller's back.

use std::sync::atomic::Ordering;
use std::time::Duration;

use koan::error::ErrorKind;
use koan_nats::{ConnectionState, NatsTransport};
use koan_test_support::nats::{NatsServer, test_options};
use koan_test_support::{eventually, within};

mod common;

use common::routing::{Worker, join, sees_workers};

/// Before, such a call waited for its whole timeout (60 s by default), answered
/// "no answer within …", and the client sent it once the server was back: the
/// action ran after its caller had been told it got no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_disconnected_is_refused_at_once_and_never_sent() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let (w, calls) = Worker::new(Duration::ZERO);
    let (_worker, _worker_node) = join(&server.url(), Some(w)).await?;
    let mut opts = test_options(&server.url());
    opts.default_request_timeout = Duration::from_secs(3600);
    let nats = within("connect", NatsTransport::connect(opts)).await??;
    let client = koan::Host::builder()
        .transport(nats.clone().into_transport())
        .build()?
        .start();
    within("startup", client.started()).await??;
    let _client_node = within("attach", nats.attach(&client)).await??;
    sees_workers(&client, 1).await?;

    server.kill();
    eventually("the client to see the link down", || async {
        nats.connection_state() != ConnectionState::Connected
    })
    .await?;
    let call = client.service("Worker").action("work", ()).execute();
    let e = within("the refusal", call)
        .await?
        .expect_err("not connected");
    assert_eq!(e.kind(), ErrorKind::ServiceUnavailable, "{e}");
    assert!(e.message().contains("not connected to NATS"), "{e}");
    assert!(e.message().contains("nothing ran"), "{e}");
    let query = client.service("Worker").status().await;
    assert!(query.is_err_and(|e| e.message().contains("not connected to NATS")));

    server.restart()?;
    eventually("the client to be back", || async {
        nats.connection_state() == ConnectionState::Connected
    })
    .await?;
    sees_workers(&client, 1).await?;
    // A call now runs; the refused one, had it been held, would have gone first.
    within(
        "a call after the outage",
        client.service("Worker").action("work", ()).execute(),
    )
    .await??;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the refused call ran");
    Ok(())
}
