//! The seam between the runtime and where jobs are kept.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::record::{JobCounts, JobPage, JobQuery, JobRecord, NewJob};
use super::transition::RetryFrom;
use crate::action::ErrorBody;
use crate::error::Result;
use crate::util::BoxFuture;

/// The answer to [`JobStore::push`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    /// The stored job: the new one, or the first one with the same idempotency key.
    pub record: JobRecord,
    /// `false` when a job with the same idempotency key was already stored (nothing new
    /// will run).
    pub created: bool,
}

/// What a worker asks the store for.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    /// Jobs of this service.
    pub service: String,
    /// At most this many.
    pub limit: usize,
    /// Due at this time: waiting jobs with `run_at <= now`, and running jobs whose
    /// lease ended before it.
    pub now: DateTime<Utc>,
    /// The claim holds until then unless renewed.
    pub lease_until: DateTime<Utc>,
    /// The claiming host, recorded on the attempt.
    pub instance: String,
}

/// The proof of a claim: only its holder may renew it or record an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The job.
    pub id: String,
    /// A token the store made for this claim (fencing: a stale holder's writes fail).
    pub token: String,
}

/// A job a worker now holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The claim to renew and finish with.
    pub claim: Claim,
    /// The job, with its attempt count already raised for this run.
    pub record: JobRecord,
}

/// How a claimed job ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// It succeeded: the result (already cut to the store's cap by the runner).
    Succeeded {
        /// The result.
        result: Value,
        /// Whether it was cut.
        truncated: bool,
    },
    /// It failed and runs again at `at`.
    Retry {
        /// Why it failed.
        error: ErrorBody,
        /// When to run it again.
        at: DateTime<Utc>,
    },
    /// It failed for good.
    Dead {
        /// Why.
        error: ErrorBody,
    },
    /// It did not really run (the host stopped, the service was busy): back to
    /// `queued` at `at`, and this attempt does not count.
    Release {
        /// When it may run.
        at: DateTime<Utc>,
    },
    /// Its run was cut short by its host's shutdown: back to `queued` at `at`, and
    /// this attempt does not count; its history keeps it, ended, saying so (a
    /// deploy's SIGTERM left no trace of the run it stopped).
    Stopped {
        /// When it may run.
        at: DateTime<Utc>,
    },
}

/// Where jobs are kept: the embedded SQLite file (`koan-sqlite`), JetStream
/// (`koan-nats`), or memory ([`crate::job::MemoryJobStore`], for tests and for hosts that
/// opt out of durability).
///
/// Every write is committed before its future resolves: the runtime answers
/// `enqueue()` only after `push` returns. Writes that hold a [`Claim`] succeed only
/// while the claim is the job's current one (a claim that lapsed and was taken by
/// another worker, or a job cancelled meanwhile, answers `false`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a job store",
    label = "implement `koan::job::JobStore` for it, or use `koan::job::MemoryJobStore`"
)]
pub trait JobStore: Send + Sync + 'static {
    /// Whether jobs survive the process (the host warns at start when they do not,
    /// and drains queued jobs within the shutdown grace).
    fn is_durable(&self) -> bool;

    /// A short name for logs and `/health`: `sqlite:/var/lib/app/jobs.db`, `memory`.
    fn describe(&self) -> String;

    /// Stores a new job, or returns the stored one with the same idempotency key.
    /// Errors with `StoreUnavailable` when nothing could be written (and then nothing
    /// was).
    fn push(&self, job: NewJob) -> BoxFuture<'_, Result<Pushed>>;

    /// Claims up to `limit` due jobs of a service, highest priority first, then
    /// oldest `run_at`: raises their attempt count, records the attempt, and sets them
    /// `running` under a new claim token (with [`apply_claim`](super::apply_claim)).
    /// A job whose lease lapsed after its last attempt is set dead instead, and
    /// returned so (`record.state`), unclaimed, for the runner to report.
    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Vec<Claimed>>>;

    /// Extends a claim to `lease_until`. `false`: the claim is no longer held (the
    /// run must stop, and its outcome will not be recorded).
    fn heartbeat(&self, claim: &Claim, lease_until: DateTime<Utc>) -> BoxFuture<'_, Result<bool>>;

    /// Records how a claimed job ended, at `now`. `false`: the claim is no longer
    /// held, and nothing was written.
    fn finish(&self, claim: &Claim, how: Finish, now: DateTime<Utc>)
    -> BoxFuture<'_, Result<bool>>;

    /// One job.
    fn get(&self, id: &str) -> BoxFuture<'_, Result<Option<JobRecord>>>;

    /// A page of jobs, newest first.
    fn list(&self, query: JobQuery) -> BoxFuture<'_, Result<JobPage>>;

    /// Counts by state (all services, or one).
    fn counts(&self, service: Option<&str>) -> BoxFuture<'_, Result<JobCounts>>;

    /// The earliest `run_at` (or lease end, for running jobs) among jobs of these
    /// services that are not final: when a worker should look again.
    fn next_due(&self, services: &[String]) -> BoxFuture<'_, Result<Option<DateTime<Utc>>>>;

    /// Each service that has a job not final, with the earliest `run_at` of its
    /// waiting jobs or lease end of its running ones (its [`next_due`](Self::next_due)),
    /// in no particular order. A worker's pass asks this once, then claims only for the
    /// services whose time has come, instead of asking [`claim`](Self::claim) of every
    /// service it serves: a host of 10,000 services with no jobs does no work a pass.
    /// The cost should follow the services with live jobs, not the jobs or all
    /// services. `None` (the default): the store cannot tell cheaply, and the worker
    /// asks every service, as before.
    fn live_services(&self) -> BoxFuture<'_, Result<Option<LiveServices>>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Runs a job again by hand: a job in a state `from` allows (a `dead`,
    /// `cancelled`, `retrying` or `succeeded` one, or only a `dead` one) becomes
    /// `queued` now, with its attempt count kept and its limit raised by one run.
    /// `JobState` error for a job in another state, checked in the same step as
    /// the change ([`RetryFrom::check`]).
    fn retry(
        &self,
        id: &str,
        from: RetryFrom,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<JobRecord>>;

    /// Runs each of `ids` again by hand, as [`retry`](Self::retry) does one:
    /// how many were; one gone or in a state `from` does not allow is passed
    /// over. A store that writes to disk does them in one step (the SQLite
    /// store: one transaction), where a step each took 54 s for 20,000 dead jobs,
    /// past the 30 s `koanctl` waits (found by a probe); the default is one
    /// `retry` each.
    fn retry_each(
        &self,
        ids: Vec<String>,
        from: RetryFrom,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<usize>> {
        Box::pin(async move {
            let mut n = 0;
            for id in &ids {
                match self.retry(id, from, now).await {
                    Ok(_) => n += 1,
                    Err(e) if passed_over(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(n)
        })
    }

    /// Cancels a job that is not final: it will not run again, and a running one
    /// loses its claim (its worker cancels the run). `JobState` error for a final job.
    fn cancel(&self, id: &str, now: DateTime<Utc>) -> BoxFuture<'_, Result<JobRecord>>;

    /// Forgets a job that is not running. `true` when it existed.
    fn delete(&self, id: &str) -> BoxFuture<'_, Result<bool>>;

    /// Forgets final jobs that ended before `older_than`, then the oldest final jobs
    /// until the final jobs' total weight ([`JobRecord::weight`]) is at most
    /// `max_bytes`. Live jobs are never forgotten, and do not count toward
    /// `max_bytes`. Returns how many were forgotten. An idempotency key is free
    /// again once its job is forgotten.
    fn purge(&self, older_than: DateTime<Utc>, max_bytes: u64) -> BoxFuture<'_, Result<u64>>;
}

/// What [`JobStore::live_services`] answers: each service with a live job, and the
/// time its first one falls due.
pub type LiveServices = Vec<(String, DateTime<Utc>)>;

/// `result` as stored: itself when its JSON fits in `cap` bytes; otherwise a JSON
/// string of its first `cap` bytes (cut on a character boundary) and `true`.
pub fn cut_result(result: Value, cap: usize) -> (Value, bool) {
    let Ok(text) = serde_json::to_string(&result) else {
        return (Value::Null, true);
    };
    if text.len() <= cap {
        return (result, false);
    }
    let mut end = cap;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    (Value::String(text[..end].to_owned()), true)
}

/// A lease of `lease` from `now`, at the calendar's end at most (a lease of
/// millions of years, set in code, must not panic the runner at its claim).
pub(crate) fn lease_from(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether a retry's error means only that the job was not one to retry (gone,
/// or in another state by now): [`JobStore::retry_each`] passes it over.
pub fn passed_over(e: &crate::error::Error) -> bool {
    matches!(
        e.kind(),
        crate::error::ErrorKind::JobState | crate::error::ErrorKind::UnknownJob
    )
}
