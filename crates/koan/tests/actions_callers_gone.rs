//! A queued call whose caller stopped waiting before it started is not run (an HTTP
//! client that disconnected, a `select!` that took another branch), while work
//! handed over with `spawn()` runs whether or not its ticket is kept.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;

use koan::testing::within;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions,
};
use tokio::sync::Notify;

/// One action at a time: `hold` keeps the slot until the gate opens, `count` counts.
#[derive(Default, Clone)]
struct Gate {
    started: Arc<Notify>,
    open: Arc<Notify>,
    counted: Arc<AtomicU32>,
}

impl Service for Gate {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Gate").max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.started.notify_one();
                svc.open.notified().await;
                Ok::<_, BoxError>(())
            },
        );
        a.action(
            "count",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                Ok::<_, BoxError>(svc.counted.fetch_add(1, Ordering::SeqCst) + 1)
            },
        );
    }
}

impl BackgroundService for Gate {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A host whose `Gate` is busy with a `hold` until `gate.open` is notified.
async fn busy() -> anyhow::Result<(HostHandle, Gate, tokio::task::JoinHandle<()>)> {
    let gate = Gate::default();
    let host = koan::testing::host()
        .instance(gate.clone())
        .build()?
        .start();
    within("the host to start", host.started()).await?;
    let h = host.clone();
    let holding = tokio::spawn(async move {
        let _ = h.service("Gate").action("hold", ()).execute().await;
    });
    within("the hold to start", gate.started.notified()).await;
    Ok((host, gate, holding))
}

/// Opens the gate, lets the hold finish, and returns what a `count` awaited after
/// everything queued behind the hold answers: how many `count`s ran in all.
async fn open_and_count(
    host: &HostHandle,
    gate: &Gate,
    holding: tokio::task::JoinHandle<()>,
) -> anyhow::Result<u32> {
    gate.open.notify_one();
    within("the hold", holding).await?;
    let n = within(
        "a call after the queued one",
        host.service("Gate").action("count", ()).execute(),
    )
    .await?
    .value::<u32>()?;
    Ok(n)
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_whose_caller_stopped_waiting_is_not_run() -> anyhow::Result<()> {
    let (host, gate, holding) = busy().await?;

    // Queued behind the hold (polled once), then given up.
    let mut gone = Box::pin(host.service("Gate").action("count", ()).execute());
    let queued = std::future::poll_fn(|cx| Poll::Ready(gone.as_mut().poll(cx).is_pending())).await;
    assert!(queued, "the call waits behind the hold");
    drop(gone);

    // Behind the given-up call: run once it was passed over.
    let n = open_and_count(&host, &gate, holding).await?;
    assert_eq!(n, 1, "the call whose caller stopped waiting was run");
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_spawned_call_runs_with_its_ticket_dropped() -> anyhow::Result<()> {
    let (host, gate, holding) = busy().await?;

    drop(host.service("Gate").action("count", ()).spawn()?);

    let n = open_and_count(&host, &gate, holding).await?;
    assert_eq!(
        n, 2,
        "the spawned call whose ticket was dropped did not run"
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
