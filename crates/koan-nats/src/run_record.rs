//! A run's record: what a worker writes of one run of a cluster job in its
//! record (`records.rs`). [`start`] decides whether the run may start (the job
//! was not cancelled) and has `running` written once the run lasts; [`finish`]
//! writes how it ended, in one write with its claim when it never showed
//! `running`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use koan::job::{ClaimRequest, Finish, JobRecord, JobState, apply_claim, apply_finish};
use tokio::task::JoinHandle;

use crate::records::{Read, change_from, encode, queued, read};
use crate::subjects;
use crate::transport::NatsTransport;
use crate::wire::Job;

/// A run shorter than this is recorded once, at its end (with the time it
/// started): nobody watching a dashboard could see it run, and each job's run
/// then costs one write to the bucket instead of two.
const SHOW_RUNNING_AFTER: Duration = Duration::from_millis(100);

/// A run that may start: what [`finish`] needs to record it.
pub(crate) struct Started {
    /// Writes `running` once the run has lasted [`SHOW_RUNNING_AFTER`].
    running: JoinHandle<()>,
    /// The claim of this run (its attempt's start), applied by whichever write
    /// comes first.
    claim: ClaimRequest,
    max_attempts: u32,
    /// The record to create should there be none yet: a worker can take a job
    /// before its accepting host has written its first record. Shared with the
    /// `running` write: rarely used, not copied.
    first: Arc<JobRecord>,
    /// The record [`start`] read, for whichever write comes first: a short run's
    /// one write needs no second read, nor a second decoding (one KV request per
    /// job less, B8 durable). `None` when it could not be read.
    read: Arc<Mutex<Option<Read>>>,
    /// Started without reading the record (this host's watch of cancels told):
    /// a short run's success is then written whole, without reading it either.
    blind: bool,
}

/// Whether a run may start: `None` when the job was cancelled (its record read
/// now, unless this host's watch of cancels answers). Otherwise the record is
/// set `running` (attempt `attempt` on this host) should the run last
/// [`SHOW_RUNNING_AFTER`], in the background; a shorter one is recorded by
/// [`finish`] alone. A record that cannot be read or written does not stop it,
/// unless this host heard of a cancel of the job.
pub(crate) async fn start(
    t: &NatsTransport,
    job: &Job,
    attempt: u32,
    max_attempts: u32,
) -> Option<Started> {
    // A job's first delivery, its id made for it and due at once, has at most its
    // enqueuer's record: this host's watch of cancels (`cancels.rs`) tells whether
    // it was cancelled. Otherwise one read serves the cancel check and the first
    // compare-and-set below (decoded once; a record that cannot be read or decoded
    // is read again by the write, which says why).
    let key = subjects::key(&job.id);
    let blind = attempt == 1
        && job.retry.is_none()
        && job.run_at_unix_ms.is_none()
        && t.inner.cancel_watch.may_skip_read(t, &job.id, &key);
    let last = if blind {
        None
    } else {
        read(t, &job.id, &key).await.ok()
    };
    // Its record unreadable, but a cancel of it heard of here (a first delivery:
    // no retry by hand since): taken for cancelled, not run on a guess.
    if last.is_none() && attempt == 1 && job.retry.is_none() && t.inner.cancel_watch.holds(&key) {
        return None;
    }
    if let Some(Some((r, _))) = &last
        && r.state == JobState::Cancelled
    {
        return None;
    }
    let now = Utc::now();
    let claim = ClaimRequest {
        service: job.service.clone(),
        limit: 1,
        now,
        lease_until: now + chrono::Duration::from_std(t.inner.opts.ack_wait).unwrap_or_default(),
        instance: t.inner.host_id.clone(),
    };
    let first = Arc::new(queued(t, job));
    let read = Arc::new(Mutex::new(last));
    let (t, id, c, f, shared) = (
        t.clone(),
        job.id.clone(),
        claim.clone(),
        Arc::clone(&first),
        read.clone(),
    );
    let running = tokio::spawn(async move {
        tokio::time::sleep(SHOW_RUNNING_AFTER).await;
        let read = shared.lock().ok().and_then(|mut r| r.take());
        // Boxed: the write's future (KV requests, some KB) is made only for a run
        // that lasts, not carried by every run's task (`docs/benchmarks/round-39.md`).
        let r = Box::pin(change_from(&t, &id, Some(&f), read, |r| {
            Ok(claim_for(r, &c, attempt, max_attempts))
        }))
        .await;
        if let Err(e) = r {
            tracing::warn!(id = %id, error = %e, "could not record a durable job's start; it runs all the same");
        }
    });
    Some(Started {
        running,
        claim,
        max_attempts,
        first,
        read,
        blind,
    })
}

/// Sets `r` running as run `attempt` claimed it, unless it moved on: cancelled
/// since (the run's progress check stops it), over, or claimed by a later
/// delivery. Whether it changed `r`.
pub(crate) fn claim_for(
    r: &mut JobRecord,
    claim: &ClaimRequest,
    attempt: u32,
    max_attempts: u32,
) -> bool {
    let moved_on = r.state == JobState::Cancelled
        || r.state.is_final()
        || (r.state == JobState::Running && r.attempts >= attempt);
    if moved_on {
        return false;
    }
    // The delivery count is the attempt: a run that died left no trace.
    r.attempts = attempt.saturating_sub(1);
    r.max_attempts = max_attempts;
    if r.state == JobState::Running {
        // An earlier delivery that died: JetStream counts deliveries against
        // `max_deliver` (`stranded.rs` ends a job none of whose runs ended), not
        // the record's attempts as the host's store does.
        r.state = JobState::Queued;
    }
    let claimed = apply_claim(r, claim);
    debug_assert!(claimed, "only a lapsed running record is refused");
    // JetStream holds the claim (renewed by progress acks): the record names no
    // lease end it would not keep up to date.
    r.lease_until = None;
    true
}

/// Records how run `attempt` ended, unless the job was cancelled meanwhile (a
/// short first run's success: unless this host has heard of the cancel). The
/// outcome (in `koan_outcomes`) is what the job's end waits for; the record
/// follows, written by the run's own task once its slot is free and its message
/// answered, so nothing waits for it (a task of its own for it cost a tenth of
/// a durable job's CPU in B8's worker: a large task cell). A run that was never
/// recorded `running` is claimed and ended in one write. A compare-and-set that
/// comes late finds the record moved on (final, or another attempt running).
pub(crate) async fn finish(
    t: &NatsTransport,
    id: &str,
    attempt: u32,
    how: Finish,
    run: Option<Started>,
) {
    let (claim, first, read) = match run {
        // A short run started blind that succeeded: its record is the enqueuer's
        // (or none yet) with this run's claim and end, written whole (a cancel
        // this host has not heard of is overtaken: the record says how it ended).
        Some(run)
            if run.blind
                && matches!(how, Finish::Succeeded { .. })
                && !run.running.is_finished()
                && t.inner.cancel_watch.unmarked(&subjects::key(id)) =>
        {
            run.running.abort();
            let mut r = JobRecord::clone(&run.first);
            claim_for(&mut r, &run.claim, attempt, run.max_attempts);
            apply_finish(&mut r, how, Utc::now());
            if let Err(e) = t.inner.records.put(subjects::key(id), encode(&r)).await {
                t.inner
                    .refusals
                    .note(crate::storage::RECORD, &e.to_string());
                tracing::warn!(id = %id, error = %e, "could not record how a durable job's run ended");
            }
            return;
        }
        Some(run) => {
            // A `running` write under way lands first or loses its
            // compare-and-set.
            run.running.abort();
            // The start's read, unless the `running` write took it: a stale
            // one loses its compare-and-set and is read again.
            let read = run.read.lock().ok().and_then(|mut r| r.take());
            (Some((run.claim, run.max_attempts)), Some(run.first), read)
        }
        None => (None, None, None),
    };
    let now = Utc::now();
    let r = change_from(t, id, first.as_deref(), read, |r| {
        // A cancel that came after this run's outcome was stored (the commit
        // point) lost: the record follows the outcome.
        let outcome_stored = matches!(how, Finish::Succeeded { .. } | Finish::Dead { .. });
        // Cancelled before this run was recorded, its outcome stored first: the
        // run is claimed as any (it stayed cancelled for good; a review).
        if outcome_stored && r.state == JobState::Cancelled && r.attempts < attempt {
            r.state = JobState::Queued;
        }
        let ours = (r.state == JobState::Running
            || (r.state == JobState::Cancelled && outcome_stored))
            && r.attempts == attempt;
        let go_on = ours
            || match &claim {
                // Not recorded running (yet): the claim and the end in one write.
                Some((c, max)) => claim_for(r, c, attempt, *max),
                // Ended before it ran (its time was up in the stream).
                None => !(r.state.is_final() || r.state == JobState::Running),
            };
        if !go_on {
            return Ok(false);
        }
        apply_finish(r, how.clone(), now);
        Ok(true)
    })
    .await;
    if let Err(e) = r {
        t.inner.refusals.note(crate::storage::RECORD, e.message());
        tracing::warn!(id = %id, error = %e, "could not record how a durable job's run ended");
    }
}
