//! Outcomes of enqueued actions, kept for querying by id (bounded: the oldest finished
//! records are forgotten first).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

/// Where an enqueued action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionState {
    /// Accepted, waiting in the mailbox.
    Queued,
    /// A worker is running it.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error.
    Failed,
}

/// An error as it appears in JSON: `{ "error": kind, "message": … }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The [`ErrorKind`](crate::ErrorKind) as snake_case.
    pub error: String,
    /// The message.
    pub message: String,
}

impl From<&Error> for ErrorBody {
    fn from(e: &Error) -> Self {
        ErrorBody {
            error: e.kind().as_str().to_owned(),
            message: e.to_string(),
        }
    }
}

/// What the host knows about one enqueued action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The id `enqueue()` returned.
    pub id: String,
    /// The service.
    pub service: String,
    /// The action (for a chain, the actions joined by `,`).
    pub action: String,
    /// The correlation id.
    pub correlation_id: String,
    /// Where it is.
    pub state: ActionState,
    /// When it was accepted.
    pub accepted_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The result, once succeeded.
    pub result: Option<Value>,
    /// The error, once failed.
    pub error: Option<ErrorBody>,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, ActionRecord>,
    finished: VecDeque<String>,
}

pub(crate) struct Ledger {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Ledger {
    pub(crate) fn new(capacity: usize) -> Self {
        Ledger {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, record: ActionRecord) {
        self.lock().records.insert(record.id.clone(), record);
    }

    pub(crate) fn running(&self, id: &str) {
        if let Some(r) = self.lock().records.get_mut(id) {
            r.state = ActionState::Running;
        }
    }

    pub(crate) fn finish(&self, id: &str, at: DateTime<Utc>, outcome: Result<Value, &Error>) {
        let mut inner = self.lock();
        if let Some(r) = inner.records.get_mut(id) {
            // The first outcome stands: a ticket answered `Timeout` at its deadline
            // stays so when the worker reaches the job later.
            if r.finished_at.is_some() {
                return;
            }
            r.finished_at = Some(at);
            match outcome {
                Ok(v) => {
                    r.state = ActionState::Succeeded;
                    r.result = Some(v);
                }
                Err(e) => {
                    r.state = ActionState::Failed;
                    r.error = Some(ErrorBody::from(e));
                }
            }
            inner.finished.push_back(id.to_owned());
            while inner.finished.len() > self.capacity {
                if let Some(old) = inner.finished.pop_front() {
                    inner.records.remove(&old);
                }
            }
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<ActionRecord> {
        self.lock().records.get(id).cloned()
    }
}
