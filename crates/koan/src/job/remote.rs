//! Records of jobs this host handed to a transport's durable queue (a service in
//! another process). The job itself is kept by the transport; this host keeps what it
//! learns of it, in memory and bounded, so `GET /api/jobs/{id}` answers on the host
//! that accepted it (from the transport's records, when it keeps them; from these
//! when it cannot be asked). Of the jobs whose end it has not heard of (their
//! ticket dropped, or still running), the latest `KEEP` are kept; of the ended
//! ones, the latest `KEEP` too; and all of them weigh at most `MAX_BYTES` (the
//! ended ones go first past it).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::record::{JobRecord, JobState};
use crate::action::ErrorBody;
use crate::error::Result;
use crate::payload::Payload;

/// How many finished remote records are kept.
const KEEP: usize = 10_000;

/// The most bytes the records kept weigh ([`JobRecord::weight`]): 10,000 jobs of
/// 64 KiB parameters took a host that accepted them 650 MB to 1.3 GB (a probe).
const MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Default)]
struct Inner {
    /// Each with its weight.
    records: HashMap<String, (JobRecord, usize)>,
    /// The sum of the weights.
    bytes: usize,
    finished: VecDeque<String>,
    /// Ids in the order they were handed over: the oldest unfinished go first
    /// past `KEEP` (a finished one's id is skipped when it comes up).
    accepted: VecDeque<String>,
}

#[derive(Default)]
pub(crate) struct RemoteJobs {
    inner: Mutex<Inner>,
}

impl RemoteJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, record: JobRecord) {
        let weight = record.weight();
        let mut inner = self.lock();
        inner.accepted.push_back(record.id.clone());
        inner.put(record, weight);
        inner.trim();
    }

    pub(crate) fn get(&self, id: &str) -> Option<JobRecord> {
        self.lock().records.get(id).map(|(r, _)| r.clone())
    }

    /// Forgets job `id` (deleted), any, or only an ended one when `ended_only`:
    /// whether it was remembered so.
    pub(crate) fn forget(&self, id: &str, ended_only: bool) -> bool {
        let mut inner = self.lock();
        let forget = inner
            .records
            .get(id)
            .is_some_and(|(r, _)| !ended_only || r.finished_at.is_some());
        forget && inner.remove(id)
    }

    /// Records the outcome the transport reported.
    pub(crate) fn finish(&self, id: &str, outcome: &Result<Payload>, at: DateTime<Utc>) {
        let mut inner = self.lock();
        let Some((mut r, _)) = inner.records.get(id).cloned() else {
            return;
        };
        // The caller stopped waiting; the job may still run: its state is unknown here.
        if let Err(e) = outcome
            && e.kind() == crate::error::ErrorKind::Timeout
        {
            r.error = Some(ErrorBody::from(e));
            let weight = r.weight();
            inner.put(r, weight);
            return;
        }
        r.finished_at = Some(at);
        match outcome {
            Ok(p) => {
                r.state = JobState::Succeeded;
                r.result = p.to_json().ok();
            }
            Err(e) => {
                r.state = if super::is_cancelled(e) {
                    JobState::Cancelled
                } else {
                    JobState::Dead
                };
                r.error = Some(ErrorBody::from(e));
            }
        }
        let weight = r.weight();
        inner.put(r, weight);
        inner.finished.push_back(id.to_owned());
        inner.trim();
    }
}

impl Inner {
    fn put(&mut self, record: JobRecord, weight: usize) {
        self.bytes += weight;
        if let Some((_, was)) = self.records.insert(record.id.clone(), (record, weight)) {
            self.bytes -= was;
        }
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some((_, weight)) = self.records.remove(id) else {
            return false;
        };
        self.bytes -= weight;
        true
    }

    /// Back within the bounds: past `KEEP` finished, the oldest finished go; past
    /// `KEEP` accepted, the oldest still unfinished (their outcome not awaited);
    /// past `MAX_BYTES`, the oldest finished, then the oldest accepted.
    fn trim(&mut self) {
        while self.finished.len() > KEEP || (self.bytes > MAX_BYTES && !self.finished.is_empty()) {
            if let Some(old) = self.finished.pop_front() {
                self.remove(&old);
            }
        }
        while self.accepted.len() > KEEP || (self.bytes > MAX_BYTES && !self.accepted.is_empty()) {
            let Some(old) = self.accepted.pop_front() else {
                break;
            };
            if self
                .records
                .get(&old)
                .is_some_and(|(r, _)| r.finished_at.is_none())
            {
                self.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> JobRecord {
        crate::testing::job_record(id, "S")
    }

    #[test]
    fn jobs_not_awaited_are_kept_up_to_a_bound_the_oldest_going_first() {
        let jobs = RemoteJobs::default();
        jobs.insert(record("awaited"));
        jobs.finish(
            "awaited",
            &Ok(Payload::Json(serde_json::json!(1))),
            Utc::now(),
        );
        for i in 0..KEEP + 5 {
            jobs.insert(record(&format!("left-{i}")));
        }
        // The oldest left-to-run records went; the finished one stays (its own
        // bound is of finished records).
        assert!(jobs.get("left-0").is_none());
        assert!(jobs.get("left-4").is_none());
        assert!(jobs.get("left-5").is_some());
        assert!(jobs.get(&format!("left-{}", KEEP + 4)).is_some());
        assert_eq!(
            jobs.get("awaited").map(|r| r.state),
            Some(JobState::Succeeded)
        );
        assert!(jobs.lock().records.len() <= KEEP + 1);
    }

    /// Large jobs are kept up to a weight: the ended ones go first, then the
    /// oldest still to end; the weights' sum follows every change.
    #[test]
    fn jobs_are_kept_up_to_a_weight() {
        let jobs = RemoteJobs::default();
        let big = |id: &str| {
            let mut r = record(id);
            r.params = serde_json::Value::String("p".repeat(64_000));
            r
        };
        jobs.insert(big("ended"));
        jobs.finish(
            "ended",
            &Ok(Payload::Json(serde_json::json!(1))),
            Utc::now(),
        );
        let n = MAX_BYTES / 64_000 + 10;
        for i in 0..n {
            jobs.insert(big(&format!("left-{i}")));
        }
        assert!(jobs.get("ended").is_none(), "the ended one went first");
        assert!(jobs.get("left-0").is_none());
        assert!(jobs.get(&format!("left-{}", n - 1)).is_some());
        let inner = jobs.lock();
        assert!(inner.bytes <= MAX_BYTES, "{}", inner.bytes);
        assert_eq!(
            inner.bytes,
            inner.records.values().map(|(_, w)| w).sum::<usize>()
        );
    }

    #[test]
    fn a_cancelled_job_is_remembered_cancelled_and_a_deleted_one_forgotten() {
        let jobs = RemoteJobs::default();
        for id in ["cancelled", "failed"] {
            jobs.insert(record(id));
        }
        let now = Utc::now();
        jobs.finish("cancelled", &Err(super::super::cancelled("cancelled")), now);
        let failed = crate::Error::new(crate::error::ErrorKind::JobState, "job `x` was odd");
        jobs.finish("failed", &Err(failed), now);
        let state = |id| jobs.get(id).map(|r| r.state);
        assert_eq!(state("cancelled"), Some(JobState::Cancelled));
        assert_eq!(state("failed"), Some(JobState::Dead));
        assert!(jobs.forget("cancelled", true));
        assert!(!jobs.forget("cancelled", false));
        assert_eq!(state("cancelled"), None);
        // One still to end, unless the cluster deleted it.
        jobs.insert(record("queued"));
        assert!(!jobs.forget("queued", true));
        assert!(jobs.forget("queued", false));
    }
}
