//! Opening a connection: pragmas, and the `jobs` table with its indexes.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, MAIN_DB};

use crate::codec::waiting_states;
use crate::fail::{Failure, ResultExt};

/// The schema version this crate writes (`PRAGMA user_version`). Version 2 replaced
/// version 1's `jobs_claim` index by the partial indexes below; the table is the same.
const VERSION: i64 = 2;

/// One row per job. The columns are what claims, listings, counts and retention
/// filter and sort on; `record` is the whole [`koan::job::JobRecord`] as JSON, the one
/// source of truth for everything else. Times are milliseconds since the Unix epoch.
const TABLE: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY NOT NULL,
    service         TEXT NOT NULL,
    action          TEXT NOT NULL,
    state           TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    run_at          INTEGER NOT NULL,
    lease_until     INTEGER,
    finished_at     INTEGER,
    idempotency_key TEXT UNIQUE,
    claim_token     TEXT,
    weight          INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    record          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_service ON jobs (service, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_correlation ON jobs (json_extract(record, '$.correlation_id'), id DESC);
";

/// The partial indexes hold only live jobs, so a claim and `next_due` cost the rows
/// they return whatever the backlog: `jobs_waiting` in the order a claim takes
/// waiting jobs, `jobs_waiting_due` for the earliest `run_at`, `jobs_leased` for
/// lapsed and lapsing leases. Their `WHERE` clauses are the queries' own terms
/// (`queries::claim`, `queries::next_due`), which SQLite needs to use them.
fn live_indexes() -> String {
    let waiting = waiting_states();
    format!(
        "CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (service, priority DESC, run_at, id)
             WHERE state IN ({waiting});
         CREATE INDEX IF NOT EXISTS jobs_waiting_due ON jobs (service, run_at)
             WHERE state IN ({waiting});
         CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (service, lease_until)
             WHERE state = 'running';"
    )
}

/// The most bytes the write-ahead log's file keeps once the log starts again.
pub(crate) const WAL_KEPT_BYTES: i64 = 16 * 1024 * 1024;

/// How long a statement waits for another process holding the file's write lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer connection to the file at `path` (created when missing), in WAL mode
/// with `synchronous = FULL`, its schema in place. A file this connection cannot
/// write, or of a newer schema, is refused before anything is written to it.
pub(crate) fn open_file(path: &Path) -> Result<Connection, Failure> {
    crate::place::make(path)?;
    let conn = Connection::open(path).doing("open the file")?;
    writable(&conn, path)?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .doing("set a busy timeout")?;
    // Before the switch to WAL mode, which writes the file's header: a refused
    // file stays as it was (it did not, a probe: its journal mode became `wal`).
    version(&conn)?;
    wal(&conn)?;
    // FULL: a commit is on disk (the WAL synced) before any command of its batch is
    // answered, so an accepted job survives a power loss, not only a crash. Batching
    // shares one sync among every command that arrived meanwhile.
    conn.pragma_update(None, "synchronous", "FULL")
        .doing("set synchronous = FULL")?;
    // The write-ahead log's file is cut back to this when the log starts again:
    // once long (a read holding a snapshot while jobs came), it kept its length
    // for good, across restarts (764 MB in a re-probe).
    conn.pragma_update(None, "journal_size_limit", WAL_KEPT_BYTES)
        .doing("set journal_size_limit")?;
    check(&conn)?;
    create(&conn)?;
    Ok(conn)
}

/// Switches the file to WAL mode (a no-op once it is). The switch reads the
/// file's header, then takes its write lock: SQLite answers "database is locked"
/// at once, without the busy timeout, when another connection holds that lock
/// meanwhile, so two hosts started together on a new file had one of them fail
/// (a probe). It is tried again until the busy timeout has passed.
fn wal(conn: &Connection) -> Result<(), Failure> {
    let until = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    let mode: String = loop {
        match conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0)) {
            Err(e) if busy(&e) => {
                if Instant::now() + pause > until {
                    return Err(Failure::store("switch to WAL mode", locked(&e)));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            answer => break answer.doing("switch to WAL mode")?,
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Failure::store(
            "switch to WAL mode",
            format!("the file stays in journal mode `{mode}`"),
        ));
    }
    Ok(())
}

/// Whether `e` is SQLite's "database is locked" (another connection's lock).
fn busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

/// `e`, a lock another connection held past the busy timeout, worded.
fn locked(e: &rusqlite::Error) -> String {
    format!(
        "{e}: another connection (a host sharing the file, a `sqlite3` shell) held its \
         write lock for over {} s; end that transaction, then start the host again",
        BUSY_TIMEOUT.as_secs()
    )
}

/// Refuses a file SQLite opened read-only: it does so without a word when the
/// file cannot be written (its permissions, a read-only mount), and the host then
/// said its jobs were kept in a durable store, reported ready, and refused every
/// job with "attempt to write a readonly database" (a probe).
fn writable(conn: &Connection, path: &Path) -> Result<(), Failure> {
    let read_only = conn.is_readonly(MAIN_DB).doing("open the file")?;
    if !read_only {
        return Ok(());
    }
    Err(Failure::store(
        "use the file",
        format!(
            "{} can only be read by this process; give the host's user write access to \
             it and to its directory (SQLite writes `-wal` and `-shm` files beside it)",
            path.display()
        ),
    ))
}

/// Refuses a damaged file at start (`PRAGMA quick_check`: every page read once,
/// in about a second for a million jobs): a host that opened one answered 202 to
/// jobs it could then never claim, its health `pass` (seen in a probe, a page of
/// the table zeroed).
fn check(conn: &Connection) -> Result<(), Failure> {
    let found: Vec<String> = conn
        .prepare("PRAGMA quick_check(3)")
        .and_then(|mut q| q.query_map([], |row| row.get(0))?.collect())
        .doing("check the file (quick_check)")?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(Failure::store(
        "use the file",
        format!(
            "it is damaged ({}); restore it from a backup, or move it aside to start with an empty store",
            found.join("; ")
        ),
    ))
}

/// A connection to a private in-memory database, its schema in place.
pub(crate) fn open_memory() -> Result<Connection, Failure> {
    let conn = Connection::open_in_memory().doing("open an in-memory database")?;
    create(&conn)?;
    Ok(conn)
}

/// The file's schema version; refuses a file written by a newer version of this
/// crate.
fn version(conn: &Connection) -> Result<i64, Failure> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .doing("read the schema version")?;
    if found > VERSION {
        return Err(Failure::store(
            "use the file",
            format!("its schema is version {found}, newer than this koan-sqlite's {VERSION}"),
        ));
    }
    Ok(found)
}

/// Creates the table and indexes unless present; refuses a file written by a newer
/// version of this crate.
///
/// A file to create or migrate is so in one transaction, which holds the write
/// lock from the start: another host opening it meanwhile waits for it (busy
/// timeout), then finds the schema whole and its version written. A file whose
/// schema is current is opened without one (without a write: see below).
fn create(conn: &Connection) -> Result<(), Failure> {
    if version(conn)? == VERSION {
        return build(conn);
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| {
        let why = if busy(&e) { locked(&e) } else { e.to_string() };
        Failure::store("create the schema", why)
    })?;
    let built = build(conn).and_then(|()| conn.execute_batch("COMMIT").doing("create the schema"));
    if built.is_err() && !conn.is_autocommit() {
        // The failure is the answer; a rollback that fails changes nothing (the
        // connection is dropped, and SQLite rolls back at its close).
        let _ = conn.execute_batch("ROLLBACK");
    }
    built
}

/// The statements of [`create`], the version read again (within its
/// transaction, another host may have written it).
fn build(conn: &Connection) -> Result<(), Failure> {
    let found = version(conn)?;
    if found == 1 {
        // Version 1's claim index: superseded by the partial indexes.
        conn.execute_batch("DROP INDEX IF EXISTS jobs_claim")
            .doing("migrate the schema from version 1")?;
    }
    let index_missing: bool = conn
        .query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'jobs_by_correlation') \
             AND EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'jobs')",
            [],
            |row| row.get(0),
        )
        .doing("read the schema")?;
    if index_missing {
        // Once, on a file of an earlier version: a pass over every record.
        let jobs: i64 = conn
            .query_row("SELECT COUNT(*) FROM jobs", [], |row| row.get(0))
            .doing("count the jobs")?;
        tracing::info!(
            jobs,
            "building the job store's index of correlation ids (once)"
        );
    }
    conn.execute_batch(TABLE).doing("create the schema")?;
    conn.execute_batch(&live_indexes())
        .doing("create the schema")?;
    // Written only when it changes: a write at every open kept a host from starting
    // again on a full disk, which it had served through (reads, health, clear
    // refusals) until a restart (found by a probe).
    if found != VERSION {
        conn.pragma_update(None, "user_version", VERSION)
            .doing("record the schema version")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A store whose schema is in place opens without writing: as on a full disk,
    /// where any write fails.
    #[test]
    fn a_current_schema_is_opened_without_a_write() {
        let dir = std::env::temp_dir().join(format!("koan-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let path = dir.join("jobs.db");
        drop(super::open_file(&path).expect("a new store"));
        let conn = rusqlite::Connection::open(&path).expect("the file again");
        conn.pragma_update(None, "query_only", true)
            .expect("query_only");
        super::create(&conn).expect("opened without a write");
        // A write is refused on this connection indeed.
        assert!(conn.pragma_update(None, "user_version", 2).is_err());
        drop(conn);
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}
