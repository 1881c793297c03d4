//! The emitting service shared by the event tests, and the ways they subscribe to it
//! and wait for what it delivers.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use koan::event::{Overflow, Subscription};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions,
};
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc};

/// A service that emits on request. It declares `Tick`, `Other`, `Barrier` and
/// `Pair`; `emit_named` emits any name, declared or not.
#[derive(Default)]
pub(crate) struct Emitter;

impl Service for Emitter {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Emitter")
    }

    fn actions(a: &mut Actions<Self>) {
        // `Tick` n, then `Other` n + 1.
        a.action(
            "emit",
            |_svc: Arc<Self>, n: u32, cx: ActionContext| async move {
                cx.emit("Tick", n).await;
                cx.emit("Other", n + 1).await;
                Ok::<_, BoxError>(n)
            },
        );
        // `Tick` 0 to count - 1, in a loop inside one handler.
        a.action(
            "emit_many",
            |_svc: Arc<Self>, count: u32, cx: ActionContext| async move {
                for n in 0..count {
                    cx.emit("Tick", n).await;
                }
                Ok::<_, BoxError>(count)
            },
        );
        // The event of the name given, with 7 for its payload.
        a.action(
            "emit_named",
            |_svc: Arc<Self>, name: String, cx: ActionContext| async move {
                cx.emit(&name, 7u32).await;
                Ok::<_, BoxError>(())
            },
        );
        // `Tick` n through the host's handle, which knows no action: the event takes
        // the correlation id of the action whose handler is running. After a yield,
        // so that it is read on a later poll of the handler.
        a.action(
            "emit_via_host",
            |_svc: Arc<Self>, n: u32, cx: ActionContext| async move {
                tokio::task::yield_now().await;
                let host = cx.host().ok_or("the host is gone")?;
                host.emit("Emitter", "Tick", n).await?;
                Ok::<_, BoxError>(n)
            },
        );
        a.action(
            "fail",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                Err::<(), BoxError>("no".into())
            },
        );
        a.event::<u32>("Tick");
        a.event::<u32>("Other");
        a.event::<()>("Barrier");
        a.event::<(u32, u32)>("Pair");
    }
}

impl BackgroundService for Emitter {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A started test host running the `Emitter`.
pub(crate) async fn start() -> anyhow::Result<HostHandle> {
    let host = koan::testing::host().service::<Emitter>().build()?.start();
    host.started().await?;
    Ok(host)
}

/// Stops the host, as the last step of a test.
pub(crate) async fn stop(host: &HostHandle) -> anyhow::Result<()> {
    Ok(koan::testing::stop(host).await?)
}

/// A handler that forwards what it gets into a channel.
pub(crate) fn forward<T: Send + 'static>(
    tx: &mpsc::UnboundedSender<T>,
) -> impl Fn(T) -> std::future::Ready<()> + Send + Sync + 'static {
    let tx = tx.clone();
    move |v: T| {
        let _ = tx.send(v);
        std::future::ready(())
    }
}

/// Subscribes to the Emitter's `event` with a handler that forwards each payload into
/// the returned channel; the channel ends when the handler goes.
pub(crate) async fn forwarded<T>(
    host: &HostHandle,
    event: &str,
    overflow: Overflow,
) -> anyhow::Result<(Subscription, mpsc::UnboundedReceiver<T>)>
where
    T: DeserializeOwned + Clone + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let sub = host
        .service("Emitter")
        .on(event)
        .handle(forward(&tx))
        .overflow(overflow)
        .subscribe()
        .await?;
    Ok((sub, rx))
}

/// Everything already in the channel.
pub(crate) fn drain<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(v) = rx.try_recv() {
        out.push(v);
    }
    out
}

/// `f`'s output, failing (on the paused clock, after a virtual minute) instead of
/// hanging.
pub(crate) async fn within_a_minute<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("still waiting after a minute")
}

/// `f`'s output, failing after a minute with a message naming `what` instead of
/// hanging: a minute of the paused clock, or of real time on a multi-thread runtime
/// (where [`koan::testing::within`]'s hour would be a real hour).
pub(crate) async fn within_a_minute_for<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("still waiting after a minute for {what}"))
}

/// The next value, failing (on the paused clock, after a virtual minute) instead of
/// hanging when none comes.
pub(crate) async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    within_a_minute(rx.recv()).await.expect("channel closed")
}

/// Asserts that the channel ends without another value: the handler that held its
/// sender is gone.
pub(crate) async fn assert_ended<T: std::fmt::Debug + PartialEq>(
    rx: &mut mpsc::UnboundedReceiver<T>,
) {
    let end = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
    let end = end.expect("the dropped handler still holds its sender");
    assert_eq!(end, None);
}

/// Polls `f` once and keeps it: whether it is still pending.
pub(crate) async fn still_pending<F: Future + Unpin>(f: &mut F) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx).is_pending())).await
}

/// A `Tick` subscriber that reports each event and waits at event 0 for a permit of
/// the returned gate; emits 0 and returns once the handler is stuck on it, so the
/// buffer is all that takes the next events.
pub(crate) async fn stuck_subscriber(
    host: &HostHandle,
    buffer: usize,
    overflow: Overflow,
) -> anyhow::Result<(Subscription, Arc<Semaphore>, mpsc::UnboundedReceiver<u32>)> {
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let sub = host
        .service("Emitter")
        .on("Tick")
        .handle({
            let gate = Arc::clone(&gate);
            move |n: u32| {
                let (tx, gate) = (tx.clone(), Arc::clone(&gate));
                async move {
                    let _ = tx.send(n);
                    if n == 0 {
                        // Stuck until the test says so.
                        gate.acquire().await?.forget();
                    }
                    Ok::<(), BoxError>(())
                }
            }
        })
        .buffer(buffer)
        .overflow(overflow)
        .subscribe()
        .await?;
    // Bounded: a slip in the ring (no room for any event) would hold it for ever.
    within_a_minute_for(
        "the first emit to the stuck subscriber",
        host.emit("Emitter", "Tick", 0u32),
    )
    .await?;
    assert_eq!(next(&mut rx).await, 0, "the handler is now stuck");
    Ok((sub, gate, rx))
}

/// Runs `task(host, n)` for each `n` in `0..count`, each on a task of its own, all at
/// once, and waits for all of them.
pub(crate) async fn all_at_once<F, Fut, T>(
    host: &HostHandle,
    count: u32,
    task: F,
) -> anyhow::Result<()>
where
    F: Fn(HostHandle, u32) -> Fut,
    Fut: Future<Output = koan::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..count)
        .map(|n| tokio::spawn(task(host.clone(), n)))
        .collect();
    // Bounded: an emit that waits for ever on a subscriber fails the test.
    for t in tasks {
        within_a_minute(t).await??;
    }
    Ok(())
}

/// Emits `Tick` for each of `ns`, asserting that each emit returns at its first poll.
pub(crate) async fn emit_at_once(
    host: &HostHandle,
    ns: std::ops::RangeInclusive<u32>,
    why: &str,
) -> anyhow::Result<()> {
    for n in ns {
        super::poll_once(host.emit("Emitter", "Tick", n))
            .await
            .unwrap_or_else(|| panic!("emit {n} waited: {why}"))?;
    }
    Ok(())
}
