//! Jobs JetStream stopped delivering. The work consumer delivers a message at most
//! `max_deliver` times; when none of those runs ended — each instance that took it
//! crashed or froze past `ack_wait` (a host that stops publishes the job anew
//! instead, `queue::release`) — JetStream never delivers it
//! again, yet it stays in the work stream, and its record would say `queued` for
//! ever. The server says so once, in an advisory
//! (`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.KOAN_WORK.<consumer>`), which the
//! `KOAN_STRANDED` stream keeps until one instance has answered it (a durable
//! consumer all share): one sent while no instance was attached — the only one
//! cut off, or crashed by the job itself and restarting — is answered by the
//! first to attach. The answer, whoever's create-if-absent of the outcome wins:
//! the job is dead — its outcome says
//! why (so whoever awaits it is told), its record is set dead, it goes to the
//! dead-letter stream like any dead job, and its message is removed. A job whose
//! outcome was recorded after all (its ack was lost) only has its message removed.
//! An answer that could not be recorded is tried again, after a second doubled
//! each try up to a minute.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::RawMessageErrorKind;
use futures_util::StreamExt;
use koan::HostHandle;
use koan::error::ErrorKind;
use serde::Deserialize;

use crate::streams::ConsumerResult;
use crate::subjects;
use crate::transport::NatsTransport;
use crate::wire::{Job, Outcome, Reply};
use crate::{records, run_record};

/// What nats-server says of a message it will not deliver again
/// (`io.nats.jetstream.advisory.v1.max_deliver`).
#[derive(Debug, Deserialize)]
struct Exceeded {
    stream: String,
    stream_seq: u64,
    deliveries: u64,
}

/// Answers the kept advisories until the host stops, reconnecting after errors.
pub(crate) async fn follow(t: NatsTransport, host: HostHandle) {
    let what = "max-deliveries advisories";
    crate::streams::consume_until_stopped(&host, "*", what, || follow_once(&t)).await;
}

async fn follow_once(t: &NatsTransport) -> ConsumerResult {
    let stream = t.inner.js.get_stream(subjects::STRANDED_STREAM).await?;
    let consumer = crate::streams::pull_consumer(
        &stream,
        pull::Config {
            durable_name: Some(subjects::STRANDED_CONSUMER.to_owned()),
            ack_policy: AckPolicy::Explicit,
            // Handed back until answered.
            max_deliver: -1,
            ack_wait: t.inner.opts.ack_wait,
            ..Default::default()
        },
    )
    .await?;
    let mut advisories = consumer.messages().await?;
    while let Some(msg) = advisories.next().await {
        let msg = msg?;
        let answered = match serde_json::from_slice::<Exceeded>(&msg.payload) {
            Ok(a) if a.stream == subjects::WORK_STREAM => bury(t, &a).await,
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable max-deliveries advisory");
                true
            }
        };
        let _ = if answered {
            msg.ack().await
        } else {
            let tries = msg.info().map_or(1, |i| i.delivered);
            msg.ack_with(AckKind::Nak(Some(retry_after(tries)))).await
        };
    }
    Ok(())
}

/// How long an advisory whose answer failed `tries` times waits before the next
/// try: 1 s, doubled each try, at most a minute (a broker that refuses the
/// answer for long is not asked every second).
fn retry_after(tries: i64) -> Duration {
    let doublings = u32::try_from(tries.saturating_sub(1).clamp(0, 6)).unwrap_or(6);
    Duration::from_secs(1 << doublings).min(Duration::from_secs(60))
}

/// Ends the job of the message the advisory names (see the module's text):
/// `false` when that could not be recorded, to be tried again.
async fn bury(t: &NatsTransport, a: &Exceeded) -> bool {
    let seq = a.stream_seq;
    let stream = match t.inner.js.get_stream(subjects::WORK_STREAM).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(seq, error = %e, "cannot reach the work stream to end a job JetStream no longer delivers; trying again");
            return false;
        }
    };
    let msg = match stream.get_raw_message(seq).await {
        Ok(msg) => msg,
        // Gone already: another answer to the same advisory, or an ack after all.
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return true,
        Err(e) => {
            tracing::warn!(seq, error = %e, "cannot read a job JetStream no longer delivers; trying again");
            return false;
        }
    };
    // `koan.work.<service token>.<action>`: the token stands in for a job that
    // does not name its service (a foreign one).
    let token = msg
        .subject
        .strip_prefix("koan.work.")
        .and_then(|rest| rest.split_once('.'))
        .map_or("unknown", |(service, _)| service);
    let job = match Job::read(token, &msg.subject, Some(&msg.headers), &msg.payload) {
        Ok(job) => job,
        Err(bad) => {
            // Refused at its first delivery, unless every one ended first. The
            // instance whose delete removed it dead-letters it (its content is in
            // hand): one dead letter, however many heard the advisory.
            if matches!(stream.delete_message(seq).await, Ok(true)) {
                let why = bad.reply.reason();
                let (service, action) = (&bad.service, &bad.action);
                let (h, id) = (Some(&msg.headers), bad.id.as_deref());
                crate::dead_letter::publish(t, h, &msg.payload, service, action, id, &why).await;
            }
            return true;
        }
    };
    let attempt = job
        .runs_before()
        .saturating_add(u32::try_from(a.deliveries).unwrap_or(u32::MAX));
    let e = koan::Error::new(
        ErrorKind::Handler,
        format!(
            "durable job {} of `{}` reached the work consumer's max_deliver ({} deliveries) and none of its runs recorded an end: each instance that took it crashed, froze past ack_wait, or could not store its outcome; it is dead (retry it by hand once the cause is known)",
            job.id, job.service, a.deliveries
        ),
    );
    let how = records::dead(&e);
    let reply = Reply::of(Err(e));
    let why = reply.reason();
    let outcome = Outcome {
        id: job.id.clone(),
        host: t.inner.host_id.clone(),
        attempts: i64::from(attempt),
        reply,
    };
    let body = serde_json::to_vec(&outcome).unwrap_or_default();
    // Create-if-absent, as every outcome: an outcome recorded before stands.
    match t
        .inner
        .outcomes
        .create(subjects::key(&job.id), body.into())
        .await
    {
        Ok(_) => {
            tracing::error!(id = %job.id, action = %job.action, deliveries = a.deliveries, "durable job dead-lettered: no run of it ended within max_deliver deliveries");
            run_record::finish(t, &job.id, attempt, how, None).await;
            let h = Some(&msg.headers);
            crate::dead_letter::publish(
                t,
                h,
                &msg.payload,
                &job.service,
                &job.action,
                Some(&job.id),
                &why,
            )
            .await;
        }
        // Another instance answered first, or a run's outcome was recorded after all:
        // the record follows the outcome that stands.
        Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
            if let Ok(Some(stored)) = t.inner.outcomes.get(subjects::key(&job.id)).await {
                crate::record_outcome::align(t, &job.id, &stored).await;
            }
        }
        Err(e) => {
            tracing::warn!(id = %job.id, error = %e, "could not record the end of a job JetStream no longer delivers; trying again");
            return false;
        }
    }
    let _ = stream.delete_message(seq).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_answer_is_tried_again_after_a_second_doubled_each_time_to_a_minute() {
        let waits: Vec<u64> = [0, 1, 2, 3, 6, 7, 8, 1000]
            .into_iter()
            .map(|n| retry_after(n).as_secs())
            .collect();
        assert_eq!(waits, [1, 1, 2, 4, 32, 60, 60, 60]);
    }
}
