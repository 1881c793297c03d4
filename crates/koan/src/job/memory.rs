//! Jobs kept in memory: for tests, and for hosts that opt out of durability (the
//! host then says so at start, and drains queued jobs within the shutdown grace).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::record::{JobAttempt, JobCounts, JobPage, JobQuery, JobRecord, JobState, NewJob};
use super::store::{Claim, ClaimRequest, Claimed, Finish, JobStore, Pushed};
use crate::error::{Error, ErrorKind, Result};
use crate::util::BoxFuture;

/// Waiting jobs of a service in claim order: highest priority, then oldest `run_at`.
type DueKey = (std::cmp::Reverse<i32>, DateTime<Utc>, String);

#[derive(Default)]
struct Inner {
    /// By id; UUID v7 ids sort by creation.
    jobs: BTreeMap<String, (JobRecord, Option<String>)>,
    keys: HashMap<String, String>,
    /// Per service, the jobs a worker may claim (waiting ones by claim order, running
    /// ones for their leases), so that claiming does not walk finished jobs.
    waiting: HashMap<String, BTreeSet<DueKey>>,
    /// The same jobs by `run_at` alone, for the next time one is due.
    waiting_by_time: HashMap<String, BTreeSet<(DateTime<Utc>, String)>>,
    running: HashMap<String, BTreeSet<String>>,
}

impl Inner {
    fn unindex(&mut self, r: &JobRecord) {
        if r.state.is_waiting() {
            if let Some(set) = self.waiting.get_mut(&r.service) {
                set.remove(&(std::cmp::Reverse(r.priority), r.run_at, r.id.clone()));
            }
            if let Some(set) = self.waiting_by_time.get_mut(&r.service) {
                set.remove(&(r.run_at, r.id.clone()));
            }
        } else if r.state == JobState::Running
            && let Some(set) = self.running.get_mut(&r.service)
        {
            set.remove(&r.id);
        }
    }

    fn index(&mut self, r: &JobRecord) {
        if r.state.is_waiting() {
            self.waiting.entry(r.service.clone()).or_default().insert((
                std::cmp::Reverse(r.priority),
                r.run_at,
                r.id.clone(),
            ));
            self.waiting_by_time
                .entry(r.service.clone())
                .or_default()
                .insert((r.run_at, r.id.clone()));
        } else if r.state == JobState::Running {
            self.running
                .entry(r.service.clone())
                .or_default()
                .insert(r.id.clone());
        }
    }

    /// Changes job `id` with `f`, keeping the indexes in step.
    fn update<T>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut JobRecord, &mut Option<String>) -> T,
    ) -> Option<T> {
        let (record, token) = self.jobs.get_mut(id)?;
        let before = record.clone();
        let mut token_copy = token.clone();
        let mut after = before.clone();
        let out = f(&mut after, &mut token_copy);
        self.unindex(&before);
        self.index(&after);
        if let Some((record, token)) = self.jobs.get_mut(id) {
            *record = after;
            *token = token_copy;
        }
        Some(out)
    }
}

/// A [`JobStore`] in memory: nothing survives the process.
#[derive(Default)]
pub struct MemoryJobStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryJobStore")
            .field("jobs", &self.lock().jobs.len())
            .finish()
    }
}

impl MemoryJobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn unknown_job(id: &str) -> Error {
    Error::new(
        ErrorKind::UnknownJob,
        format!(
            "no job with id `{id}` (never enqueued, deleted, or past retention); list jobs with GET /api/jobs"
        ),
    )
}

pub(crate) fn wrong_state(id: &str, state: JobState, what: &str, allowed: &str) -> Error {
    Error::new(
        ErrorKind::JobState,
        format!("job `{id}` is {state}: cannot {what} it (only a job that is {allowed})"),
    )
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(v))
}

/// Whether `r` may be claimed at `now`.
fn due(r: &JobRecord, now: DateTime<Utc>) -> bool {
    (r.state.is_waiting() && r.run_at <= now)
        || (r.state == JobState::Running && r.lease_until.is_some_and(|l| l < now))
}

impl JobStore for MemoryJobStore {
    fn is_durable(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn push(&self, job: NewJob) -> BoxFuture<'_, Result<Pushed>> {
        let mut inner = self.lock();
        if let Some(key) = &job.idempotency_key
            && let Some(id) = inner.keys.get(key)
            && let Some((record, _)) = inner.jobs.get(id)
        {
            return ready(Ok(Pushed {
                record: record.clone(),
                created: false,
            }));
        }
        let record = job.into_record();
        if let Some(key) = &record.idempotency_key {
            inner.keys.insert(key.clone(), record.id.clone());
        }
        inner.index(&record);
        inner.jobs.insert(record.id.clone(), (record.clone(), None));
        ready(Ok(Pushed {
            record,
            created: true,
        }))
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Vec<Claimed>>> {
        let mut inner = self.lock();
        let now = request.now;
        // Lapsed claims first (their jobs waited longest), then waiting jobs in order.
        let mut ids: Vec<String> = inner
            .running
            .get(&request.service)
            .into_iter()
            .flatten()
            .filter(|id| inner.jobs.get(*id).is_some_and(|(r, _)| due(r, now)))
            .take(request.limit)
            .cloned()
            .collect();
        if ids.len() < request.limit {
            let more: Vec<String> = inner
                .waiting
                .get(&request.service)
                .into_iter()
                .flatten()
                .filter(|(_, at, _)| *at <= now)
                .take(request.limit - ids.len())
                .map(|(_, _, id)| id.clone())
                .collect();
            ids.extend(more);
        }
        let mut out = Vec::new();
        for id in ids {
            let t = super::id::new_job_id();
            let claimed = inner.update(&id, |r, token| {
                *token = Some(t.clone());
                r.attempts += 1;
                r.state = JobState::Running;
                r.instance = Some(request.instance.clone());
                r.lease_until = Some(request.lease_until);
                r.history.push(JobAttempt {
                    attempt: r.attempts,
                    started_at: now,
                    finished_at: None,
                    instance: request.instance.clone(),
                    error: None,
                });
                r.clone()
            });
            if let Some(record) = claimed {
                out.push(Claimed {
                    claim: Claim { id, token: t },
                    record,
                });
            }
        }
        ready(Ok(out))
    }

    fn heartbeat(&self, claim: &Claim, lease_until: DateTime<Utc>) -> BoxFuture<'_, Result<bool>> {
        let mut inner = self.lock();
        let held = match inner.jobs.get_mut(&claim.id) {
            Some((r, Some(t))) if *t == claim.token && r.state == JobState::Running => {
                r.lease_until = Some(lease_until);
                true
            }
            _ => false,
        };
        ready(Ok(held))
    }

    fn finish(
        &self,
        claim: &Claim,
        how: Finish,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<bool>> {
        let mut inner = self.lock();
        let Some((r, token)) = inner.jobs.get_mut(&claim.id) else {
            return ready(Ok(false));
        };
        if token.as_deref() != Some(claim.token.as_str()) || r.state != JobState::Running {
            return ready(Ok(false));
        }
        *token = None;
        apply_finish(r, how, now);
        ready(Ok(true))
    }

    fn get(&self, id: &str) -> BoxFuture<'_, Result<Option<JobRecord>>> {
        ready(Ok(self.lock().jobs.get(id).map(|(r, _)| r.clone())))
    }

    fn list(&self, query: JobQuery) -> BoxFuture<'_, Result<JobPage>> {
        let inner = self.lock();
        let size = query.page_size();
        let iter: Box<dyn Iterator<Item = &(JobRecord, Option<String>)>> = match &query.cursor {
            Some(c) => Box::new(
                inner
                    .jobs
                    .range::<String, _>(..c.clone())
                    .rev()
                    .map(|(_, v)| v),
            ),
            None => Box::new(inner.jobs.values().rev()),
        };
        let mut jobs: Vec<JobRecord> = iter
            .filter(|(r, _)| query.matches(r))
            .take(size + 1)
            .map(|(r, _)| r.clone())
            .collect();
        let next_cursor = if jobs.len() > size {
            jobs.truncate(size);
            jobs.last().map(|r| r.id.clone())
        } else {
            None
        };
        ready(Ok(JobPage { jobs, next_cursor }))
    }

    fn counts(&self, service: Option<&str>) -> BoxFuture<'_, Result<JobCounts>> {
        let inner = self.lock();
        let by_state = JobState::ALL
            .into_iter()
            .map(|s| {
                let n = inner
                    .jobs
                    .values()
                    .filter(|(r, _)| r.state == s && service.is_none_or(|svc| r.service == svc))
                    .count();
                (s, n as u64)
            })
            .collect();
        ready(Ok(JobCounts { by_state }))
    }

    fn next_due(&self, services: &[String]) -> BoxFuture<'_, Result<Option<DateTime<Utc>>>> {
        let inner = self.lock();
        let mut next: Option<DateTime<Utc>> = None;
        for service in services {
            let waiting = inner
                .waiting_by_time
                .get(service)
                .and_then(|set| set.first())
                .map(|(at, _)| *at);
            let leases = inner
                .running
                .get(service)
                .into_iter()
                .flatten()
                .filter_map(|id| inner.jobs.get(id).and_then(|(r, _)| r.lease_until));
            for at in waiting.into_iter().chain(leases) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        ready(Ok(next))
    }

    fn retry(&self, id: &str, now: DateTime<Utc>) -> BoxFuture<'_, Result<JobRecord>> {
        let mut inner = self.lock();
        let Some((r, _)) = inner.jobs.get(id) else {
            return ready(Err(unknown_job(id)));
        };
        if !retryable(r.state) {
            return ready(Err(wrong_state(
                id,
                r.state,
                "retry",
                "dead, cancelled, retrying or succeeded",
            )));
        }
        let r = inner.update(id, |r, token| {
            *token = None;
            apply_retry(r, now);
            r.clone()
        });
        ready(r.ok_or_else(|| unknown_job(id)))
    }

    fn cancel(&self, id: &str, now: DateTime<Utc>) -> BoxFuture<'_, Result<JobRecord>> {
        let mut inner = self.lock();
        let Some((r, _)) = inner.jobs.get(id) else {
            return ready(Err(unknown_job(id)));
        };
        if r.state.is_final() {
            return ready(Err(wrong_state(
                id,
                r.state,
                "cancel",
                "scheduled, queued, running or retrying",
            )));
        }
        let r = inner.update(id, |r, token| {
            *token = None;
            apply_cancel(r, now);
            r.clone()
        });
        ready(r.ok_or_else(|| unknown_job(id)))
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<bool>> {
        let mut inner = self.lock();
        match inner.jobs.get(id) {
            None => ready(Ok(false)),
            Some((r, _)) if r.state == JobState::Running => ready(Err(wrong_state(
                id,
                r.state,
                "delete",
                "not running (cancel it first)",
            ))),
            Some(_) => {
                if let Some((r, _)) = inner.jobs.remove(id) {
                    inner.unindex(&r);
                    if let Some(k) = r.idempotency_key {
                        inner.keys.remove(&k);
                    }
                }
                ready(Ok(true))
            }
        }
    }

    fn purge(&self, older_than: DateTime<Utc>, max_bytes: u64) -> BoxFuture<'_, Result<u64>> {
        let mut inner = self.lock();
        let mut total: u64 = inner.jobs.values().map(|(r, _)| r.weight() as u64).sum();
        let mut finished: Vec<(DateTime<Utc>, String, u64)> = inner
            .jobs
            .values()
            .filter(|(r, _)| r.state.is_final())
            .map(|(r, _)| {
                (
                    r.finished_at.unwrap_or(r.created_at),
                    r.id.clone(),
                    r.weight() as u64,
                )
            })
            .collect();
        finished.sort();
        let mut gone = 0;
        for (at, id, w) in finished {
            if at >= older_than && total <= max_bytes {
                break;
            }
            if let Some((r, _)) = inner.jobs.remove(&id)
                && let Some(k) = r.idempotency_key
            {
                inner.keys.remove(&k);
            }
            total = total.saturating_sub(w);
            gone += 1;
        }
        ready(Ok(gone))
    }
}

/// Whether a job in `state` may be retried by hand.
pub(crate) fn retryable(state: JobState) -> bool {
    matches!(
        state,
        JobState::Dead | JobState::Cancelled | JobState::Retrying | JobState::Succeeded
    )
}

/// The record after `how` (shared by stores that keep whole records).
pub fn apply_finish(r: &mut JobRecord, how: Finish, now: DateTime<Utc>) {
    r.instance = None;
    r.lease_until = None;
    let error = match how {
        Finish::Succeeded { result, truncated } => {
            r.state = JobState::Succeeded;
            r.result = Some(result);
            r.result_truncated = truncated;
            r.error = None;
            r.finished_at = Some(now);
            None
        }
        Finish::Retry { error, at } => {
            r.state = JobState::Retrying;
            r.run_at = at;
            r.error = Some(error.clone());
            Some(error)
        }
        Finish::Dead { error } => {
            r.state = JobState::Dead;
            r.error = Some(error.clone());
            r.finished_at = Some(now);
            Some(error)
        }
        Finish::Release { at } => {
            r.state = JobState::Queued;
            r.run_at = at;
            r.attempts = r.attempts.saturating_sub(1);
            r.history.pop();
            return;
        }
    };
    if let Some(last) = r.history.last_mut() {
        last.finished_at = Some(now);
        last.error = error;
    }
}

/// The record after a retry by hand.
pub fn apply_retry(r: &mut JobRecord, now: DateTime<Utc>) {
    r.state = JobState::Queued;
    r.run_at = now;
    r.finished_at = None;
    r.instance = None;
    r.lease_until = None;
    r.max_attempts = r.max_attempts.max(r.attempts + 1);
}

/// The record after a cancel.
pub fn apply_cancel(r: &mut JobRecord, now: DateTime<Utc>) {
    if r.state == JobState::Running
        && let Some(last) = r.history.last_mut()
    {
        last.finished_at = Some(now);
    }
    r.state = JobState::Cancelled;
    r.finished_at = Some(now);
    r.instance = None;
    r.lease_until = None;
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::job::record::JobStep;

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
}
