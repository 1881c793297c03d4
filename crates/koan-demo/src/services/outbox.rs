//! `OutboxProcessor`: drains the outbox table in batches and emits `Outbox.Processed`.

use std::time::Duration;

use koan::events::outbox::{FAILED, PROCESSED};
use koan::{BackgroundService, BoxError, BuildContext, FromContext, ServiceContext};
use serde::{Deserialize, Serialize};

use crate::db::{Db, now_secs};

/// The seed's `OutboxProcessedEventArgs`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxProcessed {
    /// Messages delivered in the batch.
    pub processed_count: u64,
}

/// The seed's `OutboxFailedEventArgs`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxFailed {
    /// What went wrong.
    pub error: String,
}

/// Drains the outbox.
#[koan::service(description = "Delivers outbox messages in batches",
    event(name = PROCESSED, payload = OutboxProcessed),
    event(name = FAILED, payload = OutboxFailed))]
#[derive(Debug)]
pub struct OutboxProcessor {
    db: Db,
}

impl FromContext for OutboxProcessor {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(OutboxProcessor {
            db: cx.resource::<Db>()?.as_ref().clone(),
        })
    }
}

#[koan::actions]
impl OutboxProcessor {
    /// The seed's `ProcessBatchAsync(int? batchSize)`.
    #[action(
        koan::actions::outbox::PROCESS_BATCH,
        description = "Deliver one batch now"
    )]
    async fn process_batch_now(
        &self,
        batch_size: Option<u32>,
        cx: &koan::ActionContext,
    ) -> Result<u64, BoxError> {
        let n = self.deliver(batch_size.unwrap_or(100)).await?;
        if n > 0 {
            cx.emit(PROCESSED, OutboxProcessed { processed_count: n })
                .await;
        }
        Ok(n)
    }
}

impl OutboxProcessor {
    /// Marks up to `size` pending messages as delivered (the demo's "delivery").
    async fn deliver(&self, size: u32) -> Result<u64, BoxError> {
        let n = self
            .db
            .run(move |c| {
                c.execute(
                    "UPDATE outbox SET processed_at = ?1 WHERE id IN \
                     (SELECT id FROM outbox WHERE processed_at IS NULL ORDER BY id LIMIT ?2)",
                    (now_secs(), size),
                )
            })
            .await?;
        Ok(n as u64)
    }
}

impl BackgroundService for OutboxProcessor {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        tracing::info!("outbox processor started");
        while !cx.is_cancelled() {
            match self.deliver(100).await {
                Ok(0) => {
                    cx.sleep(Duration::from_millis(500)).await;
                }
                Ok(n) => {
                    cx.emit(PROCESSED, OutboxProcessed { processed_count: n })
                        .await
                }
                Err(e) => {
                    tracing::error!(error = %e, "error processing outbox batch");
                    cx.emit(
                        FAILED,
                        OutboxFailed {
                            error: e.to_string(),
                        },
                    )
                    .await;
                    cx.sleep(Duration::from_secs(5)).await;
                }
            }
        }
        Ok(())
    }
}
