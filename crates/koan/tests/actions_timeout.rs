//! Enforced action deadlines, on tokio's paused clock: the caller gets `Timeout` at
//! the deadline, queue time counts, the handler's token fires, and a handler that
//! ignores its token has its future dropped after the grace so the service goes on.

use std::sync::Arc;
use std::time::Duration;

use koan::action::ActionRequest;
use koan::testing::within;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions, Services, error::ErrorKind,
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

/// A started host running a new `Slow`, its client and its probe.
struct Running {
    host: HostHandle,
    s: Services<Slow>,
    probe: Probe,
}

async fn start() -> anyhow::Result<Running> {
    let (svc, probe) = slow();
    let host = koan::testing::host()
        .action_grace(GRACE)
        .instance(svc)
        .build()?
        .start();
    host.started().await?;
    let s = host.services::<Slow>();
    Ok(Running { host, s, probe })
}

impl Running {
    /// Calls `ping` (with its own deadline, so a stuck worker fails the test instead
    /// of hanging it) and checks its answer.
    async fn ping(&self) -> anyhow::Result<()> {
        let call = self.s.action("ping", ()).timeout(Duration::from_secs(60));
        let out = within("a `ping` call", call.execute()).await?;
        assert_eq!(out.value::<String>()?, "pong");
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        Ok(koan::testing::stop(&self.host).await?)
    }
}

fn assert_between(what: &str, elapsed: Duration, from: Duration, to: Duration) {
    assert!(
        elapsed >= from && elapsed <= to,
        "{what}: {elapsed:?} is not within [{from:?}, {to:?}]"
    );
}

/// The two ways to call an action: `execute` waits for the answer, `spawn` hands
/// back a ticket to wait on.
#[derive(Clone, Copy, Debug)]
enum Call {
    Execute,
    Spawn,
}

impl Call {
    /// Calls `req` with a deadline of `secs` seconds and expects `Timeout` exactly at
    /// that deadline (counted from now); returns the error.
    async fn timed_out(self, req: ActionRequest, secs: u64) -> anyhow::Result<koan::Error> {
        let deadline = Duration::from_secs(secs);
        let req = req.timeout(deadline);
        let t0 = Instant::now();
        let answer = match self {
            Call::Execute => req.execute().await,
            Call::Spawn => within("the ticket's outcome", req.spawn()?.outcome()).await,
        };
        let err = answer.expect_err("the deadline passes");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{self:?}");
        assert_between(
            &format!("{self:?} answered"),
            t0.elapsed(),
            deadline,
            deadline + TICK,
        );
        Ok(err)
    }
}

/// A handler that ignores its token times out at the deadline, its future is dropped
/// once the grace has passed, and the worker serves the next action.
async fn hang_times_out(call: Call) -> anyhow::Result<()> {
    let mut run = start().await?;
    let t0 = Instant::now();
    let err = call.timed_out(run.s.action("hang", ()), 5).await?;
    assert!(err.message().contains("hang"), "{err}");
    // The limit the caller set, whichever clock timed it.
    assert!(err.message().contains("its timeout of 5s"), "{err}");

    let dropped_at = within("the hung future to be dropped", run.probe.dropped.recv())
        .await
        .expect("the hung future is dropped");
    assert_between(
        "future dropped",
        dropped_at - t0,
        Duration::from_secs(5) + GRACE,
        Duration::from_secs(5) + GRACE + 2 * TICK,
    );
    run.ping().await?;
    run.stop().await
}

/// A 10 s action occupies the only worker; `quick` would take no time at all, but
/// waits behind it longer than its 3 s deadline: it times out and is never run, and
/// the long action is unaffected.
async fn queue_time_counts(call: Call) -> anyhow::Result<()> {
    let mut run = start().await?;
    let long = run.s.action("sleep", 10u64).spawn()?;
    let err = call.timed_out(run.s.action("quick", ()), 3).await?;
    // Never taken by a worker: said not to have started.
    assert!(
        err.message()
            .contains("did not start within its timeout of 3s")
            && err.not_started(),
        "{err}"
    );

    let long = within("the long action's outcome", long.outcome()).await?;
    assert_eq!(long.value::<u64>()?, 10);
    run.ping().await?;
    assert!(
        run.probe.quick_ran.try_recv().is_err(),
        "an action past its deadline was still run"
    );
    run.stop().await
}

/// One test per way of calling, for each deadline written once above.
macro_rules! per_call {
    ($($test:ident: $check:ident($call:expr);)*) => {$(
        #[tokio::test(start_paused = true)]
        async fn $test() -> anyhow::Result<()> {
            $check($call).await
        }
    )*};
}

per_call! {
    handler_ignoring_its_token_times_out_and_is_dropped_after_the_grace: hang_times_out(Call::Execute);
    spawned_action_ignoring_its_token_is_answered_timed_out: hang_times_out(Call::Spawn);
    queue_time_counts_toward_the_deadline: queue_time_counts(Call::Execute);
    spawned_action_behind_a_long_one_times_out_at_its_deadline: queue_time_counts(Call::Spawn);
}

#[tokio::test(start_paused = true)]
async fn cooperative_handler_sees_its_token_fire_at_the_deadline() -> anyhow::Result<()> {
    let mut run = start().await?;
    let t0 = Instant::now();
    Call::Execute
        .timed_out(run.s.action("cooperative", ()), 2)
        .await?;

    let (fired_at, remaining, cancelled_before) =
        koan::testing::within("the token to fire", run.probe.cancelled.recv())
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
    run.ping().await?;
    assert!(
        t0.elapsed() < Duration::from_secs(2) + GRACE,
        "{:?}",
        t0.elapsed()
    );
    run.stop().await
}

#[tokio::test(start_paused = true)]
async fn action_finishing_before_its_deadline_succeeds() -> anyhow::Result<()> {
    let run = start().await?;
    let t0 = Instant::now();
    let out = run
        .s
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
    run.stop().await
}
