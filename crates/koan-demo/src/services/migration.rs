//! `DatabaseMigrationService`: a startup service that creates the schema before any
//! other service starts, and seeds some history so the demo has old rows to clean.

use koan::{BoxError, ServiceContext, StartupService, service::BuildContext, service::FromContext};

use crate::db::{Db, init, now_secs};

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

impl StartupService for DatabaseMigrationService {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        let seeded = self
            .db
            .run(|c| {
                init(c)?;
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
