//! `DataCleanupService`: periodic and pokable; deletes log entries older than the
//! retention period, in batches, and the other tables' rows done before it.

use koan::{
    BoxError, PeriodicService, ServiceContext, service::BatchRequest, service::BuildContext,
    service::FromContext,
};
use serde::{Deserialize, Serialize};

use crate::db::{Db, now_secs};

/// `Settings` of the service: how long entries are kept and how many rows one
/// statement deletes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CleanupSettings {
    /// Entries older than this many days are deleted.
    pub retention_days: u32,
    /// Rows deleted per statement.
    pub batch_size: u32,
}

impl Default for CleanupSettings {
    fn default() -> Self {
        CleanupSettings {
            retention_days: 30,
            batch_size: 1000,
        }
    }
}

/// What one cleanup did.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CleanupCompleted {
    /// Rows deleted.
    pub deleted: u64,
    /// Rows left.
    pub remaining: u64,
}

/// Deletes old log entries, hourly and on demand.
#[koan::service(every = "1h", description = "Deletes log entries older than the retention period",
    event(name = "DataCleanup.Completed", payload = CleanupCompleted))]
#[derive(Debug)]
pub struct DataCleanupService {
    db: Db,
    settings: CleanupSettings,
}

impl FromContext for DataCleanupService {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(DataCleanupService {
            db: cx.resource::<Db>()?.as_ref().clone(),
            settings: cx.settings()?,
        })
    }
}

impl DataCleanupService {
    /// Deletes up to `max_batches` batches of `batch_size` old rows.
    async fn cleanup(
        &self,
        batch_size: u32,
        max_batches: Option<u32>,
        cx: &ServiceContext,
    ) -> Result<u64, BoxError> {
        let cutoff = now_secs() - i64::from(self.settings.retention_days) * 86_400;
        let mut deleted = 0u64;
        let mut batches = 0u32;
        loop {
            let n = self
                .db
                .run(move |c| {
                    c.execute(
                        "DELETE FROM log_entries WHERE id IN \
                         (SELECT id FROM log_entries WHERE created_at < ?1 ORDER BY id LIMIT ?2)",
                        (cutoff, batch_size),
                    )
                })
                .await? as u64;
            deleted += n;
            batches += 1;
            if n < u64::from(batch_size)
                || max_batches.is_some_and(|m| batches >= m)
                || cx.is_cancelled()
            {
                break;
            }
        }
        self.prune_kept(cutoff, batch_size, cx).await?;
        let remaining: i64 = self
            .db
            .run(|c| c.query_row("SELECT COUNT(*) FROM log_entries", [], |r| r.get(0)))
            .await?;
        tracing::info!(deleted, remaining, "data cleanup completed");
        metrics::counter!("demo_log_entries_deleted_total").increment(deleted);
        cx.emit(
            "DataCleanup.Completed",
            CleanupCompleted {
                deleted,
                remaining: remaining as u64,
            },
        )
        .await;
        Ok(deleted)
    }
}

/// The other tables the demo's services fill, with the time their rows are done
/// at and which rows are done: those done before the retention period are
/// deleted too (a probe's 30 minutes of load grew the file by 17 MB of delivered
/// messages, translations and probe results that nothing ever deleted). The
/// outbox keeps its undelivered rows and those set aside (the only copy of a
/// message its sink never took), and every table its newest row, so that no id
/// is given again (a receiver that drops repeats by id would drop a new message;
/// a re-probe).
const KEPT: [(&str, &str, &str); 4] = [
    (
        "outbox",
        "processed_at",
        "id NOT IN (SELECT outbox_id FROM outbox_set_aside)",
    ),
    ("delivered_messages", "delivered_at", "1"),
    ("translations", "created_at", "status = 'completed'"),
    ("probe_results", "probed_at", "1"),
];

impl DataCleanupService {
    /// Deletes the rows of [`KEPT`] done before `cutoff`, `batch_size` at a time.
    async fn prune_kept(
        &self,
        cutoff: i64,
        batch_size: u32,
        cx: &ServiceContext,
    ) -> Result<u64, BoxError> {
        let mut deleted = 0u64;
        for (table, done_at, done) in KEPT {
            loop {
                let sql = format!(
                    "DELETE FROM {table} WHERE rowid IN \
                     (SELECT rowid FROM {table} WHERE {done_at} < ?1 AND {done} \
                      AND rowid < (SELECT MAX(rowid) FROM {table}) LIMIT ?2)"
                );
                let n = self
                    .db
                    .run(move |c| c.execute(&sql, (cutoff, batch_size)))
                    .await? as u64;
                deleted += n;
                if n < u64::from(batch_size) || cx.is_cancelled() {
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "kept rows past the retention period deleted");
        }
        Ok(deleted)
    }
}

impl PeriodicService for DataCleanupService {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.cleanup(self.settings.batch_size.max(1), None, &cx)
            .await
            .map(drop)
    }

    async fn process_batch(&self, batch: BatchRequest, cx: ServiceContext) -> Result<(), BoxError> {
        if let Some(filter) = &batch.filter {
            tracing::info!(filter = ?filter, "process-batch filter (the demo cleans every old entry)");
        }
        let size = batch.batch_size.unwrap_or(self.settings.batch_size).max(1);
        self.cleanup(size, Some(1), &cx).await.map(drop)
    }
}
