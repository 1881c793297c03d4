//! The demo's SQLite database: one file, operations on the blocking pool, each on a
//! connection kept from an earlier one when one is idle (WAL mode lets readers and
//! the writer overlap). The first connection of a process sets the schema up while
//! the others wait.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

/// The database, shared by every service as a host resource.
#[derive(Debug, Clone)]
pub struct Db {
    path: PathBuf,
    /// Whether this process has set the schema up (one connection does it while
    /// the others wait: two at once would race on the journal mode and the
    /// migrations).
    schema: std::sync::Arc<std::sync::Mutex<bool>>,
    /// `PRAGMA max_page_count` of every connection (0: SQLite's default), to simulate
    /// a full disk.
    max_pages: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Idle connections, each with the `max_page_count` it was opened with.
    idle: std::sync::Arc<std::sync::Mutex<Vec<(Connection, u64)>>>,
}

/// The most idle connections kept. A connection opened per operation made a few
/// seconds short of file descriptors (`--nofile=64`) fail every write with "unable
/// to open database file" and burn jobs' attempts (found by a probe); kept, they
/// hold their descriptors.
const IDLE: usize = 8;

/// A database failure, as a service error.
pub type DbError = Box<dyn std::error::Error + Send + Sync>;

impl Db {
    /// The database at `path` (created on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Db {
            path: path.into(),
            schema: std::sync::Arc::default(),
            max_pages: std::sync::Arc::default(),
            idle: std::sync::Arc::default(),
        }
    }

    /// Caps the database at `pages` pages (`PRAGMA max_page_count`) from the next
    /// operation on, or lifts the cap with `None`: a full disk, simulated.
    pub fn set_max_page_count(&self, pages: Option<u64>) {
        let pages = pages.unwrap_or(0);
        self.max_pages
            .store(pages, std::sync::atomic::Ordering::SeqCst);
    }

    /// Runs `f` on the blocking pool, on an idle connection or a new one.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let path = self.path.clone();
        let schema = std::sync::Arc::clone(&self.schema);
        let idle = std::sync::Arc::clone(&self.idle);
        let max_pages = self.max_pages.load(std::sync::atomic::Ordering::SeqCst);
        let result = tokio::task::spawn_blocking(move || {
            let kept = {
                let mut idle = idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // One opened with another cap is let go (a cap lifted stays lifted).
                idle.retain(|(_, cap)| *cap == max_pages);
                idle.pop()
            };
            if let Some((mut conn, _)) = kept {
                let result = f(&mut conn);
                keep(&idle, conn, max_pages);
                return result;
            }
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            if max_pages > 0 {
                conn.pragma_update(
                    None,
                    "max_page_count",
                    i64::try_from(max_pages).unwrap_or(i64::MAX),
                )?;
            }
            // A process that hosts only some services (a cluster member) still gets
            // the schema; `CREATE … IF NOT EXISTS` makes this idempotent.
            {
                let mut ready = schema
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !*ready {
                    init(&conn)?;
                    *ready = true;
                }
            }
            let result = f(&mut conn);
            keep(&idle, conn, max_pages);
            result
        })
        .await?;
        result.map_err(|e| format!("database {}: {e}", self.path.display()).into())
    }
}

/// Keeps `conn` for a later operation, unless enough are idle or it is inside a
/// transaction `f` left open.
fn keep(idle: &std::sync::Mutex<Vec<(Connection, u64)>>, conn: Connection, cap: u64) {
    if !conn.is_autocommit() {
        return;
    }
    let mut idle = idle
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if idle.len() < IDLE {
        idle.push((conn, cap));
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Creates the demo's tables, or brings a database made by an older demo up to date.
pub fn init(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    migrate(conn)
}

/// Brings an older database up to date. Tables added later (`flow_entities`,
/// `probe_results`, `delivered_messages`) come from `CREATE TABLE IF NOT EXISTS` in
/// [`SCHEMA`]; columns added later to existing tables are added here.
///
/// Translations keyed by the job that made them (so a job run twice stores its
/// translation once).
///
/// The look and the change are one write transaction: two connections that open
/// the database at once (the first calls of a process, on the blocking pool) would
/// otherwise both find the column missing, and the second `ALTER` fail.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let changed = (|| {
        let has_job_id: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('translations') WHERE name = 'job_id'")?
            .exists([])?;
        if !has_job_id {
            conn.execute_batch("ALTER TABLE translations ADD COLUMN job_id TEXT")?;
        }
        conn.execute_batch(
            "CREATE UNIQUE INDEX IF NOT EXISTS translations_job ON translations(job_id) WHERE job_id IS NOT NULL",
        )
    })();
    match changed {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The demo's tables.
pub const SCHEMA: &str = "
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
CREATE TABLE IF NOT EXISTS flow_entities (
    id TEXT PRIMARY KEY,
    entity_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    stage TEXT NOT NULL,
    state TEXT NOT NULL,
    parked_stage TEXT,
    parked_reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS flow_entities_state ON flow_entities(state, created_at);
CREATE TABLE IF NOT EXISTS probe_results (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    ok INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    error TEXT,
    probed_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS probe_results_target ON probe_results(target, id);
CREATE TABLE IF NOT EXISTS delivered_messages (
    outbox_id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    delivered_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_set_aside (
    outbox_id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    set_aside_at INTEGER NOT NULL
);
";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_calls_of_a_process_open_a_new_database_at_once() {
        let dir = koan_test_support::TempDir::new("koan-demo-db");
        let db = Db::new(dir.path().join("demo.db"));
        // Each call opens its own connection; before any has set the schema up,
        // all of them bring it up to date together.
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { db.run(|_| Ok(())).await.map_err(|e| e.to_string()) })
            })
            .collect();
        for call in calls {
            call.await.expect("joined").expect("no call fails");
        }
    }
}
