//! Event delivery under `Overflow::Wait`: an emitter waits while a subscriber's
//! buffer is full, nothing is lost, every subscriber keeps emission order (also with
//! several emitters at once), and a subscriber that goes away stops holding emitters
//! back. Handlers that panic — even before returning their future — do not stop later
//! deliveries. (The rest of delivery is in `events_delivery.rs`.)

mod common;

use std::future::Future;

use common::events::{
    all_at_once, emit_at_once, forwarded, next, start, still_pending, stop, stuck_subscriber,
    within_a_minute,
};
use koan::{HostHandle, event::Overflow};
use tokio::sync::mpsc;

/// Emits `Tick` `n`, asserting that the emit waits (a subscriber's buffer is full);
/// returns the waiting emit.
async fn held_emit(
    host: &HostHandle,
    n: u32,
    why: &str,
) -> std::pin::Pin<Box<dyn Future<Output = koan::Result<()>> + Send>> {
    let host = host.clone();
    let mut emit: std::pin::Pin<Box<dyn Future<Output = koan::Result<()>> + Send>> =
        Box::pin(async move { host.emit("Emitter", "Tick", n).await });
    assert!(still_pending(&mut emit).await, "{why}");
    emit
}

#[tokio::test(start_paused = true)]
async fn a_full_subscriber_holds_the_emitter_and_loses_nothing() -> anyhow::Result<()> {
    let host = start().await?;
    let (_sub, gate, mut rx) = stuck_subscriber(&host, 4, Overflow::Wait).await?;
    // Its buffer takes four more at once …
    emit_at_once(&host, 1..=4, "an emit within the buffer waits").await?;
    // … and the fifth waits for room.
    let fifth = held_emit(&host, 5, "the buffer is full").await;

    gate.add_permits(1);
    within_a_minute(fifth).await?;
    for n in 1..=5u32 {
        assert_eq!(next(&mut rx).await, n, "in order, none lost");
    }
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_goes_away_stops_holding_the_emitter() -> anyhow::Result<()> {
    let host = start().await?;
    // A healthy subscriber, and a second one of the same event that gets stuck on 0.
    let (_other, mut healthy) = forwarded::<u32>(&host, "Tick", Overflow::Wait).await?;
    let (sub, _gate, _rx) = stuck_subscriber(&host, 2, Overflow::Wait).await?;
    emit_at_once(&host, 1..=2, "the stuck one's buffer has room").await?;
    let held = held_emit(&host, 3, "held by the stuck one").await;

    drop(sub);
    within_a_minute(held).await?;
    for n in 0..=3u32 {
        assert_eq!(next(&mut healthy).await, n);
    }
    stop(&host).await
}

/// Subscribes one handler per `(what, overflow, buffer)` to the Emitter's `event`,
/// each forwarding what `handler` makes of a payload into a channel of its own;
/// returns the subscriptions and the channels, in order.
async fn subscribers<T, H, Fut>(
    host: &HostHandle,
    event: &str,
    each: &[(Overflow, usize)],
    handler: H,
) -> anyhow::Result<(
    Vec<koan::event::Subscription>,
    Vec<mpsc::UnboundedReceiver<T>>,
)>
where
    T: serde::de::DeserializeOwned + Clone + Send + 'static,
    H: Fn(usize, T, mpsc::UnboundedSender<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (mut subs, mut receivers) = (Vec::new(), Vec::new());
    for (k, (overflow, buffer)) in each.iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel::<T>();
        let handler = handler.clone();
        let sub = host
            .service("Emitter")
            .on(event)
            .handle(move |p: T| handler(k, p, tx.clone()))
            .buffer(*buffer)
            .overflow(*overflow)
            .subscribe()
            .await?;
        subs.push(sub);
        receivers.push(rx);
    }
    Ok((subs, receivers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_emitters_reach_every_subscriber_once_in_order() -> anyhow::Result<()> {
    const EMITTERS: u32 = 4;
    const EACH: u32 = 500;
    let host = start().await?;
    // Small and default buffers; one handler (the second) that suspends.
    let each = [
        (Overflow::Wait, 1),
        (Overflow::Wait, 8),
        (Overflow::Wait, 1024),
    ];
    let (subs, mut receivers) =
        subscribers(&host, "Pair", &each, |k, p: (u32, u32), tx| async move {
            if k == 1 {
                tokio::task::yield_now().await;
            }
            let _ = tx.send(p);
        })
        .await?;

    all_at_once(&host, EMITTERS, |host, e| async move {
        for i in 0..EACH {
            host.emit("Emitter", "Pair", (e, i)).await?;
        }
        Ok::<_, koan::Error>(())
    })
    .await?;
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
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn handlers_that_panic_before_returning_their_future_are_contained() -> anyhow::Result<()> {
    let host = start().await?;
    let each = [(Overflow::Wait, 1024), (Overflow::DropNewest, 1024)];
    let (subs, mut receivers) = subscribers(&host, "Tick", &each, |_, n: u32, tx| {
        assert_ne!(n, 1, "handler refuses event 1");
        let _ = tx.send(n);
        std::future::ready(())
    })
    .await?;
    for n in 0..3u32 {
        // Bounded: one of the subscribers waits for room.
        koan::testing::within("an emit", host.emit("Emitter", "Tick", n)).await?;
    }
    for rx in &mut receivers {
        assert_eq!(next(rx).await, 0);
        assert_eq!(next(rx).await, 2, "delivery goes on after the panic");
    }
    drop(subs);
    stop(&host).await
}
