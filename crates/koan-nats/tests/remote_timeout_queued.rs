//! A call over NATS whose timeout passes while it waits in the serving host's
//! mailbox is answered as a local one is: `Timeout`, `not_started()`, "did not
//! start" (calling again is safe). The serving host gave it up at the same
//! deadline the caller's timer fired, and its answer lost the race: 55 of 58 such
//! calls were answered "the outcome is unknown" (a re-probe). The caller now waits
//! a reply margin past its timeout for that answer.

mod common;

use std::time::Duration;

use common::{Stopped, holder_and_client};
use koan::error::ErrorKind;
use koan_test_support::nats::NatsServer;
use koan_test_support::{wait_for, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_given_up_in_the_queue_is_said_not_started() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client, runs) = holder_and_client(&server, Stopped::Succeeds).await?;
    // The worker's one slot held, by a call from the client.
    let held = client
        .host
        .service("Holder")
        .action("hold", ())
        .timeout(Duration::from_secs(60))
        .spawn()?;
    wait_for("the held call to start", async || {
        Ok((runs.started() == 1).then_some(()))
    })
    .await?;

    let e = within(
        "the queued call's answer",
        client
            .host
            .service("Holder")
            .action("busy", 1u64)
            .timeout(Duration::from_secs(2))
            .execute(),
    )
    .await?
    .expect_err("it waited behind the held call past its timeout");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.not_started(), "{e}");
    assert!(e.message().contains("did not start"), "{e}");
    assert_eq!(runs.started(), 1, "the call given up on never ran");
    drop(held);
    client.stop().await?;
    worker.stop().await
}
