//! Dropping a subscription while its events are in hand: its task starts no
//! handler after the drop, on either lane (its own channel, or a cursor on the
//! event's ring for `Overflow::Wait`). Its task went on through what it held: the
//! abort lands only where the task waits, and a reader with new events never
//! waits, so a ring reader kept reading slots the emitter — no longer held back by
//! it — overwrote, and said so at error level for each (100,000 subscribe/drop
//! cycles beside one emitter logged 106,811 such lines in a second, and a handler
//! ran 4 times after its `drop` returned; found by a tester).
//!
//! Here the handler drops its own subscription: on a current-thread runtime, the
//! rest of its task's batch runs within the same poll, as it does on another
//! worker thread when a drop comes from elsewhere.

mod common;

use std::sync::{Arc, Mutex};

use common::events::{emit_at_once, start, stop};
use common::logs::Logs;
use koan::HostHandle;
use koan::event::{Overflow, Subscription};
use tokio::sync::mpsc;

/// Every value sent before the channel ended (its handler gone), bounded.
async fn all_until_ended(mut rx: mpsc::UnboundedReceiver<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    let all = async {
        while let Some(n) = rx.recv().await {
            got.push(n);
        }
    };
    common::events::within_a_minute_for("the dropped handler to be gone", all).await;
    got
}

/// Subscribes to `Tick` with a handler that reports each payload and, at `0`,
/// drops its own subscription, then emits `then` more `Tick`s (100 on) from inside
/// the handler.
async fn dropped_by_its_handler(
    host: &HostHandle,
    overflow: Overflow,
    then: u32,
) -> anyhow::Result<mpsc::UnboundedReceiver<u32>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let slot: Arc<Mutex<Option<Subscription>>> = Arc::default();
    let sub = host
        .service("Emitter")
        .on("Tick")
        .handle({
            let (slot, host) = (Arc::clone(&slot), host.clone());
            move |n: u32| {
                let _ = tx.send(n);
                let dropped = (n == 0).then(|| slot.lock().ok()?.take()).flatten();
                let host = host.clone();
                async move {
                    let Some(sub) = dropped else {
                        return Ok::<(), koan::Error>(());
                    };
                    drop(sub);
                    // No subscriber holds these back now: they run through the
                    // ring's blocks, over the ones this reader had not read.
                    for n in 100..100 + then {
                        host.emit("Emitter", "Tick", n).await?;
                    }
                    Ok(())
                }
            }
        })
        .overflow(overflow)
        .buffer(8)
        .subscribe()
        .await?;
    *slot.lock().map_err(|_| anyhow::anyhow!("the slot"))? = Some(sub);
    Ok(rx)
}

#[tokio::test(start_paused = true)]
async fn a_ring_reader_starts_no_handler_after_its_subscription_is_dropped() -> anyhow::Result<()> {
    let logs = Logs::default();
    let _logs = logs.capture();
    let host = start().await?;
    let rx = dropped_by_its_handler(&host, Overflow::Wait, 200).await?;
    // Five in the reader's hand before it runs: it drops itself at the first.
    emit_at_once(&host, 0..=4, "the buffer has room for five").await?;
    assert_eq!(all_until_ended(rx).await, [0], "no handler after the drop");
    let overwritten = logs.lines_with("overwritten");
    assert!(overwritten.is_empty(), "{overwritten:?}");
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_channel_subscriber_starts_no_handler_after_its_subscription_is_dropped()
-> anyhow::Result<()> {
    let host = start().await?;
    let rx = dropped_by_its_handler(&host, Overflow::DropNewest, 0).await?;
    emit_at_once(&host, 0..=4, "the buffer has room for five").await?;
    assert_eq!(all_until_ended(rx).await, [0], "no handler after the drop");
    stop(&host).await
}
