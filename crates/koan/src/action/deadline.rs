//! A queued action's deadline counts queue time: its caller is answered at the
//! deadline at the latest, even while the job still waits behind others. The one
//! place that races a queued job's answer against its deadline.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::mailbox::{Claim, Job};
use crate::error::Result;
use crate::payload::Payload;
use crate::registry::ServiceCell;

/// Queues `job` in `cell`'s mailbox and returns its answer, which comes by
/// `deadline` at the latest: then a `Timeout` naming the action and its limit, which
/// says whether the job had started. One no worker had taken by then is given up
/// on ([`Mailbox::give_up`](super::mailbox::Mailbox::give_up)): it never runs, its
/// place is freed, and its error is [`not_started`](crate::Error::not_started).
/// The answer is `None` when the job was dropped unanswered (its worker aborted as
/// the host stopped). Refusals of the mailbox (full, closed) come back at once.
pub(super) fn push_with_deadline(
    cell: &Arc<ServiceCell>,
    mut job: Job,
    deadline: Instant,
) -> Result<impl Future<Output = Option<Result<Payload>>> + Send + 'static> {
    let (tx, mut rx) = super::reply::channel();
    job.reply = Some(tx);
    let claim = Arc::new(Claim::new());
    job.claim = Some(Arc::clone(&claim));
    // Both answers made now: the job is gone once pushed. (A call with a deadline
    // pays two messages; one without, none.)
    let late = job.timeout_error(cell);
    let unstarted = job.not_started_error(cell);
    cell.queue.mailbox.push(job)?;
    let cell = Arc::clone(cell);
    Ok(async move {
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(answer) => answer.ok(),
            Err(_) if cell.queue.mailbox.give_up(&claim) => Some(Err(unstarted)),
            // Taken by a worker: its own answer if it gave one just now (it found
            // the deadline passed as it took the job), else the outcome is unknown.
            Err(_) => Some(super::reply::try_take(&mut rx).unwrap_or(Err(late))),
        }
    })
}
