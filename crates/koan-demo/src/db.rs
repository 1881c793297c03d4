//! The demo's SQLite database: one file, a connection per operation on the blocking
//! pool (SQLite opens in microseconds; WAL mode lets readers and the writer overlap).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

/// The database, shared by every service as a host resource.
#[derive(Debug, Clone)]
pub struct Db {
    path: PathBuf,
}

/// A database failure, as a service error.
pub type DbError = Box<dyn std::error::Error + Send + Sync>;

impl Db {
    /// The database at `path` (created on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Db { path: path.into() }
    }

    /// Runs `f` on a fresh connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            f(&mut conn)
        })
        .await?;
        result.map_err(|e| format!("database {}: {e}", self.path.display()).into())
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
