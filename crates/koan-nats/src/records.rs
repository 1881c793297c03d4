//! The cluster's job records: the KV bucket `koan_jobs`, key = the job's id (as in
//! `koan_outcomes`), value = its [`JobRecord`] as JSON — what `GET /api/jobs/{id}`
//! answers on any instance. Whoever performs a transition writes it: the accepting
//! host `queued` (or `scheduled`), the worker `running` (with the attempt, once the
//! run has lasted 100 ms: a shorter run is recorded once, at its end) and how the
//! run ended, an operator on any instance `cancelled` (`cancels.rs`). Every change
//! after the first write is a compare-and-set on the entry's revision, so two
//! writers never lose each other's change, but for one: a short first run's
//! success, written whole ([`finish`]). A record decides whether a job runs only
//! when it says `cancelled` and is read (a first run's start may not read it).

use chrono::Utc;
use koan::error::ErrorKind;
use koan::job::{
    ClaimRequest, Finish, JobRecord, JobState, JobStep, NewJob, apply_claim, apply_finish,
    apply_retry, cut_result, wrong_state,
};
use koan::{Error, action::ErrorBody};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::subjects;
use crate::transport::{NatsTransport, unavailable};
use crate::wire::Job;

/// The largest result a record keeps (a JSON string of its start when cut).
const RESULT_CAP: usize = 64 * 1024;

/// Compare-and-set attempts before a change gives up (each lost to another writer).
const RACES: usize = 5;

/// The record of a job before any run.
pub(crate) fn queued(t: &NatsTransport, job: &Job) -> JobRecord {
    // A made-up id tells when the job was accepted: its worker, which may write
    // the record first (or alone, `finish`), writes the same time as its enqueuer.
    let now = koan::job::new_job_id_time(&job.id).unwrap_or_else(Utc::now);
    // `scheduled` until it is due.
    let run_at = job
        .run_at_unix_ms
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?))
        .map_or(now, |at| at.max(now));
    NewJob {
        id: job.id.clone(),
        service: job.service.clone(),
        steps: std::iter::once(JobStep {
            action: job.action.clone(),
            params: job.params.clone(),
            timeout_ms: job.timeout_ms,
        })
        .chain(job.then.iter().cloned())
        .collect(),
        priority: job.priority,
        correlation_id: job.correlation_id.clone(),
        idempotency_key: job.idempotency_key.clone(),
        created_at: now,
        run_at,
        max_attempts: u32::try_from(t.inner.opts.max_deliver).unwrap_or(u32::MAX),
    }
    .into_record()
}

fn encode(r: &JobRecord) -> bytes::Bytes {
    // Sized for small parameters: grown from empty it was copied eight times.
    let mut out = Vec::with_capacity(1024);
    // Strings, numbers, dates and JSON values only: serializing cannot fail.
    serde_json::to_writer(&mut out, r).expect("a job record serializes to JSON");
    out.into()
}

/// Writes the first record of `job` unless there is one (its worker may have been
/// quicker): the revision it was written with, `None` when there was one.
pub(crate) async fn accepted(
    t: &NatsTransport,
    job: &Job,
) -> Result<Option<u64>, async_nats::jetstream::kv::CreateError> {
    let r = queued(t, job);
    match t
        .inner
        .records
        .create(subjects::key(&job.id), encode(&r))
        .await
    {
        Ok(revision) => Ok(Some(revision)),
        Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes back the first record [`accepted`] wrote at `revision` for a job whose
/// message is not stored now (refused, a repeat of a stored id, or not confirmed):
/// a compare-and-delete, so a record a worker or an operator wrote since stands.
/// Best effort: logged when it fails. A job that was stored after all gets its
/// record from its worker, as when the first write is lost.
pub(crate) async fn withdraw(t: &NatsTransport, id: &str, revision: u64) {
    let key = subjects::key(id);
    if let Err(e) = t
        .inner
        .records
        .delete_expect_revision(&key, Some(revision))
        .await
        && e.kind() != async_nats::jetstream::kv::DeleteErrorKind::WrongLastRevision
    {
        tracing::warn!(id = %id, error = %e, "could not take back the record of a job that was not stored; it says queued until the bucket forgets it");
    }
}

/// The record of `id`, read from the bucket.
pub(crate) async fn get(t: &NatsTransport, id: &str) -> Result<Option<JobRecord>, Error> {
    Ok(read(t, id, &subjects::key(id)).await?.map(|(r, _)| r))
}

/// Applies `change` to the record of `id` with a compare-and-set, again after a
/// race; `change` answers whether to write. The record as it stands after, `None`
/// when there is none (and `or_new` gives none to create).
pub(crate) async fn change(
    t: &NatsTransport,
    id: &str,
    or_new: Option<&JobRecord>,
    change: impl FnMut(&mut JobRecord) -> Result<bool, Error>,
) -> Result<Option<JobRecord>, Error> {
    Ok(change_from(t, id, or_new, None, change)
        .await?
        .map(|(r, _)| r))
}

/// The record of a job as read from the bucket, with the revision it was read
/// at: `None` when the bucket holds none (or a delete marker).
type Read = Option<(JobRecord, u64)>;

/// Reads the record of `id`, under `key` (`Err` when it cannot be read or
/// decoded).
async fn read(t: &NatsTransport, id: &str, key: &str) -> Result<Read, Error> {
    let entry = t
        .inner
        .records
        .entry(key)
        .await
        .map_err(|e| unavailable(format!("the record of job {id} cannot be read: {e}")))?;
    let Some(entry) = entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
    else {
        return Ok(None);
    };
    let r = serde_json::from_slice(&entry.value)
        .map_err(|e| unavailable(format!("the record of job {id} is unreadable: {e}")))?;
    Ok(Some((r, entry.revision)))
}

/// [`change`], starting from `read`, the record as read a moment ago (when the
/// caller had to read it anyway): a race with another writer reads it again. With
/// the record, the revision it was written with (`None` when `change` wrote none).
async fn change_from(
    t: &NatsTransport,
    id: &str,
    or_new: Option<&JobRecord>,
    mut last: Option<Read>,
    mut change: impl FnMut(&mut JobRecord) -> Result<bool, Error>,
) -> Result<Option<(JobRecord, Option<u64>)>, Error> {
    let key = subjects::key(id);
    let kv = &t.inner.records;
    for _ in 0..RACES {
        let current = match last.take() {
            Some(current) => current,
            None => read(t, id, &key).await?,
        };
        let Some((mut r, revision)) = current else {
            let Some(new) = or_new else { return Ok(None) };
            let mut r = new.clone();
            if !change(&mut r)? {
                return Ok(Some((r, None)));
            }
            match kv.create(key.clone(), encode(&r)).await {
                Ok(rev) => return Ok(Some((r, Some(rev)))),
                // Written meanwhile: change that one.
                Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                    continue;
                }
                Err(e) => {
                    return Err(unavailable(format!(
                        "the record of job {id} cannot be written: {e}"
                    )));
                }
            }
        };
        if !change(&mut r)? {
            return Ok(Some((r, None)));
        }
        match kv.update(key.clone(), encode(&r), revision).await {
            Ok(rev) => return Ok(Some((r, Some(rev)))),
            // Another writer came first: read again.
            Err(e) if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
                continue;
            }
            Err(e) => {
                return Err(unavailable(format!(
                    "the record of job {id} cannot be written: {e}"
                )));
            }
        }
    }
    Err(unavailable(format!(
        "the record of job {id} kept changing under {RACES} attempts to write it"
    )))
}

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
/// [`finish`] alone. A record that cannot be read or written does not stop it.
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
fn claim_for(r: &mut JobRecord, claim: &ClaimRequest, attempt: u32, max_attempts: u32) -> bool {
    let moved_on = r.state == JobState::Cancelled
        || r.state.is_final()
        || (r.state == JobState::Running && r.attempts >= attempt);
    if moved_on {
        return false;
    }
    // The delivery count is the attempt: a run that died left no trace.
    r.attempts = attempt.saturating_sub(1);
    r.max_attempts = max_attempts;
    apply_claim(r, claim);
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
        let ours = r.state == JobState::Running && r.attempts == attempt;
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
        tracing::warn!(id = %id, error = %e, "could not record how a durable job's run ended");
    }
}

/// `Finish::Succeeded` with the result cut to the record's cap.
pub(crate) fn succeeded(result: Value) -> Finish {
    let (result, truncated) = cut_result(result, RESULT_CAP);
    Finish::Succeeded { result, truncated }
}

/// `Finish::Dead` for `e`.
pub(crate) fn dead(e: &Error) -> Finish {
    Finish::Dead {
        error: ErrorBody::from(e),
    }
}

/// Sets the record of a delayed job `queued` now that it is due and on the work
/// queue (a failure is logged: the job runs all the same).
pub(crate) async fn due(t: &NatsTransport, id: &str) {
    let r = change(t, id, None, |r| {
        if r.state != JobState::Scheduled {
            return Ok(false);
        }
        r.state = JobState::Queued;
        Ok(true)
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(id = %id, error = %e, "could not record that a delayed job is due; it runs all the same");
    }
}

/// The states a job of the cluster's queue may be retried by hand from (one that
/// may still run is redelivered by the queue itself), and the refusal otherwise.
pub(crate) fn may_retry(id: &str, state: JobState) -> Result<(), Error> {
    match state {
        JobState::Dead | JobState::Cancelled | JobState::Succeeded => Ok(()),
        other => Err(wrong_state(
            id,
            other,
            "retry",
            "dead, cancelled or succeeded",
        )),
    }
}

/// Sets the record of `id` `queued` for a retry by hand, if [`may_retry`] allows
/// it: the record and the revision written, `None` when there is no record.
pub(crate) async fn retried(
    t: &NatsTransport,
    id: &str,
    now: chrono::DateTime<Utc>,
) -> Result<Option<(JobRecord, u64)>, Error> {
    let r = change_from(t, id, None, None, |r| {
        may_retry(id, r.state)?;
        apply_retry(r, now);
        Ok(true)
    })
    .await?;
    Ok(r.and_then(|(r, rev)| rev.map(|rev| (r, rev))))
}

/// Puts back the record of a retry whose message could not be published (best
/// effort: logged when it fails), unless a worker moved it on meanwhile.
pub(crate) async fn restore(t: &NatsTransport, id: &str, before: &JobRecord) {
    let r = change(t, id, None, |r| {
        if r.state != JobState::Queued {
            return Ok(false);
        }
        *r = before.clone();
        Ok(true)
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(id = %id, error = %e, "could not put back the record of a job whose retry failed");
    }
}

/// Forgets the record of a final job whose message is gone from the queue: `false`
/// when there is none.
pub(crate) async fn delete(t: &NatsTransport, id: &str) -> Result<bool, Error> {
    let Some(r) = get(t, id).await? else {
        return Ok(false);
    };
    if !r.state.is_final() {
        // Its message is still in the queue: it would run and be recorded again.
        return Err(wrong_state(
            id,
            r.state,
            "delete",
            "final (cancel it first)",
        ));
    }
    // A cancelled job's message may still wait in the queue: without its record a
    // worker would run it. Its outcome is written when a worker drops it.
    let dropped = t.inner.outcomes.get(subjects::key(id)).await;
    if !matches!(dropped, Ok(Some(_))) {
        return Err(Error::new(
            ErrorKind::JobState,
            format!(
                "job `{id}` is {} but its message still waits in the cluster's queue; delete it once an instance has taken and dropped it",
                r.state
            ),
        ));
    }
    t.inner
        .records
        .delete(subjects::key(id))
        .await
        .map_err(|e| unavailable(format!("the record of job {id} cannot be deleted: {e}")))?;
    Ok(true)
}
