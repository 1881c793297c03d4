//! Records of jobs this host handed to a transport's durable queue (a service in
//! another process). The job itself is kept by the transport; this host keeps what it
//! learns of it, in memory and bounded, so `GET /api/jobs/{id}` answers on the host
//! that accepted it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::record::{JobRecord, JobState};
use crate::action::ErrorBody;
use crate::error::Result;
use crate::payload::Payload;

/// How many finished remote records are kept.
const KEEP: usize = 10_000;

#[derive(Default)]
struct Inner {
    records: HashMap<String, JobRecord>,
    finished: VecDeque<String>,
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
        self.lock().records.insert(record.id.clone(), record);
    }

    pub(crate) fn get(&self, id: &str) -> Option<JobRecord> {
        self.lock().records.get(id).cloned()
    }

    /// Records the outcome the transport reported.
    pub(crate) fn finish(&self, id: &str, outcome: &Result<Payload>, at: DateTime<Utc>) {
        let mut inner = self.lock();
        let Some(r) = inner.records.get_mut(id) else {
            return;
        };
        // The caller stopped waiting; the job may still run: its state is unknown here.
        if let Err(e) = outcome
            && e.kind() == crate::error::ErrorKind::Timeout
        {
            r.error = Some(ErrorBody::from(e));
            return;
        }
        r.finished_at = Some(at);
        match outcome {
            Ok(p) => {
                r.state = JobState::Succeeded;
                r.result = p.to_json().ok();
            }
            Err(e) => {
                r.state = JobState::Dead;
                r.error = Some(ErrorBody::from(e));
            }
        }
        inner.finished.push_back(id.to_owned());
        while inner.finished.len() > KEEP {
            if let Some(old) = inner.finished.pop_front() {
                inner.records.remove(&old);
            }
        }
    }
}
