//! [`SqliteJobStore`]: the [`JobStore`] kept in one SQLite file.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use koan::{
    Error, Result, error::ErrorKind, job::Claim, job::ClaimRequest, job::Claimed, job::Finish,
    job::JobCounts, job::JobPage, job::JobQuery, job::JobRecord, job::JobStore, job::NewJob,
    job::Pushed, transport::BoxFuture,
};
use rusqlite::Connection;

use crate::fail::{Failure, ResultExt};
use crate::queries;
use crate::reader::Reader;
use crate::retention;
use crate::schema;
use crate::writer::Writer;

/// Jobs kept in one SQLite file: they survive the process, a crash and a power loss.
///
/// One thread owns the connection and runs every operation, batching the commands
/// that arrive together into one transaction (one sync to disk for all of them);
/// no call blocks the async caller. Dropping the store lets that thread finish the
/// queued commands and close the file, and waits for it: once the drop returns, the
/// file may be opened again.
///
/// A caller that stops waiting (a timeout) does not withdraw its command: it still
/// commits, and its outcome is unknown to that caller (retry with the same
/// idempotency key).
#[derive(Debug)]
pub struct SqliteJobStore {
    label: String,
    durable: bool,
    /// Listings and counts, on a file (in memory, the writer's connection is the
    /// only one to its database). Dropped before the writer: the last connection
    /// to close checkpoints the WAL into the file and removes it, which a
    /// read-only one cannot (closed last, it left committed jobs in `-wal`
    /// alone, lost to a copy of the file; a review).
    reader: Option<Reader>,
    writer: Writer,
}

impl SqliteJobStore {
    /// Opens the store in the file at `path`, creating the file and its schema when
    /// missing. The file is in WAL mode with `synchronous = FULL`: an operation
    /// answers only once its transaction is synced to disk.
    ///
    /// Errors with [`ErrorKind::StoreUnavailable`] when the file cannot be made,
    /// opened or written (a missing or read-only directory, a read-only file, a
    /// newer schema, another connection's write lock held past the busy timeout),
    /// saying why.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteJobStore> {
        let path: PathBuf = path.as_ref().to_owned();
        let label = format!("sqlite:{}", path.display());
        let conn = schema::open_file(&path).map_err(|f| f.into_error(&label))?;
        let identity = crate::identity::Identity::of(&path);
        let gate = crate::reader::Gate::default();
        let mut store = SqliteJobStore::start(conn, label, Some((identity, gate.clone())))?;
        store.reader =
            Some(Reader::start(&path, &store.label, gate).map_err(|f| f.into_error(&store.label))?);
        Ok(store)
    }

    /// A store in memory, for tests: the same SQL as a file, nothing survives the
    /// store ([`JobStore::is_durable`] is `false`).
    pub fn in_memory() -> Result<SqliteJobStore> {
        let label = "sqlite::memory:".to_owned();
        let conn = schema::open_memory().map_err(|f| f.into_error(&label))?;
        SqliteJobStore::start(conn, label, None)
    }

    /// A store on `conn`; durable when it is a file's (its identity, and the gate
    /// its reader and writer share).
    fn start(
        conn: Connection,
        label: String,
        file: Option<(crate::identity::Identity, crate::reader::Gate)>,
    ) -> Result<SqliteJobStore> {
        let durable = file.is_some();
        let writer = Writer::start(conn, &label, file).map_err(|f| f.into_error(&label))?;
        Ok(SqliteJobStore {
            label,
            durable,
            reader: None,
            writer,
        })
    }

    /// Caps the file at `pages` pages (`PRAGMA max_page_count`; SQLite never sets it
    /// below the current size), to simulate a full disk. Returns the cap in force.
    #[doc(hidden)]
    pub async fn limit_pages_for_test(&self, pages: u64) -> Result<u64> {
        self.call(move |conn| {
            let cap: i64 = conn
                .pragma_update_and_check(None, "max_page_count", crate::codec::int(pages), |row| {
                    row.get(0)
                })
                .doing("set max_page_count")?;
            Ok(u64::try_from(cap).unwrap_or(0))
        })
        .await
    }

    /// Holds the reader thread busy until the guard is dropped (in memory, the
    /// writer's), to show what goes on meanwhile.
    #[doc(hidden)]
    pub fn hold_reads_for_test(&self) -> impl Drop {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let read = move |_: &Connection| {
            let _ = held.recv();
            Ok(())
        };
        drop(match &self.reader {
            Some(reader) => reader.submit(read),
            None => self.writer.submit(read),
        });
        ReadsHeld(release)
    }

    /// Runs `work` on the writer thread; resolves once its transaction committed.
    fn call<T, F>(&self, work: F) -> BoxFuture<'_, Result<T>>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> std::result::Result<T, Failure> + Send + 'static,
    {
        self.answer(self.writer.submit(work))
    }

    /// Runs the read `work` on the reader thread (on the writer's in memory).
    fn read<T, F>(&self, work: F) -> BoxFuture<'_, Result<T>>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> std::result::Result<T, Failure> + Send + 'static,
    {
        match &self.reader {
            Some(reader) => self.answer(reader.submit(work)),
            None => self.call(work),
        }
    }

    /// The outcome `answer` brings, as the store's caller gets it.
    fn answer<T: Send + 'static>(
        &self,
        answer: tokio::sync::oneshot::Receiver<std::result::Result<T, Failure>>,
    ) -> BoxFuture<'_, Result<T>> {
        Box::pin(async move {
            match answer.await {
                Ok(outcome) => outcome.map_err(|f| f.into_error(&self.label)),
                Err(_) => Err(Error::new(
                    ErrorKind::StoreUnavailable,
                    format!(
                        "job store {} could not answer: its thread stopped",
                        self.label
                    ),
                )),
            }
        })
    }
}

impl JobStore for SqliteJobStore {
    fn is_durable(&self) -> bool {
        self.durable
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn push(&self, job: NewJob) -> BoxFuture<'_, Result<Pushed>> {
        self.call(move |conn| queries::push(conn, &job))
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Vec<Claimed>>> {
        self.call(move |conn| queries::claim(conn, &request))
    }

    fn heartbeat(&self, claim: &Claim, lease_until: DateTime<Utc>) -> BoxFuture<'_, Result<bool>> {
        let claim = claim.clone();
        self.call(move |conn| queries::heartbeat(conn, &claim, lease_until))
    }

    fn finish(
        &self,
        claim: &Claim,
        how: Finish,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<bool>> {
        let claim = claim.clone();
        self.call(move |conn| queries::finish(conn, &claim, &how, now))
    }

    fn get(&self, id: &str) -> BoxFuture<'_, Result<Option<JobRecord>>> {
        let id = id.to_owned();
        self.call(move |conn| queries::get(conn, &id))
    }

    fn list(&self, query: JobQuery) -> BoxFuture<'_, Result<JobPage>> {
        self.read(move |conn| queries::list(conn, &query))
    }

    fn counts(&self, service: Option<&str>) -> BoxFuture<'_, Result<JobCounts>> {
        let service = service.map(str::to_owned);
        self.read(move |conn| queries::counts(conn, service.as_deref()))
    }

    fn next_due(&self, services: &[String]) -> BoxFuture<'_, Result<Option<DateTime<Utc>>>> {
        let services = services.to_vec();
        self.call(move |conn| queries::next_due(conn, &services))
    }

    fn live_services(&self) -> BoxFuture<'_, Result<Option<koan::job::LiveServices>>> {
        self.call(|conn| queries::live_services(conn).map(Some))
    }

    fn retry(
        &self,
        id: &str,
        from: koan::job::RetryFrom,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<JobRecord>> {
        let id = id.to_owned();
        self.call(move |conn| queries::retry(conn, &id, from, now))
    }

    /// One command, so one transaction, for the lot (a page of 500 at most,
    /// from `retry_all_dead`).
    fn retry_each(
        &self,
        ids: Vec<String>,
        from: koan::job::RetryFrom,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<usize>> {
        self.call(move |conn| queries::retry_each(conn, &ids, from, now))
    }

    fn cancel(&self, id: &str, now: DateTime<Utc>) -> BoxFuture<'_, Result<JobRecord>> {
        let id = id.to_owned();
        self.call(move |conn| queries::cancel(conn, &id, now))
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<bool>> {
        let id = id.to_owned();
        self.call(move |conn| queries::delete(conn, &id))
    }

    /// A step at a time, each a command of its own (1,000 jobs at most): the
    /// writes queued meanwhile go between two steps.
    fn purge(&self, older_than: DateTime<Utc>, max_bytes: u64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let batch = retention::BATCH;
            let mut gone = 0;
            // Which to forget is read by the reader; the writer forgets them by
            // id, a batch a command, other writes going between (see
            // `retention`).
            loop {
                let ids = self
                    .read(move |conn| retention::aged(conn, older_than, batch))
                    .await?;
                let more = ids.len() == batch;
                if ids.is_empty() {
                    break;
                }
                let (n, _) = self.call(move |conn| retention::forget(conn, &ids)).await?;
                gone += n;
                if !more || n == 0 {
                    break;
                }
            }
            let weight = self.read(retention::final_weight).await?;
            let mut excess = weight.saturating_sub(max_bytes);
            while excess > 0 {
                let oldest = self
                    .read(move |conn| retention::oldest(conn, batch))
                    .await?;
                // As many of the oldest as make up the excess.
                let mut take = 0;
                let mut ids = Vec::new();
                for (id, w) in oldest {
                    if take >= excess {
                        break;
                    }
                    take += u64::try_from(w).unwrap_or(0);
                    ids.push(id);
                }
                if ids.is_empty() {
                    break;
                }
                let (n, bytes) = self.call(move |conn| retention::forget(conn, &ids)).await?;
                gone += n;
                excess = excess.saturating_sub(bytes);
                if n == 0 {
                    break;
                }
            }
            Ok(gone)
        })
    }
}

/// Holds the reader thread until dropped ([`SqliteJobStore::hold_reads_for_test`]).
struct ReadsHeld(std::sync::mpsc::Sender<()>);

impl Drop for ReadsHeld {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}
