//! The seed's "Testing Support" scenario: a translation service emits Started,
//! then Completed or Failed; a test subscribes, runs it, and sees it complete once
//! and never fail. Deliveries are awaited on channels.

mod common;

use std::sync::Arc;

use common::events::{drain, forward, next};
use koan::well_known::events::translation::{COMPLETED, FAILED, STARTED};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    error::ErrorKind,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

// ---- The seed's "Testing Support" scenario -------------------------------------

/// The parameters of `translate`, and the payload of its Started and Completed
/// events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Translation {
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
            |_svc: Arc<Self>, opts: Translation, cx: ActionContext| async move {
                cx.emit(STARTED, opts.clone()).await;
                if opts.to.is_empty() {
                    let failed = TranslationErrorArgs {
                        file_id: opts.file_id,
                        error: "no target language".to_owned(),
                    };
                    cx.emit(FAILED, failed.clone()).await;
                    return Err(BoxError::from(failed.error));
                }
                cx.emit(COMPLETED, opts.clone()).await;
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
        a.event::<Translation>(STARTED);
        a.event::<Translation>(COMPLETED);
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
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Translation>();
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
            Translation {
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
        [Translation {
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
