//! Actions at the end of the shutdown grace: an action that ignores its cancelled
//! token is dropped with its worker, and its caller still learns why.

mod common;

use common::Queue;
use koan::error::ErrorKind;
use koan::testing;

/// How `block` is called: handed to its service's workers (`spawn()`), or run by
/// its caller itself (`execute()` on an idle service runs it on the caller's task:
/// it ran on after the host said it had stopped, and its caller waited for ever;
/// found by a probe).
#[derive(Clone, Copy, PartialEq)]
enum Called {
    Spawned,
    ByItsCaller,
}

/// Calls `block` (made into a request by `call`) as `how` says; it waits for the
/// gate and ignores its token: only the abort at the end of the grace ends it. Its
/// caller is answered `ShuttingDown`, with the action's name.
async fn aborted_block_is_named_to_its_caller(
    how: Called,
    call: impl FnOnce(koan::action::ActionRequest) -> koan::action::ActionRequest,
) -> anyhow::Result<()> {
    type Q = Queue<8, 1>;
    let (host, mut probe) = Q::start().await?;

    let request = call(host.services::<Q>().action("block", ()));
    let answer: std::pin::Pin<
        Box<dyn std::future::Future<Output = anyhow::Result<koan::Result<()>>>>,
    > = match how {
        Called::Spawned => {
            let ticket = request.spawn()?;
            Box::pin(async move { Ok(ticket.outcome().await.map(|_| ())) })
        }
        Called::ByItsCaller => {
            let caller = tokio::spawn(request.execute());
            Box::pin(async move { Ok(caller.await?.map(|_| ())) })
        }
    };
    probe.wait_started("`block` to start").await;

    testing::within("the host to stop", testing::stop(&host)).await?;
    let err = testing::within("the answer to `block`", answer)
        .await?
        .expect_err("the action never finished");
    assert_eq!(err.kind(), ErrorKind::ShuttingDown, "{err}");
    assert!(
        err.message().contains("action `block` of `Queue`"),
        "the answer names the action it was for: {}",
        err.message()
    );
    // It had started: not told the host "accepts no more work" (a probe).
    assert!(
        err.message().contains("was stopped while it ran")
            && err.message().contains("may be partly done"),
        "{err}"
    );
    if how == Called::ByItsCaller {
        assert_eq!(host.services::<Q>().status().await?.in_flight, 0);
    }
    Ok(())
}

/// A deadline far past the grace: the run (on the timer's path) is aborted first.
fn an_hour(request: koan::action::ActionRequest) -> koan::action::ActionRequest {
    request.timeout(std::time::Duration::from_secs(3600))
}

#[tokio::test(start_paused = true)]
async fn the_caller_of_an_action_aborted_at_the_end_of_the_grace_is_told_which()
-> anyhow::Result<()> {
    aborted_block_is_named_to_its_caller(Called::Spawned, |request| request).await
}

#[tokio::test(start_paused = true)]
async fn an_action_with_a_deadline_aborted_at_the_end_of_the_grace_is_named_to_its_caller()
-> anyhow::Result<()> {
    aborted_block_is_named_to_its_caller(Called::Spawned, an_hour).await
}

#[tokio::test(start_paused = true)]
async fn an_action_its_caller_runs_is_stopped_at_the_end_of_the_grace() -> anyhow::Result<()> {
    aborted_block_is_named_to_its_caller(Called::ByItsCaller, |request| request).await
}

#[tokio::test(start_paused = true)]
async fn an_action_its_caller_runs_with_a_deadline_is_stopped_at_the_end_of_the_grace()
-> anyhow::Result<()> {
    aborted_block_is_named_to_its_caller(Called::ByItsCaller, an_hour).await
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

/// `stop` ends at its token with an error, as a handler that cannot finish its work
/// does when its service stops.
struct Stoppable {
    started: std::sync::Arc<tokio::sync::Notify>,
}

impl koan::Service for Stoppable {
    type Kind = koan::Background;

    fn actions(a: &mut koan::Actions<Self>) {
        a.action(
            "stop",
            |svc: std::sync::Arc<Self>, (): (), cx: koan::ActionContext| async move {
                svc.started.notify_one();
                cx.token().cancelled().await;
                Err::<(), koan::BoxError>("stopped before its row was stored".into())
            },
        );
    }
}

impl koan::BackgroundService for Stoppable {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A handler that ends at its token with an error when its service stops is
/// answered `ShuttingDown` (503 over HTTP: the caller may send it again
/// elsewhere), with the handler's words, not as the handler's failure (500), which
/// a probe saw for every translation in flight at a SIGTERM.
#[tokio::test(start_paused = true)]
async fn an_action_ended_by_its_services_stop_is_answered_shutting_down() -> anyhow::Result<()> {
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let svc = Stoppable {
        started: std::sync::Arc::clone(&started),
    };
    let host = koan::testing::host().instance(svc).build()?.start();
    host.started().await?;
    let started = started.notified();
    let ticket = host.service("Stoppable").action("stop", ()).spawn()?;
    testing::within("`stop` to start", started).await;
    testing::within("the host to stop", testing::stop(&host)).await?;
    let err = testing::within("the answer to `stop`", ticket.outcome())
        .await
        .expect_err("cut short");
    assert_eq!(err.kind(), ErrorKind::ShuttingDown, "{err}");
    let message = err.message();
    assert!(
        message.contains("stopped by its service's stop")
            && message.contains("stopped before its row was stored"),
        "{message}"
    );
    Ok(())
}
