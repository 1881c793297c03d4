//! Delayed jobs: a job enqueued to run later waits in the `KOAN_DELAYED` stream
//! (work-queue retention), not in the memory or the store of the host that
//! accepted it, so it runs when it is due even if that host is gone. Every
//! instance that consumes a service's work also moves that service's due jobs: a
//! pull consumer per service hands a job that is not due back with a delay until
//! its time (`Nak` with the time left), and a due one is published to the work
//! queue under its own id (JetStream drops a repeat within its duplicate window,
//! should a mover die between publishing and acknowledging), its record set
//! `queued`, and only then acknowledged. A cancel takes a waiting job out of
//! the stream at once ([`withdraw`]): each waits on a subject of its own.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use chrono::Utc;
use futures_util::TryStreamExt as _;
use koan::HostHandle;
use koan::job::{JobRecord, JobState};

use crate::enqueue;
use crate::records;
use crate::subjects;
use crate::transport::NatsTransport;
use crate::wire::{self, Job, Reply};

/// How many waiting jobs one pull takes (each is handed back at once if not due).
const BATCH: usize = 64;
/// How many of a batch's jobs are handled at once (each reads its record, and
/// perhaps writes it, before it is handed back or moved).
const IN_FLIGHT: usize = 16;
/// How close to its time a delayed job may be in a mover's hands, by the
/// cancelling host's clock (hosts' clocks may differ by less).
const IN_HAND: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// How long one pull waits for jobs before asking again.
const PULL_WAIT: Duration = Duration::from_secs(5);

/// Moves the due delayed jobs of `service` to the work queue until the host stops,
/// reconnecting after errors.
pub(crate) async fn consume(t: NatsTransport, host: HostHandle, service: String) {
    crate::streams::consume_until_stopped(&host, &service, "delayed jobs", || {
        consume_once(&t, &service)
    })
    .await;
}

async fn consume_once(t: &NatsTransport, service: &str) -> crate::streams::ConsumerResult {
    let stream = t.inner.js.get_stream(subjects::DELAYED_STREAM).await?;
    let name = subjects::delayed_consumer(service);
    let consumer = crate::streams::pull_consumer(
        &stream,
        pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subjects::delayed_of(service),
            ack_policy: AckPolicy::Explicit,
            // Handed back until due, as often as it takes; never dropped.
            max_deliver: -1,
            ack_wait: t.inner.opts.ack_wait,
            // A job handed back until due stays pending with the server: no
            // cap on how many may wait at once.
            max_ack_pending: -1,
            ..Default::default()
        },
    )
    .await?;
    // The reconnects before this consumer was made (or last checked).
    let mut seen = t.reconnects();
    loop {
        let batch = consumer
            .batch()
            .max_messages(BATCH)
            .expires(PULL_WAIT)
            .messages()
            .await?;
        // Each job's turn is independent of the others' (jobs due together may
        // reach the work queue in any order, as from two movers).
        let got = std::sync::atomic::AtomicBool::new(false);
        batch
            .map_err(crate::streams::ConsumerError::from)
            .try_for_each_concurrent(IN_FLIGHT, |msg| {
                got.store(true, std::sync::atomic::Ordering::Relaxed);
                async move {
                    move_if_due(t, service, msg).await;
                    Ok(())
                }
            })
            .await?;
        // As the work queue's: a consumer a broker lost is made again.
        if !got.load(std::sync::atomic::Ordering::Relaxed) && t.reconnects() != seen {
            consumer.clone().info().await?;
            seen = t.reconnects();
        }
    }
}

/// Hands `msg` back until its job is due, then moves it to the work queue.
async fn move_if_due(t: &NatsTransport, service: &str, msg: Message) {
    let job = match Job::read(service, &msg.subject, msg.headers.as_ref(), &msg.payload) {
        Ok(job) => job,
        // The work queue's worker refuses it with the reason (outcome, dead letter).
        Err(_) => return forward_unreadable(t, &msg).await,
    };
    // Its record kept while it waits (a job due in a week is listed, read by id
    // and cancellable all week), and a cancel heard: a job cancelled while it
    // waits never moves, whenever it was cancelled.
    match records::kept(t, &job.id).await {
        Ok(Some(r)) if r.state == JobState::Cancelled => {
            let key = subjects::key(&job.id);
            return crate::cancels::drop_cancelled(t, &msg, &key, &job.id, 0).await;
        }
        // None (forgotten while no instance moved this service's jobs, say): it
        // is written again, as when the job was accepted.
        Ok(None) => {
            let _ = records::accepted(t, &job).await;
        }
        Ok(Some(_)) | Err(_) => {}
    }
    let left = job
        .run_at_unix_ms
        .unwrap_or(0)
        .saturating_sub(wire::unix_ms());
    if left > 0 {
        // Back again in time to write its record again, until due.
        let left = Duration::from_millis(left);
        let wait = records::visit_every(t).map_or(left, |every| every.min(left));
        let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
        return;
    }
    // Its `run_at` stays (past now, so it goes to the work queue): its worker
    // knows it was delayed, and does not take it for a job due at once.
    match enqueue::publish(t, &job).await {
        // Stored now, or before by a mover that died before acknowledging.
        Ok(_) => {
            records::due(t, &job.id).await;
            let _ = msg.ack().await;
        }
        Err(e) => {
            tracing::warn!(id = %job.id, error = %e, "could not move a due job to the work queue; trying again");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

/// Removes cancelled job `record` from `KOAN_DELAYED`, where it waits under a
/// subject of its own, and tells whoever awaits it that it was cancelled:
/// nothing of it is left to move, whatever becomes of its record and its
/// cancel's marker (forgotten while no instance runs for longer than
/// `outcome_ttl`, say), and its waiters need not wait until it would have been
/// due. A message not found there (a mover took it a moment ago; a job of an
/// earlier koan, or of a foreign id, which shares its action's subject) is
/// dropped unrun by whoever sees it next, its record and marker said cancelled.
///
/// Only a job due after [`IN_HAND`] from now: one due sooner may be in a mover's
/// hands, published to the work queue already but its message here not yet
/// acknowledged. Taken out of here with its outcome stored, it could be retried
/// by hand at once while that copy still waits in the work queue, where its
/// record (`queued` again) would let it run beside the retry's.
pub(crate) async fn withdraw(t: &NatsTransport, record: &JobRecord) {
    if record.run_at <= Utc::now() + IN_HAND {
        return;
    }
    let Some(subject) = subjects::delayed_job(&record.service, &record.action, &record.id) else {
        return;
    };
    match remove(t, &subject).await {
        Ok(false) => {}
        Ok(true) => {
            tracing::info!(id = %record.id, "delayed job cancelled; removed from the delayed stream");
            let key = subjects::key(&record.id);
            let reply = Reply::of(Err(crate::cancels::cancelled_error(&record.id)));
            crate::outcomes::store(t, &key, &record.id, 0, reply).await;
        }
        Err(e) => {
            tracing::warn!(id = %record.id, error = %e, "could not remove a cancelled delayed job from the delayed stream; a mover drops it unrun when it is due");
        }
    }
}

/// Deletes the message of `KOAN_DELAYED` on `subject` (one job's own): whether
/// there was one. Found, then deleted by its sequence: a purge by subject would
/// do it in one request, but nats-server before 2.9.12 then moves the other
/// consumers' cursors past the jobs still waiting (nats-server#3838; seen here
/// as delayed jobs that never ran).
async fn remove(t: &NatsTransport, subject: &str) -> Result<bool, async_nats::Error> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let stream = t
        .inner
        .js
        .get_stream_no_info(subjects::DELAYED_STREAM)
        .await?;
    let seq = match stream.get_last_raw_message_by_subject(subject).await {
        Ok(msg) => msg.sequence,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    match stream.delete_message(seq).await {
        Ok(deleted) => Ok(deleted),
        // Taken by a mover between the two requests: not an error.
        Err(e) => match stream.get_last_raw_message_by_subject(subject).await {
            Err(gone) if gone.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
            _ => Err(e.into()),
        },
    }
}

/// A message on the delayed stream that is not a readable job goes to the work
/// queue as it came, where the worker refuses it with its reason.
async fn forward_unreadable(t: &NatsTransport, msg: &Message) {
    let subject = msg.subject.replacen("koan.delayed.", "koan.work.", 1);
    let headers = msg.headers.clone().unwrap_or_default();
    let sent = t
        .inner
        .js
        .publish_with_headers(subject, headers, msg.payload.clone())
        .await;
    let stored = match sent {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if stored {
        let _ = msg.ack().await;
    } else {
        let _ = msg
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
    }
}
