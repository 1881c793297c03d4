//! Actions at the end of the shutdown grace: an action that ignores its cancelled
//! token is dropped with its worker, and its caller still learns why.

mod common;

use common::Queue;
use koan::error::ErrorKind;
use koan::testing;

#[tokio::test(start_paused = true)]
async fn the_caller_of_an_action_aborted_at_the_end_of_the_grace_is_told_which()
-> anyhow::Result<()> {
    type Q = Queue<8, 1>;
    let (host, mut probe) = Q::start().await?;

    // `block` waits for the gate and ignores its token: only the abort ends it.
    let ticket = host.services::<Q>().action("block", ()).spawn()?;
    probe.wait_started("`block` to start").await;

    testing::within("the host to stop", testing::stop(&host)).await?;
    let err = testing::within("the answer to `block`", ticket.outcome())
        .await
        .expect_err("the action never finished");
    assert_eq!(err.kind(), ErrorKind::ShuttingDown);
    assert!(
        err.message().contains("action `block`"),
        "the answer names the action it was for: {}",
        err.message()
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_action_aborted_at_the_end_of_the_grace_is_no_longer_counted_in_flight()
-> anyhow::Result<()> {
    type Q = Queue<8, 1>;
    let (host, mut probe) = Q::start().await?;

    let ticket = host.services::<Q>().action("block", ()).spawn()?;
    probe.wait_started("`block` to start").await;
    assert_eq!(host.services::<Q>().status().await?.in_flight, 1);

    testing::within("the host to stop", testing::stop(&host)).await?;
    let _ = testing::within("the answer to `block`", ticket.outcome()).await;
    // The worker's future was dropped mid-run: the count must not stay at one.
    assert_eq!(
        host.services::<Q>().status().await?.in_flight,
        0,
        "an aborted run still counted in flight"
    );
    Ok(())
}
