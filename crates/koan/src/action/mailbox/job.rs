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
    pub(crate) timeout: Option<Limit>,
    pub(crate) correlation: crate::action::correlation::Correlation,
    /// Set when this is the run of a stored job; boxed, to keep a job within 128
    /// bytes with its parameters in place.
    pub(crate) job: Option<Box<crate::action::context::JobMeta>>,
    /// The caller's token that stops the run (`ActionRequest::cancel_on`).
    pub(crate) cancel_on: Option<tokio_util::sync::CancellationToken>,
    pub(crate) reply: Option<crate::action::reply::ReplyTx>,
    /// Shared with its caller's deadline, for a queued call that has one (see
    /// [`Claim`](super::Claim)).
    pub(crate) claim: Option<std::sync::Arc<super::Claim>>,
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

/// A call's timeout in whole nanoseconds (a longer one, past 584 years, is cut to
/// that): 8 bytes where an `Option<Duration>` takes 16, which keeps a [`Job`]
/// within 128 bytes beside its [`Claim`](super::Claim). Never zero: a zero timeout
/// is refused before a job is made (see `Steps::check_timeouts`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limit(std::num::NonZeroU64);

impl Limit {
    pub(crate) fn new(timeout: Option<std::time::Duration>) -> Option<Limit> {
        let nanos = u64::try_from(timeout?.as_nanos()).unwrap_or(u64::MAX);
        std::num::NonZeroU64::new(nanos).map(Limit)
    }

    pub(crate) fn get(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.get())
    }
}

impl Job {
    /// Its action, declared by `cell`, its service.
    pub(crate) fn entry<'c>(&self, cell: &'c ServiceCell) -> &'c ActionEntry {
        &cell.spec.actions.entries[self.action]
    }

    /// The answer when its deadline passes while it runs (or, for its caller, once
    /// a worker took it).
    pub(crate) fn timeout_error(&self, cell: &ServiceCell) -> Error {
        // A stored job's counts from its run's start (see `Run::start`).
        let from = if self.job.is_some() {
            "counted from its start"
        } else {
            "queue time included"
        };
        Error::new(
            ErrorKind::Timeout,
            format!(
                "action `{}` of `{}` did not finish within its timeout of {} ({from})",
                self.entry(cell).name,
                cell.spec.name,
                self.limit()
            ),
        )
    }

    /// The answer when its deadline passed before any worker took it: it was not
    /// run, and will not be.
    pub(crate) fn not_started_error(&self, cell: &ServiceCell) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "action `{}` of `{}` did not start within its timeout of {} (no worker of the service took it in time): it was not run and will not be, and calling again is safe",
                self.entry(cell).name,
                cell.spec.name,
                self.limit()
            ),
        )
        .never_started()
    }

    fn limit(&self) -> String {
        self.timeout
            .map(|t| crate::util::fmt_duration(t.get()))
            .unwrap_or_default()
    }

    /// Answers `ShuttingDown`, naming its action (`name`), when it was dropped
    /// before its outcome went out: its run's task was aborted at the end of the
    /// grace, or its mailbox went away with it.
    #[inline]
    pub(crate) fn abandon(&mut self, name: Option<&str>) {
        if !self.answered {
            self.answer_abandoned(name.map(|n| (n, None)), false);
        }
    }

    /// [`abandon`](Self::abandon) for a job whose handler ran (its run dropped at
    /// the end of the grace), naming its action as declared by `cell`, its
    /// service.
    #[inline]
    pub(crate) fn abandon_in(&mut self, cell: &ServiceCell) {
        if !self.answered {
            let name = (&*self.entry(cell).name, Some(&*cell.spec.name));
            self.answer_abandoned(Some(name), true);
        }
    }

    #[cold]
    fn answer_abandoned(&mut self, name: Option<(&str, Option<&str>)>, ran: bool) {
        self.answered = true;
        let action = match name {
            Some((name, Some(service))) => format!("action `{name}` of `{service}`"),
            Some((name, None)) => format!("action `{name}`"),
            None => "an action".to_owned(),
        };
        let what = match &self.job {
            Some(j) => format!("{action} of job {}", j.info.id),
            None => action,
        };
        // Its caller learns why, instead of finding the answer channel closed.
        if let Some(reply) = self.reply.take() {
            let e = if ran {
                Error::stopped_while_running(&what)
            } else {
                Error::shutting_down(&what)
            };
            let _ = reply.send(Err(e));
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
