//! How an operation fails: the store could not do it, or the job does not allow it.

use std::fmt::Display;

use koan::{Error, error::ErrorKind, job::JobState};

/// A failed operation, before it is worded for the caller (who knows the store's
/// name: `sqlite:<path>`).
#[derive(Debug)]
pub(crate) enum Failure {
    /// SQLite (or the record's JSON) failed: the operation wrote nothing.
    Store {
        /// What was being done: "store job `…`".
        doing: String,
        /// Why it failed.
        cause: String,
    },
    /// The job is missing or in the wrong state.
    Job(Error),
}

impl Failure {
    /// SQLite failed while `doing` something.
    pub(crate) fn store(doing: impl Into<String>, cause: impl Display) -> Failure {
        Failure::Store {
            doing: doing.into(),
            cause: cause.to_string(),
        }
    }

    /// The error to hand back, for the store named `label`.
    pub(crate) fn into_error(self, label: &str) -> Error {
        match self {
            Failure::Store { doing, cause } => Error::new(
                ErrorKind::StoreUnavailable,
                format!("job store {label} could not {doing}: {cause}"),
            ),
            Failure::Job(e) => e,
        }
    }
}

/// Words a SQLite (or JSON) error as what was being done.
pub(crate) trait ResultExt<T> {
    /// `Failure::Store` saying the operation could not `doing`.
    fn doing(self, doing: &str) -> Result<T, Failure>;
}

impl<T, E: Display> ResultExt<T> for Result<T, E> {
    fn doing(self, doing: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::store(doing, e))
    }
}

/// No job with `id` (worded by koan, as every store words it).
pub(crate) fn unknown_job(id: &str) -> Failure {
    Failure::Job(koan::job::unknown_job(id))
}

/// The job is in a state that does not allow `what` (worded by koan).
pub(crate) fn wrong_state(id: &str, state: JobState, what: &str, allowed: &str) -> Failure {
    Failure::Job(koan::job::wrong_state(id, state, what, allowed))
}
