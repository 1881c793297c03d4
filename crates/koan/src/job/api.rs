//! `host.jobs()`: list, inspect, retry, cancel and delete stored jobs.

use std::collections::HashSet;

use super::record::{JobCounts, JobPage, JobQuery, JobRecord, JobState};
use super::transition::{RetryFrom, unknown_job};
use crate::error::{ErrorKind, Result};
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

    /// Where the jobs listed and counted are kept, as named in logs
    /// (`sqlite:jobs.db`, `memory`); with a transport, "… and the cluster's queue"
    /// (the counts and listings add the cluster's jobs: a probe read the counts as
    /// the file's alone).
    pub fn store_name(&self) -> String {
        match self.transport() {
            Some(_) => format!("{} and the cluster's queue", self.store().describe()),
            None => self.store().describe(),
        }
    }

    /// One job; `UnknownJob` when there is none with that id. In a cluster, a job
    /// of the cluster's queue accepted by any host is found too.
    pub async fn get(&self, id: &str) -> Result<JobRecord> {
        if let Some(r) = self.store().get(id).await? {
            return Ok(r);
        }
        let remembered = self.host.inner.jobs.remote.get(id);
        if let Some(t) = self.transport() {
            match t.job(id).await {
                Ok(Some(r)) => return Ok(r),
                // The cluster has no record of it (deleted, on any host, or past its
                // retention): what this host remembers is older than that word (a
                // job not awaited here is remembered `queued`), not an answer.
                // One this host accepted has a record unless its write failed
                // (it runs all the same): "never enqueued" contradicted the 202
                // (found by a probe).
                Ok(None) => {
                    return Err(match remembered {
                        Some(r) if !r.state.is_final() => crate::error::Error::new(
                            crate::error::ErrorKind::UnknownJob,
                            format!(
                                "the cluster has no record of job `{id}` (`{}` of `{}`), which this host accepted: its record could not be written then (it runs all the same, and its record is written as it runs), or it was deleted since",
                                r.action, r.service
                            ),
                        ),
                        _ => unknown_job(id),
                    });
                }
                // The cluster cannot be asked now: an end this host heard of is
                // kept (a retry by hand elsewhere aside), but a state still to
                // change is no answer (it said `queued`, 0 attempts of 1, for a job
                // that had succeeded; found by a probe): said, not shown as current.
                Err(e) => {
                    return match remembered {
                        Some(r) if r.state.is_final() => Ok(r),
                        None => Err(e),
                        Some(r) => Err(crate::error::Error::new(
                            e.kind(),
                            format!(
                                "{}; this host accepted job {id} (of `{}`), but cannot tell its state now",
                                e.message(),
                                r.service
                            ),
                        )),
                    };
                }
            }
        }
        remembered.ok_or_else(|| unknown_job(id))
    }

    /// A page of jobs, newest first: the host's store's, and in a cluster those of
    /// the cluster's queue (accepted by any host).
    pub async fn list(&self, query: JobQuery) -> Result<JobPage> {
        let size = query.page_size();
        let cluster = match self.transport() {
            Some(t) => t.jobs(&query).await,
            None => None,
        };
        let own = self.store().list(query).await?;
        Ok(match cluster {
            Some(page) => super::cluster::merge(own, page, size),
            None => own,
        })
    }

    /// How many jobs are in each state (of one service, or all), the cluster's queue's
    /// included.
    pub async fn counts(&self, service: Option<&str>) -> Result<JobCounts> {
        let own = self.store().counts(service).await?;
        let cluster = match self.transport() {
            Some(t) => t.job_counts(service).await,
            None => None,
        };
        Ok(match cluster {
            Some(c) => super::cluster::add(&own, &c),
            None => own,
        })
    }

    /// Runs a dead, cancelled, retrying or succeeded job again now (one of the
    /// cluster's queue: dead, cancelled or succeeded).
    ///
    /// A job cancelled while it ran in another process sharing the store runs
    /// again once that run's claim has lapsed (its process hears of the cancel at
    /// its next heartbeat, a third of the lease): a retry at once ran beside it
    /// (found by a probe). Its record says when (`run_at`).
    pub async fn retry(&self, id: &str) -> Result<JobRecord> {
        let now = self.now();
        let jobs = &self.host.inner.jobs;
        let at = match self.store().get(id).await {
            // Its run may go on: in another process, or in this one still (the
            // cancel went through another process: it is told now, and waited
            // for here, but another process could take the retry at once).
            Ok(Some(r)) if r.state == JobState::Cancelled && r.instance.is_some() => {
                let here = r.instance.as_deref() == Some(jobs.instance());
                if here && jobs.running_jobs.has(id) {
                    jobs.running_jobs.stop(id);
                }
                if here && !jobs.running_jobs.has(id) {
                    now
                } else {
                    r.lease_until.map_or(now, |end| end.max(now))
                }
            }
            _ => now,
        };
        let r = match self.store().retry(id, RetryFrom::Any, at).await {
            Err(e) if e.kind() == ErrorKind::UnknownJob => {
                return match self.transport() {
                    Some(t) => t.retry_job(id, RetryFrom::Any).await?.ok_or(e),
                    None => Err(e),
                };
            }
            other => other?,
        };
        self.host.inner.jobs.wake();
        Ok(r)
    }

    /// Cancels a job that is not final; a running one is told through its token.
    pub async fn cancel(&self, id: &str) -> Result<JobRecord> {
        // A run here whose handler returned is let record its outcome first: a
        // cancel then says the job ended, and its result is kept (it answered
        // "cancelled" and the result was lost; found by a probe).
        // (At most a lease: a store that does not answer does not hang it.)
        let lease = self.host.inner.jobs.settings.lease;
        let _ = tokio::time::timeout(lease, self.host.inner.jobs.running_jobs.settled(id)).await;
        match self.store().cancel(id, self.now()).await {
            Err(e) if e.kind() == ErrorKind::UnknownJob => match self.transport() {
                Some(t) => t.cancel_job(id).await?.ok_or(e),
                None => Err(e),
            },
            Ok(record) => {
                // Running here: stopped now, not at its run's next heartbeat.
                self.host.inner.jobs.running_jobs.stop(id);
                // Its waiters hear it now, not at their next look at the store.
                let cancelled = Err(super::cancelled(&record.id));
                self.host.inner.jobs.waiters.answer(&record.id, &cancelled);
                Ok(record)
            }
            other => other,
        }
    }

    /// Forgets a final job (succeeded, dead or cancelled). `JobState` for a live
    /// one (cancel it first), `UnknownJob` when there is none.
    pub async fn delete(&self, id: &str) -> Result<()> {
        if self.store().delete(id).await? {
            return Ok(());
        }
        let deleted = match self.transport() {
            Some(t) => t.delete_job(id).await?,
            None => false,
        };
        // What this host remembers of a job it handed to the cluster goes too
        // (`get` would answer from it); also when the cluster forgot the job first,
        // if it ended (one that may still run is not forgotten unseen).
        let remembered = self.host.inner.jobs.remote.forget(id, !deleted);
        if deleted || remembered {
            Ok(())
        } else {
            Err(unknown_job(id))
        }
    }

    /// Retries every dead job (of one service, or all), the cluster's queue's
    /// included; returns how many. Each job dead when reached runs once more: one
    /// that dies again meanwhile is not retried twice, and one that someone else
    /// retried first is left to that run.
    ///
    /// The walk runs on a task of its own: it goes to its end even when the
    /// caller stops waiting (an HTTP client that hung up stopped it part-way, 2,049
    /// of 20,000 retried and the rest left dead; found by a probe).
    pub async fn retry_all_dead(&self, service: Option<&str>) -> Result<usize> {
        let (jobs, service) = (self.clone(), service.map(str::to_owned));
        tokio::spawn(async move { jobs.walk_dead(service.as_deref()).await })
            .await
            .map_err(|e| {
                crate::error::Error::new(
                    ErrorKind::StoreUnavailable,
                    format!("retrying the dead jobs stopped: {e}"),
                )
            })?
    }

    async fn walk_dead(&self, service: Option<&str>) -> Result<usize> {
        let mut n = 0;
        // Walked once, by cursor (a job's id): the jobs retried here may be dead
        // again, behind the cursor, before the next page is read.
        let mut cursor = None;
        loop {
            let page = self.store().list(dead(service, cursor.take())).await?;
            let ids = page.jobs.into_iter().map(|j| j.id).collect();
            n += self
                .store()
                .retry_each(ids, RetryFrom::Dead, self.now())
                .await?;
            self.host.inner.jobs.wake();
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        // The cluster's view follows its records a moment behind: walked once, by
        // cursor, and a job retried meanwhile by someone else is passed over.
        let Some(t) = self.transport() else {
            return Ok(n);
        };
        let mut retried = HashSet::new();
        let mut cursor = None;
        let mut partial = false;
        while let Some(page) = t.jobs(&dead(service, cursor.take())).await {
            partial |= page.partial;
            for job in page.jobs {
                n += retry_dead(t, job.id, &mut retried).await?;
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        // The view holds only some of the cluster's records: the others are read
        // from the records themselves (each job retried once by this call, though
        // one retried above may have died again since).
        if partial {
            for id in t.dead_jobs(service).await? {
                n += retry_dead(t, id, &mut retried).await?;
            }
        }
        Ok(n)
    }

    fn transport(&self) -> Option<&dyn crate::transport::Transport> {
        self.host.inner.transport.as_deref()
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.host.inner.config.clock.now()
    }
}

/// Retries dead job `id` of the cluster's queue unless this call retried it
/// already: 1 when retried, 0 when it was not (another caller's retry was first,
/// or it is gone).
async fn retry_dead(
    t: &dyn crate::transport::Transport,
    id: String,
    retried: &mut HashSet<String>,
) -> Result<usize> {
    if retried.contains(&id) {
        return Ok(0);
    }
    let n = match t.retry_job(&id, RetryFrom::Dead).await {
        Ok(Some(_)) => 1,
        Ok(None) => 0,
        Err(e) if e.kind() == ErrorKind::JobState => 0,
        Err(e) => return Err(e),
    };
    retried.insert(id);
    Ok(n)
}

/// The query of one page of dead jobs (of one service, or all), after `cursor`.
fn dead(service: Option<&str>, cursor: Option<String>) -> JobQuery {
    JobQuery {
        state: Some(JobState::Dead),
        service: service.map(str::to_owned),
        limit: Some(500),
        cursor,
        ..JobQuery::default()
    }
}
