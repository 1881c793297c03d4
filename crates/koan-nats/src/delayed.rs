//! Delayed jobs: a job enqueued to run later waits in the `KOAN_DELAYED` stream
//! (work-queue retention), not in the memory or the store of the host that
//! accepted it, so it runs when it is due even if that host is gone. Every
//! instance that consumes a service's work also moves that service's due jobs: a
//! pull consumer per service hands a job that is not due back with a delay until
//! its time (`Nak` with the time left), and a due one is published to the work
//! queue under its own id (JetStream drops a repeat within its duplicate window,
//! should a mover die between publishing and acknowledging), its record set
//! `queued`, and only then acknowledged.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use futures_util::TryStreamExt as _;
use koan::HostHandle;
use koan::job::JobState;

use crate::enqueue;
use crate::records;
use crate::subjects;
use crate::transport::NatsTransport;
use crate::wire::{self, Job};

/// How many waiting jobs one pull takes (each is handed back at once if not due).
const BATCH: usize = 64;
/// How many of a batch's jobs are handled at once (each reads its record, and
/// perhaps writes it, before it is handed back or moved).
const IN_FLIGHT: usize = 16;
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
    loop {
        let batch = consumer
            .batch()
            .max_messages(BATCH)
            .expires(PULL_WAIT)
            .messages()
            .await?;
        // Each job's turn is independent of the others' (jobs due together may
        // reach the work queue in any order, as from two movers).
        batch
            .map_err(crate::streams::ConsumerError::from)
            .try_for_each_concurrent(IN_FLIGHT, |msg| async move {
                move_if_due(t, service, msg).await;
                Ok(())
            })
            .await?;
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
