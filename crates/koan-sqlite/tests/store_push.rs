//! Pushing and reading jobs back: states, idempotency, names.

mod common;

use common::{TempDb, at, job, keyed};
use koan::{job::JobState, job::JobStore};
use koan_sqlite::SqliteJobStore;

#[tokio::test]
async fn a_pushed_job_reads_back_whole() {
    let db = TempDb::new("push-get");
    let store = db.open();
    let pushed = store.push(job("mail", "send")).await.expect("push");
    assert!(pushed.created);
    assert_eq!(pushed.record.state, JobState::Queued);
    assert_eq!(pushed.record.attempts, 0);
    let got = store.get(&pushed.record.id).await.expect("get");
    assert_eq!(got, Some(pushed.record));
    assert_eq!(store.get("no-such-id").await.expect("get"), None);
}

#[tokio::test]
async fn a_delayed_job_is_scheduled() {
    let db = TempDb::new("push-delayed");
    let store = db.open();
    let delayed = koan::job::NewJob {
        run_at: at(60_000),
        ..job("mail", "send")
    };
    let pushed = store.push(delayed).await.expect("push");
    assert_eq!(pushed.record.state, JobState::Scheduled);
    assert_eq!(pushed.record.run_at, at(60_000));
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_job() {
    let db = TempDb::new("push-idempotent");
    let store = db.open();
    let first = store.push(keyed("mail", "order-7")).await.expect("push");
    let second = store.push(keyed("mail", "order-7")).await.expect("push");
    assert!(first.created);
    assert!(!second.created, "nothing new runs");
    assert_eq!(second.record, first.record);
    let other = store.push(keyed("mail", "order-8")).await.expect("push");
    assert!(other.created);
    let counts = store.counts(None).await.expect("counts");
    assert_eq!(counts.get(JobState::Queued), 2);
}

#[tokio::test]
async fn a_push_repeated_with_the_same_id_stores_it_once() {
    let db = TempDb::new("push-same-id");
    let store = db.open();
    let new = job("mail", "send");
    let first = store.push(new.clone()).await.expect("push");
    let again = store.push(new).await.expect("push");
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(again.record, first.record);
}

#[tokio::test]
async fn the_store_names_its_file_and_says_it_is_durable() {
    let db = TempDb::new("describe");
    let store = db.open();
    assert_eq!(store.describe(), format!("sqlite:{}", db.path().display()));
    assert!(store.is_durable());
    let memory = SqliteJobStore::in_memory().expect("in memory");
    assert!(!memory.is_durable());
    assert_eq!(memory.describe(), "sqlite::memory:");
}

#[tokio::test]
async fn a_store_in_memory_keeps_jobs_while_it_lives() {
    let store = SqliteJobStore::in_memory().expect("in memory");
    let pushed = store.push(job("mail", "send")).await.expect("push");
    let got = store.get(&pushed.record.id).await.expect("get");
    assert_eq!(got, Some(pushed.record));
}

/// Named, and what would do: SQLite said only "unable to open database file" (a
/// probe).
#[tokio::test]
async fn opening_a_file_in_a_missing_directory_is_store_unavailable() {
    let db = TempDb::new("missing-dir");
    let dir = db.path().join("nested");
    let path = dir.join("jobs.db");
    let err = SqliteJobStore::open(&path).expect_err("no such directory");
    assert_eq!(err.kind(), koan::error::ErrorKind::StoreUnavailable);
    let expected = format!(
        "job store sqlite:{} could not create the file: its directory {} does not exist; \
         create it, or give a path in a directory that exists and this process can write",
        path.display(),
        dir.display()
    );
    assert_eq!(err.to_string(), expected);
    assert!(!dir.exists(), "nothing was created");
}
