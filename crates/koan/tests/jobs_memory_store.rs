//! `MemoryJobStore` against the `JobStore` contract: claim order, leases, fencing.

use chrono::{DateTime, Utc};
use koan::{
    job::ClaimRequest, job::Finish, job::JobStep, job::JobStore, job::MemoryJobStore, job::NewJob,
};

fn job(id: &str, priority: i32) -> NewJob {
    let now = Utc::now();
    NewJob {
        id: id.to_owned(),
        service: "S".to_owned(),
        steps: vec![JobStep {
            action: "a".to_owned(),
            params: serde_json::Value::Null,
            timeout_ms: None,
        }],
        priority,
        correlation_id: "c".to_owned(),
        idempotency_key: None,
        created_at: now,
        run_at: now,
        max_attempts: 3,
    }
}

fn request(limit: usize, now: DateTime<Utc>) -> ClaimRequest {
    ClaimRequest {
        service: "S".to_owned(),
        limit,
        now,
        lease_until: now + chrono::Duration::seconds(30),
        instance: "me".to_owned(),
    }
}

#[tokio::test]
async fn claims_by_priority_then_age_and_reclaims_lapsed_ones() {
    let store = MemoryJobStore::new();
    for (id, p) in [("a", 0), ("b", 5), ("c", 0)] {
        store.push(job(id, p)).await.expect("push");
    }
    let now = Utc::now();
    let got = store.claim(request(2, now)).await.expect("claim");
    let ids: Vec<&str> = got.iter().map(|c| c.claim.id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
    assert!(store.claim(request(5, now)).await.expect("claim").len() == 1);
    assert!(
        store
            .claim(request(5, now))
            .await
            .expect("claim")
            .is_empty()
    );
    // Leases lapse: claimed again, attempt 2, and the old claim is fenced off.
    let later = now + chrono::Duration::seconds(31);
    let again = store.claim(request(5, later)).await.expect("claim");
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|c| c.record.attempts == 2));
    let stale = &got[0].claim;
    let done = Finish::Release { at: later };
    assert!(!store.finish(stale, done, later).await.expect("finish"));
    assert_eq!(
        store.next_due(&["S".to_owned()]).await.expect("next"),
        Some(later + chrono::Duration::seconds(30))
    );
}

#[tokio::test]
async fn a_retried_job_is_due_again_at_its_time() {
    let store = MemoryJobStore::new();
    store.push(job("a", 0)).await.expect("push");
    let now = Utc::now();
    let got = store.claim(request(1, now)).await.expect("claim");
    let at = now + chrono::Duration::milliseconds(900);
    let how = Finish::Retry {
        error: koan::action::ErrorBody {
            error: "handler_error".to_owned(),
            message: "no".to_owned(),
        },
        at,
    };
    assert!(store.finish(&got[0].claim, how, now).await.expect("finish"));
    assert_eq!(
        store.next_due(&["S".to_owned()]).await.expect("next"),
        Some(at)
    );
    assert!(
        store
            .claim(request(1, now))
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(store.claim(request(1, at)).await.expect("claim").len(), 1);
}

/// `live_services`: each service with a live job and the time its first one falls
/// due (a waiting job's `run_at`, a running one's lease end); none once all are final.
#[tokio::test]
async fn live_services_are_those_with_live_jobs_and_their_first_due_time() {
    let store = MemoryJobStore::new();
    let live = |v: Option<koan::job::LiveServices>| {
        let mut v = v.expect("the memory store answers");
        v.sort();
        v
    };
    assert!(live(store.live_services().await.expect("live")).is_empty());
    let later = Utc::now() + chrono::Duration::seconds(10);
    let s = job("a", 0);
    let t = NewJob {
        service: "T".to_owned(),
        run_at: later,
        ..job("b", 0)
    };
    let s_at = s.run_at;
    store.push(s).await.expect("push");
    store.push(t).await.expect("push");
    assert_eq!(
        live(store.live_services().await.expect("live")),
        [("S".to_owned(), s_at), ("T".to_owned(), later)]
    );
    // Claimed: S's job is running, due again when its lease ends.
    let now = Utc::now();
    let claimed = store.claim(request(1, now)).await.expect("claim");
    let lease = request(1, now).lease_until;
    assert_eq!(
        live(store.live_services().await.expect("live")),
        [("S".to_owned(), lease), ("T".to_owned(), later)]
    );
    // Finished: S has no live job left.
    let done = Finish::Succeeded {
        result: serde_json::Value::Null,
        truncated: false,
    };
    let claim = &claimed[0].claim;
    assert!(store.finish(claim, done, now).await.expect("finish"));
    assert_eq!(
        live(store.live_services().await.expect("live")),
        [("T".to_owned(), later)]
    );
}

/// A claim that lapsed is an attempt that never ended (its host stopped without an
/// outcome); after `MAX_LAPSES` in a row the job is dead, handed back unclaimed
/// once, and never claimed again.
#[tokio::test]
async fn a_job_whose_claims_lapse_in_a_row_is_dead_and_not_claimed_again() {
    let store = MemoryJobStore::new();
    store.push(job("a", 0)).await.expect("push");
    let mut now = Utc::now();
    let mut last = None;
    for attempt in 1..=koan::job::MAX_LAPSES as u32 {
        let got = store.claim(request(1, now)).await.expect("claim");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].record.attempts, attempt);
        last = Some(got[0].claim.clone());
        now += chrono::Duration::seconds(31);
    }
    let dead = store.claim(request(1, now)).await.expect("claim");
    assert_eq!(dead.len(), 1);
    let r = store.get("a").await.expect("get").expect("kept");
    assert_eq!(dead[0].record, r);
    assert_eq!(r.state, koan::job::JobState::Dead);
    assert_eq!((r.attempts, r.finished_at), (5, Some(now)));
    let why = r.error.expect("why it is dead").message;
    assert!(why.contains("5 runs in a row"), "{why}");
    assert!(r.history.iter().all(|a| a.error.is_some()));
    assert!(
        store
            .claim(request(1, now))
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(store.next_due(&["S".to_owned()]).await.expect("next"), None);
    let late = Finish::Release { at: now };
    let stale = last.expect("claimed");
    assert!(!store.finish(&stale, late, now).await.expect("finish"));
}

/// The size budget of `purge` counts the final jobs alone: a backlog of live jobs
/// over it made every pass forget every final job, a dead one too (a probe of the
/// SQLite store, whose rule this store shares).
#[tokio::test]
async fn purge_by_size_counts_final_jobs_only() {
    let store = MemoryJobStore::new();
    store.push(job("done", 0)).await.expect("push");
    let now = Utc::now();
    let held = store.claim(request(1, now)).await.expect("claim");
    let how = Finish::Succeeded {
        result: serde_json::Value::Null,
        truncated: false,
    };
    assert!(
        store
            .finish(&held[0].claim, how, now)
            .await
            .expect("finish")
    );
    let done = store.get("done").await.expect("get").expect("stored");
    let budget = done.weight() as u64;
    for n in 0..4 {
        let later = NewJob {
            run_at: now + chrono::Duration::days(1),
            ..job(&format!("later-{n}"), 0)
        };
        store.push(later).await.expect("push");
    }
    let early = DateTime::<Utc>::MIN_UTC;
    assert_eq!(store.purge(early, budget).await.expect("purge"), 0);
    assert!(store.get("done").await.expect("get").is_some());
    assert_eq!(store.purge(early, budget - 1).await.expect("purge"), 1);
    assert!(store.get("done").await.expect("get").is_none());
}
