//! A queued action's deadline counts queue time: its caller is answered at the
//! deadline at the latest, even while the job still waits behind others. The one
//! place that races a queued job's answer against its deadline.

use std::future::Future;

use tokio::time::Instant;

use super::mailbox::Job;
use crate::error::Result;
use crate::payload::Payload;
use crate::registry::ServiceCell;

/// Queues `job` in `cell`'s mailbox and returns its answer, which comes by
/// `deadline` at the latest (then a `Timeout` naming the action and its limit).
/// The answer is `None` when the job was dropped unanswered (its worker aborted as
/// the host stopped). Refusals of the mailbox (full, closed) come back at once.
pub(super) fn push_with_deadline(
    cell: &ServiceCell,
    mut job: Job,
    deadline: Instant,
) -> Result<impl Future<Output = Option<Result<Payload>>> + Send + 'static> {
    let (tx, rx) = super::reply::channel();
    job.reply = Some(tx);
    let late = job.timeout_error(cell);
    cell.queue.mailbox.push(job)?;
    Ok(async move {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(answer) => answer.ok(),
            Err(_) => Some(Err(late)),
        }
    })
}
