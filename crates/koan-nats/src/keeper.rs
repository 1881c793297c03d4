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
//! requests a job each visit (its message, its record, its record written again).
//! The messages are read one after the other (each request names the sequence
//! after the last), the records [`IN_FLIGHT`] at once: 0.11-0.14 ms a job here
//! (0.22-0.34 ms one at a time), so 100,000 such jobs take some 13 s of each half
//! hour.
//!
//! The jobs of a service no live instance runs have no mover and no keeper of
//! their own: the live host with the lowest id keeps theirs, in `KOAN_WORK` and
//! `KOAN_DELAYED` alike ([`keep_orphans`]), so a queued job cancelled while its
//! service is down for hours is still cancelled when an instance comes back.
//! Only a whole cluster down for longer than `outcome_ttl` loses them (a
//! delayed job's cancel takes it out of its stream at once, `delayed::withdraw`;
//! a queued one cancelled behind a backlog would then run).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use async_nats::jetstream::stream::RawMessageErrorKind;
use futures_util::TryStreamExt as _;
use koan::HostHandle;
use koan::job::JobState;

use crate::records;
use crate::streams::ConsumerError;
use crate::subjects;
use crate::transport::NatsTransport;
use crate::wire::{self, Job};

/// Keeps the records of `service`'s waiting jobs until the host stops.
pub(crate) async fn keep(t: NatsTransport, host: HostHandle, service: String) {
    let Some((mut tick, after)) = visits(&t) else {
        return;
    };
    while next_visit(&mut tick, &host).await {
        if !t.first_of(&service) {
            continue;
        }
        let subject = subjects::work_of(&service);
        if let Err(e) = walk(&t, subjects::WORK_STREAM, subject, &service, after).await {
            tracing::warn!(service = %service, error = %e, "could not keep the records of jobs waiting in the work queue; trying again");
        }
    }
}

/// Keeps the records of the jobs of services no live instance runs (their
/// delayed jobs' mover and their keeper are gone with them) until the host
/// stops, when this host is the live one with the lowest id: the records of
/// their jobs in `KOAN_WORK` and `KOAN_DELAYED`, and a cancelled one's marker.
/// A queued job cancelled while its service is down for hours is then still
/// cancelled when an instance comes back, and each of them is read by id.
pub(crate) async fn keep_orphans(t: NatsTransport, host: HostHandle) {
    let Some((mut tick, after)) = visits(&t) else {
        return;
    };
    while next_visit(&mut tick, &host).await {
        let Some(running) = t.first_host() else {
            continue;
        };
        for (stream, subjects) in [
            (subjects::WORK_STREAM, subjects::WORK_SUBJECTS),
            (subjects::DELAYED_STREAM, subjects::DELAYED_SUBJECTS),
        ] {
            if let Err(e) = keep_orphans_in(&t, stream, subjects, &running, after).await {
                tracing::warn!(stream, error = %e, "could not keep the records of the jobs of services no instance runs; trying again");
            }
        }
    }
}

/// Keeps the records of the jobs in `stream` (of subjects `all`, `koan.<kind>.>`)
/// of each service whose subject token is not in `running`. A delayed job waits
/// on a subject of its own, so the listing of `KOAN_DELAYED` names each: 150,000
/// of them are listed in 0.72 s here (pages of the server's), less than a walk
/// of their records takes.
async fn keep_orphans_in(
    t: &NatsTransport,
    stream: &str,
    all: &str,
    running: &HashSet<String>,
    after: Duration,
) -> Result<(), ConsumerError> {
    let prefix = all.trim_end_matches('>');
    let mut orphans = BTreeSet::new();
    let info = t.inner.js.get_stream(stream).await?;
    let mut held = info.info_with_subjects(all).await?;
    while let Some((subject, _)) = held.try_next().await? {
        if let Some(token) = subject
            .strip_prefix(prefix)
            .and_then(|s| s.split('.').next())
            && !running.contains(token)
        {
            orphans.insert(token.to_owned());
        }
    }
    for token in orphans {
        walk(t, stream, format!("{prefix}{token}.>"), &token, after).await?;
    }
    Ok(())
}

/// The ticks of a keeper's visits, every `records::visit_every` from one such
/// time from now (a job accepted a moment ago needs nothing yet), and how old a
/// record is when it is written again; `None` when the bucket forgets nothing.
fn visits(t: &NatsTransport) -> Option<(tokio::time::Interval, Duration)> {
    let (every, after) = (records::visit_every(t)?, records::refresh_after(t)?);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some((tick, after))
}

/// Waits for the next of a keeper's visits: `false` once the host stops.
async fn next_visit(tick: &mut tokio::time::Interval, host: &HostHandle) -> bool {
    tokio::select! {
        _ = host.stopping() => false,
        _ = tick.tick() => true,
    }
}

/// How many waiting jobs' records one walk keeps at once (each is a read, and
/// perhaps a write, of the bucket): the walk itself goes one message after the
/// other, as each request names the sequence after the last one read.
const IN_FLIGHT: usize = 32;

/// Keeps the records of the jobs of `service` in `stream` (its messages of
/// `subject`) published `after` ago or more (a younger one's record was written
/// since).
async fn walk(
    t: &NatsTransport,
    stream: &str,
    subject: String,
    service: &str,
    after: Duration,
) -> Result<(), ConsumerError> {
    let stream = t.inner.js.get_stream(stream).await?;
    let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    let before_ns = i128::from(wire::unix_ms().saturating_sub(after_ms)) * 1_000_000;
    // The ids of the jobs to keep, in the order they were published, read while
    // the records of those before them are kept.
    let walk = Walk {
        stream,
        subject,
        service: service.to_owned(),
        before_ns,
        seq: 1,
    };
    let ids = futures_util::stream::try_unfold(walk, Walk::next);
    ids.map_ok(|id| keep_one(t, id))
        .try_buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// A walk over the messages of one service in one stream (`KOAN_WORK` or
/// `KOAN_DELAYED`), from the oldest.
struct Walk {
    stream: async_nats::jetstream::stream::Stream,
    subject: String,
    service: String,
    /// Where the walk ends: messages published after this (Unix ns) are younger.
    before_ns: i128,
    /// The sequence to read from.
    seq: u64,
}

impl Walk {
    /// The id of the next job to keep, and the walk on from it; `None` at the end.
    async fn next(mut self) -> Result<Option<(String, Walk)>, ConsumerError> {
        loop {
            let next = self
                .stream
                .raw_message_builder()
                .sequence(self.seq)
                .next_by_subject(self.subject.as_str())
                .send()
                .await;
            let msg = match next {
                Ok(msg) => msg,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            // In the order they were published: the rest are younger.
            if msg.time.unix_timestamp_nanos() > self.before_ns {
                return Ok(None);
            }
            self.seq = msg.sequence + 1;
            let read = Job::read(
                &self.service,
                &msg.subject,
                Some(&msg.headers),
                &msg.payload,
            );
            if let Ok(job) = read {
                return Ok(Some((job.id, self)));
            }
        }
    }
}

/// Keeps the record of waiting job `id`, and its cancel's marker if it was
/// cancelled: a worker that holds no marker for a job may take it for not
/// cancelled unread.
async fn keep_one(t: &NatsTransport, id: String) -> Result<(), ConsumerError> {
    if let Ok(Some(r)) = records::kept(t, &id).await
        && r.state == JobState::Cancelled
    {
        t.inner
            .cancels
            .put(subjects::key(&id), bytes::Bytes::new())
            .await?;
    }
    Ok(())
}
