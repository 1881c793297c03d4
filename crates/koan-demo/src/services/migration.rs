//! `DatabaseMigrationService`: a startup service that creates the schema before any
//! other service starts, and seeds some history so the demo has old rows to clean.

use koan::{BoxError, BuildContext, FromContext, ServiceContext, StartupService};

use crate::db::{Db, now_secs};

/// Creates the schema (startup order 1, 60 s timeout, fail-fast).
#[koan::service(startup, order = 1, timeout = "60s", description = "Creates the database schema", ready = Self::can_connect)]
#[derive(Debug)]
pub struct DatabaseMigrationService {
    db: Db,
}

impl FromContext for DatabaseMigrationService {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(DatabaseMigrationService {
            db: cx.resource::<Db>()?.as_ref().clone(),
        })
    }
}

impl DatabaseMigrationService {
    async fn can_connect(&self) -> bool {
        self.db
            .run(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .await
            .is_ok()
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS log_entries (
    id INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_entries_created ON log_entries(created_at);
CREATE TABLE IF NOT EXISTS translations (
    id INTEGER PRIMARY KEY,
    file_id TEXT NOT NULL,
    source_lang TEXT NOT NULL,
    target_lang TEXT NOT NULL,
    source_text TEXT NOT NULL,
    translated_text TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    processed_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(processed_at, id);
";

impl StartupService for DatabaseMigrationService {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        let seeded = self
            .db
            .run(|c| {
                c.execute_batch(SCHEMA)?;
                let count: i64 = c.query_row("SELECT COUNT(*) FROM log_entries", [], |r| r.get(0))?;
                if count > 0 {
                    return Ok(0);
                }
                // History: 240 entries over the last 60 days, half of them past a
                // 30-day retention.
                let tx = c.transaction()?;
                let now = now_secs();
                for i in 0..240i64 {
                    tx.execute(
                        "INSERT INTO log_entries (created_at, level, message) VALUES (?1, 'info', ?2)",
                        (now - i * 6 * 3600, format!("historical entry {i}")),
                    )?;
                }
                tx.commit()?;
                Ok(240)
            })
            .await?;
        tracing::info!(seeded, "database migration completed");
        Ok(())
    }
}
