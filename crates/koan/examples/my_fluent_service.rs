//! Run with: `cargo run -p koan --example my_fluent_service`
//!
//! The seed's "Add Fluent API Support" and "Use the Fluent API": a service with a
//! `do-work` action that emits `WorkCompleted`, discovered without registration,
//! driven through the global `koan::services::<T>()` entry point.

use std::time::Duration;

use koan::{BackgroundService, BoxError, Host, ServiceContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
struct WorkCompleted {
    completed_at_ms: u128,
}

/// `[ServiceEvent("WorkCompleted")] public class MyFluentService : KoanFluentServiceBase`
#[koan::service(event(name = "WorkCompleted", payload = WorkCompleted))]
#[derive(Default)]
struct MyFluentService;

#[koan::actions]
impl MyFluentService {
    /// `[ServiceAction("do-work")]`
    #[action("do-work", description = "Do important work")]
    async fn do_work(&self, cx: &koan::ActionContext) -> Result<(), BoxError> {
        tracing::info!("Doing important work...");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let completed_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        cx.emit("WorkCompleted", WorkCompleted { completed_at_ms })
            .await;
        Ok(())
    }
}

impl BackgroundService for MyFluentService {
    /// The seed's `ExecuteCoreAsync` that waits forever: the work comes through actions.
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), koan::Error> {
    tracing_subscriber::fmt().with_target(false).init();
    let host = Host::builder().discover().build()?.start();
    host.started().await?;

    // Subscribe to events: `KoanServices<MyFluentService>.On("WorkCompleted").Do(…)`.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The event is named by its payload type: one the service does not declare, or
    // a handler of another type, does not compile.
    let _subscription = koan::services::<MyFluentService>()
        .on::<WorkCompleted>()
        .handle(move |e: WorkCompleted| {
            let tx = tx.clone();
            async move {
                tracing::info!("Work was completed!");
                let _ = tx.send(e);
            }
        })
        .subscribe()
        .await?;

    // Trigger work: `KoanServices<MyFluentService>.Do("do-work").ExecuteAsync()`,
    // through the typed caller `#[koan::actions]` generated for the `do-work` action
    // (by name: `.action("do-work", ())`).
    koan::services::<MyFluentService>()
        .do_work()
        .execute()
        .await?;
    if let Some(e) = rx.recv().await {
        println!("WorkCompleted at {} ms since the epoch", e.completed_at_ms);
    }
    host.shutdown();
    host.wait().await.into_result()
}
