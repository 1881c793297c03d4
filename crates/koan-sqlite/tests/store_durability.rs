//! What survives: closing and reopening the file, and a full disk.

mod common;

use common::{TempDb, at, claim, job};
use koan::{
    error::ErrorKind, job::JobState, job::JobStep, job::JobStore, job::NewJob, job::RetryFrom,
};
use rusqlite::Connection;
use serde_json::json;

#[tokio::test]
async fn jobs_survive_a_reopen_and_a_lapsed_claim_runs_again() {
    let db = TempDb::new("reopen");
    let (waiting, running, token) = {
        let store = db.open();
        let waiting = store.push(job("a", "x")).await.expect("push").record;
        let later = NewJob {
            run_at: at(1),
            ..job("a", "y")
        };
        let running = store.push(later).await.expect("push").record.id;
        let held = store
            .claim(claim("a", 1, 0))
            .await
            .expect("claim")
            .remove(0);
        assert_eq!(held.claim.id, waiting.id);
        let held_running = store
            .claim(claim("a", 1, 1))
            .await
            .expect("claim")
            .remove(0);
        assert_eq!(held_running.claim.id, running);
        store.cancel(&waiting.id, at(2)).await.expect("cancel");
        store
            .retry(&waiting.id, RetryFrom::Any, at(3))
            .await
            .expect("retry");
        (waiting.id, running, held_running.claim)
    };

    let store = db.open();
    let r = store.get(&waiting).await.expect("get").expect("stored");
    assert_eq!(r.state, JobState::Queued);
    assert_eq!(r.attempts, 1);
    let r = store.get(&running).await.expect("get").expect("stored");
    assert_eq!(r.state, JobState::Running);
    assert_eq!(r.lease_until, Some(at(30_001)));
    let at_lease_end = store.claim(claim("a", 5, 30_001)).await.expect("claim");
    let ids: Vec<&str> = at_lease_end.iter().map(|c| c.claim.id.as_str()).collect();
    assert_eq!(ids, [waiting.as_str()], "the lease holds until its end");

    let again = store.claim(claim("a", 5, 30_002)).await.expect("claim");
    assert_eq!(again.len(), 1, "the lapsed claim");
    assert_eq!(again[0].claim.id, running);
    assert_eq!(again[0].record.attempts, 2);
    assert_eq!(again[0].record.history.len(), 2);
    let done = koan::job::Finish::Succeeded {
        result: json!(null),
        truncated: false,
    };
    assert!(
        !store
            .finish(&token, done, at(30_003))
            .await
            .expect("finish")
    );
}

#[tokio::test]
async fn dropping_the_store_finishes_the_queued_commands() {
    let db = TempDb::new("drop-drains");
    let mut ids = Vec::new();
    {
        let store = db.open();
        for _ in 0..50 {
            let new = job("a", "x");
            ids.push(new.id.clone());
            // Queued at the call; the answer is not awaited.
            drop(store.push(new));
        }
    }
    let store = db.open();
    for id in &ids {
        assert!(store.get(id).await.expect("get").is_some(), "job {id}");
    }
}

/// A job whose parameters take `bytes` bytes.
fn heavy(bytes: usize) -> NewJob {
    let mut new = job("a", "x");
    new.steps = vec![JobStep {
        action: "x".to_owned(),
        params: json!("x".repeat(bytes)),
        timeout_ms: None,
    }];
    new
}

#[tokio::test]
async fn a_full_disk_refuses_the_push_and_keeps_the_store_intact() {
    let db = TempDb::new("full-disk");
    let store = db.open();
    let mut kept = Vec::new();
    for _ in 0..5 {
        kept.push(store.push(heavy(2_000)).await.expect("push").record);
    }
    store.limit_pages_for_test(1).await.expect("a page cap");

    let mut refused = None;
    for _ in 0..100 {
        let new = heavy(20_000);
        let id = new.id.clone();
        match store.push(new).await {
            Ok(pushed) => kept.push(pushed.record),
            Err(err) => {
                refused = Some((id, err));
                break;
            }
        }
    }
    let (id, err) = refused.expect("a push refused once the file is full");
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    let prefix = format!("job store {} could not store job `{id}`", store.describe());
    assert!(err.to_string().starts_with(&prefix), "{err}");
    assert_eq!(
        store.get(&id).await.expect("get"),
        None,
        "nothing half-written"
    );

    // Other commands, and a burst of them in one batch, still work.
    let reads: Vec<_> = kept.iter().map(|r| store.get(&r.id)).collect();
    let failing = store.push(heavy(20_000));
    for (read, r) in reads.into_iter().zip(&kept) {
        assert_eq!(read.await.expect("get").as_ref(), Some(r));
    }
    assert_eq!(
        failing.await.expect_err("still full").kind(),
        ErrorKind::StoreUnavailable
    );
    let counts = store.counts(None).await.expect("counts");
    assert_eq!(counts.get(JobState::Queued), kept.len() as u64);

    let check = Connection::open(db.path()).expect("a second connection");
    let verdict: String = check
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("an integrity check");
    assert_eq!(verdict, "ok");

    store
        .limit_pages_for_test(1 << 30)
        .await
        .expect("the cap lifted");
    assert!(store.push(heavy(20_000)).await.expect("push").created);
}

/// The file, or its write-ahead log, deleted or replaced under a running store:
/// every command is refused from then on, saying why, where SQLite went on
/// writing to the unlinked file and each write was answered as stored, then lost
/// at the next start (found by a probe: 100 of 100 jobs accepted after an `rm`).
#[tokio::test]
async fn a_file_deleted_or_replaced_under_the_store_refuses_writes() {
    for (case, what) in [
        ("deleted", "the database file"),
        ("replaced", "the database file"),
        ("wal-deleted", "its write-ahead log"),
    ] {
        let db = TempDb::new(&format!("moved-{case}"));
        let store = db.open();
        store.push(job("a", "x")).await.expect("a push before");
        let mut wal = db.path().as_os_str().to_owned();
        wal.push("-wal");
        match case {
            "deleted" => std::fs::remove_file(db.path()).expect("rm"),
            "replaced" => {
                let other = db.path().with_extension("other");
                std::fs::write(&other, b"").expect("another file");
                std::fs::rename(&other, db.path()).expect("mv");
            }
            _ => std::fs::remove_file(&wal).expect("rm -wal"),
        }
        let e = store.push(job("a", "y")).await.expect_err(case);
        assert_eq!(e.kind(), ErrorKind::StoreUnavailable, "{case}: {e}");
        let done = if case == "replaced" {
            "replaced"
        } else {
            "deleted"
        };
        assert!(
            e.message().contains(what)
                && e.message().contains(&format!("was {done} while in use"))
                && e.message().contains("nothing was written"),
            "{case}: {e}"
        );
        assert!(store.counts(None).await.is_err(), "{case}: reads too");
    }
}

/// A store closed after listings leaves its jobs in the file itself: the last
/// connection to close checkpoints the write-ahead log and removes it (with the
/// read-only reader closed last, committed jobs stayed in `-wal` alone, and a copy
/// of the file lost them; a review).
#[tokio::test]
async fn a_closed_store_leaves_its_jobs_in_the_file_alone() {
    let db = TempDb::new("checkpoint");
    let id = {
        let store = db.open();
        let id = store.push(job("a", "x")).await.expect("push").record.id;
        let page = store
            .list(koan::job::JobQuery::default())
            .await
            .expect("list");
        assert_eq!(page.jobs.len(), 1);
        id
    };
    let mut wal = db.path().as_os_str().to_owned();
    wal.push("-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the write-ahead log is left behind"
    );
    // The file alone, copied elsewhere, has the job.
    let copy = TempDb::new("checkpoint-copy");
    std::fs::copy(db.path(), copy.path()).expect("copy the file alone");
    let found = copy.open().get(&id).await.expect("get");
    assert_eq!(found.map(|r| r.id), Some(id));
}

/// A write-ahead log that grew long while a read held a snapshot of it is cut
/// back once no read does: it grew to 764 MB and stayed so, across restarts (a
/// re-probe; there, the store's own reads back to back held the snapshot, which
/// the writer now truncates through the reader's gate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_write_ahead_log_is_truncated_once_reads_let_it() {
    let db = TempDb::new("long-log");
    let store = db.open();
    let mut wal = db.path().as_os_str().to_owned();
    wal.push("-wal");
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    // A read that holds its snapshot (another process's, say) while jobs come.
    let pin = Connection::open(db.path()).expect("a reader");
    pin.execute_batch("BEGIN").expect("begin");
    let _: i64 = pin
        .query_row("SELECT COUNT(*) FROM jobs", [], |row| row.get(0))
        .expect("a read");
    for _ in 0..600 {
        store.push(job("a", "x")).await.expect("push");
    }
    let grown = wal_size();
    assert!(
        grown > 16 * 1024 * 1024,
        "the log grew to {grown} bytes only"
    );
    pin.execute_batch("COMMIT").expect("end the read");
    drop(pin);
    // The next look (every 256 commands) truncates it.
    for _ in 0..300 {
        store.push(job("a", "x")).await.expect("push");
    }
    let now = wal_size();
    assert!(
        now <= 16 * 1024 * 1024,
        "the log is still {now} bytes (was {grown})"
    );
}
