//! Retention: final jobs forgotten by age and past the size budget, which counts
//! the final jobs alone, a bounded batch at a time.

mod common;

use std::task::Poll;

use common::{TempDb, at, claim, dead, job, keyed, ok, run_to};
use koan::job::{JobStore, NewJob};
use koan_sqlite::SqliteJobStore;
use serde_json::json;

#[tokio::test]
async fn purge_forgets_old_final_jobs_and_frees_their_keys() {
    let db = TempDb::new("retention-age");
    let store = db.open();
    store.push(keyed("a", "k")).await.expect("push");
    let old = run_to(&store, "a", ok(), 1_000).await;
    store.push(job("a", "x")).await.expect("push");
    let recent = run_to(&store, "a", dead(), 5_000).await;
    let waiting = store.push(job("a", "x")).await.expect("push").record.id;

    assert_eq!(store.purge(at(5_000), u64::MAX).await.expect("purge"), 1);
    assert_eq!(store.get(&old).await.expect("get"), None);
    assert!(
        store.get(&recent).await.expect("get").is_some(),
        "ended at the bound"
    );
    assert!(
        store.get(&waiting).await.expect("get").is_some(),
        "not final"
    );
    assert!(store.push(keyed("a", "k")).await.expect("push").created);
}

#[tokio::test]
async fn purge_forgets_the_oldest_final_jobs_beyond_the_size_cap() {
    let db = TempDb::new("retention-size");
    let store = db.open();
    let mut ended = Vec::new();
    for now in [3_000, 1_000, 2_000] {
        store.push(job("a", "x")).await.expect("push");
        ended.push(run_to(&store, "a", ok(), now).await);
    }
    let waiting = store.push(job("a", "x")).await.expect("push").record;
    let mut weights = Vec::new();
    for id in &ended {
        let r = store.get(id).await.expect("get").expect("stored");
        weights.push(r.weight() as u64);
    }
    // The budget counts the final jobs alone: room for all but the oldest (ended
    // at 1 000) and one byte less.
    let cap = weights.iter().sum::<u64>() - weights[1] - 1;
    assert_eq!(store.purge(at(0), cap).await.expect("purge"), 2);
    assert_eq!(store.get(&ended[1]).await.expect("get"), None, "oldest");
    assert_eq!(
        store.get(&ended[2]).await.expect("get"),
        None,
        "next oldest"
    );
    assert!(store.get(&ended[0]).await.expect("get").is_some());
    assert!(store.get(&waiting.id).await.expect("get").is_some());
    assert_eq!(store.purge(at(0), u64::MAX).await.expect("purge"), 0);
}

/// Live jobs count for nothing in the size budget: retention cannot forget them.
/// Counted, a backlog over the budget made every pass forget every final job, a
/// dead job 90 s after it died, its idempotency key free again (a probe).
#[tokio::test]
async fn the_size_budget_counts_final_jobs_only() {
    let db = TempDb::new("retention-live");
    let store = db.open();
    store.push(keyed("a", "k")).await.expect("push");
    let died = run_to(&store, "a", dead(), 1_000).await;
    let weight = store
        .get(&died)
        .await
        .expect("get")
        .expect("stored")
        .weight() as u64;
    let mut backlog = 0;
    for _ in 0..8 {
        let later = NewJob {
            run_at: at(86_400_000),
            ..job("a", "x")
        };
        let later = NewJob {
            steps: vec![koan::job::JobStep {
                params: json!({ "text": "x".repeat(4_096) }),
                ..later.steps[0].clone()
            }],
            ..later
        };
        backlog += store.push(later).await.expect("push").record.weight() as u64;
    }
    assert!(
        backlog > 4 * weight,
        "the live jobs alone are over the budget"
    );

    assert_eq!(store.purge(at(0), weight).await.expect("purge"), 0);
    assert!(
        store.get(&died).await.expect("get").is_some(),
        "still there"
    );
    assert!(
        !store.push(keyed("a", "k")).await.expect("push").created,
        "its key still holds"
    );
    assert_eq!(store.purge(at(0), weight - 1).await.expect("purge"), 1);
    assert_eq!(
        store.get(&died).await.expect("get"),
        None,
        "past the budget"
    );
}

/// A pass over many final jobs forgets them a batch at a time, each a transaction
/// of its own, and a write queued meanwhile is served between two batches: one
/// transaction for the whole pass held every enqueue 1 to 7 s, and another host
/// sharing the file got "database is locked" (a probe).
#[tokio::test]
async fn a_purge_forgets_a_batch_at_a_time_and_writes_go_between() {
    let store = SqliteJobStore::in_memory().expect("a store");
    let jobs = 2_500;
    for n in 0..jobs {
        // The keyed job is the newest: the last batch forgets it.
        let new = if n + 1 == jobs {
            keyed("a", "k")
        } else {
            job("a", "x")
        };
        store.push(new).await.expect("push");
    }
    let held = store.claim(claim("a", jobs, 0)).await.expect("claim");
    assert_eq!(held.len(), jobs);
    for h in &held {
        assert!(store.finish(&h.claim, ok(), at(0)).await.expect("finish"));
    }

    let mut purge = store.purge(at(1), u64::MAX);
    // Its first batch is queued, then an enqueue; the next batch is queued only
    // once the first one answered.
    std::future::poll_fn(|cx| {
        assert!(
            purge.as_mut().poll(cx).is_pending(),
            "the pass waits for its first batch"
        );
        Poll::Ready(())
    })
    .await;
    let again = common::within("the push", store.push(keyed("a", "k")))
        .await
        .expect("push");
    assert!(
        !again.created,
        "served before the last batch forgot the job holding the key"
    );
    let gone = common::within("the purge", purge).await.expect("purge");
    assert_eq!(gone, jobs as u64);
    assert!(
        store.push(keyed("a", "k")).await.expect("push").created,
        "forgotten at last"
    );
}
