//! Claims: order, limits, leases, heartbeats, fencing and outcomes.

mod common;

use common::{TempDb, at, claim, job};
use koan::{action::ErrorBody, job::Finish, job::JobState, job::JobStore, job::NewJob};
use serde_json::json;

fn with(priority: i32, run_at: i64, new: NewJob) -> NewJob {
    NewJob {
        priority,
        run_at: at(run_at),
        created_at: at(0),
        ..new
    }
}

fn boom() -> ErrorBody {
    ErrorBody {
        error: "handler_error".to_owned(),
        message: "boom".to_owned(),
    }
}

#[tokio::test]
async fn claims_take_due_jobs_by_priority_then_age_within_the_limit() {
    let db = TempDb::new("claim-order");
    let store = db.open();
    let mut ids = Vec::new();
    for (priority, run_at) in [(0, 0), (5, 0), (1, 0), (1, -10), (9, 1_000)] {
        let pushed = store
            .push(with(priority, run_at, job("mail", "send")))
            .await;
        ids.push(pushed.expect("push").record.id);
    }
    store.push(job("other", "send")).await.expect("push");

    let first = store.claim(claim("mail", 3, 0)).await.expect("claim");
    let got: Vec<&str> = first.iter().map(|c| c.claim.id.as_str()).collect();
    assert_eq!(
        got,
        [&ids[1], &ids[3], &ids[2]],
        "priority 5, then the older 1"
    );

    let rest = store.claim(claim("mail", 10, 0)).await.expect("claim");
    let got: Vec<&str> = rest.iter().map(|c| c.claim.id.as_str()).collect();
    assert_eq!(got, [&ids[0]], "the scheduled one is not due yet");

    let later = store.claim(claim("mail", 10, 1_000)).await.expect("claim");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].claim.id, ids[4]);
    assert!(
        store
            .claim(claim("mail", 0, 5_000))
            .await
            .expect("claim")
            .is_empty()
    );
}

#[tokio::test]
async fn a_claim_raises_the_attempt_and_records_it() {
    let db = TempDb::new("claim-record");
    let store = db.open();
    store.push(job("mail", "send")).await.expect("push");
    let claimed = store.claim(claim("mail", 1, 500)).await.expect("claim");
    let r = &claimed[0].record;
    assert_eq!(r.state, JobState::Running);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.instance.as_deref(), Some("host-a"));
    assert_eq!(r.lease_until, Some(at(30_500)));
    assert_eq!(r.history.len(), 1);
    assert_eq!(r.history[0].attempt, 1);
    assert_eq!(r.history[0].started_at, at(500));
    let stored = store.get(&r.id).await.expect("get");
    assert_eq!(stored.as_ref(), Some(r));
}

#[tokio::test]
async fn a_lapsed_lease_is_claimed_again_and_the_stale_holder_is_fenced() {
    let db = TempDb::new("claim-lapse");
    let store = db.open();
    store.push(job("mail", "send")).await.expect("push");
    let first = store
        .claim(claim("mail", 1, 0))
        .await
        .expect("claim")
        .remove(0);
    let at_lease_end = store.claim(claim("mail", 1, 30_000)).await.expect("claim");
    assert!(at_lease_end.is_empty(), "the lease holds until its end");

    let second = store
        .claim(claim("mail", 1, 30_001))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(second.claim.id, first.claim.id);
    assert_ne!(second.claim.token, first.claim.token);
    assert_eq!(second.record.attempts, 2);
    assert_eq!(second.record.history.len(), 2);

    let done = Finish::Succeeded {
        result: json!("ok"),
        truncated: false,
    };
    let stale = store.finish(&first.claim, done.clone(), at(31_000)).await;
    assert!(!stale.expect("finish"), "a stale claim records nothing");
    assert!(
        !store
            .heartbeat(&first.claim, at(90_000))
            .await
            .expect("heartbeat")
    );
    assert!(
        store
            .finish(&second.claim, done, at(31_000))
            .await
            .expect("finish")
    );
    let r = store
        .get(&first.claim.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(r.state, JobState::Succeeded);
    assert_eq!(r.result, Some(json!("ok")));
    assert_eq!(r.finished_at, Some(at(31_000)));
    assert_eq!(r.history[1].finished_at, Some(at(31_000)));
}

#[tokio::test]
async fn a_heartbeat_extends_the_lease_of_the_current_claim_only() {
    let db = TempDb::new("claim-heartbeat");
    let store = db.open();
    store.push(job("mail", "send")).await.expect("push");
    let held = store
        .claim(claim("mail", 1, 0))
        .await
        .expect("claim")
        .remove(0);
    assert!(
        store
            .heartbeat(&held.claim, at(60_000))
            .await
            .expect("heartbeat")
    );
    let r = store
        .get(&held.claim.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(r.lease_until, Some(at(60_000)));
    assert!(
        store
            .claim(claim("mail", 1, 45_000))
            .await
            .expect("claim")
            .is_empty()
    );

    let mut forged = held.claim.clone();
    forged.token = koan::job::new_job_id();
    assert!(
        !store
            .heartbeat(&forged, at(90_000))
            .await
            .expect("heartbeat")
    );
    let mut unknown = held.claim.clone();
    unknown.id = "no-such-id".to_owned();
    assert!(
        !store
            .heartbeat(&unknown, at(90_000))
            .await
            .expect("heartbeat")
    );
}

#[tokio::test]
async fn a_retry_outcome_waits_for_its_time_then_runs_as_the_next_attempt() {
    let db = TempDb::new("claim-retry");
    let store = db.open();
    store.push(job("mail", "send")).await.expect("push");
    let held = store
        .claim(claim("mail", 1, 0))
        .await
        .expect("claim")
        .remove(0);
    let how = Finish::Retry {
        error: boom(),
        at: at(5_000),
    };
    assert!(
        store
            .finish(&held.claim, how, at(100))
            .await
            .expect("finish")
    );
    let r = store
        .get(&held.claim.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(r.state, JobState::Retrying);
    assert_eq!(r.error, Some(boom()));
    assert_eq!(r.history[0].error, Some(boom()));
    assert_eq!(
        store.next_due(&["mail".to_owned()]).await.expect("due"),
        Some(at(5_000))
    );
    assert!(
        store
            .claim(claim("mail", 1, 4_999))
            .await
            .expect("claim")
            .is_empty()
    );
    let again = store
        .claim(claim("mail", 1, 5_000))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(again.record.attempts, 2);
    let dead = Finish::Dead { error: boom() };
    assert!(
        store
            .finish(&again.claim, dead, at(6_000))
            .await
            .expect("finish")
    );
    let r = store
        .get(&held.claim.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(r.state, JobState::Dead);
    assert_eq!(r.finished_at, Some(at(6_000)));
}

#[tokio::test]
async fn a_release_puts_the_job_back_without_counting_the_attempt() {
    let db = TempDb::new("claim-release");
    let store = db.open();
    store.push(job("mail", "send")).await.expect("push");
    let held = store
        .claim(claim("mail", 1, 0))
        .await
        .expect("claim")
        .remove(0);
    let how = Finish::Release { at: at(200) };
    assert!(
        store
            .finish(&held.claim, how, at(100))
            .await
            .expect("finish")
    );
    let r = store
        .get(&held.claim.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(r.state, JobState::Queued);
    assert_eq!(r.attempts, 0);
    assert!(r.history.is_empty());
    let again = store
        .claim(claim("mail", 1, 200))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(again.record.attempts, 1);
}

#[tokio::test]
async fn a_cancelled_running_job_loses_its_claim() {
    let db = TempDb::new("claim-cancel");
    let store = db.open();
    store.push(job("mail", "send")).await.expect("push");
    let held = store
        .claim(claim("mail", 1, 0))
        .await
        .expect("claim")
        .remove(0);
    let r = store.cancel(&held.claim.id, at(50)).await.expect("cancel");
    assert_eq!(r.state, JobState::Cancelled);
    assert_eq!(r.history[0].finished_at, Some(at(50)));
    assert!(
        !store
            .heartbeat(&held.claim, at(90_000))
            .await
            .expect("heartbeat")
    );
    let done = Finish::Succeeded {
        result: json!(1),
        truncated: false,
    };
    assert!(
        !store
            .finish(&held.claim, done, at(60))
            .await
            .expect("finish")
    );
    assert!(
        store
            .claim(claim("mail", 1, 90_000))
            .await
            .expect("claim")
            .is_empty()
    );
}

#[tokio::test]
async fn a_claim_orders_lapsed_and_waiting_jobs_together_within_the_limit() {
    let db = TempDb::new("claim-merge");
    let store = db.open();
    let lapsing = store
        .push(with(3, 0, job("mail", "send")))
        .await
        .expect("push")
        .record
        .id;
    let held = store.claim(claim("mail", 1, 0)).await.expect("claim");
    assert_eq!(held[0].claim.id, lapsing);
    let mut waiting = Vec::new();
    for priority in [1, 5, 3] {
        let pushed = store.push(with(priority, 10, job("mail", "send"))).await;
        waiting.push(pushed.expect("push").record.id);
    }

    let due = store.claim(claim("mail", 3, 30_001)).await.expect("claim");
    let got: Vec<&str> = due.iter().map(|c| c.claim.id.as_str()).collect();
    assert_eq!(
        got,
        [&waiting[1], &lapsing, &waiting[2]],
        "priority 5, then the older of the two at 3 (the lapsed one), within the limit"
    );
    let rest = store.claim(claim("mail", 3, 30_001)).await.expect("claim");
    let got: Vec<&str> = rest.iter().map(|c| c.claim.id.as_str()).collect();
    assert_eq!(got, [&waiting[0]]);
}
