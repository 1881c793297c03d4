//! Waiting for outcomes of durable jobs: one watch of the whole `koan_outcomes`
//! bucket per connection, and a table of waiters by key — not a server-side watch
//! per job. The watch is held only while outcomes are awaited (and `watch_idle`
//! after the last), so a host that awaits none (a worker) receives none of the
//! cluster's outcomes. When a watch begins, the keys awaited are read once (an
//! outcome written before it began, or while the last was broken by a NATS
//! restart); a sweep reads a key at its first tick unless the key's job was just
//! stored new (an outcome may be older than its waiter: a repeat of a job, or a
//! job that ended before it was awaited), and every key each minute after, as a
//! safety net.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use koan::Error;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

use crate::transport::{NatsTransport, unavailable};
use crate::wire::{Outcome, Reply};

type Waiters = Mutex<HashMap<String, Awaited>>;

/// One key's waiters, and when the sweep reads the key next.
struct Awaited {
    txs: Vec<oneshot::Sender<Result<Value, Error>>>,
    next: Instant,
}

/// How often the sweep reads a key awaited. A live watch delivers every outcome
/// written since it began, and a new one begins by reading every key awaited: past
/// a key's first read (its outcome may be older than its waiter), the sweep is a
/// safety net, not the way outcomes arrive. (Read every second, 100,000 waiters
/// cost the broker 100,000 reads a second.)
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How many awaited keys are read at once (when a watch begins, every key
/// awaited: after a NATS restart, possibly thousands).
const READ_AT_ONCE: usize = 64;

/// The waiters of one connection.
#[derive(Default)]
pub(crate) struct OutcomeWaiters {
    waiting: Waiters,
    /// Told of each new waiter: the watch begins when the first comes.
    wanted: Notify,
}

impl std::fmt::Debug for OutcomeWaiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeWaiters")
            .field("waiting", &self.lock().len())
            .finish()
    }
}

fn read(key: &str, bytes: &[u8]) -> Result<Value, Error> {
    match serde_json::from_slice::<Outcome>(bytes) {
        Ok(outcome) => outcome.reply.into_result(),
        Err(e) => Err(unavailable(format!("outcome of {key} is unreadable: {e}"))),
    }
}

impl OutcomeWaiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Awaited>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter for `key`.
    pub(crate) fn wait(&self, key: &str) -> oneshot::Receiver<Result<Value, Error>> {
        let (tx, rx) = oneshot::channel();
        self.lock()
            .entry(key.to_owned())
            .or_insert_with(|| Awaited {
                txs: Vec::new(),
                // Its outcome may be there already: read at the next tick.
                next: Instant::now(),
            })
            .txs
            .push(tx);
        self.wanted.notify_one();
        rx
    }

    /// `key`'s job was stored new after its waiter came: its outcome cannot be
    /// older than the waiter, so the sweep need not read it before `SWEEP_EVERY`.
    pub(crate) fn stored_new(&self, key: &str) {
        if let Some(a) = self.lock().get_mut(key) {
            a.next = Instant::now() + SWEEP_EVERY;
        }
    }

    /// Answers every waiter of `key` with the stored outcome.
    pub(crate) fn resolve(&self, key: &str, bytes: &[u8]) {
        let waiters = self.lock().remove(key);
        for tx in waiters.into_iter().flat_map(|a| a.txs) {
            let _ = tx.send(read(key, bytes));
        }
    }

    /// The table without the waiters that gave up.
    fn pruned(&self) -> MutexGuard<'_, HashMap<String, Awaited>> {
        let mut w = self.lock();
        w.retain(|_, a| {
            a.txs.retain(|tx| !tx.is_closed());
            !a.txs.is_empty()
        });
        w
    }

    fn is_empty(&self) -> bool {
        self.pruned().is_empty()
    }

    /// Every key awaited.
    fn pending(&self) -> Vec<String> {
        self.pruned().keys().cloned().collect()
    }

    /// The keys awaited that the sweep reads `now`, each read next `SWEEP_EVERY`
    /// later.
    fn due(&self, now: Instant) -> Vec<String> {
        let mut w = self.pruned();
        let mut keys = Vec::new();
        for (key, a) in w.iter_mut().filter(|(_, a)| a.next <= now) {
            a.next = now + SWEEP_EVERY;
            keys.push(key.clone());
        }
        keys
    }
}

/// Watches the bucket while outcomes are awaited, for as long as the transport
/// lives (its task is cancelled when the transport is dropped).
pub(crate) async fn follow(store: kv::Store, waiters: Arc<OutcomeWaiters>, idle: Duration) {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // No one waits: no watch.
        while waiters.is_empty() {
            // A waiter that comes before this await left a permit: not missed.
            waiters.wanted.notified().await;
        }
        let watch = tokio::time::timeout(Duration::from_secs(2), store.watch_all()).await;
        let mut watch = match watch {
            Ok(Ok(w)) => Some(w),
            _ => None,
        };
        // What was written before this watch began.
        read_keys(&store, &waiters, waiters.pending()).await;
        sweep.reset();
        let mut unwaited_since = None;
        let mut unwaited = false;
        loop {
            tokio::select! {
                entry = async {
                    match watch.as_mut() {
                        Some(w) => w.next().await,
                        None => std::future::pending().await,
                    }
                } => match entry {
                    Some(Ok(e)) if e.operation == kv::Operation::Put => waiters.resolve(&e.key, &e.value),
                    Some(Ok(_)) => {}
                    // The watch broke (a NATS restart, say): make a new one.
                    Some(Err(_)) | None => break,
                },
                _ = sweep.tick() => {
                    read_keys(&store, &waiters, waiters.due(Instant::now())).await;
                    if watch.is_none() {
                        break;
                    }
                    // Awaited by no one for `idle`: the watch ends.
                    if waiters.is_empty() {
                        if unwaited_since.get_or_insert_with(Instant::now).elapsed() >= idle {
                            unwaited = true;
                            break;
                        }
                    } else {
                        unwaited_since = None;
                    }
                }
            }
        }
        if !unwaited {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Reads `keys`, answering the waiters of those with an outcome.
async fn read_keys(store: &kv::Store, waiters: &OutcomeWaiters, keys: Vec<String>) {
    futures_util::stream::iter(keys)
        .for_each_concurrent(READ_AT_ONCE, |key| async move {
            if let Ok(Ok(Some(bytes))) =
                tokio::time::timeout(Duration::from_secs(1), store.get(key.as_str())).await
            {
                waiters.resolve(&key, &bytes);
            }
        })
        .await;
}

/// Replaces a deleted job's stored outcome with a small one saying so: kept whole,
/// its result held its bytes of the outcomes' share for up to `outcome_ttl`, and
/// deleting old jobs of a full cluster freed no room for new ones (a probe's
/// cluster stayed full an hour). Not purged: the outcome is what tells a copy of
/// the job's message still in the queue (a lost ack's redelivery, a hand-back's
/// second message) that it ran (a review). Best effort: logged when it fails.
pub(crate) async fn shrink_deleted(t: &NatsTransport, id: &str, key: &str) {
    let Ok(Some(entry)) = t.inner.outcomes.entry(key).await else {
        return;
    };
    let Ok(mut outcome) = serde_json::from_slice::<Outcome>(&entry.value) else {
        return;
    };
    outcome.reply = Reply {
        ok: None,
        error: Some(koan::error::ErrorKind::UnknownJob.as_str().to_owned()),
        message: Some(format!("job `{id}` ran, and was deleted since")),
        not_started: false,
    };
    let Ok(body) = serde_json::to_vec(&outcome) else {
        return;
    };
    if body.len() >= entry.value.len() {
        return;
    }
    if let Err(e) = t
        .inner
        .outcomes
        .update(key, body.into(), entry.revision)
        .await
    {
        tracing::debug!(job = %id, error = %e, "the job's record is deleted, but its outcome is kept whole until it expires");
    }
}

/// Stores the outcome; `false` when it could not be stored (not when it existed).
pub(crate) async fn store(
    t: &NatsTransport,
    key: &str,
    id: &str,
    attempts: i64,
    reply: Reply,
) -> bool {
    matches!(
        try_store(t, key, id, attempts, reply, false).await,
        Tried::Stored
    )
}

/// How a try to store an outcome went.
enum Tried {
    Stored,
    /// Refused for want of room, or not answered (the broker away): worth trying
    /// again.
    Refused,
    /// Refused for another reason (a key the bucket will not take, no right to
    /// write): no try will do better.
    Failed(String),
}

/// `a_run`: the outcome is a run's, and no earlier try of it may have been
/// stored unanswered: another outcome in its place says the job ran again.
async fn try_store(
    t: &NatsTransport,
    key: &str,
    id: &str,
    attempts: i64,
    reply: Reply,
    a_run: bool,
) -> Tried {
    let outcome = Outcome {
        id: id.to_owned(),
        host: t.inner.host_id.clone(),
        attempts,
        reply,
    };
    let body = serde_json::to_vec(&outcome).unwrap_or_default();
    // Create-if-absent: the first completion stands.
    match t.inner.outcomes.create(key, body.into()).await {
        Ok(_) => Tried::Stored,
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            if a_run {
                said_ran_again(t, key, id, attempts).await;
            } else {
                tracing::debug!(id = %id, "outcome already recorded by another delivery");
            }
            Tried::Stored
        }
        Err(e) => {
            let text = e.to_string();
            t.inner.refusals.note(crate::storage::OUTCOME, &text);
            tracing::warn!(id = %id, error = %text, "could not record a durable job's outcome");
            let worth_again = crate::storage::is_full(&text)
                || t.connection_state() != crate::ConnectionState::Connected
                || text.contains("timed out")
                || text.contains("no responders");
            if worth_again {
                Tried::Refused
            } else {
                Tried::Failed(text)
            }
        }
    }
}

/// Says, when the outcome found in place of this run's is another run's, that the
/// job ran again after its outcome was recorded: a redelivery the broker lost
/// track of (a cluster node killed with the work stream's only copy; delivery is
/// at least once). Its record shows the first run only: a probe found 2 of 1,310
/// jobs run twice with nothing anywhere saying so.
async fn said_ran_again(t: &NatsTransport, key: &str, id: &str, attempts: i64) {
    let first = match t.inner.outcomes.get(key).await {
        Ok(Some(bytes)) => serde_json::from_slice::<Outcome>(&bytes).ok(),
        _ => None,
    };
    // A cancel's outcome, written while the run ended, is no run's.
    let job_state = Some(koan::error::ErrorKind::JobState.as_str());
    let Some(first) = first.filter(|f| f.reply.error.as_deref() != job_state) else {
        tracing::debug!(id = %id, "outcome already recorded by another delivery");
        return;
    };
    metrics::counter!("koan_jobs_ran_again_total").increment(1);
    tracing::warn!(id = %id, first_host = %first.host, first_attempt = first.attempts, attempt = attempts, "durable job ran again after its outcome was recorded (a redelivery the broker lost track of: delivery is at least once); the outcome of this run was not recorded, its record keeps the first");
}

/// How [`store_held`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// The outcome is stored (or another delivery's was).
    Stored,
    /// The broker or the bucket will never take it: it is too large.
    TooLarge,
    /// The broker refused it for a reason no try will change (said in the log).
    Failed,
}

/// Stores the outcome of a run that ended, trying again while the broker refuses
/// it (its storage full, a moment's outage) for as long as this process lives —
/// through its host's stop, up to the node's wait for its jobs in hand — keeping
/// the job's claim with a progress ack before each try: a job that ran must not
/// run again because its outcome could not be written at once. Before, it was
/// handed back after a second (a probe with JetStream's storage full saw each of
/// 535 jobs run 5 times, then end dead), then after ten minutes or at once at a
/// stop (the job ran again on another host; found by a probe). A full bucket
/// frees room as its outcomes expire (`outcome_ttl`).
///
/// While it retries, this host's workers take no new job (see
/// [`Refusals::hold`](crate::storage::Refusals::hold)).
pub(crate) async fn store_held(
    t: &NatsTransport,
    msg: &async_nats::jetstream::Message,
    (key, id, attempts): (&str, &str, i64),
    reply: Reply,
) -> Held {
    let mut pause = Duration::from_millis(250);
    let mut holding = None;
    let mut first = true;
    loop {
        // Past the first try, an outcome in place may be an earlier try's.
        let a_run = std::mem::replace(&mut first, false);
        let failed = match try_store(t, key, id, attempts, reply.clone(), a_run).await {
            Tried::Stored => return Held::Stored,
            Tried::Refused => None,
            Tried::Failed(why) => Some(why),
        };
        // The claim kept first: the tries below may take a while.
        let _ = msg.ack_with(async_nats::jetstream::AckKind::Progress).await;
        holding.get_or_insert_with(|| t.inner.refusals.hold());
        let outcome = Outcome {
            id: id.to_owned(),
            host: t.inner.host_id.clone(),
            attempts,
            reply: reply.clone(),
        };
        if too_large(t, &outcome).await {
            return Held::TooLarge;
        }
        if let Some(why) = failed {
            tracing::error!(id = %id, error = %why, "a durable job's outcome cannot be stored, and no try will do better; it is handed back");
            return Held::Failed;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(t.inner.opts.ack_wait / 3);
    }
}

/// Whether `outcome`, as stored, is larger than the broker (`max_payload`), a
/// message of the outcomes' stream (`max_message_size`), or all that stream may
/// hold (its share of a storage budget: it would wait for room for ever; found by
/// a probe) takes.
async fn too_large(t: &NatsTransport, outcome: &Outcome) -> bool {
    // Its body as published, and the headers a KV create sends with it.
    const KV_HEADERS: usize = 128;
    let body = serde_json::to_vec(outcome).map_or(0, |b| b.len());
    let len = body + KV_HEADERS;
    if len > t.inner.client.server_info().max_payload {
        return true;
    }
    let name = format!("KV_{}", crate::subjects::OUTCOMES_BUCKET);
    let Ok(mut stream) = t.inner.js.get_stream(name).await else {
        return false;
    };
    stream.info().await.is_ok_and(|i| {
        let over = |len: usize, limit: i64| usize::try_from(limit).is_ok_and(|max| len > max);
        over(len, i64::from(i.config.max_message_size)) || over(body, i.config.max_bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_reads_a_key_at_once_unless_its_job_was_just_stored_then_each_minute() {
        let w = OutcomeWaiters::default();
        let (new, old) = (w.wait("new"), w.wait("old"));
        w.stored_new("new");
        let t0 = Instant::now();
        assert_eq!(w.due(t0), ["old"]);
        assert!(w.due(t0 + Duration::from_secs(59)).is_empty());
        let mut both = w.due(t0 + Duration::from_secs(61));
        both.sort();
        assert_eq!(both, ["new", "old"]);
        // A key whose waiter gave up is read no more.
        drop((new, old));
        assert!(w.due(t0 + Duration::from_secs(1000)).is_empty());
        assert!(w.is_empty());
    }
}
