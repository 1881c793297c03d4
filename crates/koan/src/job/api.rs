//! `host.jobs()`: list, inspect, retry, cancel and delete stored jobs.

use super::record::{JobCounts, JobPage, JobQuery, JobRecord, JobState};
use super::transition::unknown_job;
use crate::error::Result;
use crate::host::HostHandle;

/// The jobs of a host's store ([`HostHandle::jobs`]).
#[derive(Debug, Clone)]
pub struct Jobs {
    host: HostHandle,
}

impl Jobs {
    pub(crate) fn new(host: HostHandle) -> Self {
        Jobs { host }
    }

    fn store(&self) -> &dyn super::JobStore {
        self.host.inner.jobs.store.as_ref()
    }

    /// Whether the store keeps jobs through a restart.
    pub fn is_durable(&self) -> bool {
        self.store().is_durable()
    }

    /// The store, as named in logs (`sqlite:jobs.db`, `memory`).
    pub fn store_name(&self) -> String {
        self.store().describe()
    }

    /// One job; `UnknownJob` when there is none with that id.
    pub async fn get(&self, id: &str) -> Result<JobRecord> {
        match self.store().get(id).await? {
            Some(r) => Ok(r),
            None => self
                .host
                .inner
                .jobs
                .remote
                .get(id)
                .ok_or_else(|| unknown_job(id)),
        }
    }

    /// A page of jobs, newest first.
    pub async fn list(&self, query: JobQuery) -> Result<JobPage> {
        self.store().list(query).await
    }

    /// How many jobs are in each state (of one service, or all).
    pub async fn counts(&self, service: Option<&str>) -> Result<JobCounts> {
        self.store().counts(service).await
    }

    /// Runs a dead, cancelled, retrying or succeeded job again now.
    pub async fn retry(&self, id: &str) -> Result<JobRecord> {
        let r = self.store().retry(id, self.now()).await?;
        self.host.inner.jobs.wake();
        Ok(r)
    }

    /// Cancels a job that is not final; a running one is told through its token.
    pub async fn cancel(&self, id: &str) -> Result<JobRecord> {
        self.store().cancel(id, self.now()).await
    }

    /// Forgets a job that is not running. `UnknownJob` when there is none.
    pub async fn delete(&self, id: &str) -> Result<()> {
        if self.store().delete(id).await? {
            Ok(())
        } else {
            Err(unknown_job(id))
        }
    }

    /// Retries every dead job (of one service, or all); returns how many.
    pub async fn retry_all_dead(&self, service: Option<&str>) -> Result<usize> {
        let mut n = 0;
        loop {
            // Each retried job leaves the `dead` state, so the first page is always
            // the next one.
            let page = self
                .list(JobQuery {
                    state: Some(JobState::Dead),
                    service: service.map(str::to_owned),
                    limit: Some(500),
                    ..JobQuery::default()
                })
                .await?;
            if page.jobs.is_empty() {
                return Ok(n);
            }
            for job in page.jobs {
                self.store().retry(&job.id, self.now()).await?;
                n += 1;
            }
            self.host.inner.jobs.wake();
        }
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.host.inner.config.clock.now()
    }
}
