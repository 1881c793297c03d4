//! What a job is: its record, its states, and the queries over them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::action::ErrorBody;

/// Where a job is. `scheduled → queued → running → succeeded | retrying → dead |
/// cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for its time (`.delay()` / `.at()`).
    Scheduled,
    /// Due, waiting for a worker.
    Queued,
    /// Claimed by a worker that runs it now.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Failed; runs again at its `run_at`.
    Retrying,
    /// Failed for good (no attempts left, or an error that retrying cannot mend).
    Dead,
    /// Cancelled by an operator before it finished.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Retrying,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The lowercase name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Retrying => "retrying",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The inverse of [`JobState::as_str`].
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job is over (nothing will run it again unless retried by hand).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }

    /// Whether a worker may claim a job in this state once it is due.
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            JobState::Scheduled | JobState::Queued | JobState::Retrying
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action of a job, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobStep {
    /// The action's name.
    pub action: String,
    /// Its parameters, as JSON.
    pub params: Value,
    /// Its deadline from the moment a worker starts it, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// One try at running a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct JobAttempt {
    /// 1 for the first run.
    pub attempt: u32,
    /// When a worker claimed it.
    #[serde(serialize_with = "super::utc_time::serialize")]
    pub started_at: DateTime<Utc>,
    /// When it ended (absent while running, or when its worker died).
    #[serde(default, serialize_with = "super::utc_time::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The host that ran it.
    pub instance: String,
    /// How it ended, when it failed.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// Everything known about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct JobRecord {
    /// The job's id (UUID v7: time-ordered, not guessable from another id).
    pub id: String,
    /// The service that runs it.
    pub service: String,
    /// The action (for a chain, the first one; see `then`).
    pub action: String,
    /// The action's parameters.
    pub params: Value,
    /// The first action's deadline once started, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The actions that follow, for a chain (`.action(a).action(b).enqueue()`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<JobStep>,
    /// Where it is.
    pub state: JobState,
    /// Higher runs first among due jobs of a service.
    pub priority: i32,
    /// The correlation id its actions run under.
    pub correlation_id: String,
    /// The caller's idempotency key, when given.
    pub idempotency_key: Option<String>,
    /// When it was accepted.
    #[serde(serialize_with = "super::utc_time::serialize")]
    pub created_at: DateTime<Utc>,
    /// Not run before this time (the delay, or the next retry).
    #[serde(serialize_with = "super::utc_time::serialize")]
    pub run_at: DateTime<Utc>,
    /// When it ended, once final.
    #[serde(serialize_with = "super::utc_time::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// How many times a worker started it.
    pub attempts: u32,
    /// How many runs it may have in all.
    pub max_attempts: u32,
    /// Every attempt, oldest first.
    pub history: Vec<JobAttempt>,
    /// The result, once succeeded (a JSON string of its start when cut).
    pub result: Option<Value>,
    /// Whether `result` was cut to the store's cap.
    pub result_truncated: bool,
    /// The last error.
    pub error: Option<ErrorBody>,
    /// The host holding the claim, while running.
    pub instance: Option<String>,
    /// Until when that claim holds, unless renewed.
    #[serde(serialize_with = "super::utc_time::option")]
    pub lease_until: Option<DateTime<Utc>>,
}

impl JobRecord {
    /// The steps of the job, first one included.
    pub fn steps(&self) -> Vec<JobStep> {
        let mut steps = Vec::with_capacity(1 + self.then.len());
        steps.push(JobStep {
            action: self.action.clone(),
            params: self.params.clone(),
            timeout_ms: self.timeout_ms,
        });
        steps.extend(self.then.iter().cloned());
        steps
    }

    /// Bytes the record counts for in the store's size retention.
    pub fn weight(&self) -> usize {
        let json = |v: &Value| serde_json::to_vec(v).map_or(0, |b| b.len());
        json(&self.params)
            + self.then.iter().map(|s| json(&s.params)).sum::<usize>()
            + self.result.as_ref().map_or(0, json)
            + self.error.as_ref().map_or(0, |e| e.message.len())
            + self
                .history
                .iter()
                .map(|a| 96 + a.error.as_ref().map_or(0, |e| e.message.len()))
                .sum::<usize>()
            + 256
    }
}

/// A job to store, as `enqueue()` builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// A fresh id ([`crate::job::new_job_id`]).
    pub id: String,
    /// The service.
    pub service: String,
    /// The steps, at least one.
    pub steps: Vec<JobStep>,
    /// Priority among due jobs.
    pub priority: i32,
    /// The correlation id.
    pub correlation_id: String,
    /// The idempotency key: a second job with the same key is not stored.
    pub idempotency_key: Option<String>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// Not run before this (later than `created_at` for a delayed job).
    pub run_at: DateTime<Utc>,
    /// How many runs it may have in all.
    pub max_attempts: u32,
}

impl NewJob {
    /// The record of the job as stored, before any run.
    pub fn into_record(self) -> JobRecord {
        let mut steps = self.steps.into_iter();
        let first = steps.next().unwrap_or(JobStep {
            action: String::new(),
            params: Value::Null,
            timeout_ms: None,
        });
        let state = if self.run_at > self.created_at {
            JobState::Scheduled
        } else {
            JobState::Queued
        };
        JobRecord {
            id: self.id,
            service: self.service,
            action: first.action,
            params: first.params,
            timeout_ms: first.timeout_ms,
            then: steps.collect(),
            state,
            priority: self.priority,
            correlation_id: self.correlation_id,
            idempotency_key: self.idempotency_key,
            created_at: self.created_at,
            run_at: self.run_at,
            finished_at: None,
            attempts: 0,
            max_attempts: self.max_attempts.max(1),
            history: Vec::new(),
            result: None,
            result_truncated: false,
            error: None,
            instance: None,
            lease_until: None,
        }
    }
}

/// Which jobs to list. Newest first; `cursor` is the last id of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this service.
    pub service: Option<String>,
    /// Only jobs of this action.
    pub action: Option<String>,
    /// Only jobs that run under this correlation id (to find the job behind an
    /// event; stores may scan for it).
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<usize>,
    /// Jobs older than this id (the `next_cursor` of the previous page).
    pub cursor: Option<String>,
}

impl JobQuery {
    /// The page size asked for, within bounds.
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 500)
    }

    /// Whether `r` passes the filters (not the cursor).
    pub fn matches(&self, r: &JobRecord) -> bool {
        self.state.is_none_or(|s| r.state == s)
            && self.service.as_deref().is_none_or(|s| r.service == s)
            && self.action.as_deref().is_none_or(|a| r.action == a)
            && self
                .correlation_id
                .as_deref()
                .is_none_or(|c| r.correlation_id == c)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<JobRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Set when part of the page comes from a view that is not current: the
    /// cluster's broker is unreachable (the last known state), or this host's view
    /// of the cluster's jobs has not yet read them all (its first listing after a
    /// while without one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// Set when the listing covers only part of the jobs kept: this host holds at
    /// most so many of the cluster's job records in memory (the most recently
    /// written, failures and unfinished jobs before successes), and some kept in
    /// the cluster were left out. A job left out is still read by its id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// How many jobs are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobCounts {
    /// `(state, count)` for every state, in [`JobState::ALL`] order.
    pub by_state: Vec<(JobState, u64)>,
    /// Set when the counts cover only part of the jobs kept (see
    /// [`JobPage::partial`]).
    pub partial: bool,
    /// Set when the counts come from a view that is not current (see
    /// [`JobPage::stale`]): the last known, which may be none at all.
    pub stale: bool,
}

impl JobCounts {
    /// Counts from `(state, count)` pairs (a store's answer to `JobStore::counts`).
    pub fn new(by_state: Vec<(JobState, u64)>) -> Self {
        JobCounts {
            by_state,
            partial: false,
            stale: false,
        }
    }

    /// These counts, marked as covering only part of the jobs kept.
    #[must_use]
    pub fn partial(mut self, partial: bool) -> Self {
        self.partial = partial;
        self
    }

    /// These counts, marked as coming from a view that is not current.
    #[must_use]
    pub fn stale(mut self, stale: bool) -> Self {
        self.stale = stale;
        self
    }

    /// The count of one state.
    pub fn get(&self, state: JobState) -> u64 {
        self.by_state
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }
}

/// What a handler knows of the job it runs ([`crate::ActionContext::job`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobInfo {
    /// The job's id.
    pub id: String,
    /// 1 on the first run, 2 on the run after a failure or a lapsed claim, ….
    pub attempt: u32,
    /// The caller's idempotency key, when given.
    pub idempotency_key: Option<String>,
}

impl JobInfo {
    /// The run `attempt` (from 1) of job `id`, without an idempotency key: what a
    /// transport that delivers durable jobs tells the handler
    /// ([`crate::action::ActionRequest::as_job`]).
    pub fn new(id: impl Into<String>, attempt: u32) -> Self {
        JobInfo {
            id: id.into(),
            attempt,
            idempotency_key: None,
        }
    }
}

/// How a failed job is retried: `max_attempts` runs in all, waiting
/// `backoff · 2^(n-1)` (± jitter, at most `max_backoff`) before run `n + 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Runs in all, the first included (1 = never retried).
    pub max_attempts: u32,
    /// The wait before the second run.
    pub backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// Random spread, as a fraction of the wait (0.0 – 1.0).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed run number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self
            .backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let spread = base.as_secs_f64() * jitter * (fastrand::f64() * 2.0 - 1.0);
        let secs = (base.as_secs_f64() + spread).max(0.0);
        Duration::try_from_secs_f64(secs).unwrap_or(base)
    }
}
