//! Opening the file: hosts started together on a new file all start.

mod common;

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
