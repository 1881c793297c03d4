//! Cancelling a cluster job. An operator's cancel writes a marker under the job's
//! key in the KV bucket `koan_cancels` before it sets the job's record
//! `cancelled`. Every host that runs durable jobs follows that bucket (cancels
//! are rare: the watch costs nothing while there are none), so a worker learns
//! whether a job it was handed was cancelled without reading the job's record
//! first: one KV request a job less, at the broker and here (B8 durable,
//! `docs/benchmarks/round-40.md`). While the watch is not caught up (begun a
//! moment ago, broken, or the connection down) the worker reads the record, as
//! it did before; a marker it holds is checked against the record, which has the
//! last word (a job retried by hand since runs). What this gives up (a moment's
//! lag, a consumer that vanished unnoticed, an older host's cancel without a
//! marker): `docs/wire.md`, "Job records".

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message, kv};
use chrono::Utc;
use futures_util::StreamExt;
use koan::Error;
use koan::job::{JobRecord, JobState, apply_cancel, wrong_state};
use tokio_util::sync::CancellationToken;

use crate::connection::ConnectionState;
use crate::streams::bucket_is_empty;
use crate::subjects;
use crate::transport::{NatsTransport, unavailable};
use crate::wire::Reply;

/// How often, at most, the follower forgets markers the bucket has forgotten
/// (a third of the bucket's age limit when that is shorter: a marker forgotten
/// there must not be held here much longer, or a test of it would wait a minute).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Markers one host holds at most (some 10 MB). Past it, a flood of cancels
/// does not grow the host: jobs' records are read until the markers it could not
/// hold have expired from the bucket.
const MAX_MARKED: usize = 100_000;

/// The keys marked, with when this host heard of each, and since when it has
/// been full.
#[derive(Debug, Default)]
struct Marks {
    keys: HashMap<String, Instant>,
    full_since: Option<Instant>,
}

/// What this host knows of the cluster's cancels: the keys marked, while its
/// watch of `koan_cancels` is caught up.
#[derive(Debug)]
pub(crate) struct CancelWatch {
    marked: Mutex<Marks>,
    /// Whether the watch is caught up with the bucket (and the connection up).
    live: AtomicBool,
    following: AtomicBool,
    /// How long the bucket keeps a marker (its own `max_age`, which its first
    /// creator set: not this host's `outcome_ttl`, should the two differ).
    keep: Duration,
    /// When the bucket was created (Unix ms): a job accepted before may have been
    /// cancelled by a host that wrote no marker (an older version).
    since_unix_ms: i64,
    /// The jobs running on this host, by key: each told when a marker comes.
    running: koan::job::Running,
}

impl CancelWatch {
    /// What this host knows of the cancels in `bucket`.
    pub(crate) fn new(bucket: &kv::Store) -> CancelWatch {
        let info = bucket.stream.cached_info();
        let max_age = info.config.max_age;
        let keep = if max_age.is_zero() {
            Duration::MAX
        } else {
            max_age
        };
        let since = i64::try_from(info.created.unix_timestamp_nanos() / 1_000_000);
        CancelWatch::with(keep, since.unwrap_or(i64::MAX))
    }

    fn with(keep: Duration, since_unix_ms: i64) -> CancelWatch {
        CancelWatch {
            marked: Mutex::new(Marks::default()),
            live: AtomicBool::new(false),
            following: AtomicBool::new(false),
            keep,
            since_unix_ms,
            running: koan::job::Running::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Marks> {
        self.marked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether job `id` (under `key`) can be taken for not cancelled without
    /// reading its record: its id one a host made up (UUID v7) after the bucket
    /// was created, this host's watch caught up, and no marker for it. The watch
    /// is begun if it was not.
    pub(crate) fn may_skip_read(self: &Arc<Self>, t: &NatsTransport, id: &str, key: &str) -> bool {
        if !self.following.swap(true, Ordering::AcqRel) {
            let conn = t.watch_connection();
            let follower = follow(t.inner.cancels.clone(), Arc::downgrade(self), conn);
            tokio::spawn(t.inner.dropped.clone().run_until_cancelled_owned(follower));
        }
        self.vouches_for(id, key)
    }

    /// [`may_skip_read`](Self::may_skip_read)'s answer, the watch left as it is.
    fn vouches_for(&self, id: &str, key: &str) -> bool {
        koan::job::new_job_id_time(id).is_some_and(|at| at.timestamp_millis() > self.since_unix_ms)
            && self.unmarked(key)
    }

    /// Whether this host heard of a marker for `key` (and has not forgotten it).
    pub(crate) fn holds(&self, key: &str) -> bool {
        self.lock().keys.contains_key(key)
    }

    /// Whether this host's watch is caught up and holds no marker for `key`
    /// (and held every marker it heard of).
    pub(crate) fn unmarked(&self, key: &str) -> bool {
        if !self.live.load(Ordering::Acquire) {
            return false;
        }
        let marks = self.lock();
        marks.full_since.is_none() && !marks.keys.contains_key(key)
    }

    /// Hears, for as long as the returned [`Ear`] lives, of a cancel of the job
    /// under `key`, which runs here (told at once if its marker came already:
    /// registered first, then the markers read, as `apply` writes a marker,
    /// then tells the runs).
    pub(crate) fn ear(&self, key: &str) -> Ear<'_> {
        let token = CancellationToken::new();
        let registered = self.running.register(key, [token.clone()]);
        if self.holds(key) {
            token.cancel();
        }
        Ear {
            _registered: registered,
            token,
        }
    }

    fn apply(&self, key: String, operation: kv::Operation) {
        let mut marks = self.lock();
        match operation {
            kv::Operation::Put if marks.keys.len() >= MAX_MARKED => {
                marks.full_since = Some(Instant::now());
            }
            kv::Operation::Put => {
                marks.keys.insert(key.clone(), Instant::now());
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                marks.keys.remove(&key);
                return;
            }
        }
        drop(marks);
        // A run of the job here hears of it (its record then says whether it
        // is cancelled).
        self.running.stop(&key);
    }

    /// Forgets markers older than the bucket keeps them, and that it was full
    /// once the markers it could not hold have expired.
    fn prune(&self) {
        let keep = self.keep;
        let mut marks = self.lock();
        marks.keys.retain(|_, at| at.elapsed() < keep);
        if marks.full_since.is_some_and(|at| at.elapsed() >= keep) {
            marks.full_since = None;
        }
    }
}

/// What a job running on this host hears of its cancel ([`CancelWatch::ear`]).
#[derive(Debug)]
pub(crate) struct Ear<'a> {
    _registered: koan::job::Registered<'a>,
    token: CancellationToken,
}

impl Ear<'_> {
    /// Returns once the cluster's record of job `id` says it is cancelled, when
    /// its marker has come through this host's watch; never for a marker of a
    /// cancel that found the job over. The marker is written first, the record
    /// a moment after: read at once, then again after 50 ms doubled up to
    /// 1.6 s. Without a watch caught up (the connection down, say), the
    /// worker's progress check reads the record all the same.
    pub(crate) async fn cancelled(&self, t: &NatsTransport, id: &str) {
        self.token.cancelled().await;
        let mut wait = Duration::ZERO;
        while wait <= Duration::from_millis(1600) {
            tokio::time::sleep(wait).await;
            if cancelled(t, id).await {
                return;
            }
            wait = (wait * 2).max(Duration::from_millis(50));
        }
        std::future::pending().await
    }
}

/// Follows `koan_cancels` while `watch` exists: caught up (live) only while the
/// connection is up and the watch has delivered every marker it began with.
async fn follow(
    store: kv::Store,
    watch: Weak<CancelWatch>,
    mut conn: tokio::sync::watch::Receiver<ConnectionState>,
) {
    let every = watch
        .upgrade()
        .map_or(PRUNE_EVERY, |w| PRUNE_EVERY.min(w.keep / 3));
    let mut prune = tokio::time::interval(every);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Connected first: a watch begun now catches up with what was marked
        // while the connection was down. Given up when the transport is gone.
        loop {
            let Some(w) = watch.upgrade() else { return };
            w.live.store(false, Ordering::Release);
            drop(w);
            tokio::select! {
                up = conn.wait_for(|s| *s == ConnectionState::Connected) => match up {
                    Ok(_) => break,
                    Err(_) => return,
                },
                _ = prune.tick() => {}
            }
        }
        // An empty bucket's watch delivers nothing: caught up as soon as it begins.
        let end = crate::streams::bucket_end(&store).await;
        let mut empty = end == Some(0);
        match store.watch_with_history(">").await {
            Ok(mut entries) => loop {
                let Some(w) = watch.upgrade() else { return };
                if std::mem::take(&mut empty) {
                    w.live.store(true, Ordering::Release);
                }
                tokio::select! {
                    entry = entries.next() => match entry {
                        Some(Ok(entry)) => {
                            let current = crate::streams::caught_up(&entry, end);
                            w.apply(entry.key, entry.operation);
                            if current {
                                w.live.store(true, Ordering::Release);
                            }
                        }
                        // The watch broke (a NATS restart, say): make a new one.
                        _ => break,
                    },
                    // Any change: the connection went down since the watch began
                    // (told only `connected` when it came back before this task
                    // looked), and markers written meanwhile may be missing.
                    changed = conn.changed() => match changed {
                        Ok(()) => break,
                        Err(_) => return,
                    },
                    _ = prune.tick() => {
                        w.prune();
                        // The markers it began with expired before it delivered
                        // them: nothing is left to catch up with.
                        empty = !w.live.load(Ordering::Acquire) && bucket_is_empty(&store).await;
                    }
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the cluster's cancels; jobs' records are read instead");
            }
        }
        if let Some(w) = watch.upgrade() {
            w.live.store(false, Ordering::Release);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Cancels job `id`: `None` when the cluster has no record of it. Its marker is
/// written first: once the record says `cancelled`, a worker that follows the
/// marks knows (a marker left by a cancel that then found the job over is
/// harmless: a worker checks a marker against the record).
pub(crate) async fn cancel(t: &NatsTransport, id: &str) -> Result<Option<JobRecord>, Error> {
    let Some(before) = crate::records::get(t, id).await? else {
        return Ok(None);
    };
    if before.state.is_final() {
        return Err(wrong_state(id, before.state, "cancel", "not final"));
    }
    // A run that ended has its outcome stored (the commit point) before its record
    // says so: such a job is not cancelled, its result kept (a cancel as a run
    // ended answered "cancelled", and the record lost the result; as in the
    // host's own store).
    let key = subjects::key(id);
    if let Some((state, _)) = ended(t, &key).await {
        return Err(wrong_state(id, state, "cancel", "not final"));
    }
    t.inner
        .cancels
        .put(subjects::key(id), bytes::Bytes::new())
        .await
        .map_err(|e| unavailable(format!("the cancel of job {id} cannot be written: {e}")))?;
    let now = Utc::now();
    // Whether the job still waited to be due when its record said cancelled.
    let mut waited = false;
    let record = crate::records::change(t, id, None, |r| {
        if r.state.is_final() {
            return Err(wrong_state(id, r.state, "cancel", "not final"));
        }
        waited = r.state == JobState::Scheduled;
        apply_cancel(r, now);
        Ok(true)
    })
    .await?;
    if waited && let Some(r) = &record {
        crate::delayed::withdraw(t, r).await;
    }
    // Its run's outcome stored meanwhile: the record follows the outcome, and
    // the cancel says the job ended.
    if let Some((state, outcome)) = ended(t, &key).await {
        crate::record_outcome::align_over_cancel(t, id, &outcome).await;
        return Err(wrong_state(id, state, "cancel", "not final"));
    }
    Ok(record)
}

/// The state a run's stored outcome ends job `key` in, with the outcome; `None`
/// when there is none, or it is a cancel's.
async fn ended(t: &NatsTransport, key: &str) -> Option<(JobState, bytes::Bytes)> {
    let bytes = t.inner.outcomes.get(key).await.ok()??;
    let outcome = serde_json::from_slice::<crate::wire::Outcome>(&bytes).ok()?;
    let state = match outcome.reply.into_result() {
        Ok(_) => JobState::Succeeded,
        Err(e) if koan::job::is_cancelled(&e) => return None,
        Err(_) => JobState::Dead,
    };
    Some((state, bytes))
}

/// Whether job `id` was cancelled (asked while it runs); its record is kept in
/// the bucket meanwhile, however long the run (`records::kept`).
pub(crate) async fn cancelled(t: &NatsTransport, id: &str) -> bool {
    matches!(crate::records::kept(t, id).await, Ok(Some(r)) if r.state == JobState::Cancelled)
}

/// The error a cancelled job's waiters get.
pub(crate) fn cancelled_error(id: &str) -> Error {
    koan::job::cancelled(id)
}

/// Ends a cancelled job's message: its outcome says it was cancelled (so whoever
/// awaits it is told), and it is not delivered again.
pub(crate) async fn drop_cancelled(
    t: &NatsTransport,
    msg: &Message,
    key: &str,
    id: &str,
    attempts: i64,
) {
    tracing::info!(id = %id, "durable job cancelled; not run (further)");
    let reply = Reply::of(Err(cancelled_error(id)));
    if crate::outcomes::store(t, key, id, attempts, reply).await {
        let _ = msg.ack_with(AckKind::Term).await;
    } else {
        let _ = msg
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CancelWatch, MAX_MARKED};
    use async_nats::jetstream::kv::Operation;

    fn live(keep: Duration) -> CancelWatch {
        let w = CancelWatch::with(keep, 0);
        w.live.store(true, std::sync::atomic::Ordering::Release);
        w
    }

    #[test]
    fn a_running_job_hears_of_its_marker_and_of_one_heard_before_it_began() {
        let w = live(Duration::from_secs(3600));
        let ear = w.ear("a");
        assert!(!ear.token.is_cancelled());
        w.apply("a".into(), Operation::Put);
        assert!(ear.token.is_cancelled(), "the run hears of it");
        drop(ear);
        assert!(w.ear("a").token.is_cancelled(), "told at once");
        assert!(!w.ear("b").token.is_cancelled());
    }

    #[test]
    fn a_marker_heard_of_is_told_and_a_deleted_one_forgotten() {
        let w = live(Duration::from_secs(3600));
        assert!(w.unmarked("a"));
        w.apply("a".into(), Operation::Put);
        assert!(!w.unmarked("a"));
        assert!(w.unmarked("b"));
        w.apply("a".into(), Operation::Delete);
        assert!(w.unmarked("a"));
        w.live.store(false, std::sync::atomic::Ordering::Release);
        assert!(!w.unmarked("b"), "not caught up: nothing is known");
    }

    #[test]
    fn only_a_new_job_accepted_after_the_bucket_existed_is_vouched_for() {
        let id = koan::job::new_job_id();
        let made = koan::job::new_job_id_time(&id).map(|at| at.timestamp_millis());
        let made = made.expect("a v7 id has a time");
        let after = CancelWatch::with(Duration::from_secs(3600), made - 1);
        after.live.store(true, std::sync::atomic::Ordering::Release);
        assert!(after.vouches_for(&id, &id));
        // Accepted before the bucket existed: a host of an older version may have
        // cancelled it without a marker.
        let before = CancelWatch::with(Duration::from_secs(3600), made);
        before
            .live
            .store(true, std::sync::atomic::Ordering::Release);
        assert!(!before.vouches_for(&id, &id));
        // Not an id a host made up (a key's, a foreign client's).
        assert!(!after.vouches_for("order-17", "order-17"));
    }

    #[test]
    fn a_host_full_of_markers_grows_no_more_and_reads_records_until_they_expired() {
        let w = live(Duration::from_secs(3600));
        for n in 0..=MAX_MARKED {
            w.apply(format!("job-{n}"), Operation::Put);
        }
        assert_eq!(w.lock().keys.len(), MAX_MARKED);
        assert!(
            !w.unmarked("another"),
            "one marker was not held: no job is known unmarked"
        );
        w.prune();
        assert!(!w.unmarked("another"), "still within the bucket's keep");
        let expired = live(Duration::ZERO);
        for n in 0..=MAX_MARKED {
            expired.apply(format!("job-{n}"), Operation::Put);
        }
        expired.prune();
        assert_eq!(expired.lock().keys.len(), 0);
        assert!(
            expired.unmarked("another"),
            "every marker expired: known again"
        );
    }
}
