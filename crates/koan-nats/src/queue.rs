//! Durable work: a pull consumer per local service on the `KOAN_WORK` work-queue
//! stream (the job's format is in `wire/job.rs`). A job is acknowledged only after
//! its handler succeeded and its outcome was recorded; a crash before that means
//! redelivery to another instance. The outcome is written with create-if-absent
//! under the job's id, so a job is completed once even when it is delivered twice.
//! A failed run is retried as its action's retry policy says (`max_attempts`,
//! `backoff`, as in the host's own store), within the consumer's `max_deliver`
//! deliveries; after the last (or at once for errors that retrying cannot fix) the
//! job goes to `koan.dlq.<service>.<action>`.
//! A message that is not a job this version can run (no id, another wire version,
//! bad headers or body) is refused: its outcome records why (when it has an id) and
//! its dead letter carries the reason in headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{AckKind, Message, kv};
use futures_util::StreamExt;
use koan::job::{Finish, JobState, RetryPolicy, never_retried};
use koan::{HostHandle, error::ErrorKind};
use tokio::sync::Semaphore;

use crate::outcomes::Held;
use crate::subjects;
use crate::transport::NatsTransport;
use crate::wire::{self, Job, Outcome, Reply, Unreadable};
use crate::{records, run_record};

/// How long one pull waits for jobs before asking again.
const PULL_WAIT: Duration = Duration::from_secs(5);

/// Consumes the durable work of `service` until the host stops, reconnecting after
/// errors (a NATS restart, say). It holds no more jobs than the service can run at
/// once (`max_concurrency`): a job waiting here for a slot would be stranded with
/// this host if it died, while another instance sat idle.
pub(crate) async fn consume(t: NatsTransport, host: HostHandle, service: String) {
    let slots = host
        .service(&service)
        .info()
        .await
        .map_or(1, |i| i.max_concurrency.max(1));
    let slots = Arc::new(Semaphore::new(slots));
    crate::streams::consume_until_stopped(&host, &service, "durable work", || {
        consume_once(&t, &host, &service, &slots)
    })
    .await;
}

async fn consume_once(
    t: &NatsTransport,
    host: &HostHandle,
    service: &str,
    slots: &Arc<Semaphore>,
) -> crate::streams::ConsumerResult {
    let stream = crate::streams::work_stream_made_again(t).await?;
    let name = subjects::work_consumer(service);
    let consumer = crate::streams::pull_consumer(
        &stream,
        pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subjects::work_of(service),
            ack_policy: AckPolicy::Explicit,
            max_deliver: t.inner.opts.max_deliver,
            ack_wait: t.inner.opts.ack_wait,
            ..Default::default()
        },
    )
    .await?;
    // The reconnects before this consumer was made (or last checked).
    let mut seen = t.reconnects();
    loop {
        // A free slot first, then as many jobs as there are free slots; none
        // while an outcome waits here for the broker to take it (each would run to
        // an outcome it could not store either).
        let mut permits = vec![Arc::clone(slots).acquire_owned().await?];
        t.inner.refusals.unheld().await;
        while let Ok(p) = Arc::clone(slots).try_acquire_owned() {
            permits.push(p);
        }
        // Jobs stream in as they come, until the batch is full or the pull expires.
        let mut batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_WAIT)
            .messages()
            .await?;
        let mut got = false;
        while let Some(msg) = batch.next().await {
            let msg = msg?;
            got = true;
            let Some(permit) = permits.pop() else { break };
            let (t, host, service) = (t.clone(), host.clone(), service.to_owned());
            // Boxed: a run's future is 9 KB, which tokio would copy several times
            // as it spawns and ends the task (`docs/benchmarks/round-39.md`).
            let tracker = t.clone();
            tracker.spawn_handle(Box::pin(async move {
                handle(&t, &host, &service, msg, permit).await;
            }));
        }
        // A pull that brought nothing after the connection came back: is the
        // consumer still there? A broker back without its streams has none, and
        // pulls from it brought nothing for ever (found by a probe); an error makes
        // it again (`consume_until_stopped`). Asked once a reconnect, not at every
        // idle pull (a request per consumer each 5 s; found by a review).
        if !got && t.reconnects() != seen {
            consumer.clone().info().await?;
            seen = t.reconnects();
        }
    }
}

/// Whether `id` is one a host made up for a single enqueue (a UUID v7), not one an
/// idempotency key names (v8) or a foreign client chose: only such an id cannot
/// have been run by another message.
pub(crate) fn fresh_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36 && b[8] == b'-' && b[13] == b'-' && b[14] == b'7'
}

/// How the action of `job` retries, as declared or configured on this host.
fn retry_policy(host: &HostHandle, job: &Job) -> RetryPolicy {
    host.service(&job.service)
        .retry_policy(&job.action)
        .unwrap_or_default()
}

/// Runs the job may have in all: its action's retry policy, within the
/// consumer's `max_deliver` for this message (JetStream delivers it no more
/// often), and at least one run more than a retry by hand found.
fn max_attempts(t: &NatsTransport, policy: &RetryPolicy, job: &Job) -> u32 {
    let runs_before = job.runs_before();
    let deliveries = u32::try_from(t.inner.opts.max_deliver.max(1)).unwrap_or(u32::MAX);
    policy
        .max_attempts
        .min(runs_before.saturating_add(deliveries))
        .max(runs_before.saturating_add(1))
}

/// What the handler of run `attempt` of `job` sees in `cx.job()`.
fn job_info(job: &Job, attempt: u32) -> koan::job::JobInfo {
    let mut info = koan::job::JobInfo::new(job.id.clone(), attempt);
    info.idempotency_key.clone_from(&job.idempotency_key);
    info
}

/// Runs one delivered job and commits how it ended. `slot` is its place among
/// the service's `max_concurrency`: given back as soon as the run is over, so the
/// next job is asked for while this one's outcome is still being stored (with one
/// slot, the next pull's round trip overlaps the outcome's write instead of
/// following it; B8's `max_concurrency 1`). A job held here still never waits for
/// a slot: the next one comes only when no run holds it.
async fn handle(
    t: &NatsTransport,
    host: &HostHandle,
    service: &str,
    msg: Message,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1).max(1);
    let job = match Job::read(service, &msg.subject, msg.headers.as_ref(), &msg.payload) {
        Ok(j) => j,
        Err(bad) => return refuse(t, &msg, *bad, delivered).await,
    };
    let key = subjects::key(&job.id);
    // Completed before (a redelivery after a crash, or a lost ack, between recording
    // and acking; or a repeat of an idempotency key published after the duplicate
    // window, a new message for a job that ran). The first delivery of a job with a
    // fresh id cannot have been: it skips the look-up.
    if (delivered > 1 || !fresh_id(&job.id) || job.retry.is_some())
        && let Ok(Some(stored)) = t.inner.outcomes.get(&key).await
    {
        let _ = msg.ack().await;
        // Its record may still say `running` (its write after the outcome was cut
        // off by a stop, or timed out): brought in line with the outcome.
        crate::record_outcome::align(t, &job.id, &stored).await;
        return;
    }
    // An action this build lacks (a rolling deploy: the newer instances have it)
    // is handed over to one that announced it, not run here to an
    // `unknown_action` that buried the job (found by a probe: 39 of 40 jobs dead).
    if let Some(action) = crate::handback::lacked_action(host, &job)
        && crate::handback::served_elsewhere(t, &job)
    {
        tracing::info!(id = %job.id, action, "durable job of an action this instance lacks: handed over to an instance that announced it");
        // Held a moment first: this instance would otherwise take it straight back.
        // Within a third of `ack_wait`: JetStream would deliver it again meanwhile.
        let hold = crate::handback::HAND_OVER_AFTER.min(t.inner.opts.ack_wait / 3);
        tokio::time::sleep(hold).await;
        drop(slot);
        let by = "this instance, which lacks its action";
        return crate::handback::release(t, &msg, &job, delivered, by).await;
    }
    // The run's number counts the runs before a retry by hand.
    let runs_before = job.runs_before();
    let attempt = runs_before.saturating_add(u32::try_from(delivered).unwrap_or(u32::MAX));
    let attempts = i64::from(attempt);
    let policy = retry_policy(host, &job);
    let max_attempts = max_attempts(t, &policy, &job);
    let mut req = host
        .service(&job.service)
        .action(&job.action, job.params.clone())
        .priority(job.priority)
        .correlation_id(job.correlation_id.clone())
        // The handler sees the job's id and attempt, to key its side effects.
        .as_job(job_info(&job, attempt));
    match (job.deadline_unix_ms, job.timeout_ms) {
        (Some(deadline), _) => {
            let left = deadline.saturating_sub(wire::unix_ms());
            if left == 0 {
                // Its time ran out while it waited in the stream.
                let e = koan::Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "durable action `{}` of `{}` waited past its timeout before an instance took it",
                        job.action, job.service
                    ),
                );
                let how = records::dead(&e);
                if crate::outcomes::store(t, &key, &job.id, attempts, Reply::of(Err(e))).await {
                    let _ = msg.ack_with(AckKind::Term).await;
                    run_record::finish(t, &job.id, attempt, how, None).await;
                }
                return;
            }
            req = req.timeout(Duration::from_millis(left));
        }
        (None, Some(ms)) => req = req.timeout(Duration::from_millis(ms)),
        (None, None) => {}
    }
    // A chain: the actions after the first, each with its own timeout.
    for step in &job.then {
        req = req
            .action(&step.action, step.params.clone())
            .priority(job.priority);
        if let Some(ms) = step.timeout_ms {
            req = req.timeout(Duration::from_millis(ms));
        }
    }
    // Cancelled by an operator before it ran: it never runs, its waiters are told.
    let Some(started) = run_record::start(t, &job, attempt, max_attempts).await else {
        return crate::cancels::drop_cancelled(t, &msg, &key, &job.id, attempts).await;
    };
    let started = Some(started);
    // Keep the job ours while it runs: a progress ack every third of `ack_wait`. The
    // claim lapses when none got through for `ack_wait` (this process was frozen,
    // or cut off from the broker, say): JetStream hands the job to another
    // instance, so this run must not record an outcome or acknowledge (fencing).
    // "Got through" means the server answered it: a publish succeeds as soon as it
    // is written to the socket, which says nothing about the broker hearing it.
    let ack_wait = t.inner.opts.ack_wait;
    let claimed = std::sync::Mutex::new(Instant::now());
    let lapsed = || claimed.lock().map_or(true, |at| at.elapsed() >= ack_wait);
    // A lapsed claim cancels the run: its handler's token fires.
    let fence = tokio_util::sync::CancellationToken::new();
    // Cancelled by an operator while it runs: the fence stops it too.
    let cancel_asked = std::sync::atomic::AtomicBool::new(false);
    let req = req.cancel_on(fence.clone());
    // A cancel heard of through the cluster's cancels stops it at once.
    let ear = t.inner.cancel_watch.ear(&key);
    let progress = async {
        let heard = ear.cancelled(t, &job.id);
        tokio::pin!(heard);
        loop {
            tokio::select! {
                () = tokio::time::sleep(ack_wait / 3) => {}
                () = &mut heard => {
                    cancel_asked.store(true, std::sync::atomic::Ordering::Release);
                    fence.cancel();
                    return std::future::pending::<()>().await;
                }
            }
            if lapsed() {
                fence.cancel();
                return std::future::pending::<()>().await;
            }
            if crate::cancels::cancelled(t, &job.id).await {
                cancel_asked.store(true, std::sync::atomic::Ordering::Release);
                fence.cancel();
                return std::future::pending::<()>().await;
            }
            let sent = Instant::now();
            // An answer that came after the claim lapsed renews nothing: the job
            // may have been handed over meanwhile.
            if progress_heard(t, &msg, ack_wait / 3).await
                && !lapsed()
                && let Ok(mut at) = claimed.lock()
            {
                *at = sent;
            }
        }
    };
    let result = tokio::select! {
        r = req.execute() => r.and_then(koan::action::ActionOutput::into_json),
        () = progress => Err(claim_lapsed(&job)),
        // The run is on this task, not one of the host's: when the host has
        // stopped (its grace is over) and the handler still did not end at its
        // token, it is dropped here, and the job released for another instance.
        _ = host.wait() => Err(koan::Error::new(
            ErrorKind::ShuttingDown,
            format!(
                "the host stopped while durable job {} of `{}` still ran (its handler did not end at its token within the grace)",
                job.id, job.service
            ),
        )),
    };
    // The run is over (ended, fenced or cut short): its slot is free.
    drop(slot);
    if cancel_asked.load(std::sync::atomic::Ordering::Acquire) {
        return crate::cancels::drop_cancelled(t, &msg, &key, &job.id, attempts).await;
    }
    if fence.is_cancelled() || lapsed() {
        fence.cancel();
        tracing::warn!(id = %job.id, action = %job.action, attempts, "durable job's claim lapsed while it ran (no progress ack for ack_wait); another instance runs it, this run's outcome is not recorded");
        return;
    }
    match result {
        Ok(value) => {
            let how = records::succeeded(value.clone());
            let done = (key.as_str(), job.id.as_str(), attempts);
            let held = crate::outcomes::store_held(t, &msg, done, Reply::of(Ok(value))).await;
            if held == Held::Stored {
                // The recorded outcome is the commit point: should this ack be lost,
                // the redelivery finds the outcome above and is only acked.
                let _ = msg.ack().await;
                finished(&job.service, JobState::Succeeded);
                run_record::finish(t, &job.id, attempt, how, started).await;
            } else if held == Held::TooLarge
                && let Some(e) = unstorable(t, &key, &job, attempts).await
            {
                // The result itself cannot be stored (larger than the broker or the
                // bucket takes): running again would give the same, after running
                // its side effects again. The job ends dead, its waiters told why.
                tracing::error!(id = %job.id, action = %job.action, error = %e, "durable job's result cannot be stored; dead-lettered");
                let how = records::dead(&e);
                let why = Reply::of(Err(e)).reason();
                bury(t, &msg, &job, attempt, how, &why, started).await;
            } else {
                // The outcome cannot be stored (the broker refuses it for good, or
                // not even a small one saying it is too large): run again later
                // rather than leave the enqueuer waiting for an answer that will
                // never be written.
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
        // Cut short by this host's stop: its own word, or the handler's error once
        // its token fired for the stop (its work not done). Either way another
        // instance (or this one after its restart) takes the job: not an attempt
        // used up, never a dead letter for that.
        Err(e)
            if e.kind() == ErrorKind::ShuttingDown
                || (host.is_stopping() && !never_retried(e.kind())) =>
        {
            // Handed back first: the record says so after, keeping the run in its
            // history (ended, `shutting_down`), not as an attempt.
            let now = chrono::Utc::now();
            crate::handback::release(t, &msg, &job, delivered, "this stopping host").await;
            run_record::finish(t, &job.id, attempt, Finish::Stopped { at: now }, started).await;
        }
        Err(e) if never_retried(e.kind()) || attempt >= max_attempts => {
            tracing::error!(id = %job.id, action = %job.action, attempts, error = %e, "durable job dead-lettered");
            let how = records::dead(&e);
            let reply = Reply::of(Err(e));
            let why = reply.reason();
            let done = (key.as_str(), job.id.as_str(), attempts);
            if crate::outcomes::store_held(t, &msg, done, reply).await == Held::Stored {
                bury(t, &msg, &job, attempt, how, &why, started).await;
            } else {
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
        Err(e) => {
            tracing::warn!(id = %job.id, action = %job.action, attempts, error = %e, "durable job failed; will be redelivered");
            let delay = policy.delay(attempt);
            let at = chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            let error = koan::action::ErrorBody::from(&e);
            // Recorded before the message is handed back: the next run's start,
            // which may come at once, then finds this run's end in the record.
            run_record::finish(t, &job.id, attempt, Finish::Retry { error, at }, started).await;
            let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
        }
    }
}

/// Counts a job ended here in `koan_jobs_finished_total`, as the host store's
/// runner does: cluster jobs were not in `/metrics` at all (found by a probe).
fn finished(service: &str, state: JobState) {
    metrics::counter!("koan_jobs_finished_total", "service" => service.to_owned(), "state" => state.as_str())
        .increment(1);
}

/// Ends `job` dead: its dead letter, its message ended for good, then its record.
async fn bury(
    t: &NatsTransport,
    msg: &Message,
    job: &Job,
    attempt: u32,
    how: Finish,
    why: &(String, String),
    started: Option<run_record::Started>,
) {
    let (h, body) = (msg.headers.as_ref(), &msg.payload);
    let (service, action) = (&job.service, &job.action);
    crate::dead_letter::publish(t, h, body, service, action, Some(&job.id), why).await;
    let _ = msg.ack_with(AckKind::Term).await;
    finished(service, JobState::Dead);
    run_record::finish(t, &job.id, attempt, how, started).await;
}

/// Sends a progress ack as a request: JetStream answers an ack that has a reply
/// subject once it processed it. Whether that answer came within `wait`.
async fn progress_heard(t: &NatsTransport, msg: &Message, wait: Duration) -> bool {
    let Some(reply) = msg.reply.clone() else {
        return false;
    };
    let ack = t
        .inner
        .client
        .request(reply, bytes::Bytes::from_static(b"+WPI"));
    matches!(tokio::time::timeout(wait, ack).await, Ok(Ok(_)))
}

fn claim_lapsed(job: &Job) -> koan::Error {
    koan::Error::new(
        ErrorKind::JobState,
        format!(
            "durable job {} of `{}` lost its claim while running",
            job.id, job.service
        ),
    )
}

/// Refuses a message that is not a runnable job: records the refusal as its outcome
/// when it has an id (so its sender reads why), and dead-letters it with the reason.
async fn refuse(t: &NatsTransport, msg: &Message, bad: Unreadable, attempts: i64) {
    let Unreadable {
        id,
        service,
        action,
        reply,
    } = bad;
    let why = reply.reason();
    tracing::error!(id = ?id, subject = %msg.subject, error = %why.1, "durable job refused; dead-lettered");
    if let Some(id) = &id
        && !crate::outcomes::store(t, &subjects::key(id), id, attempts, reply).await
    {
        let _ = msg
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    }
    let (h, body) = (msg.headers.as_ref(), &msg.payload);
    crate::dead_letter::publish(t, h, body, &service, &action, id.as_deref(), &why).await;
    let _ = msg.ack_with(AckKind::Term).await;
}

/// After a successful run's result was found too large to store: records a small
/// outcome saying so, and returns that error. `None`: the broker did not take it
/// either. (Only a result `too_large` says so: a nearly full bucket that took the
/// small outcome had 20 jobs that succeeded dead-lettered; found by a probe.)
async fn unstorable(t: &NatsTransport, key: &str, job: &Job, attempts: i64) -> Option<koan::Error> {
    let e = koan::Error::new(
        ErrorKind::Handler,
        format!(
            "durable job {} of `{}` ran, but its result could not be stored (larger than the broker or the outcomes bucket takes): its side effects are done, its result is lost; it is not run again",
            job.id, job.service
        ),
    );
    let outcome = Outcome {
        id: job.id.clone(),
        host: t.inner.host_id.clone(),
        attempts,
        reply: Reply::of(Err(e.clone())),
    };
    let body = serde_json::to_vec(&outcome).unwrap_or_default();
    match t.inner.outcomes.create(key, body.into()).await {
        Ok(_) => Some(e),
        // Another delivery's outcome stands: the job ended there.
        Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => None,
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_made_up_id_is_fresh() {
        assert!(super::fresh_id(&koan::job::new_job_id()));
        assert!(!super::fresh_id("0193a6c2-7b1e-8c3d-9e4f-a5b6c7d8e9f0"));
        assert!(!super::fresh_id("order-17"));
    }
}
