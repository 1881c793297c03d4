//! What operators do: retry, cancel, delete, list, count; and `next_due`.

mod common;

use common::{TempDb, at, claim, dead, job, keyed, ok, run_to};
use koan::job::RetryFrom;
use koan::{error::ErrorKind, job::JobQuery, job::JobState, job::JobStore, job::NewJob};
use serde_json::json;

#[tokio::test]
async fn retry_by_hand_requeues_a_final_job_and_refuses_a_live_one() {
    let db = TempDb::new("admin-retry");
    let store = db.open();
    let queued = store.push(job("a", "x")).await.expect("push").record.id;
    let err = store
        .retry(&queued, RetryFrom::Any, at(0))
        .await
        .expect_err("queued");
    assert_eq!(err.kind(), ErrorKind::JobState);
    assert_eq!(
        err.to_string(),
        format!(
            "job `{queued}` is queued: cannot retry it (only a job that is dead, cancelled, retrying or succeeded)"
        )
    );
    let held = store
        .claim(claim("a", 1, 0))
        .await
        .expect("claim")
        .remove(0);
    let err = store
        .retry(&queued, RetryFrom::Any, at(0))
        .await
        .expect_err("running");
    assert_eq!(err.kind(), ErrorKind::JobState);

    let NewJob { max_attempts, .. } = job("a", "x");
    assert!(
        store
            .finish(&held.claim, dead(), at(10))
            .await
            .expect("finish")
    );
    let r = store
        .retry(&queued, RetryFrom::Any, at(20))
        .await
        .expect("retry");
    assert_eq!(r.state, JobState::Queued);
    assert_eq!(r.run_at, at(20));
    assert_eq!(r.finished_at, None);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.max_attempts, max_attempts);
    assert_eq!(store.get(&queued).await.expect("get"), Some(r));

    // `retry_all_dead`'s retry takes a dead job only: this one, run again and
    // succeeded meanwhile, is not run a third time.
    let again = store
        .claim(claim("a", 1, 30))
        .await
        .expect("claim")
        .remove(0);
    let ok = koan::job::Finish::Succeeded {
        result: json!(1),
        truncated: false,
    };
    assert!(
        store
            .finish(&again.claim, ok, at(40))
            .await
            .expect("finish")
    );
    let err = store
        .retry(&queued, RetryFrom::Dead, at(50))
        .await
        .expect_err("succeeded");
    assert_eq!(
        err.to_string(),
        format!("job `{queued}` is succeeded: cannot retry it (only a job that is dead)")
    );
    let r = store.get(&queued).await.expect("get").expect("kept");
    assert_eq!(r.state, JobState::Succeeded);

    let err = store
        .retry("no-such-id", RetryFrom::Any, at(0))
        .await
        .expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::UnknownJob);
}

/// `retry_each` (a page of `retry_all_dead`, in one transaction) runs the dead
/// jobs again and passes over one gone or no longer dead.
#[tokio::test]
async fn retry_each_requeues_the_dead_and_passes_over_the_others() {
    let db = TempDb::new("admin-retry-each");
    let store = db.open();
    let mut dead_ids = Vec::new();
    for n in 0..3 {
        store.push(job("a", "x")).await.expect("push");
        dead_ids.push(run_to(&store, "a", dead(), n).await);
    }
    store.push(job("a", "x")).await.expect("push");
    let done = run_to(&store, "a", ok(), 10).await;
    let mut ids = dead_ids.clone();
    ids.extend([done.clone(), "no-such-id".to_owned()]);
    let n = store
        .retry_each(ids.clone(), RetryFrom::Dead, at(20))
        .await
        .expect("retry_each");
    assert_eq!(n, 3);
    for id in &dead_ids {
        let r = store.get(id).await.expect("get").expect("kept");
        assert_eq!((r.state, r.run_at), (JobState::Queued, at(20)), "{id}");
    }
    let r = store.get(&done).await.expect("get").expect("kept");
    assert_eq!(r.state, JobState::Succeeded, "not run again");
    // Queued now: none of them is dead, none is retried twice.
    let again = store
        .retry_each(ids, RetryFrom::Dead, at(30))
        .await
        .expect("retry_each");
    assert_eq!(again, 0);
}

#[tokio::test]
async fn cancel_stops_a_live_job_and_refuses_a_final_one() {
    let db = TempDb::new("admin-cancel");
    let store = db.open();
    let id = store.push(job("a", "x")).await.expect("push").record.id;
    let r = store.cancel(&id, at(5)).await.expect("cancel");
    assert_eq!(r.state, JobState::Cancelled);
    assert_eq!(r.finished_at, Some(at(5)));
    let err = store.cancel(&id, at(6)).await.expect_err("final");
    assert_eq!(err.kind(), ErrorKind::JobState);
    let err = store
        .cancel("no-such-id", at(6))
        .await
        .expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::UnknownJob);
    assert!(
        store
            .claim(claim("a", 1, 10))
            .await
            .expect("claim")
            .is_empty()
    );
}

#[tokio::test]
async fn delete_forgets_a_final_job_only_and_frees_its_key() {
    let db = TempDb::new("admin-delete");
    let store = db.open();
    let id = store.push(keyed("a", "k")).await.expect("push").record.id;
    let err = store.delete(&id).await.expect_err("queued");
    assert_eq!(err.kind(), ErrorKind::JobState);
    assert!(err.message().contains("cancel it first"), "{err}");
    store.claim(claim("a", 1, 0)).await.expect("claim");
    let err = store.delete(&id).await.expect_err("running");
    assert_eq!(err.kind(), ErrorKind::JobState);
    store.cancel(&id, at(1)).await.expect("cancel");
    assert!(store.delete(&id).await.expect("delete"));
    assert!(!store.delete(&id).await.expect("delete"), "gone already");
    assert_eq!(store.get(&id).await.expect("get"), None);
    assert!(store.push(keyed("a", "k")).await.expect("push").created);
}

#[tokio::test]
async fn list_pages_newest_first_with_filters() {
    let db = TempDb::new("admin-list");
    let store = db.open();
    let mut ids = Vec::new();
    for i in 0..7 {
        let (service, action) = if i % 2 == 0 { ("a", "x") } else { ("b", "y") };
        ids.push(
            store
                .push(job(service, action))
                .await
                .expect("push")
                .record
                .id,
        );
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let query = JobQuery {
            limit: Some(3),
            cursor: cursor.take(),
            ..JobQuery::default()
        };
        let page = store.list(query).await.expect("list");
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every job once, newest first");

    let only_b = JobQuery {
        service: Some("b".to_owned()),
        ..JobQuery::default()
    };
    let page = store.list(only_b).await.expect("list");
    assert_eq!(page.jobs.len(), 3);
    assert!(page.jobs.iter().all(|r| r.service == "b"));
    assert_eq!(page.next_cursor, None);

    run_to(&store, "a", ok(), 0).await;
    let succeeded_x = JobQuery {
        state: Some(JobState::Succeeded),
        action: Some("x".to_owned()),
        ..JobQuery::default()
    };
    assert_eq!(store.list(succeeded_x).await.expect("list").jobs.len(), 1);
}

#[tokio::test]
async fn list_finds_the_jobs_of_a_correlation_id() {
    let db = TempDb::new("admin-correlation");
    let store = db.open();
    let mut wanted = job("a", "x");
    wanted.correlation_id = "order-7".to_owned();
    let id = store.push(wanted).await.expect("push").record.id;
    store.push(job("a", "x")).await.expect("push");
    let query = JobQuery {
        correlation_id: Some("order-7".to_owned()),
        ..JobQuery::default()
    };
    let page = store.list(query).await.expect("list");
    let ids: Vec<String> = page.jobs.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, [id]);
}

#[tokio::test]
async fn counts_are_by_state_for_all_services_or_one() {
    let db = TempDb::new("admin-counts");
    let store = db.open();
    for service in ["a", "a", "a", "b"] {
        store.push(job(service, "x")).await.expect("push");
    }
    run_to(&store, "a", ok(), 0).await;
    store.claim(claim("a", 1, 0)).await.expect("claim");
    let all = store.counts(None).await.expect("counts");
    assert_eq!(all.by_state.len(), JobState::ALL.len());
    assert_eq!(all.get(JobState::Queued), 2);
    assert_eq!(all.get(JobState::Running), 1);
    assert_eq!(all.get(JobState::Succeeded), 1);
    assert_eq!(all.get(JobState::Dead), 0);
    let a = store.counts(Some("a")).await.expect("counts");
    assert_eq!(a.get(JobState::Queued), 1);
    assert_eq!(a.get(JobState::Running), 1);
}

#[tokio::test]
async fn next_due_is_the_earliest_run_or_lease_end_of_live_jobs() {
    let db = TempDb::new("admin-next-due");
    let store = db.open();
    let services = ["a".to_owned()];
    assert_eq!(store.next_due(&services).await.expect("due"), None);
    assert_eq!(store.next_due(&[]).await.expect("due"), None);
    let later = NewJob {
        run_at: at(9_000),
        ..job("a", "x")
    };
    store.push(later).await.expect("push");
    let elsewhere = NewJob {
        run_at: at(10),
        ..job("b", "x")
    };
    store.push(elsewhere).await.expect("push");
    assert_eq!(
        store.next_due(&services).await.expect("due"),
        Some(at(9_000))
    );
    store.push(job("a", "x")).await.expect("push");
    assert_eq!(store.next_due(&services).await.expect("due"), Some(at(0)));
    store.claim(claim("a", 1, 100)).await.expect("claim");
    assert_eq!(
        store.next_due(&services).await.expect("due"),
        Some(at(9_000))
    );
    store.push(job("a", "x")).await.expect("push");
    run_to(&store, "a", ok(), 200).await;
    assert_eq!(
        store.next_due(&services).await.expect("due"),
        Some(at(9_000))
    );
    let short = koan::job::ClaimRequest {
        lease_until: at(4_000),
        ..claim("a", 1, 9_000)
    };
    store.claim(short).await.expect("claim");
    assert_eq!(
        store.next_due(&services).await.expect("due"),
        Some(at(4_000))
    );
}

/// `live_services`: each service with a live job and its first due time (a waiting
/// job's `run_at`, a running one's lease end), found without reading finished jobs;
/// a service whose jobs are all final is not among them.
#[tokio::test]
async fn live_services_are_those_with_live_jobs_and_their_first_due_time() {
    let db = TempDb::new("admin-live");
    let store = db.open();
    let live = |v: Option<koan::job::LiveServices>| {
        let mut v = v.expect("the SQLite store answers");
        v.sort();
        v
    };
    assert!(live(store.live_services().await.expect("live")).is_empty());
    store.push(job("a", "x")).await.expect("push");
    let later = NewJob {
        run_at: at(9_000),
        ..job("b", "x")
    };
    store.push(later).await.expect("push");
    store.push(job("c", "x")).await.expect("push");
    run_to(&store, "c", ok(), 50).await;
    assert_eq!(
        live(store.live_services().await.expect("live")),
        [("a".to_owned(), at(0)), ("b".to_owned(), at(9_000))],
        "c's only job is final"
    );
    // Claimed: a's job is running, due again when its lease ends.
    store.claim(claim("a", 1, 100)).await.expect("claim");
    assert_eq!(
        live(store.live_services().await.expect("live")),
        [("a".to_owned(), at(30_100)), ("b".to_owned(), at(9_000))]
    );
}
