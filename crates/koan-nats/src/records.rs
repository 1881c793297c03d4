//! The cluster's job records: the KV bucket `koan_jobs`, key = the job's id (as in
//! `koan_outcomes`), value = its [`JobRecord`] as JSON — what `GET /api/jobs/{id}`
//! answers on any instance. Whoever performs a transition writes it: the accepting
//! host `queued` (or `scheduled`), the worker `running` (with the attempt, once the
//! run has lasted 100 ms: a shorter run is recorded once, at its end) and how the
//! run ended, an operator on any instance `cancelled` (`cancels.rs`). Every change
//! after the first write is a compare-and-set on the entry's revision, so two
//! writers never lose each other's change, but for one: a short first run's
//! success, written whole (`run_record.rs`). A record decides whether a job runs only
//! when it says `cancelled` and is read (a first run's start may not read it).

use async_nats::jetstream::kv;
use chrono::Utc;
use futures_util::StreamExt;
use koan::error::ErrorKind;
use koan::job::{
    Finish, JobRecord, JobState, JobStep, NewJob, RetryFrom, apply_retry, cut_result, wrong_state,
};
use koan::{Error, action::ErrorBody};
use serde_json::Value;

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

pub(crate) fn encode(r: &JobRecord) -> bytes::Bytes {
    // Sized for small parameters: grown from empty it was copied eight times.
    let mut out = Vec::with_capacity(1024);
    // Strings, numbers, dates and JSON values only: serializing cannot fail.
    serde_json::to_writer(&mut out, r).expect("a job record serializes to JSON");
    out.into()
}

/// Writes the first record of `job` unless there is one (its worker may have been
/// quicker): the revision it was written with, `None` when there was one.
pub(crate) async fn accepted(t: &NatsTransport, job: &Job) -> Result<Option<u64>, kv::CreateError> {
    let r = queued(t, job);
    match crate::kv_create::create(&t.inner.records, &subjects::key(&job.id), encode(&r)).await {
        Ok(revision) => Ok(Some(revision)),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why a record cannot be written when the broker has no stream for the bucket
/// of job records (`words`, its answer): the bucket's stream was deleted, or its
/// server is down.
pub(crate) fn bucket_gone(words: &str) -> String {
    format!(
        "the broker has no stream for the cluster's job records (bucket `{}`, stream `KV_{}`; it answered \"{words}\"): the stream was deleted, or the server holding it is unreachable (in a cluster, give it replicas: `koan.nats.replicas`); a host makes it again when it reconnects or restarts",
        subjects::JOBS_BUCKET,
        subjects::JOBS_BUCKET
    )
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
        && e.kind() != kv::DeleteErrorKind::WrongLastRevision
    {
        tracing::warn!(id = %id, error = %e, "could not take back the record of a job that was not stored; it says queued until the bucket forgets it");
    }
}

/// The record of `id`, read from the bucket.
pub(crate) async fn get(t: &NatsTransport, id: &str) -> Result<Option<JobRecord>, Error> {
    Ok(read(t, id, &subjects::key(id)).await?.map(|(r, _)| r))
}

/// [`get`], with how long ago (in ms, by the broker's clock against this host's)
/// the record was last written.
pub(crate) async fn get_aged(
    t: &NatsTransport,
    id: &str,
) -> Result<Option<(JobRecord, i128)>, Error> {
    Ok(read_entry(t, id, &subjects::key(id))
        .await?
        .map(|(r, entry)| (r, age_ms(&entry))))
}

/// How long ago `entry` was written, in ms.
fn age_ms(entry: &kv::Entry) -> i128 {
    i128::from(crate::wire::unix_ms()) - entry.created.unix_timestamp_nanos() / 1_000_000
}

/// How long a scan of the bucket waits for its next record before it asks
/// whether the bucket is empty now (its records may all have expired since it
/// began: the watch then delivers nothing) and otherwise gives up.
const SCAN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The ids of the dead jobs of `service` (or all), read from every record of the
/// bucket in one ordered read: what `retry_all_dead` takes in where this host's
/// view holds only some records. Each record is decoded only as far as its id,
/// service and state.
pub(crate) async fn dead_ids(
    t: &NatsTransport,
    service: Option<&str>,
) -> Result<Vec<String>, Error> {
    #[derive(serde::Deserialize)]
    struct Head {
        id: String,
        service: String,
        state: JobState,
    }
    let store = &t.inner.records;
    let cannot = |e: &dyn std::fmt::Display| {
        unavailable(format!("the cluster's job records cannot be read: {e}"))
    };
    let mut ids = Vec::new();
    let end = crate::streams::bucket_end(store).await;
    if end == Some(0) {
        return Ok(ids);
    }
    let mut watch = store
        .watch_with_history(">")
        .await
        .map_err(|e| cannot(&e))?;
    loop {
        let entry = match tokio::time::timeout(SCAN_WAIT, watch.next()).await {
            Ok(Some(Ok(entry))) => entry,
            Ok(Some(Err(e))) => return Err(cannot(&e)),
            Ok(None) => return Err(cannot(&"the watch ended")),
            Err(_) if crate::streams::bucket_is_empty(store).await => return Ok(ids),
            Err(_) => return Err(cannot(&format!("no record within {SCAN_WAIT:?}"))),
        };
        if entry.operation == kv::Operation::Put
            && let Ok(head) = serde_json::from_slice::<Head>(&entry.value)
            && head.state == JobState::Dead
            && service.is_none_or(|s| head.service == s)
        {
            ids.push(head.id);
        }
        if crate::streams::caught_up(&entry, end) {
            return Ok(ids);
        }
    }
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
pub(crate) type Read = Option<(JobRecord, u64)>;

/// Reads the record of `id`, under `key` (`Err` when it cannot be read or
/// decoded).
pub(crate) async fn read(t: &NatsTransport, id: &str, key: &str) -> Result<Read, Error> {
    Ok(read_entry(t, id, key)
        .await?
        .map(|(r, entry)| (r, entry.revision)))
}

/// [`read`], with the bucket's entry.
async fn read_entry(
    t: &NatsTransport,
    id: &str,
    key: &str,
) -> Result<Option<(JobRecord, kv::Entry)>, Error> {
    // No job's (`..`, say): not asked of the broker, which would refuse it as if
    // it were down.
    if !subjects::is_held_key(key) {
        return Ok(None);
    }
    let entry = t
        .inner
        .records
        .entry(key)
        .await
        .map_err(|e| unavailable(format!("the record of job {id} cannot be read: {e}")))?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Ok(None);
    };
    let r: JobRecord = serde_json::from_slice(&entry.value)
        .map_err(|e| unavailable(format!("the record of job {id} is unreadable: {e}")))?;
    // Another job's, whose id makes the same key (`x y` and `x_y`): not this one.
    if r.id != id {
        return Ok(None);
    }
    Ok(Some((r, entry)))
}

/// How old the record of a job still to end may grow before whoever reads it
/// writes it again ([`kept`]), so that the bucket, which forgets an entry not
/// written for its age limit (its own `max_age`, which its first creator set:
/// `outcome_ttl`), keeps it however long the job waits or runs: a quarter of
/// that limit. `None` when the bucket forgets nothing.
pub(crate) fn refresh_after(t: &NatsTransport) -> Option<std::time::Duration> {
    let keep = t.inner.records.stream.cached_info().config.max_age;
    (!keep.is_zero()).then(|| keep / 4)
}

/// How often the readers that come back to a waiting job (the delayed jobs'
/// mover, the keeper of jobs in the work queue) come back: half of the bucket's
/// age limit. A record is then written again at the latest three quarters of it
/// after its last write; a running job's worker reads it far more often (each
/// third of `ack_wait`).
pub(crate) fn visit_every(t: &NatsTransport) -> Option<std::time::Duration> {
    refresh_after(t).map(|quarter| quarter * 2)
}

/// The record of job `id` as it stands (`None`: the bucket has none), written
/// again as it is when the record was last written [`refresh_after`] ago or more
/// and the job is still to end, or cancelled (its message, which the caller has
/// in hand, may still be delivered: the cancel must hold until then). What reads a
/// waiting or running job's record from time to time (the delayed jobs' mover at
/// each turn, a worker at each progress check, the keeper) keeps it in the
/// bucket, listed, read by id and cancellable. The write is a compare-and-set: a
/// writer that came first wrote it anew.
pub(crate) async fn kept(t: &NatsTransport, id: &str) -> Result<Option<JobRecord>, Error> {
    let key = subjects::key(id);
    let Some((record, entry)) = read_entry(t, id, &key).await? else {
        return Ok(None);
    };
    let age_ms = age_ms(&entry);
    let due = refresh_after(t)
        .is_some_and(|every| age_ms >= i128::try_from(every.as_millis()).unwrap_or(i128::MAX));
    if due && (!record.state.is_final() || record.state == JobState::Cancelled) {
        let again = t
            .inner
            .records
            .update(&key, entry.value, entry.revision)
            .await;
        if let Err(e) = again
            && e.kind() != kv::UpdateErrorKind::WrongLastRevision
        {
            tracing::warn!(id = %id, error = %e, "could not write again the record of a job still to end; the bucket forgets it unless a later turn can");
        }
    }
    Ok(Some(record))
}

/// [`change`], starting from `read`, the record as read a moment ago (when the
/// caller had to read it anyway): a race with another writer reads it again. With
/// the record, the revision it was written with (`None` when `change` wrote none).
pub(crate) async fn change_from(
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
            match crate::kv_create::create(kv, &key, encode(&r)).await {
                Ok(rev) => return Ok(Some((r, Some(rev)))),
                // Written meanwhile: change that one.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
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
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
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
pub(crate) fn may_retry(id: &str, state: JobState, from: RetryFrom) -> Result<(), Error> {
    if from == RetryFrom::Dead {
        return from.check(id, state);
    }
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
    from: RetryFrom,
    now: chrono::DateTime<Utc>,
) -> Result<Option<(JobRecord, u64)>, Error> {
    let r = change_from(t, id, None, None, |r| {
        may_retry(id, r.state, from)?;
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
    let key = subjects::key(id);
    let Some((r, revision)) = read(t, id, &key).await? else {
        return Ok(false);
    };
    // A record behind its outcome (its end write refused by a full bucket) is
    // final in fact: refused as `queued`, the operator's way out of a full
    // cluster, deleting finished jobs, was closed (found by a probe). Judged on
    // the revision read: a retry meanwhile fails the delete's compare-and-set.
    let state = match crate::record_outcome::ended_by_outcome(t, &r).await {
        Some((ended, _, _)) => ended.state,
        None => r.state,
    };
    // A live job's message is still in the queue: it would run and be recorded again.
    koan::job::check_delete(id, state)?;
    // A cancelled job's message may still wait in the queue: without its record a
    // worker would run it. Its outcome is written when a worker drops it.
    let dropped = t.inner.outcomes.get(&key).await;
    if !matches!(dropped, Ok(Some(_))) {
        return Err(Error::new(
            ErrorKind::JobState,
            format!(
                "job `{id}` is {} but its message still waits in the cluster's queue; delete it once an instance has taken and dropped it",
                r.state
            ),
        ));
    }
    // Only the record as read: a retry that set it `queued` meanwhile (its own
    // compare-and-set) wins, and the job it runs keeps its record; one that comes
    // after finds none.
    match t
        .inner
        .records
        .delete_expect_revision(&key, Some(revision))
        .await
    {
        Ok(()) => {
            crate::outcomes::shrink_deleted(t, id, &key).await;
            Ok(true)
        }
        Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Err(Error::new(
            ErrorKind::JobState,
            format!(
                "job `{id}` changed while it was being deleted (retried, say): not deleted; read it again"
            ),
        )),
        Err(e) => Err(unavailable(format!(
            "the record of job {id} cannot be deleted: {e}"
        ))),
    }
}
