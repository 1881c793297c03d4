//! Many callers at once: every push stored once, every key once.

mod common;

use std::sync::Arc;

use common::{TempDb, job, keyed};
use koan::{job::JobQuery, job::JobState, job::JobStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_are_all_stored_once() {
    const TASKS: usize = 32;
    const EACH: usize = 100;
    const KEYS: usize = 10;
    let db = TempDb::new("concurrent");
    let store = Arc::new(db.open());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut created = Vec::new();
            let mut shared = 0;
            for i in 0..EACH {
                let pushed = store.push(job("a", "x")).await.expect("push");
                assert!(pushed.created);
                created.push(pushed.record.id);
                if i % (EACH / KEYS) == 0 {
                    let key = format!("shared-{}", (i + t) % KEYS);
                    shared +=
                        usize::from(store.push(keyed("a", &key)).await.expect("push").created);
                }
            }
            (created, shared)
        }));
    }
    let mut ids = Vec::new();
    let mut shared = 0;
    for task in tasks {
        let (created, n) = task.await.expect("the task ends");
        ids.extend(created);
        shared += n;
    }
    assert_eq!(shared, KEYS, "each key created once");
    let counts = store.counts(None).await.expect("counts");
    assert_eq!(counts.get(JobState::Queued), (TASKS * EACH + KEYS) as u64);

    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let query = JobQuery {
            limit: Some(500),
            cursor: cursor.take(),
            ..JobQuery::default()
        };
        let page = store.list(query).await.expect("list");
        listed.extend(page.jobs.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), TASKS * EACH);
    listed.sort();
    assert_eq!(listed.len(), TASKS * EACH + KEYS);
    assert!(ids.iter().all(|id| listed.binary_search(id).is_ok()));
}

/// Listings run on a thread of their own: a long one holds no claim, finish or
/// enqueue behind it (a correlation id's scan stalled one enqueue in forty by a
/// second; a probe), and still sees every write answered before it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_under_way_holds_no_write() {
    let db = TempDb::new("reader");
    let store = Arc::new(db.open());
    let held = store.hold_reads_for_test();
    let listing = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.list(JobQuery::default()).await }
    });
    // Bounded only so that a regression fails rather than hangs.
    let bound = std::time::Duration::from_secs(60);
    let pushed = tokio::time::timeout(bound, store.push(job("a", "x")))
        .await
        .expect("a push while reads are held")
        .expect("push");
    let now = chrono::Utc::now().timestamp_millis() + 1_000;
    let claimed = tokio::time::timeout(bound, store.claim(common::claim("a", 1, now)))
        .await
        .expect("a claim too")
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(!listing.is_finished(), "the listing waits for the reader");
    drop(held);
    let page = listing.await.expect("the task ends").expect("list");
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.jobs[0].id, pushed.record.id);
    assert_eq!(page.jobs[0].state, JobState::Running);
}
