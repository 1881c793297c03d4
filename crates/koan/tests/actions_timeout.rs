//! Enforced action deadlines, on tokio's paused clock: the caller gets `Timeout` at
//! the deadline, queue time counts, the handler's token fires, and a handler that
//! ignores its token has its future dropped after the grace so the service goes on.

use std::sync::Arc;
use std::time::Duration;

use koan::testing::within;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions, error::ErrorKind,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

const GRACE: Duration = Duration::from_millis(250);
/// The paused clock rounds timers up to the next millisecond.
const TICK: Duration = Duration::from_millis(1);

/// Sends the instant it is dropped at.
struct DropSignal(mpsc::UnboundedSender<Instant>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(Instant::now());
    }
}

struct Slow {
    dropped: mpsc::UnboundedSender<Instant>,
    quick_ran: mpsc::UnboundedSender<()>,
    cancelled: mpsc::UnboundedSender<(Instant, Option<Duration>, bool)>,
}

struct Probe {
    dropped: mpsc::UnboundedReceiver<Instant>,
    quick_ran: mpsc::UnboundedReceiver<()>,
    cancelled: mpsc::UnboundedReceiver<(Instant, Option<Duration>, bool)>,
}

fn slow() -> (Slow, Probe) {
    let (d_tx, d_rx) = mpsc::unbounded_channel();
    let (q_tx, q_rx) = mpsc::unbounded_channel();
    let (c_tx, c_rx) = mpsc::unbounded_channel();
    (
        Slow {
            dropped: d_tx,
            quick_ran: q_tx,
            cancelled: c_tx,
        },
        Probe {
            dropped: d_rx,
            quick_ran: q_rx,
            cancelled: c_rx,
        },
    )
}

impl Service for Slow {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Slow").max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        // Never finishes and never looks at its token.
        a.action(
            "hang",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                let _guard = DropSignal(svc.dropped.clone());
                std::future::pending::<()>().await;
                Ok::<_, BoxError>(())
            },
        );
        a.action(
            "sleep",
            |_svc: Arc<Self>, secs: u64, _cx: ActionContext| async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                Ok::<_, BoxError>(secs)
            },
        );
        a.action(
            "quick",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                let _ = svc.quick_ran.send(());
                Ok::<_, BoxError>("quick")
            },
        );
        a.action(
            "ping",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>("pong") },
        );
        // Waits for its token and reports when it fired.
        a.action(
            "cooperative",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                let remaining = cx.remaining();
                let before = cx.is_cancelled();
                cx.cancelled().await;
                let _ = svc.cancelled.send((Instant::now(), remaining, before));
                Ok::<_, BoxError>("stopped")
            },
        );
    }
}

impl BackgroundService for Slow {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn start(svc: Slow) -> anyhow::Result<HostHandle> {
    let host = koan::testing::host()
        .action_grace(GRACE)
        .instance(svc)
        .build()?
        .start();
    host.started().await?;
    Ok(host)
}

fn assert_between(what: &str, elapsed: Duration, from: Duration, to: Duration) {
    assert!(
        elapsed >= from && elapsed <= to,
        "{what}: {elapsed:?} is not within [{from:?}, {to:?}]"
    );
}

#[tokio::test(start_paused = true)]
async fn handler_ignoring_its_token_times_out_and_is_dropped_after_the_grace() -> anyhow::Result<()>
{
    let (svc, mut probe) = slow();
    let host = start(svc).await?;
    let s = host.services::<Slow>();

    let t0 = Instant::now();
    let err = s
        .action("hang", ())
        .timeout(Duration::from_secs(5))
        .execute()
        .await
        .expect_err("a handler that never finishes times out");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.message().contains("hang"), "{err}");
    assert!(err.message().contains("5s"), "{err}");
    assert_between(
        "caller answered",
        t0.elapsed(),
        Duration::from_secs(5),
        Duration::from_secs(5) + TICK,
    );

    // The worker drops the future once the grace has passed …
    let dropped_at = within("the hung future to be dropped", probe.dropped.recv())
        .await
        .expect("the hung future is dropped");
    assert_between(
        "future dropped",
        dropped_at - t0,
        Duration::from_secs(5) + GRACE,
        Duration::from_secs(5) + GRACE + 2 * TICK,
    );

    // … and serves the next action (with its own deadline, so a stuck worker fails
    // this test instead of hanging it).
    let out = s
        .action("ping", ())
        .timeout(Duration::from_secs(60))
        .execute()
        .await?;
    assert_eq!(out.value::<String>()?, "pong");

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn spawned_action_ignoring_its_token_is_answered_timed_out() -> anyhow::Result<()> {
    let (svc, mut probe) = slow();
    let host = start(svc).await?;
    let s = host.services::<Slow>();

    let t0 = Instant::now();
    let ticket = s
        .action("hang", ())
        .timeout(Duration::from_secs(3))
        .spawn()?;
    let err = within("the timed-out ticket's outcome", ticket.outcome())
        .await
        .expect_err("times out");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_between(
        "ticket answered",
        t0.elapsed(),
        Duration::from_secs(3),
        Duration::from_secs(3) + TICK,
    );

    within("the hung future to be dropped", probe.dropped.recv())
        .await
        .expect("the hung future is dropped");
    let out = s
        .action("ping", ())
        .timeout(Duration::from_secs(60))
        .execute()
        .await?;
    assert_eq!(out.value::<String>()?, "pong");

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn queue_time_counts_toward_the_deadline() -> anyhow::Result<()> {
    let (svc, mut probe) = slow();
    let host = start(svc).await?;
    let s = host.services::<Slow>();

    // A 10 s action occupies the only worker; `quick` would take no time at all, but
    // waits behind it longer than its 3 s deadline.
    let long = s.action("sleep", 10u64).spawn()?;
    let t0 = Instant::now();
    let err = s
        .action("quick", ())
        .timeout(Duration::from_secs(3))
        .execute()
        .await
        .expect_err("stuck behind the long action");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.message().contains("queue time included"), "{err}");
    assert_between(
        "caller answered",
        t0.elapsed(),
        Duration::from_secs(3),
        Duration::from_secs(3) + TICK,
    );

    // The long action is unaffected; the expired one is never run.
    let long = within("the long action's outcome", long.outcome()).await?;
    assert_eq!(long.value::<u64>()?, 10);
    let out = within("a `ping` call", s.action("ping", ()).execute()).await?;
    assert_eq!(out.value::<String>()?, "pong");
    assert!(
        probe.quick_ran.try_recv().is_err(),
        "an action past its deadline was still run"
    );

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn spawned_action_behind_a_long_one_times_out_at_its_deadline() -> anyhow::Result<()> {
    let (svc, mut probe) = slow();
    let host = start(svc).await?;
    let s = host.services::<Slow>();

    let long = s.action("sleep", 10u64).spawn()?;
    let t0 = Instant::now();
    let ticket = s
        .action("quick", ())
        .timeout(Duration::from_secs(3))
        .spawn()?;
    let err = within("the outcome of the ticket stuck behind", ticket.outcome())
        .await
        .expect_err("stuck behind the long action");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.message().contains("queue time included"), "{err}");
    assert_between(
        "ticket answered",
        t0.elapsed(),
        Duration::from_secs(3),
        Duration::from_secs(3) + TICK,
    );
    let long = within("the long action's outcome", long.outcome()).await?;
    assert_eq!(long.value::<u64>()?, 10);
    within("a `ping` call", s.action("ping", ()).execute()).await?;
    assert!(probe.quick_ran.try_recv().is_err());

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn cooperative_handler_sees_its_token_fire_at_the_deadline() -> anyhow::Result<()> {
    let (svc, mut probe) = slow();
    let host = start(svc).await?;
    let s = host.services::<Slow>();

    let t0 = Instant::now();
    let err = s
        .action("cooperative", ())
        .timeout(Duration::from_secs(2))
        .execute()
        .await
        .expect_err("the deadline passes");
    assert_eq!(err.kind(), ErrorKind::Timeout);

    let (fired_at, remaining, cancelled_before) =
        koan::testing::within("the token to fire", probe.cancelled.recv())
            .await
            .expect("the token fired");
    assert!(
        !cancelled_before,
        "the token was cancelled before the deadline"
    );
    let remaining = remaining.expect("a deadline is visible to the handler");
    assert!(
        remaining > Duration::ZERO && remaining <= Duration::from_secs(2),
        "{remaining:?}"
    );
    assert_between(
        "token fired",
        fired_at - t0,
        Duration::from_secs(2),
        Duration::from_secs(2) + TICK,
    );

    // It returned on its own, so the worker is free before the grace is over.
    let out = within("a `ping` call", s.action("ping", ()).execute()).await?;
    assert_eq!(out.value::<String>()?, "pong");
    assert!(
        t0.elapsed() < Duration::from_secs(2) + GRACE,
        "{:?}",
        t0.elapsed()
    );

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn action_finishing_before_its_deadline_succeeds() -> anyhow::Result<()> {
    let (svc, _probe) = slow();
    let host = start(svc).await?;
    let s = host.services::<Slow>();

    let t0 = Instant::now();
    let out = s
        .action("sleep", 4u64)
        .timeout(Duration::from_secs(5))
        .execute()
        .await?;
    assert_eq!(out.value::<u64>()?, 4);
    assert_between(
        "finished",
        t0.elapsed(),
        Duration::from_secs(4),
        Duration::from_secs(4) + TICK,
    );

    koan::testing::stop(&host).await?;
    Ok(())
}
