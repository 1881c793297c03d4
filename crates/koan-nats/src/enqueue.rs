//! Putting jobs on the work stream (`KOAN_WORK`, or `KOAN_DELAYED` until they are
//! due): a new enqueue, and a retry by hand of a job that ended (dead, cancelled or
//! succeeded), from any instance.
//!
//! A retry publishes the job again under the same job id with a message id of its
//! own (`Koan-Action-Id` + `Koan-Runs-Before`, `docs/wire.md`), after its record is
//! set `queued` and its old outcome is removed: the record's compare-and-set is what
//! lets one retry of two win, and the outcome's create-if-absent then holds for the
//! new run as it did for the first.

use async_nats::jetstream::context::PublishErrorKind;
use chrono::Utc;
use koan::Error;
use koan::error::ErrorKind;
use koan::job::{JobRecord, RetryFrom};
use koan::transport::{DurableJob, RemoteCall};

use crate::records;
use crate::subjects;
use crate::transport::{NatsTransport, unavailable};
use crate::wire::{Job, Retry};

/// The job of `call` as `job` names it, to run at once or from its `run_at` on.
/// Its timeout counts from when an instance starts it, as a host's own store's
/// does (docs/jobs.md): sent as `Koan-Timeout-Ms` alone. A deadline counted from
/// the enqueue (`Koan-Deadline-Unix-Ms`) made a job that waited behind callers
/// in its service's mailbox dead unrun, "waited past its timeout before an
/// instance took it", its attempts never tried (a re-probe).
pub(crate) fn job_of(call: RemoteCall, job: DurableJob) -> Job {
    let run_at_unix_ms = job
        .run_at
        .map(|at| u64::try_from(at.timestamp_millis()).unwrap_or(0));
    let timeout_ms = call
        .timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    Job {
        id: job.id,
        service: call.service.to_string(),
        action: call.action,
        params: call.params,
        priority: call.priority,
        timeout_ms,
        deadline_unix_ms: None,
        run_at_unix_ms,
        correlation_id: call.correlation_id,
        idempotency_key: job.idempotency_key,
        then: job.then,
        retry: None,
    }
}

/// Publishes a new job and writes its first record (`queued`, or `scheduled`
/// until it is due): `true` when stored now, `false` for a repeat of its id.
///
/// The job and its record go out together and their answers are awaited
/// together: one socket write and one wait instead of two each (B8 durable: 2.6
/// -> 1.8 writes a job in koan's process, `docs/benchmarks/round-39.md`).
/// The record stays only when the job is stored now; otherwise it is taken back.
///
/// A job whose id is not one a host made up for it (an idempotency key names it,
/// or a foreign client chose it) may repeat one the cluster holds: its record is
/// written first, and only a job without one is published. A repeat stores
/// nothing, however long after the first (JetStream's duplicate window, 120 s,
/// tells only of repeats close together: past it, the repeat of a job still
/// running was stored, and ran beside it).
pub(crate) async fn enqueue(t: &NatsTransport, job: &Job) -> Result<bool, Error> {
    // No room for its record or outcome (with a storage budget): refused, nothing
    // sent.
    let buckets = (&t.inner.outcomes, &t.inner.records);
    if let Err(why) = t.inner.room.for_new_job(buckets, &t.inner.opts).await {
        // (A repeat of a job stored already is answered as ever.)
        let stored = !crate::queue::fresh_id(&job.id)
            && matches!(records::get(t, &job.id).await, Ok(Some(_)));
        if !stored {
            t.inner.refusals.note_full(crate::storage::NEW_JOB, &why);
            return Err(Error::new(
                ErrorKind::StoreUnavailable,
                format!(
                    "durable enqueue of `{}` on `{}`: not stored: {why}",
                    job.action, job.service
                ),
            ));
        }
    }
    // Together for a fresh id (B8: one wait instead of two); with a storage
    // budget, the record first, so that a job whose record finds no room is
    // refused with nothing sent (sent together, 26 of 163 accepted jobs had no
    // record and answered 404; found by a probe).
    let together = crate::queue::fresh_id(&job.id) && t.inner.opts.storage_budget_bytes.is_none();
    let (stored, record) = if together {
        tokio::join!(publish(t, job), records::accepted(t, job))
    } else {
        let record = records::accepted(t, job).await;
        if let Err(err) = &record
            && t.inner.opts.storage_budget_bytes.is_some()
        {
            let e = err.to_string();
            t.inner.refusals.note(crate::storage::NEW_JOB, &e);
            // The store refused the write, as a host's full disk: the same kind.
            // async-nats words a refused create "failed getting entry" (a probe).
            let (kind, why) = if let Some(words) = crate::kv_create::no_stream(err) {
                (ErrorKind::StoreUnavailable, records::bucket_gone(&words))
            } else if crate::storage::is_full(&e) {
                let why = format!(
                    "the cluster's job records bucket is full (the broker refused the write: {e}); delete finished jobs, or raise `koan.nats.storage_budget_mb`"
                );
                (ErrorKind::StoreUnavailable, why)
            } else {
                (ErrorKind::ServiceUnavailable, e)
            };
            return Err(Error::new(
                kind,
                format!(
                    "durable enqueue of `{}` on `{}`: not stored: its record cannot be written: {why}",
                    job.action, job.service
                ),
            ));
        }
        if matches!(record, Ok(None)) {
            // Under a key, the same call only (the job the key named asked).
            if job.idempotency_key.is_some()
                && let Ok(Some(first)) = records::get(t, &job.id).await
            {
                let asked = records::queued(t, job);
                koan::job::same_call(&first, &job.service, &asked.steps())?;
            }
            return Ok(false);
        }
        (publish(t, job).await, record)
    };
    match (&stored, record) {
        (Ok(true), Ok(_)) => {}
        (Ok(true), Err(e)) => {
            let e = e.to_string();
            // Said in `/health` too: the job runs, but no listing shows it.
            t.inner.refusals.note(crate::storage::RECORD, &e);
            tracing::warn!(id = %job.id, error = %e, "could not write the record of an accepted job; the job runs all the same");
        }
        (_, Ok(Some(revision))) => records::withdraw(t, &job.id, revision).await,
        (_, _) => {}
    }
    stored
}

/// Publishes `job` and waits for JetStream's ack: `true` when stored now, `false`
/// when a message with its id was stored before. A `Timeout` error means the
/// outcome is unknown (sent, not confirmed: the client may deliver it on
/// reconnect); any other error means it is not stored.
pub(crate) async fn publish(t: &NatsTransport, job: &Job) -> Result<bool, Error> {
    let (subject, h, body) = job.message();
    let what = format!("durable enqueue of `{}` on `{}`", job.action, job.service);
    // Not handed to the client: certainly not stored.
    let ack = t
        .inner
        .js
        .publish_with_headers(subject, h, body)
        .await
        .map_err(|e| unavailable(format!("{what}: not stored: {e}")))?;
    let ack = ack.await;
    if let Err(e) = &ack {
        t.inner
            .refusals
            .note(crate::storage::NEW_JOB, &e.to_string());
    }
    match ack {
        // A repeat of a stored id: JetStream kept the first.
        Ok(ack) if ack.duplicate => Ok(false),
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
            ) =>
        {
            Err(Error::new(
                ErrorKind::Timeout,
                format!("{what}: JetStream did not confirm it ({e})"),
            ))
        }
        // Its storage full: as a host's full disk, the same kind.
        Err(e) if crate::storage::is_full(&e.to_string()) => Err(Error::new(
            ErrorKind::StoreUnavailable,
            format!("{what}: not stored by JetStream, its storage full: {e}"),
        )),
        // The stream's server down (in a cluster, the node with its only copy):
        // "no stream found" named neither the stream nor what to do (a probe).
        Err(e) if crate::storage::no_stream(&e.to_string()) => Err(unavailable(format!(
            "{what}: not stored by JetStream ({e}): the server holding the work stream `{}` is unreachable, or the stream was deleted; it is made again when the connection comes back (in a cluster, give the stream replicas: `koan.nats.replicas`)",
            crate::subjects::WORK_STREAM
        ))),
        Err(e) => Err(unavailable(format!("{what}: not stored by JetStream: {e}"))),
    }
}

/// Runs job `id` of the cluster's queue again: `None` when the cluster has no
/// record of it. A job that may still run (queued, running, retrying: the queue
/// redelivers it itself) is refused with `JobState`, and so is a cancelled one
/// whose message still waits in the queue; `from` may allow only a dead one.
pub(crate) async fn retry(
    t: &NatsTransport,
    id: &str,
    from: RetryFrom,
) -> Result<Option<JobRecord>, Error> {
    let Some(before) = records::get(t, id).await? else {
        return Ok(None);
    };
    let before = crate::record_outcome::settled(t, before).await;
    records::may_retry(id, before.state, from)?;
    // The old outcome marks the old message as done: a worker that takes it drops
    // it. Until a worker has, that message may still run; retrying now would run
    // the job twice.
    let key = subjects::key(id);
    let old_outcome = t
        .inner
        .outcomes
        .get(&key)
        .await
        .map_err(|e| unavailable(format!("the outcome of job {id} cannot be read: {e}")))?;
    let Some(old_outcome) = old_outcome else {
        return Err(Error::new(
            ErrorKind::JobState,
            format!(
                "job `{id}` is {} but its message still waits in the cluster's queue; retry it once an instance has taken and dropped it",
                before.state
            ),
        ));
    };
    let Some((record, revision)) = records::retried(t, id, from, Utc::now()).await? else {
        return Ok(None);
    };
    let job = Job {
        id: id.to_owned(),
        service: record.service.clone(),
        action: record.action.clone(),
        params: record.params.clone(),
        priority: record.priority,
        timeout_ms: record.timeout_ms,
        deadline_unix_ms: None,
        run_at_unix_ms: None,
        correlation_id: record.correlation_id.clone(),
        idempotency_key: record.idempotency_key.clone(),
        then: record.then.clone(),
        retry: Some(Retry {
            runs_before: record.attempts,
            // The record's revision is new with every write: one message per retry.
            msg_id: format!("{id}.retry.{revision}"),
        }),
    };
    // The new run's outcome is created afresh.
    t.inner
        .outcomes
        .delete(&key)
        .await
        .map_err(|e| unavailable(format!("the outcome of job {id} cannot be removed: {e}")))?;
    match publish(t, &job).await {
        Ok(_) => Ok(Some(record)),
        // Perhaps stored: the record stays `queued`, as it will run if it was.
        Err(e) if e.kind() == ErrorKind::Timeout => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "job `{id}` may or may not be queued again (its record says queued): {}",
                e.message()
            ),
        )),
        Err(e) => {
            // Not stored: put the job back as it was, outcome first.
            let _ = t.inner.outcomes.put(&key, old_outcome).await;
            records::restore(t, id, &before).await;
            Err(Error::new(
                e.kind(),
                format!("job `{id}` was not retried: {}", e.message()),
            ))
        }
    }
}
