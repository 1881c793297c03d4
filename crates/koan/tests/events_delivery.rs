//! Event delivery: correlation ids, `once()` under concurrent emits, filters,
//! unsubscribing, per-subscriber order, failing handlers and `DropNewest` (the seed's
//! "Testing Support" translation scenario is in `events_translation.rs`;
//! `Overflow::Wait` in `events_backpressure.rs`). Deliveries are awaited on channels.

mod common;

use common::events::{
    Emitter, all_at_once, assert_ended, drain, emit_at_once, forward, forwarded, next, start, stop,
    stuck_subscriber, within_a_minute_for,
};
use koan::{BoxError, HostHandle, error::ErrorKind, event::EventEnvelope, event::Overflow};
use tokio::sync::mpsc;

/// Emits `Barrier` and waits until the subscriber forwarding it to `rx` handled it:
/// a subscriber handles its events in order, so everything emitted before the
/// barrier has been handled too.
async fn barrier(host: &HostHandle, rx: &mut mpsc::UnboundedReceiver<()>) -> anyhow::Result<()> {
    within_a_minute_for("the barrier's emit", host.emit("Emitter", "Barrier", ())).await?;
    // A minute, not `koan::testing::within`'s hour: the multi-thread tests use it too.
    within_a_minute_for("the barrier event", rx.recv())
        .await
        .expect("barrier delivered");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn events_emitted_during_an_action_carry_its_correlation_id() -> anyhow::Result<()> {
    let host = start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<EventEnvelope>();
    let _sub = host
        .service("Emitter")
        .on("Tick")
        .handle_envelope(forward(&tx))
        .on("Other")
        .handle_envelope(forward(&tx))
        .subscribe()
        .await?;

    host.services::<Emitter>()
        .action("emit", 7u32)
        .correlation_id("corr-xyz")
        .execute()
        .await?;
    let tick = next(&mut rx).await;
    let other = next(&mut rx).await;
    assert_eq!(tick.name(), "Tick");
    assert_eq!(tick.service(), "Emitter");
    assert_eq!(tick.correlation_id(), Some("corr-xyz"));
    assert_eq!(tick.payload::<u32>()?, 7);
    assert_eq!(tick.payload_json(), serde_json::json!(7));
    assert_eq!(other.name(), "Other");
    assert_eq!(other.correlation_id(), Some("corr-xyz"));
    assert_eq!(other.payload::<u32>()?, 8);
    assert!(other.seq() > tick.seq());

    // A generated correlation id is carried just the same.
    let out = host
        .services::<Emitter>()
        .action("emit", 1u32)
        .execute()
        .await?;
    let tick = next(&mut rx).await;
    assert_eq!(tick.correlation_id(), Some(out.correlation_id()));
    next(&mut rx).await;

    // Through the host's handle, after the handler yielded: the id of the action
    // being run, with or without a deadline (a run with one is polled by another
    // path). Then, on this same thread, none again (below).
    for timeout in [None, Some(std::time::Duration::from_secs(5))] {
        let mut call = host
            .services::<Emitter>()
            .action("emit_via_host", 9u32)
            .correlation_id("corr-host");
        if let Some(t) = timeout {
            call = call.timeout(t);
        }
        call.execute().await?;
        let tick = next(&mut rx).await;
        assert_eq!(tick.payload::<u32>()?, 9);
        assert_eq!(
            tick.correlation_id(),
            Some("corr-host"),
            "timeout {timeout:?}"
        );
    }

    // Outside any action there is none.
    host.emit("Emitter", "Tick", 3u32).await?;
    let tick = next(&mut rx).await;
    assert_eq!(tick.payload::<u32>()?, 3);
    assert_eq!(tick.correlation_id(), None);
    stop(&host).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_delivers_exactly_once_under_a_thousand_concurrent_emits() -> anyhow::Result<()> {
    let host = start().await?;
    let (once_tx, mut once_rx) = mpsc::unbounded_channel::<u32>();
    let (odd_tx, mut odd_rx) = mpsc::unbounded_channel::<u32>();
    let (all_tx, mut all_rx) = mpsc::unbounded_channel::<u32>();
    let (barrier_tx, mut barrier_rx) = mpsc::unbounded_channel::<()>();
    let _sub = host
        .service("Emitter")
        .on("Tick")
        .once()
        .handle(forward(&once_tx))
        .on("Tick")
        .filter::<u32, _>(|n| n % 2 == 1)
        .once()
        .handle(forward(&odd_tx))
        .on("Tick")
        .handle(forward(&all_tx))
        .on("Barrier")
        .handle(forward(&barrier_tx))
        .overflow(Overflow::Wait)
        .subscribe()
        .await?;

    all_at_once(&host, 1000, |host, n| async move {
        host.emit("Emitter", "Tick", n).await
    })
    .await?;
    barrier(&host, &mut barrier_rx).await?;
    let once = drain(&mut once_rx);
    assert_eq!(once.len(), 1, "once delivered {once:?}");
    let odd = drain(&mut odd_rx);
    assert_eq!(odd.len(), 1, "filtered once delivered {odd:?}");
    assert_eq!(odd[0] % 2, 1);
    let mut all = drain(&mut all_rx);
    all.sort_unstable();
    assert_eq!(
        all,
        (0..1000).collect::<Vec<u32>>(),
        "the plain route saw every event"
    );

    // Later emits do not revive a spent `once`.
    within_a_minute_for("a later emit", host.emit("Emitter", "Tick", 5000u32)).await?;
    barrier(&host, &mut barrier_rx).await?;
    assert!(drain(&mut once_rx).is_empty());
    assert!(drain(&mut odd_rx).is_empty());
    assert_eq!(drain(&mut all_rx), [5000]);
    stop(&host).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_holds_when_a_thousand_actions_emit_concurrently() -> anyhow::Result<()> {
    let host = start().await?;
    let (once_tx, mut once_rx) = mpsc::unbounded_channel::<u32>();
    let (barrier_tx, mut barrier_rx) = mpsc::unbounded_channel::<()>();
    let _sub = host
        .service("Emitter")
        .on("Other")
        .once()
        .handle(forward(&once_tx))
        .on("Barrier")
        .handle(forward(&barrier_tx))
        .subscribe()
        .await?;

    all_at_once(&host, 1000, |host, n| async move {
        host.services::<Emitter>().action("emit", n).execute().await
    })
    .await?;
    barrier(&host, &mut barrier_rx).await?;
    assert_eq!(drain(&mut once_rx).len(), 1);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn filters_select_by_payload() -> anyhow::Result<()> {
    let host = start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let (never_tx, mut never_rx) = mpsc::unbounded_channel::<String>();
    let (barrier_tx, mut barrier_rx) = mpsc::unbounded_channel::<()>();
    let _sub = host
        .service("Emitter")
        .on("Tick")
        .filter::<u32, _>(|n| n % 3 == 0)
        .handle(forward(&tx))
        // A payload that does not fit the filter's type does not pass.
        .on("Tick")
        .filter::<String, _>(|_| true)
        .handle(forward(&never_tx))
        .on("Barrier")
        .handle(forward(&barrier_tx))
        .subscribe()
        .await?;

    for n in 0..10u32 {
        host.emit("Emitter", "Tick", n).await?;
    }
    barrier(&host, &mut barrier_rx).await?;
    assert_eq!(drain(&mut rx), [0, 3, 6, 9]);
    assert!(drain(&mut never_rx).is_empty());
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn dropping_the_subscription_stops_delivery() -> anyhow::Result<()> {
    let host = start().await?;
    let (sub, mut rx) = forwarded::<u32>(&host, "Tick", Overflow::DropNewest).await?;
    // A second subscriber shows that the later event was really emitted.
    let (_witness, mut witness_rx) = forwarded::<u32>(&host, "Tick", Overflow::DropNewest).await?;

    host.emit("Emitter", "Tick", 1u32).await?;
    assert_eq!(next(&mut rx).await, 1);
    assert_eq!(next(&mut witness_rx).await, 1);

    drop(sub);
    host.emit("Emitter", "Tick", 2u32).await?;
    assert_eq!(next(&mut witness_rx).await, 2);
    // The handler (and its sender) is gone: the channel ends without another value.
    assert_ended(&mut rx).await;

    // `unsubscribe()` does the same.
    let (tx3, mut rx3) = mpsc::unbounded_channel::<u32>();
    let sub3 = host
        .events()
        .on("Tick")
        .handle(forward(&tx3))
        .subscribe()
        .await?;
    drop(tx3);
    sub3.unsubscribe();
    host.emit("Emitter", "Tick", 3u32).await?;
    assert_eq!(next(&mut witness_rx).await, 3);
    assert_ended(&mut rx3).await;
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn each_subscriber_gets_events_in_emission_order() -> anyhow::Result<()> {
    let host = start().await?;
    let (a_tx, mut a_rx) = mpsc::unbounded_channel::<EventEnvelope>();
    let (b_tx, mut b_rx) = mpsc::unbounded_channel::<u32>();
    let _a = host
        .service("Emitter")
        .on("Tick")
        .handle_envelope(forward(&a_tx))
        .overflow(Overflow::Wait)
        .subscribe()
        .await?;
    // A host-wide subscriber with a buffer smaller than the burst, waiting for room.
    let _b = host
        .events()
        .on("Tick")
        .handle(move |n: u32| {
            let tx = b_tx.clone();
            async move {
                tokio::task::yield_now().await;
                let _ = tx.send(n);
            }
        })
        .buffer(8)
        .overflow(Overflow::Wait)
        .subscribe()
        .await?;

    // Bounded: a subscriber that never reads would hold the emitter for ever.
    koan::testing::within("1000 emits to subscribers that wait for room", async {
        for n in 0..1000u32 {
            host.emit("Emitter", "Tick", n).await?;
        }
        Ok::<_, koan::Error>(())
    })
    .await?;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..1000 {
        a.push(next(&mut a_rx).await);
        b.push(next(&mut b_rx).await);
    }
    let expected: Vec<u32> = (0..1000).collect();
    let payloads: Vec<u32> = a
        .iter()
        .map(|e| e.payload::<u32>())
        .collect::<Result<_, _>>()?;
    assert_eq!(payloads, expected);
    assert!(
        a.windows(2).all(|w| w[0].seq() < w[1].seq()),
        "seq increases"
    );
    assert_eq!(b, expected);

    // Emitted from inside an action, in a loop, the order holds too.
    koan::testing::within(
        "an action emitting 300 events to subscribers that wait for room",
        host.services::<Emitter>()
            .action("emit_many", 300u32)
            .execute(),
    )
    .await?;
    let mut c = Vec::new();
    for _ in 0..300 {
        c.push(next(&mut b_rx).await);
    }
    assert_eq!(c, (0..300).collect::<Vec<u32>>());
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn failing_and_panicking_handlers_do_not_stop_later_deliveries() -> anyhow::Result<()> {
    let host = start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let _sub = host
        .service("Emitter")
        .on("Tick")
        .handle(move |n: u32| {
            let tx = tx.clone();
            async move {
                if n == 1 {
                    return Err::<(), BoxError>("cannot handle 1".into());
                }
                if n == 2 {
                    panic!("handler panicked on 2");
                }
                let _ = tx.send(n);
                Ok(())
            }
        })
        .subscribe()
        .await?;

    for n in 0..6u32 {
        host.emit("Emitter", "Tick", n).await?;
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next(&mut rx).await);
    }
    assert_eq!(got, [0, 3, 4, 5]);

    // Still subscribed afterwards.
    host.emit("Emitter", "Tick", 9u32).await?;
    assert_eq!(next(&mut rx).await, 9);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn drop_newest_never_blocks_the_emitter() -> anyhow::Result<()> {
    let host = start().await?;
    let (_sub, gate, mut rx) = stuck_subscriber(&host, 1, Overflow::DropNewest).await?;
    // The buffer holds one; every emit returns at its first poll all the same.
    emit_at_once(
        &host,
        1..=20,
        "emit did not wait for the blocked subscriber",
    )
    .await?;
    gate.add_permits(1);
    // The one buffered event comes next; then the buffer is free again.
    assert_eq!(next(&mut rx).await, 1);
    host.emit("Emitter", "Tick", 99u32).await?;
    // Delivery keeps emission order, so any of 2..=20 would have come before 99.
    assert_eq!(
        next(&mut rx).await,
        99,
        "events beyond the buffer were dropped"
    );
    assert!(drain(&mut rx).is_empty());
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn subscribing_to_an_undeclared_event_is_refused() -> anyhow::Result<()> {
    let host = start().await?;
    let e = host
        .service("Emitter")
        .on("Tock")
        .handle(|_: u32| async {})
        .subscribe()
        .await
        .expect_err("Emitter declares no Tock");
    assert_eq!(e.kind(), ErrorKind::UnknownEvent);
    assert!(
        e.message().contains("Tick"),
        "lists the declared events: {e}"
    );
    stop(&host).await
}
