//! The seed's "Mixed Actions and Events": `.action(…).on(…).handle(…).subscribe()`
//! subscribes first, then runs the actions, so the events they cause are not missed.

use std::sync::Arc;
use std::time::Duration;

use koan::{ActionContext, BackgroundService, BoxError, ServiceContext, error::ErrorKind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct SyncOptions {
    source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct SyncEventArgs {
    source: String,
    record_count: u32,
}

#[koan::service(
    event(name = "SyncCompleted", payload = SyncEventArgs),
    event(name = "SyncFailed", payload = SyncEventArgs)
)]
#[derive(Default)]
struct DataSyncService;

#[koan::actions]
impl DataSyncService {
    #[action("sync-source")]
    async fn sync_source(&self, opts: SyncOptions, cx: &ActionContext) -> Result<u32, BoxError> {
        if opts.source == "broken" {
            return Err("source unreachable".into());
        }
        if opts.source == "failing" {
            // The seed's pattern: the failure is told as an event, then returned.
            cx.emit(
                "SyncFailed",
                SyncEventArgs {
                    source: opts.source,
                    record_count: 0,
                },
            )
            .await;
            return Err("sync failed".into());
        }
        cx.emit(
            "SyncCompleted",
            SyncEventArgs {
                source: opts.source,
                record_count: 42,
            },
        )
        .await;
        Ok(42)
    }
}

impl BackgroundService for DataSyncService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn actions_run_after_the_handlers_are_subscribed() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<DataSyncService>()
        .build()?
        .start();
    host.started().await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tx = Arc::new(tx);
    let t = Arc::clone(&tx);
    let _sub = host
        .services::<DataSyncService>()
        .action(
            "sync-source",
            SyncOptions {
                source: "users".into(),
            },
        )
        .on("SyncCompleted")
        .handle(move |e: SyncEventArgs| {
            let t = Arc::clone(&t);
            async move {
                let _ = t.send(e);
            }
        })
        .on("SyncFailed")
        .handle(|_: SyncEventArgs| async {})
        .subscribe()
        .await?;
    // The event of the action run by `subscribe()` itself arrived.
    let e = koan::testing::within("the SyncCompleted event", rx.recv())
        .await
        .ok_or_else(|| anyhow::anyhow!("no SyncCompleted"))?;
    assert_eq!((e.source.as_str(), e.record_count), ("users", 42));

    // A failing action is the error of `subscribe()`, naming what failed.
    let err = host
        .services::<DataSyncService>()
        .action(
            "sync-source",
            SyncOptions {
                source: "broken".into(),
            },
        )
        .on("SyncCompleted")
        .handle(|_: SyncEventArgs| async {})
        .subscribe()
        .await
        .expect_err("the action fails");
    assert_eq!(err.kind(), ErrorKind::Handler);
    assert!(err.to_string().contains("source unreachable"), "{err}");
    koan::testing::stop(&host).await?;
    Ok(())
}

/// The failing action's `SyncFailed` handler runs to its end before `subscribe()`
/// returns the action's error: it was dropped with the subscription, mid-`.await`
/// or before it started (a probe: "finished" never seen in 15 runs).
#[tokio::test(start_paused = true)]
async fn a_failing_actions_events_are_handled_before_its_error_returns() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<DataSyncService>()
        .build()?
        .start();
    host.started().await?;
    for overflow in [
        koan::event::Overflow::DropNewest,
        koan::event::Overflow::Wait,
    ] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tx = Arc::new(tx);
        let err = koan::testing::within(
            "subscribe() to return",
            host.services::<DataSyncService>()
                .action(
                    "sync-source",
                    SyncOptions {
                        source: "failing".into(),
                    },
                )
                .on("SyncFailed")
                .handle(move |_: SyncEventArgs| {
                    let tx = Arc::clone(&tx);
                    async move {
                        let _ = tx.send("started");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = tx.send("finished");
                    }
                })
                .overflow(overflow)
                .subscribe(),
        )
        .await
        .expect_err("the action fails");
        assert!(err.to_string().contains("sync failed"), "{err}");
        let mut seen = Vec::new();
        while let Ok(m) = rx.try_recv() {
            seen.push(m);
        }
        assert_eq!(seen, ["started", "finished"], "{overflow:?}");
    }
    koan::testing::stop(&host).await?;
    Ok(())
}

/// A handler of the failed action's events that never ends holds `subscribe()` for
/// the host's shutdown grace at most, then is stopped and the error returned.
#[tokio::test(start_paused = true)]
async fn a_hanging_handler_holds_the_error_for_the_shutdown_grace_at_most() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<DataSyncService>()
        .shutdown_grace(Duration::from_secs(5))
        .build()?
        .start();
    host.started().await?;
    let began = tokio::time::Instant::now();
    let err = koan::testing::within(
        "subscribe() to return",
        host.services::<DataSyncService>()
            .action(
                "sync-source",
                SyncOptions {
                    source: "failing".into(),
                },
            )
            .on("SyncCompleted")
            .handle(|_: SyncEventArgs| async {})
            .on("SyncFailed")
            .handle(|_: SyncEventArgs| std::future::pending::<()>())
            .subscribe(),
    )
    .await
    .expect_err("the action fails");
    assert!(err.to_string().contains("sync failed"), "{err}");
    assert_eq!(began.elapsed(), Duration::from_secs(5));
    koan::testing::stop(&host).await?;
    Ok(())
}
