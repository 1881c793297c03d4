//! Opening the file: hosts started together on a new file all start; a path
//! whose file cannot be made is refused, saying why and what would do.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use common::{TempDb, job};
use koan::{error::ErrorKind, job::JobStore};
use koan_sqlite::SqliteJobStore;

/// Opens of one new file at the same moment all succeed: the switch to WAL mode
/// answered "database is locked" at once, without the busy timeout, to one that
/// met another's lock, and a host started beside another failed (a probe; 19 of
/// 800 opens here, before the fix).
#[test]
fn stores_opened_together_on_a_new_file_all_open() {
    const ROUNDS: usize = 80;
    const OPENS: usize = 8;
    let mut failed = Vec::new();
    for round in 0..ROUNDS {
        let db = TempDb::new("together");
        let start = Arc::new(Barrier::new(OPENS));
        let opens: Vec<_> = (0..OPENS)
            .map(|_| {
                let path = db.path().to_owned();
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    SqliteJobStore::open(&path)
                })
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            match open.join().expect("the open's thread ends") {
                Ok(store) => stores.push(store),
                Err(e) => failed.push(format!("round {round}: {e}")),
            }
        }
        if round == 0 && failed.is_empty() {
            // Each works on the one file: a job one stored, another sees.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let pushed = stores[0].push(job("a", "x")).await.expect("push");
                let seen = stores[OPENS - 1].get(&pushed.record.id).await.expect("get");
                assert!(seen.is_some(), "another store sees the job");
            });
        }
    }
    assert!(
        failed.is_empty(),
        "{} opens failed: {failed:#?}",
        failed.len()
    );
}

/// A write lock held past the busy timeout by another connection is named, with
/// what to do; the store did not wait for it at all.
#[test]
fn a_lock_held_past_the_busy_timeout_is_named() {
    let db = TempDb::new("held");
    let other = rusqlite::Connection::open(db.path()).expect("another connection");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("its write lock");
    let e = SqliteJobStore::open(db.path()).expect_err("the lock is held for good");
    assert_eq!(e.kind(), ErrorKind::StoreUnavailable);
    assert!(
        e.message().contains("another connection")
            && e.message().contains("held its write lock for over 5 s"),
        "{}",
        e.message()
    );
    other.execute_batch("ROLLBACK").expect("released");
}

/// The message of the refusal to open `path`.
fn refusal(path: &Path) -> String {
    let e = SqliteJobStore::open(path).expect_err("the path is refused");
    assert_eq!(e.kind(), ErrorKind::StoreUnavailable);
    e.message().to_owned()
}

/// A unique path in the temp directory for the test `name`.
fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "koan-sqlite-{name}-{}-{}",
        std::process::id(),
        koan::job::new_job_id()
    ))
}

/// A path under a regular file: no user can create it, root included (the tests
/// may run as root, whom a directory's permissions do not stop).
#[test]
fn a_file_under_a_regular_file_is_refused_naming_it() {
    let file = temp("not-a-dir");
    std::fs::write(&file, b"not a directory").expect("a regular file");
    let message = refusal(&file.join("jobs.db"));
    let expected = format!(
        "could not create the file: {} is not a directory; give a path in a directory \
         this process can write",
        file.display()
    );
    std::fs::remove_file(&file).expect("removed");
    assert!(message.contains(&expected), "{message}");
}

/// A directory no one may create files in: sysfs refuses every user, root
/// included, where a directory's permissions would not stop root.
#[cfg(target_os = "linux")]
#[test]
fn a_file_in_a_directory_that_cannot_be_written_is_refused_naming_it() {
    let dir = Path::new("/sys");
    if !dir.is_dir() {
        return;
    }
    let message = refusal(&dir.join("koan-jobs.db"));
    assert!(
        message.contains("could not create the file: cannot create it in /sys (")
            && message.contains("give a path in a directory this process can write"),
        "{message}"
    );
}
