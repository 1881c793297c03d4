//! `#[service]`, `#[actions]` and `#[derive(Event)]` through the public API: the
//! declarations reach the host, actions run, events carry their declared names, and
//! discovery finds the types without registration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::{
    ActionContext, BackgroundService, BoxError, PeriodicService, ServiceContext, StartupService,
    health::HealthReport, health::HealthStatus, service::BatchRequest, service::ServiceKind,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TranslationOptions {
    file_id: String,
    from: String,
    to: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, koan::Event)]
#[event(name = "TranslationCompleted")]
#[serde(rename_all = "camelCase")]
struct TranslationCompleted {
    file_id: String,
}

#[koan::service(
    description = "Translates files",
    event(name = koan::well_known::events::translation::STARTED, payload = TranslationOptions),
    event(TranslationCompleted),
    health = Self::check,
)]
#[derive(Default)]
struct TranslationService {
    done: AtomicU32,
}

#[koan::actions]
impl TranslationService {
    #[action("translate", description = "Translate a file")]
    async fn translate(
        &self,
        opts: TranslationOptions,
        cx: &ActionContext,
    ) -> Result<String, BoxError> {
        cx.emit(koan::well_known::events::translation::STARTED, opts.clone())
            .await;
        self.done.fetch_add(1, Ordering::Relaxed);
        cx.emit_event(TranslationCompleted {
            file_id: opts.file_id.clone(),
        })
        .await;
        Ok(format!("{}:{}", opts.file_id, opts.to))
    }

    #[action]
    async fn check_queue(&self) -> u32 {
        self.done.load(Ordering::Relaxed)
    }

    /// Named `pause-all`: one trailing `_async` is not part of the name.
    #[action]
    async fn pause_all_async(&self) -> u32 {
        0
    }

    /// Named `match`, not `r#match`.
    #[action]
    async fn r#match(&self) -> u32 {
        1
    }

    async fn check(&self) -> HealthReport {
        HealthReport::degraded("translation backlog")
    }
}

impl BackgroundService for TranslationService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[koan::service(every = "1h", run_on_startup, name = "Cleanup")]
#[derive(Default)]
struct DataCleanupService {
    batches: std::sync::Mutex<Vec<BatchRequest>>,
}

impl PeriodicService for DataCleanupService {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn process_batch(
        &self,
        batch: BatchRequest,
        _cx: ServiceContext,
    ) -> Result<(), BoxError> {
        self.batches.lock().map_err(|_| "poisoned")?.push(batch);
        Ok(())
    }
}

#[koan::service(startup, order = 1, timeout = "60s")]
#[derive(Default)]
struct DatabaseMigrationService;

impl StartupService for DatabaseMigrationService {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn declarations_reach_the_host() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<TranslationService>()
        .service::<DataCleanupService>()
        .service::<DatabaseMigrationService>()
        .build()?
        .start();
    host.started().await?;

    let info = host.services::<TranslationService>().info().await?;
    assert_eq!(info.kind, ServiceKind::Background);
    assert_eq!(info.description.as_deref(), Some("Translates files"));
    let names: Vec<_> = info.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["translate", "check-queue", "pause-all", "match"]);
    assert_eq!(
        info.actions[0].description.as_deref(),
        Some("Translate a file")
    );
    assert!(info.actions[0].params_schema["properties"]["fileId"].is_object());
    let events: Vec<_> = info.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["TranslationStarted", "TranslationCompleted"]);

    let cleanup = host.service("cleanup").info().await?;
    assert_eq!(cleanup.kind, ServiceKind::Periodic);
    assert_eq!(cleanup.schedule.as_deref(), Some("every 1h"));
    let migration = host.services::<DatabaseMigrationService>().info().await?;
    assert_eq!(
        (migration.kind, migration.order),
        (ServiceKind::Startup, Some(1))
    );

    let health = host.services::<TranslationService>().health().await?;
    assert_eq!(health.report.status, HealthStatus::Degraded);

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test]
async fn macro_actions_and_events_run() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<TranslationService>()
        .service::<DataCleanupService>()
        .build()?
        .start();
    host.started().await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _sub = host
        .services::<TranslationService>()
        .on::<TranslationCompleted>()
        .handle(move |e: TranslationCompleted| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.file_id);
            }
        })
        .subscribe()
        .await?;
    let out = host
        .services::<TranslationService>()
        .action(
            "translate",
            serde_json::json!({"fileId": "a.txt", "from": "en", "to": "pt-BR"}),
        )
        .execute()
        .await?
        .value::<String>()?;
    assert_eq!(out, "a.txt:pt-BR");
    assert_eq!(
        koan::testing::within("the file event", rx.recv())
            .await
            .as_deref(),
        Some("a.txt")
    );
    let n: u32 = host
        .services::<TranslationService>()
        .action("check-queue", ())
        .execute()
        .await?
        .value()?;
    assert_eq!(n, 1);

    let batch = BatchRequest::new(Some(50), Some("high-priority".into()));
    host.services::<DataCleanupService>()
        .process_batch(batch.clone())
        .await?;
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test]
async fn discover_finds_every_marked_service() -> anyhow::Result<()> {
    let host = koan::testing::host().discover().build()?;
    let names = host.handle().service_names();
    for expected in ["TranslationService", "Cleanup", "DatabaseMigrationService"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn explicit_registration_and_discovery_do_not_clash() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .instance(DataCleanupService::default())
        .discover()
        .shutdown_grace(Duration::from_secs(1))
        .build()?;
    let names = host.handle().service_names();
    assert_eq!(names.iter().filter(|n| *n == "Cleanup").count(), 1);
    Ok(())
}

#[allow(dead_code)]
fn arc_is_used(_: Arc<()>) {}
