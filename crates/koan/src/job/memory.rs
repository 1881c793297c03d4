//! Jobs kept in memory: for tests, and for hosts that opt out of durability (the
//! host then says so at start, and drains queued jobs within the shutdown grace).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::record::{JobCounts, JobPage, JobQuery, JobRecord, JobState, NewJob};
use super::store::{Claim, ClaimRequest, Claimed, Finish, JobStore, LiveServices, Pushed};
use super::transition::{
    RetryFrom, apply_cancel, apply_claim, apply_finish, apply_retry, check_delete, unknown_job,
    wrong_state,
};
use crate::error::Result;
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
    /// The earliest `run_at` of `service`'s waiting jobs or lease end of its running
    /// ones (`next_due` and `live_services` of one service).
    fn first_due(&self, service: &str) -> Option<DateTime<Utc>> {
        let waiting = self
            .waiting_by_time
            .get(service)
            .and_then(|set| set.first())
            .map(|(at, _)| *at);
        let leases = self
            .running
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|id| self.jobs.get(id).and_then(|(r, _)| r.lease_until));
        waiting.into_iter().chain(leases).min()
    }

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
                // A job dead at its claim comes back unclaimed, for the runner to report.
                *token = apply_claim(r, &request).then(|| t.clone());
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
        let held = inner.jobs.get(&claim.id).is_some_and(|(r, token)| {
            token.as_deref() == Some(claim.token.as_str()) && r.state == JobState::Running
        });
        if held {
            inner.update(&claim.id, |r, token| {
                *token = None;
                apply_finish(r, how, now);
            });
        }
        ready(Ok(held))
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
        ready(Ok(JobPage {
            jobs,
            next_cursor,
            stale: false,
            partial: false,
        }))
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
        ready(Ok(JobCounts::new(by_state)))
    }

    fn next_due(&self, services: &[String]) -> BoxFuture<'_, Result<Option<DateTime<Utc>>>> {
        let inner = self.lock();
        let next = services.iter().filter_map(|s| inner.first_due(s)).min();
        ready(Ok(next))
    }

    fn live_services(&self) -> BoxFuture<'_, Result<Option<LiveServices>>> {
        let inner = self.lock();
        // The services in the live indexes, not all of them.
        let mut services: Vec<&String> = inner
            .waiting_by_time
            .keys()
            .chain(inner.running.keys())
            .collect();
        services.sort_unstable();
        services.dedup();
        let live = services
            .into_iter()
            .filter_map(|s| Some((s.clone(), inner.first_due(s)?)))
            .collect();
        ready(Ok(Some(live)))
    }

    fn retry(
        &self,
        id: &str,
        from: RetryFrom,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<JobRecord>> {
        let mut inner = self.lock();
        let Some((r, _)) = inner.jobs.get(id) else {
            return ready(Err(unknown_job(id)));
        };
        if let Err(e) = from.check(id, r.state) {
            return ready(Err(e));
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
        match inner.jobs.get(id).map(|(r, _)| check_delete(id, r.state)) {
            None => ready(Ok(false)),
            Some(Err(e)) => ready(Err(e)),
            Some(Ok(())) => {
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
        // The budget covers the final jobs alone: the only ones retention can
        // forget (with the live ones counted, a backlog forgot them all).
        let mut total: u64 = finished.iter().map(|(_, _, w)| w).sum();
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
