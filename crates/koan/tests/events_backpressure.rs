//! `Overflow::Wait`: an emitter waits while a subscriber's buffer is full, nothing is
//! lost, every subscriber keeps emission order (also with several emitters at
//! once), and a subscriber that goes away stops holding emitters back. Handlers
//! that panic — even before returning their future — do not stop later deliveries.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use koan::{
    Actions, Background, BackgroundService, BoxError, HostHandle, Overflow, Service,
    ServiceContext, ServiceOptions,
};
use tokio::sync::{Semaphore, mpsc};

#[derive(Default)]
struct Emitter;

impl Service for Emitter {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Emitter")
    }

    fn actions(a: &mut Actions<Self>) {
        a.event::<u32>("Tick");
        a.event::<(u32, u32)>("Pair");
    }
}

impl BackgroundService for Emitter {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn start() -> anyhow::Result<HostHandle> {
    let host = koan::testing::host().service::<Emitter>().build()?.start();
    host.started().await?;
    Ok(host)
}

/// Polls `f` once: `Some(output)` when it finished without waiting.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// `f`'s output, failing (on the paused clock, after a virtual minute) instead of
/// hanging.
async fn within_a_minute<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(60), f)
        .await
        .expect("still waiting after a minute")
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
        .await
        .expect("nothing delivered")
        .expect("channel closed")
}

/// A subscriber whose handler stops at event 0 until the gate opens.
async fn stuck_subscriber(
    host: &HostHandle,
    buffer: usize,
) -> anyhow::Result<(
    koan::Subscription,
    Arc<Semaphore>,
    mpsc::UnboundedReceiver<u32>,
)> {
    let gate = Arc::new(Semaphore::new(0));
    let (tx, rx) = mpsc::unbounded_channel::<u32>();
    let sub = host
        .services::<Emitter>()
        .on("Tick")
        .handle({
            let gate = Arc::clone(&gate);
            move |n: u32| {
                let (tx, gate) = (tx.clone(), Arc::clone(&gate));
                async move {
                    let _ = tx.send(n);
                    if n == 0 {
                        gate.acquire().await?.forget();
                    }
                    Ok::<(), BoxError>(())
                }
            }
        })
        .buffer(buffer)
        .overflow(Overflow::Wait)
        .subscribe()
        .await?;
    Ok((sub, gate, rx))
}

#[tokio::test(start_paused = true)]
async fn a_full_subscriber_holds_the_emitter_and_loses_nothing() -> anyhow::Result<()> {
    let host = start().await?;
    let (_sub, gate, mut rx) = stuck_subscriber(&host, 4).await?;

    host.emit("Emitter", "Tick", 0u32).await?;
    assert_eq!(next(&mut rx).await, 0, "the handler is now stuck");
    // Its buffer takes four more at once …
    for n in 1..=4u32 {
        let mut emit = Box::pin(host.emit("Emitter", "Tick", n));
        poll_once(&mut emit)
            .await
            .expect("an emit within the buffer waits")?;
    }
    // … and the fifth waits for room.
    let mut fifth = Box::pin(host.emit("Emitter", "Tick", 5u32));
    assert!(poll_once(&mut fifth).await.is_none(), "the buffer is full");

    gate.add_permits(1);
    within_a_minute(fifth).await?;
    for n in 1..=5u32 {
        assert_eq!(next(&mut rx).await, n, "in order, none lost");
    }

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_goes_away_stops_holding_the_emitter() -> anyhow::Result<()> {
    let host = start().await?;
    let (sub, _gate, mut rx) = stuck_subscriber(&host, 2).await?;
    // A second, healthy subscriber of the same event.
    let (tx, mut healthy) = mpsc::unbounded_channel::<u32>();
    let _other = host
        .services::<Emitter>()
        .on("Tick")
        .handle(move |n: u32| {
            let _ = tx.send(n);
            std::future::ready(())
        })
        .overflow(Overflow::Wait)
        .subscribe()
        .await?;

    host.emit("Emitter", "Tick", 0u32).await?;
    assert_eq!(next(&mut rx).await, 0);
    for n in 1..=2u32 {
        host.emit("Emitter", "Tick", n).await?;
    }
    let mut held = Box::pin(host.emit("Emitter", "Tick", 3u32));
    assert!(
        poll_once(&mut held).await.is_none(),
        "held by the stuck one"
    );

    drop(sub);
    within_a_minute(held).await?;
    for n in 0..=3u32 {
        assert_eq!(next(&mut healthy).await, n);
    }

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_emitters_reach_every_subscriber_once_in_order() -> anyhow::Result<()> {
    const EMITTERS: u32 = 4;
    const EACH: u32 = 500;
    let host = start().await?;
    let mut receivers = Vec::new();
    let mut subs = Vec::new();
    // Small and default buffers; one handler that suspends.
    for (buffer, suspends) in [(1, false), (8, true), (1024, false)] {
        let (tx, rx) = mpsc::unbounded_channel::<(u32, u32)>();
        receivers.push(rx);
        subs.push(
            host.services::<Emitter>()
                .on("Pair")
                .handle(move |p: (u32, u32)| {
                    let tx = tx.clone();
                    async move {
                        if suspends {
                            tokio::task::yield_now().await;
                        }
                        let _ = tx.send(p);
                    }
                })
                .buffer(buffer)
                .overflow(Overflow::Wait)
                .subscribe()
                .await?,
        );
    }

    let emitters: Vec<_> = (0..EMITTERS)
        .map(|e| {
            let host = host.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    host.emit("Emitter", "Pair", (e, i)).await?;
                }
                Ok::<_, koan::Error>(())
            })
        })
        .collect();
    for e in emitters {
        e.await??;
    }

    for rx in &mut receivers {
        let mut last = vec![None::<u32>; EMITTERS as usize];
        for _ in 0..EMITTERS * EACH {
            let (e, i) = next(rx).await;
            let prev = last[e as usize].replace(i);
            assert_eq!(prev.map_or(0, |p| p + 1), i, "emitter {e}'s order");
        }
        assert!(rx.try_recv().is_err(), "nothing delivered twice");
    }

    drop(subs);
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn handlers_that_panic_before_returning_their_future_are_contained() -> anyhow::Result<()> {
    let host = start().await?;
    let mut receivers = Vec::new();
    let mut subs = Vec::new();
    for overflow in [Overflow::Wait, Overflow::DropNewest] {
        let (tx, rx) = mpsc::unbounded_channel::<u32>();
        receivers.push(rx);
        subs.push(
            host.services::<Emitter>()
                .on("Tick")
                .handle(move |n: u32| {
                    assert_ne!(n, 1, "handler refuses event 1");
                    let _ = tx.send(n);
                    std::future::ready(())
                })
                .overflow(overflow)
                .subscribe()
                .await?,
        );
    }
    for n in 0..3u32 {
        host.emit("Emitter", "Tick", n).await?;
    }
    for rx in &mut receivers {
        assert_eq!(next(rx).await, 0);
        assert_eq!(next(rx).await, 2, "delivery goes on after the panic");
    }

    drop(subs);
    koan::testing::stop(&host).await?;
    Ok(())
}
