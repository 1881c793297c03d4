//! The seed's "Mixed Actions and Events": `.action(…).on(…).handle(…).subscribe()`
//! subscribes first, then runs the actions, so the events they cause are not missed.

use std::sync::Arc;

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
