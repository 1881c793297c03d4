//! The file's schema: a file written by an older koan-sqlite opens, is migrated and
//! works; a newer one is refused.

mod common;

use common::{TempDb, at, claim, job};
use koan::{error::ErrorKind, job::JobState, job::JobStore, job::NewJob};
use rusqlite::Connection;

/// The index names of the file's `jobs` table, sorted.
fn indexes(conn: &Connection) -> Vec<String> {
    let mut st = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL ORDER BY name")
        .expect("a query");
    st.query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("names")
}

fn version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("the schema version")
}

/// Turns the file into what version 1 wrote: the same table, its one claim index.
fn downgrade_to_version_1(db: &TempDb) {
    let conn = Connection::open(db.path()).expect("a second connection");
    conn.execute_batch(
        "DROP INDEX jobs_waiting;
         DROP INDEX jobs_by_correlation;
         DROP INDEX jobs_waiting_due;
         DROP INDEX jobs_leased;
         CREATE INDEX jobs_claim ON jobs (service, state, priority DESC, run_at);
         PRAGMA user_version = 1;",
    )
    .expect("the version 1 schema");
    assert_eq!(
        indexes(&conn),
        ["jobs_by_service", "jobs_by_state", "jobs_claim"]
    );
}

#[tokio::test]
async fn a_version_1_file_is_migrated_and_its_jobs_run() {
    let db = TempDb::new("schema-v1");
    let (low, high, later, running) = {
        let store = db.open();
        let running = store.push(job("mail", "send")).await.expect("push");
        let held = store.claim(claim("mail", 1, 0)).await.expect("claim");
        assert_eq!(held[0].claim.id, running.record.id);
        let low = store.push(job("mail", "send")).await.expect("push");
        let high = NewJob {
            priority: 5,
            ..job("mail", "send")
        };
        let high = store.push(high).await.expect("push");
        let later = NewJob {
            run_at: at(60_000),
            ..job("mail", "send")
        };
        let later = store.push(later).await.expect("push");
        (
            low.record.id,
            high.record.id,
            later.record.id,
            running.record.id,
        )
    };
    downgrade_to_version_1(&db);

    let store = db.open();
    let conn = Connection::open(db.path()).expect("a second connection");
    assert_eq!(version(&conn), 2);
    assert_eq!(
        indexes(&conn),
        [
            "jobs_by_correlation",
            "jobs_by_service",
            "jobs_by_state",
            "jobs_leased",
            "jobs_waiting",
            "jobs_waiting_due"
        ]
    );
    drop(conn);

    let services = ["mail".to_owned()];
    assert_eq!(
        store.next_due(&services).await.expect("due"),
        Some(at(0)),
        "the waiting jobs"
    );
    let due = store.claim(claim("mail", 10, 1)).await.expect("claim");
    let ids: Vec<&str> = due.iter().map(|c| c.claim.id.as_str()).collect();
    assert_eq!(ids, [high.as_str(), low.as_str()], "priority, then age");
    assert_eq!(
        store.next_due(&services).await.expect("due"),
        Some(at(30_000)),
        "the first claim's lease"
    );
    let lapsed = store.claim(claim("mail", 10, 30_001)).await.expect("claim");
    assert_eq!(lapsed.len(), 1);
    assert_eq!(lapsed[0].claim.id, running);
    assert_eq!(lapsed[0].record.attempts, 2);
    let r = store.get(&later).await.expect("get").expect("stored");
    assert_eq!(r.state, JobState::Scheduled);
}

#[tokio::test]
async fn a_file_of_a_newer_schema_is_refused() {
    let db = TempDb::new("schema-newer");
    drop(db.open());
    let conn = Connection::open(db.path()).expect("a second connection");
    conn.execute_batch("PRAGMA user_version = 3")
        .expect("a newer version");
    drop(conn);
    let err = koan_sqlite::SqliteJobStore::open(db.path()).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(
        err.to_string()
            .contains("its schema is version 3, newer than this koan-sqlite's 2"),
        "{err}"
    );
}

/// A damaged file is refused at open, naming the damage, rather than opened and
/// then failing every claim while the host answered 202 to new jobs (found by a
/// probe: one page of the table zeroed).
#[tokio::test]
async fn a_damaged_file_is_refused_at_open() {
    let db = TempDb::new("damaged");
    {
        let store = db.open();
        for _ in 0..2000 {
            store.push(job("a", "x")).await.expect("push");
        }
    }
    // Everything in the main file (the WAL checkpointed), then a page in its middle
    // zeroed.
    {
        let conn = Connection::open(db.path()).expect("open");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }
    let mut bytes = std::fs::read(db.path()).expect("read");
    let page = 4096;
    let middle = (bytes.len() / page / 2) * page;
    bytes[middle..middle + page].fill(0);
    std::fs::write(db.path(), &bytes).expect("write");

    let e = koan_sqlite::SqliteJobStore::open(db.path()).expect_err("a damaged file");
    assert_eq!(e.kind(), ErrorKind::StoreUnavailable);
    assert!(
        e.message().contains("it is damaged") && e.message().contains("backup"),
        "{e}"
    );
}

/// A file this process may only read is refused at open, naming the file and the
/// fix: SQLite opened one read-only without a word, and the host reported ready
/// and refused every job (a probe). Opened here with `mode=ro` (a URI), as
/// permissions do not hold for root.
#[tokio::test]
async fn a_file_opened_read_only_is_refused() {
    let db = TempDb::new("schema-read-only");
    drop(db.open());
    let uri = format!("file:{}?mode=ro", db.path().display());
    let err = koan_sqlite::SqliteJobStore::open(&uri).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(
        err.message().contains(&format!("{uri} can only be read"))
            && err.message().contains("write access"),
        "{err}"
    );
}

/// A file of a newer schema is refused before anything is written to it: the
/// switch to WAL mode came first, and changed the refused file (a probe).
#[tokio::test]
async fn a_file_of_a_newer_schema_is_left_as_it_was() {
    let db = TempDb::new("schema-newer-untouched");
    {
        let conn = Connection::open(db.path()).expect("a file");
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE;
             CREATE TABLE later (x INTEGER);
             PRAGMA user_version = 3;",
        )
        .expect("a file of a later version");
    }
    let before = std::fs::read(db.path()).expect("the file");
    let err = koan_sqlite::SqliteJobStore::open(db.path()).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(err.message().contains("newer"), "{err}");
    let after = std::fs::read(db.path()).expect("the file");
    assert!(after == before, "the refused file changed");
    let conn = Connection::open(db.path()).expect("the file again");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("the journal mode");
    assert_eq!(mode, "delete");
}
