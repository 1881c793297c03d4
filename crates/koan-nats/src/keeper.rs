//! The records of jobs that wait long in the work queue. The bucket of job
//! records forgets an entry not written for its age limit (`outcome_ttl`, 1 h),
//! and a job queued behind a long backlog is in no one's hands to write its
//! record again, as a running job's worker and a delayed job's mover do
//! (`records::kept`): without this, it would vanish from the listing, `GET` would
//! call it unknown and a cancel could not reach it, though it is still to run.
//!
//! Every `records::visit_every` (half of that limit), one instance of each
//! service — the one with the lowest host id among those the registry shows
//! running it; two at once for a moment after a change, which costs only reads,
//! since a record is written again only when due, with a compare-and-set — walks
//! the service's messages in `KOAN_WORK` from the oldest and keeps the record of
//! each published a quarter of that limit ago or more (`records::refresh_after`),
//! and the cancel's marker of each cancelled one (`cancels.rs`), until a worker
//! drops it. A backlog younger than that costs nothing; an older one costs three
//! requests a job each visit (its message, its record, its record written again),
//! one after the other: about 0.4 ms a job here, so 100,000 such jobs take some
//! 40 s of each half hour.

use std::time::Duration;

use async_nats::jetstream::stream::RawMessageErrorKind;
use koan::HostHandle;
use koan::job::JobState;

use crate::records;
use crate::subjects;
use crate::transport::NatsTransport;
use crate::wire::{self, Job};

/// Keeps the records of `service`'s waiting jobs until the host stops.
pub(crate) async fn keep(t: NatsTransport, host: HostHandle, service: String) {
    let (Some(every), Some(after)) = (records::visit_every(&t), records::refresh_after(&t)) else {
        return;
    };
    // Not at once: a job accepted a moment ago needs nothing yet.
    let start = tokio::time::Instant::now() + every;
    let mut tick = tokio::time::interval_at(start, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = host.stopping() => return,
            _ = tick.tick() => {}
        }
        if !t.first_of(&service) {
            continue;
        }
        if let Err(e) = walk(&t, &service, after).await {
            tracing::warn!(service = %service, error = %e, "could not keep the records of jobs waiting in the work queue; trying again");
        }
    }
}

/// Keeps the records of `service`'s jobs published `after` ago or more (a
/// younger one's record was written since).
async fn walk(
    t: &NatsTransport,
    service: &str,
    after: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = t.inner.js.get_stream(subjects::WORK_STREAM).await?;
    let subject = subjects::work_of(service);
    let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    let before_ns = i128::from(wire::unix_ms().saturating_sub(after_ms)) * 1_000_000;
    let mut seq = 1;
    loop {
        let next = stream
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject(subject.as_str())
            .send()
            .await;
        let msg = match next {
            Ok(msg) => msg,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // In the order they were published: the rest are younger.
        if msg.time.unix_timestamp_nanos() > before_ns {
            return Ok(());
        }
        seq = msg.sequence + 1;
        let Ok(job) = Job::read(service, &msg.subject, Some(&msg.headers), &msg.payload) else {
            continue;
        };
        // A job cancelled while it waits keeps its cancel's marker too: a worker
        // that holds no marker for a job may take it for not cancelled unread.
        if let Ok(Some(r)) = records::kept(t, &job.id).await
            && r.state == JobState::Cancelled
        {
            t.inner
                .cancels
                .put(subjects::key(&job.id), bytes::Bytes::new())
                .await?;
        }
    }
}
