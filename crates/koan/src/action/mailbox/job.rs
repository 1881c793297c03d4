//! One accepted action on its way to its run, and its answer when it never runs.

use tokio::time::Instant;

use crate::action::table::ActionEntry;
use crate::clock::Moment;
use crate::error::{Error, ErrorKind};
use crate::registry::ServiceCell;

/// One accepted action, waiting for a worker.
pub(crate) struct Job {
    /// Its action, by its place in its service's table ([`Job::entry`]): a job takes
    /// no count on the action's entry, a line every core calling it would write (B3:
    /// with the count, the caller's clone and the worker's drop passed that line
    /// between the cores on every call).
    pub(crate) action: usize,
    /// In place when small (see `payload::inline`).
    pub(crate) params: crate::payload::Params,
    pub(crate) priority: i32,
    /// On tokio's clock, which tests pause; set from the call's `timeout`.
    pub(crate) deadline: Option<Instant>,
    /// The call's timeout, which its timeout error names.
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) correlation: crate::action::correlation::Correlation,
    /// Set when this is the run of a stored job; boxed, to keep a job within 128
    /// bytes with its parameters in place.
    pub(crate) job: Option<Box<crate::action::context::JobMeta>>,
    /// The caller's token that stops the run (`ActionRequest::cancel_on`).
    pub(crate) cancel_on: Option<tokio_util::sync::CancellationToken>,
    pub(crate) reply: Option<crate::action::reply::ReplyTx>,
    /// For its queue time (see [`Moment`]).
    pub(crate) enqueued_at: Moment,
    /// Set once the job's outcome went out; a job dropped without one (its worker
    /// aborted at the end of the grace period) is recorded as `ShuttingDown`.
    pub(crate) answered: bool,
    /// Set when a mailbox worker runs it, which counts it on a line of its own
    /// rather than beside the slots' word (see `Slots`).
    pub(crate) by_worker: bool,
    /// Set when its answer goes to a ticket (`ActionRequest::spawn`), which its holder
    /// may drop: the work runs all the same, where a call whose caller stopped
    /// waiting for it is not run.
    pub(crate) detached: bool,
}

impl Job {
    /// Its action, declared by `cell`, its service.
    pub(crate) fn entry<'c>(&self, cell: &'c ServiceCell) -> &'c ActionEntry {
        &cell.spec.actions.entries[self.action]
    }

    /// The answer when its deadline passes, queued or running.
    pub(crate) fn timeout_error(&self, cell: &ServiceCell) -> Error {
        let limit = self
            .timeout
            .map(crate::util::fmt_duration)
            .unwrap_or_default();
        // A stored job's counts from its run's start (see `Run::start`).
        let from = if self.job.is_some() {
            "counted from its start"
        } else {
            "queue time included"
        };
        Error::new(
            ErrorKind::Timeout,
            format!(
                "action `{}` of `{}` did not finish within its timeout of {limit} ({from})",
                self.entry(cell).name,
                cell.spec.name
            ),
        )
    }

    /// Answers `ShuttingDown`, naming its action (`name`), when it was dropped
    /// before its outcome went out: its run's task was aborted at the end of the
    /// grace, or its mailbox went away with it.
    #[inline]
    pub(crate) fn abandon(&mut self, name: Option<&str>) {
        if !self.answered {
            self.answer_abandoned(name);
        }
    }

    /// [`abandon`](Self::abandon), naming its action as declared by `cell`, its
    /// service.
    #[inline]
    pub(crate) fn abandon_in(&mut self, cell: &ServiceCell) {
        if !self.answered {
            self.answer_abandoned(Some(&self.entry(cell).name));
        }
    }

    #[cold]
    fn answer_abandoned(&mut self, name: Option<&str>) {
        self.answered = true;
        let action = match name {
            Some(name) => format!("action `{name}`"),
            None => "an action".to_owned(),
        };
        let what = match &self.job {
            Some(j) => format!("{action} of job {}", j.info.id),
            None => action,
        };
        // Its caller learns why, instead of finding the answer channel closed.
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(Error::shutting_down(&what)));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // Whoever held it with its service answered already (see `abandon`); a job
        // dropped anywhere else still answers, without its action's name.
        self.abandon(None);
    }
}
