//! Claims: order, limits, leases, heartbeats, fencing and outcomes.

mod common;

use common::{TempDb, at, claim, job};
use koan::action::ErrorBody;
use koan::job::{Claim, Claimed, Finish, JobRecord, JobState, JobStore, NewJob};
use koan_sqlite::SqliteJobStore;
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

/// Claims up to `limit` of `mail`'s jobs at `at(now)`.
async fn claim_mail(store: &SqliteJobStore, limit: usize, now: i64) -> Vec<Claimed> {
    store.claim(claim("mail", limit, now)).await.expect("claim")
}

/// The ids of `claimed`, in the order claimed.
fn ids(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.claim.id.as_str()).collect()
}

/// One `mail` job pushed, then claimed at `at(0)`.
async fn push_and_hold(store: &SqliteJobStore) -> Claimed {
    store.push(job("mail", "send")).await.expect("push");
    claim_mail(store, 1, 0).await.remove(0)
}

/// The stored record of job `id`, which must exist.
async fn stored(store: &SqliteJobStore, id: &str) -> JobRecord {
    store.get(id).await.expect("get").expect("stored")
}

/// Whether the store recorded `how` for `claim` at `at(now)`.
async fn finish(store: &SqliteJobStore, claim: &Claim, how: Finish, now: i64) -> bool {
    store.finish(claim, how, at(now)).await.expect("finish")
}

/// Whether the store extended `claim`'s lease to `at(until)`.
async fn heartbeat(store: &SqliteJobStore, claim: &Claim, until: i64) -> bool {
    store.heartbeat(claim, at(until)).await.expect("heartbeat")
}

fn succeeded(result: serde_json::Value) -> Finish {
    Finish::Succeeded {
        result,
        truncated: false,
    }
}

#[tokio::test]
async fn claims_take_due_jobs_by_priority_then_age_within_the_limit() {
    let db = TempDb::new("claim-order");
    let store = db.open();
    let mut ids_pushed = Vec::new();
    for (priority, run_at) in [(0, 0), (5, 0), (1, 0), (1, -10), (9, 1_000)] {
        let pushed = store
            .push(with(priority, run_at, job("mail", "send")))
            .await;
        ids_pushed.push(pushed.expect("push").record.id);
    }
    store.push(job("other", "send")).await.expect("push");

    let first = claim_mail(&store, 3, 0).await;
    assert_eq!(
        ids(&first),
        [&ids_pushed[1], &ids_pushed[3], &ids_pushed[2]],
        "priority 5, then the older 1"
    );

    let rest = claim_mail(&store, 10, 0).await;
    assert_eq!(
        ids(&rest),
        [&ids_pushed[0]],
        "the scheduled one is not due yet"
    );

    let later = claim_mail(&store, 10, 1_000).await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].claim.id, ids_pushed[4]);
    assert!(claim_mail(&store, 0, 5_000).await.is_empty());
}

#[tokio::test]
async fn a_claim_raises_the_attempt_and_records_it() {
    let db = TempDb::new("claim-record");
    let store = db.open();
    store.push(job("mail", "send")).await.expect("push");
    let claimed = claim_mail(&store, 1, 500).await;
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
    let first = push_and_hold(&store).await;
    let at_lease_end = claim_mail(&store, 1, 30_000).await;
    assert!(at_lease_end.is_empty(), "the lease holds until its end");

    let second = claim_mail(&store, 1, 30_001).await.remove(0);
    assert_eq!(second.claim.id, first.claim.id);
    assert_ne!(second.claim.token, first.claim.token);
    assert_eq!(second.record.attempts, 2);
    assert_eq!(second.record.history.len(), 2);

    let done = succeeded(json!("ok"));
    assert!(
        !finish(&store, &first.claim, done.clone(), 31_000).await,
        "a stale claim records nothing"
    );
    assert!(!heartbeat(&store, &first.claim, 90_000).await);
    assert!(finish(&store, &second.claim, done, 31_000).await);
    let r = stored(&store, &first.claim.id).await;
    assert_eq!(r.state, JobState::Succeeded);
    assert_eq!(r.result, Some(json!("ok")));
    assert_eq!(r.finished_at, Some(at(31_000)));
    assert_eq!(r.history[1].finished_at, Some(at(31_000)));
}

/// A lapsed claim is an attempt that never ended (its host crashed, was killed or
/// froze): its history says so, it runs again whatever its retry policy, and
/// after `MAX_LAPSES` such runs in a row the job is dead rather than run after
/// every restart for ever. A retry by hand starts the count afresh.
#[tokio::test]
async fn a_job_whose_claims_lapse_in_a_row_is_dead_and_not_claimed_again() {
    let db = TempDb::new("claim-lapse-dead");
    let store = db.open();
    let first = push_and_hold(&store).await;
    let id = first.claim.id.clone();
    // Attempt 1 fails as a handler does: an attempt that ended breaks the row.
    let retry = Finish::Retry {
        error: boom(),
        at: at(1_000),
    };
    assert!(finish(&store, &first.claim, retry, 500).await);
    let mut now = 1_000;
    let mut held = claim_mail(&store, 1, now).await.remove(0);
    for attempt in 3..=6 {
        now += 30_001;
        held = claim_mail(&store, 1, now).await.remove(0);
        assert_eq!(
            held.record.attempts, attempt,
            "runs again past max_attempts 3"
        );
    }
    let lost = held.record.history[1]
        .error
        .clone()
        .expect("attempt 2 says how it ended");
    assert_eq!(lost.error, "handler_error");
    assert!(
        lost.message.contains("attempt 2 of job")
            && lost.message.contains("`host-a` stopped renewing its claim"),
        "{}",
        lost.message
    );
    assert_eq!(
        held.record.history[1].finished_at, None,
        "when it ended is not known"
    );

    now += 30_001;
    let dead = claim_mail(&store, 1, now).await;
    assert_eq!(dead.len(), 1, "handed back for the runner to report");
    let r = stored(&store, &id).await;
    assert_eq!(dead[0].record, r);
    assert_eq!((r.state, r.attempts), (JobState::Dead, 6));
    assert_eq!(r.finished_at, Some(at(now)));
    assert_eq!((r.lease_until, r.instance.as_deref()), (None, None));
    let why = r.error.clone().expect("why it is dead");
    assert!(
        why.message.contains("attempt 6 of job")
            && why
                .message
                .contains(&format!("{} runs in a row", koan::job::MAX_LAPSES))
            && why.message.contains("the job is dead"),
        "{}",
        why.message
    );
    assert_eq!(r.history.len(), 6);
    assert_eq!(r.history[0].error, Some(boom()));
    assert_eq!(r.history[5].error.as_ref(), Some(&why));
    assert_eq!(r.history[5].finished_at, Some(at(now)), "given up then");
    assert!(claim_mail(&store, 1, now + 200_000).await.is_empty());
    // Its last claim is fenced off: a late outcome is not recorded over the verdict.
    assert!(!finish(&store, &held.claim, succeeded(json!("late")), now + 1).await);
    assert_eq!(stored(&store, &id).await.state, JobState::Dead);
    // A retry by hand runs it again, and one more lapse does not end it.
    now += 10_000;
    store
        .retry(&id, koan::job::RetryFrom::Any, at(now))
        .await
        .expect("retry");
    assert_eq!(claim_mail(&store, 1, now).await[0].record.attempts, 7);
    now += 30_001;
    assert_eq!(claim_mail(&store, 1, now).await[0].record.attempts, 8);
}

#[tokio::test]
async fn a_heartbeat_extends_the_lease_of_the_current_claim_only() {
    let db = TempDb::new("claim-heartbeat");
    let store = db.open();
    let held = push_and_hold(&store).await;
    assert!(heartbeat(&store, &held.claim, 60_000).await);
    let r = stored(&store, &held.claim.id).await;
    assert_eq!(r.lease_until, Some(at(60_000)));
    assert!(claim_mail(&store, 1, 45_000).await.is_empty());

    let mut forged = held.claim.clone();
    forged.token = koan::job::new_job_id();
    assert!(!heartbeat(&store, &forged, 90_000).await);
    let mut unknown = held.claim.clone();
    unknown.id = "no-such-id".to_owned();
    assert!(!heartbeat(&store, &unknown, 90_000).await);
}

#[tokio::test]
async fn a_retry_outcome_waits_for_its_time_then_runs_as_the_next_attempt() {
    let db = TempDb::new("claim-retry");
    let store = db.open();
    let held = push_and_hold(&store).await;
    let how = Finish::Retry {
        error: boom(),
        at: at(5_000),
    };
    assert!(finish(&store, &held.claim, how, 100).await);
    let r = stored(&store, &held.claim.id).await;
    assert_eq!(r.state, JobState::Retrying);
    assert_eq!(r.error, Some(boom()));
    assert_eq!(r.history[0].error, Some(boom()));
    assert_eq!(
        store.next_due(&["mail".to_owned()]).await.expect("due"),
        Some(at(5_000))
    );
    assert!(claim_mail(&store, 1, 4_999).await.is_empty());
    let again = claim_mail(&store, 1, 5_000).await.remove(0);
    assert_eq!(again.record.attempts, 2);
    let dead = Finish::Dead { error: boom() };
    assert!(finish(&store, &again.claim, dead, 6_000).await);
    let r = stored(&store, &held.claim.id).await;
    assert_eq!(r.state, JobState::Dead);
    assert_eq!(r.finished_at, Some(at(6_000)));
}

#[tokio::test]
async fn a_release_puts_the_job_back_without_counting_the_attempt() {
    let db = TempDb::new("claim-release");
    let store = db.open();
    let held = push_and_hold(&store).await;
    let how = Finish::Release { at: at(200) };
    assert!(finish(&store, &held.claim, how, 100).await);
    let r = stored(&store, &held.claim.id).await;
    assert_eq!(r.state, JobState::Queued);
    assert_eq!(r.attempts, 0);
    assert!(r.history.is_empty());
    let again = claim_mail(&store, 1, 200).await.remove(0);
    assert_eq!(again.record.attempts, 1);
}

#[tokio::test]
async fn a_cancelled_running_job_loses_its_claim() {
    let db = TempDb::new("claim-cancel");
    let store = db.open();
    let held = push_and_hold(&store).await;
    let r = store.cancel(&held.claim.id, at(50)).await.expect("cancel");
    assert_eq!(r.state, JobState::Cancelled);
    assert_eq!(r.history[0].finished_at, Some(at(50)));
    let why = r.history[0].error.as_ref().map(|e| e.message.as_str());
    assert_eq!(why, Some(format!("job `{}` was cancelled", r.id).as_str()));
    assert!(!heartbeat(&store, &held.claim, 90_000).await);
    assert!(!finish(&store, &held.claim, succeeded(json!(1)), 60).await);
    assert!(claim_mail(&store, 1, 90_000).await.is_empty());
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
    let held = claim_mail(&store, 1, 0).await;
    assert_eq!(held[0].claim.id, lapsing);
    let mut waiting = Vec::new();
    for priority in [1, 5, 3] {
        let pushed = store.push(with(priority, 10, job("mail", "send"))).await;
        waiting.push(pushed.expect("push").record.id);
    }

    let due = claim_mail(&store, 3, 30_001).await;
    assert_eq!(
        ids(&due),
        [&waiting[1], &lapsing, &waiting[2]],
        "priority 5, then the older of the two at 3 (the lapsed one), within the limit"
    );
    let rest = claim_mail(&store, 3, 30_001).await;
    assert_eq!(ids(&rest), [&waiting[0]]);
}
