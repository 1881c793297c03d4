//! Run with: `cargo run -p koan --example translation_service`
//!
//! The seed's `TranslationService`: a background service with a `translate` action
//! (typed parameters, priority, timeout, correlation id) and a `check-queue` action,
//! emitting Started/Completed/Failed events. The example subscribes to the events
//! with the fluent API, runs translations, and prints what it receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use koan::events::translation::{COMPLETED, FAILED, STARTED};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Host, Service, ServiceContext,
    ServiceOptions,
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

impl TranslationOptions {
    fn new(file_id: &str, from: &str, to: &str) -> Self {
        TranslationOptions {
            file_id: file_id.into(),
            from: from.into(),
            to: to.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TranslationEventArgs {
    file_id: String,
    from: String,
    to: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TranslationErrorArgs {
    file_id: String,
    error: String,
}

#[derive(Default)]
struct TranslationService {
    translated: AtomicU64,
}

impl Service for TranslationService {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::default().description("Translates uploaded files")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "translate",
            |svc: Arc<Self>, opts: TranslationOptions, cx: ActionContext| async move {
                svc.translate(opts, &cx).await
            },
        )
        .description("Translate a file from one language to another");
        a.action(
            "check-queue",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                tracing::info!("checking translation queue");
                Ok::<_, BoxError>(0u32)
            },
        )
        .description("Check the translation queue");
        a.event::<TranslationEventArgs>(STARTED);
        a.event::<TranslationEventArgs>(COMPLETED);
        a.event::<TranslationErrorArgs>(FAILED);
    }
}

impl TranslationService {
    async fn translate(
        &self,
        opts: TranslationOptions,
        cx: &ActionContext,
    ) -> Result<String, BoxError> {
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
            return Err(error.into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // the translation work
        self.translated.fetch_add(1, Ordering::Relaxed);
        cx.emit(COMPLETED, args).await;
        Ok(format!("{}.{}", opts.file_id, opts.to))
    }
}

impl BackgroundService for TranslationService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        // The seed's `Task.Delay(Infinite)`: this service only answers actions.
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), koan::Error> {
    tracing_subscriber::fmt().with_target(false).init();
    let host = Host::builder()
        .service::<TranslationService>()
        .build()?
        .start();
    host.started().await?;
    let translation = host.services::<TranslationService>();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (tx1, tx2) = (tx.clone(), tx);
    let _subscription = translation
        .on(COMPLETED)
        .handle(move |e: TranslationEventArgs| {
            let tx = tx1.clone();
            async move {
                let _ = tx.send(format!("completed: {} {} -> {}", e.file_id, e.from, e.to));
            }
        })
        .on(FAILED)
        .handle(move |e: TranslationErrorArgs| {
            let tx = tx2.clone();
            async move {
                let _ = tx.send(format!("failed: {} ({})", e.file_id, e.error));
            }
        })
        .subscribe()
        .await?;

    let out = translation
        .action(
            "translate",
            TranslationOptions::new("file.txt", "auto", "pt-BR"),
        )
        .priority(10)
        .timeout(Duration::from_secs(30 * 60))
        .correlation_id("upload-42")
        .execute()
        .await?;
    println!(
        "result: {} (correlation {})",
        out.json()?,
        out.correlation_id()
    );

    let failed = translation
        .action(
            "translate",
            serde_json::json!({"fileId": "broken.txt", "from": "en", "to": ""}),
        )
        .execute()
        .await;
    println!(
        "second translation: {}",
        failed.err().map(|e| e.to_string()).unwrap_or_default()
    );

    let queue = translation.action("check-queue", ()).execute().await?;
    println!("check-queue: {}", queue.json()?);

    for _ in 0..2 {
        if let Some(line) = rx.recv().await {
            println!("event {line}");
        }
    }
    host.shutdown();
    host.wait().await.into_result()
}
