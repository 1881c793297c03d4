//! Run with: `cargo run -p koan --example translation_service`
//!
//! The seed's `TranslationService`: a background service with a `translate` action
//! (typed parameters, priority, timeout, correlation id) and a `check-queue` action,
//! emitting Started/Completed/Failed events. The example subscribes to the events
//! with the fluent API, runs translations, and prints what it receives.
//!
//! `#[koan::actions]` gives `Services<TranslationService>` a typed caller per action
//! (the trait `TranslationServiceActions`): `translation.translate(opts)` takes a
//! `TranslationOptions` and its `.execute()` gives the handler's `String`. The
//! by-name form, `.action("translate", json)`, stays for JSON callers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use koan::well_known::events::translation::{COMPLETED, FAILED, STARTED};
use koan::{ActionContext, BackgroundService, BoxError, Host, ServiceContext};
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

/// `[KoanBackgroundService(RunInProduction = true)]` with its three `[ServiceEvent]`s.
#[koan::service(
    run_in_production = true,
    description = "Translates uploaded files",
    event(name = STARTED, payload = TranslationEventArgs),
    event(name = COMPLETED, payload = TranslationEventArgs),
    event(name = FAILED, payload = TranslationErrorArgs)
)]
#[derive(Default)]
struct TranslationService {
    translated: AtomicU64,
}

#[koan::actions]
impl TranslationService {
    /// `[ServiceAction("check-queue")]`; its typed caller is `queue_length()`
    /// (`Services` has a `check_queue()` of its own, the poke of periodic services).
    #[action("check-queue", description = "Check the translation queue")]
    async fn queue_length(&self) -> u32 {
        tracing::info!("checking translation queue");
        0
    }

    /// `[ServiceAction("translate", RequiresParameters = true, ParametersType = typeof(TranslationOptions))]`
    #[action(
        "translate",
        description = "Translate a file from one language to another"
    )]
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
    let host = Host::builder().discover().build()?.start();
    host.started().await?;
    let translation = host.services::<TranslationService>();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (tx1, tx2) = (tx.clone(), tx);
    // By name: Started and Completed share one payload type, so the type alone
    // (`translation.on::<TranslationEventArgs>()`) would not say which is meant.
    let _subscription = host
        .service("TranslationService")
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

    // Typed: a misspelled action, a wrong parameter or result type does not compile.
    let file: String = translation
        .translate(TranslationOptions::new("file.txt", "auto", "pt-BR"))
        .priority(10)
        .timeout(Duration::from_secs(30 * 60))
        .correlation_id("upload-42")
        .execute()
        .await?;
    println!("result: {file}");

    // By name, with JSON parameters: what HTTP, the CLI and other processes send.
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

    let queue: u32 = translation.queue_length().execute().await?;
    println!("check-queue: {queue}");

    for _ in 0..2 {
        if let Some(line) = rx.recv().await {
            println!("event {line}");
        }
    }
    host.shutdown();
    host.wait().await.into_result()
}
