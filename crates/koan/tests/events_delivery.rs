//! Event delivery: correlation ids, `once()` under concurrent emits, filters,
//! unsubscribing, per-subscriber order, failing handlers, overflow, and the seed's
//! "Testing Support" translation scenario. Deliveries are awaited on channels.
//!
//! `Overflow::Wait`: an emitter waits while a subscriber's buffer is full, nothing is
//! lost, every subscriber keeps emission order (also with several emitters at
//! once), and a subscriber that goes away stops holding emitters back. Handlers that
//! panic — even before returning their future — do not stop later deliveries.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use koan::well_known::events::translation::{COMPLETED, FAILED, STARTED};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions, error::ErrorKind, event::EventEnvelope, event::Overflow,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

#[derive(Default)]
struct Emitter;

impl Service for Emitter {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Emitter")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "emit",
            |_svc: Arc<Self>, n: u32, cx: ActionContext| async move {
                cx.emit("Tick", n).await;
                cx.emit("Other", n + 1).await;
                Ok::<_, BoxError>(n)
            },
        );
        // Emits through the service-wide context path inside a handler.
        a.action(
            "emit_many",
            |_svc: Arc<Self>, count: u32, cx: ActionContext| async move {
                for n in 0..count {
                    cx.emit("Tick", n).await;
                }
                Ok::<_, BoxError>(count)
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

async fn start() -> anyhow::Result<HostHandle> {
    let host = koan::testing::host().service::<Emitter>().build()?.start();
    host.started().await?;
    Ok(host)
}

/// A handler that forwards what it gets into a channel.
fn forward<T: Send + 'static>(
    tx: &mpsc::UnboundedSender<T>,
) -> impl Fn(T) -> std::future::Ready<()> + Send + Sync + 'static {
    let tx = tx.clone();
    move |v: T| {
        let _ = tx.send(v);
        std::future::ready(())
    }
}

/// Everything already in the channel.
fn drain<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(v) = rx.try_recv() {
        out.push(v);
    }
    out
}

/// The next value, failing (on the paused clock, after a virtual minute) instead of
/// hanging when none comes.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
        .await
        .expect("nothing delivered")
        .expect("channel closed")
}

/// Polls `f` exactly once: `Some(output)` when it finished without waiting.
async fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        Poll::Ready(match f.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// Polls `f` once and keeps it: whether it is still pending.
async fn still_pending<F: Future + Unpin>(f: &mut F) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx).is_pending())).await
}

/// `f`'s output, failing (on the paused clock, after a virtual minute) instead of
/// hanging.
async fn within_a_minute<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(60), f)
        .await
        .expect("still waiting after a minute")
}

/// A `Tick` subscriber that reports each event and then, at event 0, waits for a
/// permit of the returned gate.
async fn stuck_subscriber(
    host: &HostHandle,
    buffer: usize,
    overflow: Overflow,
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
    Ok((sub, gate, rx))
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

    // Outside any action there is none.
    host.emit("Emitter", "Tick", 3u32).await?;
    let tick = next(&mut rx).await;
    assert_eq!(tick.payload::<u32>()?, 3);
    assert_eq!(tick.correlation_id(), None);

    koan::testing::stop(&host).await?;
    Ok(())
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

    let mut tasks = Vec::new();
    for n in 0..1000u32 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            host.emit("Emitter", "Tick", n).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    // The subscriber handles its events in order: once the barrier is handled,
    // everything emitted before it has been too.
    host.emit("Emitter", "Barrier", ()).await?;
    koan::testing::within("the barrier event", barrier_rx.recv())
        .await
        .expect("barrier delivered");

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
    host.emit("Emitter", "Tick", 5000u32).await?;
    host.emit("Emitter", "Barrier", ()).await?;
    koan::testing::within("the barrier event", barrier_rx.recv())
        .await
        .expect("barrier delivered");
    assert!(drain(&mut once_rx).is_empty());
    assert!(drain(&mut odd_rx).is_empty());
    assert_eq!(drain(&mut all_rx), [5000]);

    koan::testing::stop(&host).await?;
    Ok(())
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

    let mut tasks = Vec::new();
    for n in 0..1000u32 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            host.services::<Emitter>().action("emit", n).execute().await
        }));
    }
    for t in tasks {
        t.await??;
    }
    host.emit("Emitter", "Barrier", ()).await?;
    koan::testing::within("the barrier event", barrier_rx.recv())
        .await
        .expect("barrier delivered");
    assert_eq!(drain(&mut once_rx).len(), 1);

    koan::testing::stop(&host).await?;
    Ok(())
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
    host.emit("Emitter", "Barrier", ()).await?;
    next(&mut barrier_rx).await;
    assert_eq!(drain(&mut rx), [0, 3, 6, 9]);
    assert!(drain(&mut never_rx).is_empty());

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn dropping_the_subscription_stops_delivery() -> anyhow::Result<()> {
    let host = start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let (witness_tx, mut witness_rx) = mpsc::unbounded_channel::<u32>();
    let sub = host
        .service("Emitter")
        .on("Tick")
        .handle(forward(&tx))
        .subscribe()
        .await?;
    drop(tx);
    // A second subscriber shows that the later event was really emitted.
    let _witness = host
        .service("Emitter")
        .on("Tick")
        .handle(forward(&witness_tx))
        .subscribe()
        .await?;

    host.emit("Emitter", "Tick", 1u32).await?;
    assert_eq!(next(&mut rx).await, 1);
    assert_eq!(next(&mut witness_rx).await, 1);

    drop(sub);
    host.emit("Emitter", "Tick", 2u32).await?;
    assert_eq!(next(&mut witness_rx).await, 2);
    // The handler (and its sender) is gone: the channel ends without another value.
    let end = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv()).await;
    assert_eq!(
        end.expect("the dropped handler still holds its sender"),
        None
    );

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
    let end = tokio::time::timeout(std::time::Duration::from_secs(60), rx3.recv()).await;
    assert_eq!(
        end.expect("the dropped handler still holds its sender"),
        None
    );

    koan::testing::stop(&host).await?;
    Ok(())
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

    for n in 0..1000u32 {
        host.emit("Emitter", "Tick", n).await?;
    }
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
    host.services::<Emitter>()
        .action("emit_many", 300u32)
        .execute()
        .await?;
    let mut c = Vec::new();
    for _ in 0..300 {
        c.push(next(&mut b_rx).await);
    }
    assert_eq!(c, (0..300).collect::<Vec<u32>>());

    koan::testing::stop(&host).await?;
    Ok(())
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

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn drop_newest_never_blocks_the_emitter() -> anyhow::Result<()> {
    let host = start().await?;
    let (_sub, gate, mut rx) = stuck_subscriber(&host, 1, Overflow::DropNewest).await?;

    host.emit("Emitter", "Tick", 0u32).await?;
    assert_eq!(next(&mut rx).await, 0, "the handler is now blocked");

    // The buffer holds one; every emit returns at its first poll all the same.
    for n in 1..=20u32 {
        let done = poll_once(host.emit("Emitter", "Tick", n))
            .await
            .expect("emit did not wait for the blocked subscriber");
        done?;
    }
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

    koan::testing::stop(&host).await?;
    Ok(())
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
    koan::testing::stop(&host).await?;
    Ok(())
}

// ---- The seed's "Testing Support" scenario -------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TranslationOptions {
    file_id: String,
    from: String,
    to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TranslationEventArgs {
    file_id: String,
    from: String,
    to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TranslationErrorArgs {
    file_id: String,
    error: String,
}

const QUEUE_CHECKED: &str = "QueueChecked";

#[derive(Default)]
struct TranslationService;

impl Service for TranslationService {
    type Kind = Background;

    fn actions(a: &mut Actions<Self>) {
        a.action(
            koan::well_known::actions::translation::TRANSLATE,
            |_svc: Arc<Self>, opts: TranslationOptions, cx: ActionContext| async move {
                let args = TranslationEventArgs {
                    file_id: opts.file_id.clone(),
                    from: opts.from.clone(),
                    to: opts.to.clone(),
                };
                cx.emit(STARTED, args.clone()).await;
                if opts.to.is_empty() {
                    let error = "no target language".to_owned();
                    cx.emit(
                        FAILED,
                        TranslationErrorArgs {
                            file_id: opts.file_id,
                            error: error.clone(),
                        },
                    )
                    .await;
                    return Err(BoxError::from(error));
                }
                cx.emit(COMPLETED, args).await;
                Ok(format!("{}.{}", opts.file_id, opts.to))
            },
        );
        a.action(
            koan::well_known::actions::translation::CHECK_QUEUE,
            |_svc: Arc<Self>, (): (), cx: ActionContext| async move {
                cx.emit(QUEUE_CHECKED, 0u32).await;
                Ok::<_, BoxError>(0u32)
            },
        );
        a.event::<TranslationEventArgs>(STARTED);
        a.event::<TranslationEventArgs>(COMPLETED);
        a.event::<TranslationErrorArgs>(FAILED);
        a.event::<u32>(QUEUE_CHECKED);
    }
}

impl BackgroundService for TranslationService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn translation_scenario_completes_once_and_never_fails() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<TranslationService>()
        .build()?
        .start();
    host.started().await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<TranslationEventArgs>();
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<TranslationErrorArgs>();
    let (checked_tx, mut checked_rx) = mpsc::unbounded_channel::<u32>();
    let translations = host.services::<TranslationService>();
    let _sub = host
        .service("TranslationService")
        .on(COMPLETED)
        .handle(forward(&done_tx))
        .on(FAILED)
        .handle(forward(&failed_tx))
        .on(QUEUE_CHECKED)
        .handle(forward(&checked_tx))
        .subscribe()
        .await?;

    let out = translations
        .action(
            koan::well_known::actions::translation::TRANSLATE,
            TranslationOptions {
                file_id: "file-1".to_owned(),
                from: "en".to_owned(),
                to: "fr".to_owned(),
            },
        )
        .execute()
        .await?;
    assert_eq!(out.value::<String>()?, "file-1.fr");

    // Events reach a subscriber in emission order: once the later `QueueChecked` is
    // handled, every event of the translation has been.
    translations
        .action(koan::well_known::actions::translation::CHECK_QUEUE, ())
        .execute()
        .await?;
    assert_eq!(next(&mut checked_rx).await, 0);

    let completed = drain(&mut done_rx);
    assert_eq!(
        completed,
        [TranslationEventArgs {
            file_id: "file-1".to_owned(),
            from: "en".to_owned(),
            to: "fr".to_owned(),
        }]
    );
    assert!(drain(&mut failed_rx).is_empty(), "no failure event");

    // And the failure path reports the other way round.
    let e = translations
        .action(
            koan::well_known::actions::translation::TRANSLATE,
            serde_json::json!({"fileId": "file-2", "from": "en", "to": ""}),
        )
        .execute()
        .await
        .expect_err("no target language");
    assert_eq!(e.kind(), ErrorKind::Handler);
    translations
        .action(koan::well_known::actions::translation::CHECK_QUEUE, ())
        .execute()
        .await?;
    assert_eq!(next(&mut checked_rx).await, 0);
    assert!(drain(&mut done_rx).is_empty());
    assert_eq!(
        drain(&mut failed_rx),
        [TranslationErrorArgs {
            file_id: "file-2".to_owned(),
            error: "no target language".to_owned(),
        }]
    );

    koan::testing::stop(&host).await?;
    Ok(())
}

// ---------------------------------------------------------------- Overflow::Wait

#[tokio::test(start_paused = true)]
async fn a_full_subscriber_holds_the_emitter_and_loses_nothing() -> anyhow::Result<()> {
    let host = start().await?;
    let (_sub, gate, mut rx) = stuck_subscriber(&host, 4, Overflow::Wait).await?;

    host.emit("Emitter", "Tick", 0u32).await?;
    assert_eq!(next(&mut rx).await, 0, "the handler is now stuck");
    // Its buffer takes four more at once …
    for n in 1..=4u32 {
        poll_once(host.emit("Emitter", "Tick", n))
            .await
            .expect("an emit within the buffer waits")?;
    }
    // … and the fifth waits for room.
    let mut fifth = Box::pin(host.emit("Emitter", "Tick", 5u32));
    assert!(still_pending(&mut fifth).await, "the buffer is full");

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
    let (sub, _gate, mut rx) = stuck_subscriber(&host, 2, Overflow::Wait).await?;
    // A second, healthy subscriber of the same event.
    let (tx, mut healthy) = mpsc::unbounded_channel::<u32>();
    let _other = host
        .service("Emitter")
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
            host.service("Emitter")
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
            host.service("Emitter")
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
