//! The plumbing of event delivery that the other event suites leave open (found by
//! mutation testing, issue 22): what an envelope carries and how it serializes,
//! events that arrive from another process, a waiting subscriber that joins late or
//! whose buffer is as large as its event's ring, a ring whose readers all left, the
//! room a waiting subscriber gives its emitter after a stall, waiting subscribers of
//! several events and `once` routes (a channel each, not the ring), and the host's
//! shutdown releasing an emit held by a stuck subscriber.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::events::{forwarded, next, start, still_pending, stop, stuck_subscriber};
use common::poll_once;
use koan::event::{EventEnvelope, Overflow};
use koan::transport::HostLink as _;
use koan::{BoxError, HostHandle, testing::within};
use tokio::sync::Semaphore;
use tokio::sync::mpsc;

/// Emits `Tick` `n` and asserts that the emit returned at its first poll.
async fn emit_at_once(host: &HostHandle, n: u32, why: &str) -> anyhow::Result<()> {
    poll_once(host.emit("Emitter", "Tick", n))
        .await
        .unwrap_or_else(|| panic!("emit {n} waited: {why}"))?;
    Ok(())
}

/// Emits `Tick` `n`, asserting that the emit waits; returns the waiting emit.
async fn held_emit(
    host: &HostHandle,
    n: u32,
    why: &str,
) -> std::pin::Pin<Box<dyn Future<Output = koan::Result<()>> + Send>> {
    let host = host.clone();
    let mut emit: std::pin::Pin<Box<dyn Future<Output = koan::Result<()>> + Send>> =
        Box::pin(async move { host.emit("Emitter", "Tick", n).await });
    assert!(
        still_pending(&mut emit).await,
        "emit {n} did not wait: {why}"
    );
    emit
}

#[tokio::test(start_paused = true)]
async fn an_envelope_carries_what_was_emitted_and_serializes_it() -> anyhow::Result<()> {
    let host = start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<EventEnvelope>();
    let _sub = host
        .service("Emitter")
        .on("Tick")
        .handle_envelope(move |env: EventEnvelope| {
            let _ = tx.send(env);
            std::future::ready(())
        })
        .subscribe()
        .await?;
    host.emit("Emitter", "Tick", 7u32).await?;
    let first = next(&mut rx).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    host.service("Emitter")
        .action("emit", 8u32)
        .correlation_id("corr-1")
        .execute()
        .await?;
    let second = next(&mut rx).await;

    assert_eq!((first.service(), first.name()), ("Emitter", "Tick"));
    assert_eq!(first.correlation_id(), None);
    assert_eq!(second.correlation_id(), Some("corr-1"));
    assert_eq!(first.payload::<u32>()?, 7);
    assert_eq!(first.payload_json(), serde_json::json!(7));
    // `Tick` 8 is the next event after `Tick` 7: no other was emitted between.
    assert_eq!(second.seq(), first.seq() + 1);
    assert_eq!(first.seq(), 1, "the host's first event");
    assert_eq!(
        (second.time() - first.time()).num_milliseconds(),
        5000,
        "the time is the host's clock at the emit"
    );
    // A payload read as a type it does not fit is an error, not a default value.
    assert!(first.payload::<String>().is_err());

    let json = serde_json::to_value(&second)?;
    assert_eq!(json["service"], "Emitter");
    assert_eq!(json["event"], "Tick");
    assert_eq!(json["correlation_id"], "corr-1");
    assert_eq!(json["seq"], second.seq());
    assert_eq!(json["payload"], 8);
    let time: chrono::DateTime<chrono::Utc> = serde_json::from_value(json["time"].clone())?;
    assert_eq!(time, second.time());

    let debug = format!("{second:?}");
    for part in ["EventEnvelope", "Emitter", "Tick", "corr-1"] {
        assert!(debug.contains(part), "{part} in {debug}");
    }
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn an_event_from_another_process_reaches_every_kind_of_subscriber() -> anyhow::Result<()> {
    let host = start().await?;
    // A host-wide subscriber (a channel) and a waiting one of one event (the ring).
    let (all_tx, mut all) = mpsc::unbounded_channel::<EventEnvelope>();
    let _all = host
        .events()
        .on("*")
        .handle_envelope(move |env: EventEnvelope| {
            let _ = all_tx.send(env);
            std::future::ready(())
        })
        .subscribe()
        .await?;
    let (_ring, mut ring) = forwarded::<u32>(&host, "Tick", Overflow::Wait).await?;
    let time = chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(42);
    let remote = EventEnvelope::remote("Emitter", "Tick", Some("c-9"), time, 77, 5u32.into());
    assert_eq!(
        (remote.service(), remote.name(), remote.correlation_id()),
        ("Emitter", "Tick", Some("c-9"))
    );
    assert_eq!((remote.time(), remote.seq()), (time, 77));
    within(
        "the remote event's delivery",
        host.deliver_remote_event(&remote),
    )
    .await;

    let got = next(&mut all).await;
    assert_eq!(
        (got.service(), got.name(), got.seq()),
        ("Emitter", "Tick", 77)
    );
    assert_eq!(got.payload::<u32>()?, 5);
    assert_eq!(next(&mut ring).await, 5, "the ring reader got it too");
    assert_eq!(
        host.recent_events()[0].seq(),
        77,
        "kept with the recent events"
    );

    // A subscriber of one service takes its events only, whatever their case.
    let (_one, mut one) = forwarded::<u32>(&host, "Tick", Overflow::DropNewest).await?;
    for (service, n) in [("Elsewhere", 1u32), ("emitter", 2), ("Emitter", 3)] {
        let env = EventEnvelope::remote(service, "Tick", None, time, 100 + u64::from(n), n.into());
        within("a remote event's delivery", host.deliver_remote_event(&env)).await;
    }
    assert_eq!(next(&mut one).await, 2, "not `Elsewhere`'s event");
    assert_eq!(next(&mut one).await, 3);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_waiting_subscriber_that_joins_late_starts_at_the_next_event() -> anyhow::Result<()> {
    let host = start().await?;
    let (_early, mut early) = forwarded::<u32>(&host, "Tick", Overflow::Wait).await?;
    for n in 0..3u32 {
        within(
            "an emit to a waiting subscriber",
            host.emit("Emitter", "Tick", n),
        )
        .await?;
    }
    for n in 0..3u32 {
        assert_eq!(
            next(&mut early).await,
            n,
            "the first subscriber sees every event"
        );
    }
    // The same event's ring, joined after three events were written to it.
    let (_late, mut late) = forwarded::<u32>(&host, "Tick", Overflow::Wait).await?;
    within(
        "an emit to waiting subscribers",
        host.emit("Emitter", "Tick", 3u32),
    )
    .await?;
    assert_eq!(
        next(&mut late).await,
        3,
        "no event from before it subscribed"
    );
    assert_eq!(next(&mut early).await, 3);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn after_a_stall_the_emitter_again_runs_a_whole_buffer_ahead() -> anyhow::Result<()> {
    let host = start().await?;
    // Buffer 1: the event in hand and one more.
    let (_sub, gate, mut rx) = stuck_subscriber(&host, 1, Overflow::Wait).await?;
    emit_at_once(&host, 1, "the buffer has room for one").await?;
    let held = held_emit(&host, 2, "the buffer is full").await;
    gate.add_permits(1);
    within("the held emit, once the subscriber moved on", held).await?;
    for n in 1..=2u32 {
        assert_eq!(next(&mut rx).await, n);
    }
    // Everything is read: the emitter has the event in hand and the buffer again.
    emit_at_once(&host, 3, "the subscriber has read everything").await?;
    emit_at_once(&host, 4, "one event in the subscriber's buffer").await?;
    let held = held_emit(&host, 5, "the buffer is full again").await;
    within("the emit held after the stall", held).await?;
    for n in 3..=5u32 {
        assert_eq!(next(&mut rx).await, n);
    }
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn the_host_stopping_releases_an_emit_held_by_a_stuck_subscriber() -> anyhow::Result<()> {
    let host = start().await?;
    let (_sub, _gate, _rx) = stuck_subscriber(&host, 1, Overflow::Wait).await?;
    emit_at_once(&host, 1, "the buffer has room for one").await?;
    let held = held_emit(&host, 2, "the buffer is full").await;
    stop(&host).await?;
    within("the held emit to give up once the host stopped", held).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn builders_show_their_settings() -> anyhow::Result<()> {
    let host = start().await?;
    let builder = host
        .service("Emitter")
        .on("Tick")
        .handle(|_: u32| std::future::ready(()))
        .buffer(7)
        .overflow(Overflow::Wait);
    let debug = format!("{builder:?}");
    for part in [
        "SubscriptionBuilder",
        "Emitter",
        "routes: 1",
        "capacity: 7",
        "Wait",
    ] {
        assert!(debug.contains(part), "{part} in {debug}");
    }
    drop(builder);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_ring_whose_readers_all_left_does_not_hold_the_emitter() -> anyhow::Result<()> {
    let host = start().await?;
    let (sub, _gate, _rx) = stuck_subscriber(&host, 1, Overflow::Wait).await?;
    drop(sub);
    for n in 1..=3u32 {
        emit_at_once(&host, n, "nobody reads the ring any more").await?;
    }
    stop(&host).await
}

/// A handler that sends on `tx` every number it takes, and holds on 0 until `gate`
/// lets it go.
fn held_at_zero(
    tx: mpsc::UnboundedSender<u32>,
    gate: &Arc<Semaphore>,
) -> impl Fn(u32) -> std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
+ Send
+ Sync
+ 'static {
    let gate = Arc::clone(gate);
    move |n: u32| {
        let (tx, gate) = (tx.clone(), Arc::clone(&gate));
        Box::pin(async move {
            let _ = tx.send(n);
            if n == 0 {
                gate.acquire().await?.forget();
            }
            Ok::<(), BoxError>(())
        })
    }
}

/// A waiting subscriber of `Tick` with `buffer` whose handler reports each event and
/// waits at 0 for a permit of the returned gate.
async fn gated(
    host: &HostHandle,
    buffer: usize,
) -> anyhow::Result<(
    koan::event::Subscription,
    Arc<Semaphore>,
    mpsc::UnboundedReceiver<u32>,
)> {
    let gate = Arc::new(Semaphore::new(0));
    let (tx, rx) = mpsc::unbounded_channel::<u32>();
    let sub = host
        .service("Emitter")
        .on("Tick")
        .handle(held_at_zero(tx, &gate))
        .buffer(buffer)
        .overflow(Overflow::Wait)
        .subscribe()
        .await?;
    Ok((sub, gate, rx))
}

#[tokio::test(start_paused = true)]
async fn a_buffer_as_large_as_the_ring_or_larger_is_honoured() -> anyhow::Result<()> {
    let host = start().await?;
    // The first waiting subscriber of `Tick` sizes its ring (the smallest, 64 slots),
    // and leaves.
    drop(gated(&host, 1).await?);
    // Two that need as much room as the ring has, or more: each gets the buffer it
    // asked for (a channel of its own).
    let (_a, gate_a, mut a) = gated(&host, 64).await?;
    let (_b, gate_b, mut b) = gated(&host, 100).await?;
    within(
        "the first emit to waiting subscribers",
        host.emit("Emitter", "Tick", 0u32),
    )
    .await?;
    assert_eq!(next(&mut a).await, 0, "`a` is now stuck");
    assert_eq!(next(&mut b).await, 0, "`b` is now stuck");
    for n in 1..=64u32 {
        // A turn of the scheduler between emits (both handlers are stuck): tokio's
        // budget of 128 channel operations per turn would hold the 64th emit.
        tokio::task::yield_now().await;
        emit_at_once(&host, n, "within both buffers").await?;
    }
    let held = held_emit(&host, 65, "`a`'s buffer is full").await;
    gate_a.add_permits(1);
    gate_b.add_permits(1);
    within("the emit held by a full buffer", held).await?;
    for n in 1..=65u32 {
        assert_eq!(next(&mut a).await, n);
        assert_eq!(next(&mut b).await, n);
    }
    stop(&host).await
}

/// A handler of `Tick` that reports each payload and waits at 0 for a permit of
/// `gate`, and a second route: `Other`, forwarded into the second channel.
#[allow(clippy::type_complexity)]
async fn two_routes(
    host: &HostHandle,
    other_once: bool,
    buffer: usize,
    overflow: Overflow,
) -> anyhow::Result<(
    koan::event::Subscription,
    Arc<Semaphore>,
    mpsc::UnboundedReceiver<u32>,
    mpsc::UnboundedReceiver<u32>,
)> {
    let gate = Arc::new(Semaphore::new(0));
    let (tick_tx, mut ticks) = mpsc::unbounded_channel::<u32>();
    let (other_tx, others) = mpsc::unbounded_channel::<u32>();
    let mut builder = host
        .service("Emitter")
        .on("Tick")
        .handle(held_at_zero(tick_tx, &gate))
        .on("Other");
    if other_once {
        builder = builder.once();
    }
    let sub = builder
        .handle(common::events::forward(&other_tx))
        .buffer(buffer)
        .overflow(overflow)
        .subscribe()
        .await?;
    within(
        "the first emit to waiting subscribers",
        host.emit("Emitter", "Tick", 0u32),
    )
    .await?;
    assert_eq!(next(&mut ticks).await, 0, "the handler is now stuck");
    Ok((sub, gate, ticks, others))
}

#[tokio::test(start_paused = true)]
async fn a_waiting_subscriber_of_several_events_holds_the_emitter() -> anyhow::Result<()> {
    let host = start().await?;
    // Two routes: the subscriber has a channel of its own, not a ring.
    let (_sub, gate, mut ticks, _others) = two_routes(&host, false, 1, Overflow::Wait).await?;
    emit_at_once(&host, 1, "the buffer has room for one").await?;
    let held = held_emit(&host, 2, "the buffer is full").await;
    gate.add_permits(1);
    within("the held emit", held).await?;
    for n in 1..=2u32 {
        assert_eq!(next(&mut ticks).await, n, "none dropped");
    }
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_once_route_waits_for_room_even_when_its_subscriber_drops() -> anyhow::Result<()> {
    let host = start().await?;
    let (_sub, gate, _ticks, mut others) = two_routes(&host, true, 1, Overflow::DropNewest).await?;
    emit_at_once(&host, 1, "the buffer has room for one").await?;
    // `Other` goes to the `once` route, which must not lose its one event.
    let host2 = host.clone();
    let mut other: std::pin::Pin<Box<dyn Future<Output = koan::Result<()>> + Send>> =
        Box::pin(async move { host2.emit("Emitter", "Other", 5u32).await });
    assert!(
        still_pending(&mut other).await,
        "the once event waits for room"
    );
    gate.add_permits(1);
    within("the once event's emit", other).await?;
    assert_eq!(next(&mut others).await, 5);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_held_emit_goes_as_soon_as_the_subscriber_finishes_one_event() -> anyhow::Result<()> {
    let host = start().await?;
    // Buffer 1; the handler is stuck on 0 and, once that is released, on 1.
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let _sub = host
        .service("Emitter")
        .on("Tick")
        .handle({
            let gate = Arc::clone(&gate);
            move |n: u32| {
                let (tx, gate) = (tx.clone(), Arc::clone(&gate));
                async move {
                    let _ = tx.send(n);
                    if n < 2 {
                        gate.acquire().await?.forget();
                    }
                    Ok::<(), BoxError>(())
                }
            }
        })
        .buffer(1)
        .overflow(Overflow::Wait)
        .subscribe()
        .await?;
    within("the first emit", host.emit("Emitter", "Tick", 0u32)).await?;
    assert_eq!(next(&mut rx).await, 0, "the handler is stuck on 0");
    emit_at_once(&host, 1, "the buffer has room for one").await?;
    let held = held_emit(&host, 2, "the buffer is full").await;
    // 0 is done and 1 is in hand: the buffer has room for 2 again, though the
    // handler is now stuck on 1.
    gate.add_permits(1);
    assert_eq!(next(&mut rx).await, 1);
    within(
        "the held emit, once the subscriber finished one event",
        held,
    )
    .await?;
    gate.add_permits(1);
    assert_eq!(next(&mut rx).await, 2);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_waiting_subscriber_lets_the_emitter_run_its_buffer_and_one_more_ahead()
-> anyhow::Result<()> {
    // The event in hand and the buffer: a power of two too (the ring then has room
    // for the buffer and the event in hand, not a slot less).
    for buffer in [1u32, 64] {
        let host = start().await?;
        let (_sub, mut rx) = {
            let (tx, rx) = mpsc::unbounded_channel::<u32>();
            let sub = host
                .service("Emitter")
                .on("Tick")
                .handle(common::events::forward(&tx))
                .buffer(buffer as usize)
                .overflow(Overflow::Wait)
                .subscribe()
                .await?;
            (sub, rx)
        };
        // No turn of the scheduler between emits: the subscriber has read nothing.
        for n in 0..=buffer {
            emit_at_once(&host, n, "within the buffer and the event in hand").await?;
        }
        let held = held_emit(&host, buffer + 1, "the buffer is full").await;
        within("the held emit", held).await?;
        for n in 0..=buffer + 1 {
            assert_eq!(next(&mut rx).await, n, "buffer {buffer}");
        }
        stop(&host).await?;
    }
    Ok(())
}
