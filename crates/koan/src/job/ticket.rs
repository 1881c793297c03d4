//! The answer to `enqueue()`: a stored job's id, and its outcome when awaited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::record::{JobRecord, JobState};
use crate::action::ActionOutput;
use crate::error::{Error, ErrorKind, Result};
use crate::host::HostHandle;
use crate::payload::Payload;

/// Callers waiting for jobs this host runs, by job id.
#[derive(Default)]
pub(crate) struct Waiters {
    by_id: Mutex<HashMap<String, Vec<oneshot::Sender<Result<Payload>>>>>,
}

impl Waiters {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<Result<Payload>>>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(&self, id: &str) -> oneshot::Receiver<Result<Payload>> {
        let (tx, rx) = oneshot::channel();
        let mut map = self.lock();
        let list = map.entry(id.to_owned()).or_default();
        list.retain(|t| !t.is_closed());
        list.push(tx);
        rx
    }

    /// Drops the waiters of `id` that stopped waiting, and its entry once none is
    /// left: a waiter that found its job already ended left its entry for good
    /// (65–95 bytes a job, for ever; found by a probe).
    fn forget_gone(&self, id: &str) {
        let mut map = self.lock();
        if let Some(list) = map.get_mut(id) {
            list.retain(|t| !t.is_closed());
            if list.is_empty() {
                map.remove(id);
            }
        }
    }

    /// Answers everyone waiting for job `id` (its outcome is final).
    pub(crate) fn answer(&self, id: &str, outcome: &Result<Payload>) {
        let Some(list) = self.lock().remove(id) else {
            return;
        };
        for tx in list {
            let copy = match outcome {
                Ok(p) => p.to_json().map(Payload::Json),
                Err(e) => Err(e.clone()),
            };
            let _ = tx.send(copy);
        }
    }
}

enum Wait {
    /// Watch the host's store (and its runner's answers).
    Store(HostHandle),
    /// A job in another transport's queue: its outcome comes on this channel.
    Channel(oneshot::Receiver<Result<Payload>>),
}

/// An accepted job: stored before this was returned.
pub struct JobTicket {
    id: Arc<str>,
    correlation_id: Arc<str>,
    created: bool,
    wait: Wait,
}

impl std::fmt::Debug for JobTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobTicket")
            .field("id", &self.id)
            .field("correlation_id", &self.correlation_id)
            .field("created", &self.created)
            .finish()
    }
}

impl JobTicket {
    pub(crate) fn stored(host: HostHandle, record: &JobRecord, created: bool) -> Self {
        JobTicket {
            id: Arc::from(record.id.as_str()),
            correlation_id: Arc::from(record.correlation_id.as_str()),
            created,
            wait: Wait::Store(host),
        }
    }

    pub(crate) fn remote(
        id: Arc<str>,
        correlation_id: Arc<str>,
        created: bool,
        rx: oneshot::Receiver<Result<Payload>>,
    ) -> Self {
        JobTicket {
            id,
            correlation_id,
            created,
            wait: Wait::Channel(rx),
        }
    }

    /// The job's id: `host.jobs().get(id)`, `GET /api/jobs/{id}`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The correlation id its actions run under.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// `false` when the idempotency key matched a job stored before: this ticket is
    /// that job's, and nothing new will run.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Waits until the job is final: its result when it succeeded, its last error
    /// when it is dead or cancelled. Retries happen before this returns.
    pub async fn outcome(self) -> Result<ActionOutput> {
        let correlation = Arc::clone(&self.correlation_id);
        let payload = match self.wait {
            Wait::Channel(rx) => rx
                .await
                .map_err(|_| Error::shutting_down(&format!("job {}", self.id)))??,
            Wait::Store(host) => wait_in_store(&host, &self.id).await?,
        };
        Ok(ActionOutput::new(
            payload,
            crate::action::Correlation::Given(correlation),
        ))
    }
}

/// The outcome of a final record, or `None` while it is not final.
pub(crate) fn outcome_of(record: &JobRecord) -> Option<Result<Payload>> {
    match record.state {
        JobState::Succeeded => Some(Ok(Payload::Json(
            record.result.clone().unwrap_or(serde_json::Value::Null),
        ))),
        JobState::Dead => Some(Err(match &record.error {
            Some(e) => Error::new(
                ErrorKind::parse(&e.error).unwrap_or(ErrorKind::Handler),
                e.message.clone(),
            ),
            None => Error::new(ErrorKind::Handler, format!("job `{}` is dead", record.id)),
        })),
        JobState::Cancelled => Some(Err(super::cancelled(&record.id))),
        _ => None,
    }
}

async fn wait_in_store(host: &HostHandle, id: &str) -> Result<Payload> {
    let inner = &host.inner;
    /// Forgets this wait's registration however it ends (found, timed out, or
    /// the caller gone); dropped after the receiver, declared after it.
    struct Registered<'a>(&'a Waiters, &'a str);
    impl Drop for Registered<'_> {
        fn drop(&mut self) {
            self.0.forget_gone(self.1);
        }
    }
    loop {
        let _registered = Registered(&inner.jobs.waiters, id);
        // Registered before the look-up, so an outcome between the two is not missed.
        let rx = inner.jobs.waiters.register(id);
        let record = inner
            .jobs
            .store
            .get(id)
            .await?
            .ok_or_else(|| super::transition::unknown_job(id))?;
        if let Some(outcome) = outcome_of(&record) {
            return outcome;
        }
        // Another host may run it: look again now and then.
        if let Ok(Ok(outcome)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
            return outcome;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_gone_leaves_no_entry() {
        let w = Waiters::default();
        let gone = w.register("a");
        let kept = w.register("b");
        drop(gone);
        w.forget_gone("a");
        w.forget_gone("b");
        assert!(!w.lock().contains_key("a"));
        assert_eq!(w.lock().get("b").map(Vec::len), Some(1));
        drop(kept);
    }
}
