//! This host's view of the cluster's job records, kept while it is read: the
//! first listing starts one watch of the `koan_jobs` bucket, which holds every
//! record in memory, so `/api/jobs` on any instance lists the jobs accepted by
//! every instance; a view not read for `NatsOptions::watch_idle` stops
//! following and forgets them. A host that is never asked (a worker) receives
//! none of the cluster's record writes. The view follows the bucket a moment
//! behind; a single job is read from the bucket itself (`records::get`). It
//! holds at most `NatsOptions::view_max_records` records (4–5 KB of memory each for the
//! demo's jobs, as measured) and `NatsOptions::view_max_bytes` of their JSON: past
//! either, it forgets successes and cancels first, then the jobs still to end
//! (written again when they run), then failures, the least recently written
//! first, and its pages and counts say they are partial until what it forgot
//! would have expired anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use koan::job::{JobCounts, JobPage, JobQuery, JobRecord, JobState};
use tokio::sync::watch;

/// The records held, by KV key: each with when it was last written and its size as
/// stored; and the sum of those sizes.
#[derive(Debug, Default)]
struct Held {
    map: HashMap<String, (JobRecord, Instant, usize)>,
    bytes: usize,
}

impl Held {
    fn insert(&mut self, key: String, record: JobRecord, at: Instant, size: usize) {
        self.bytes += size;
        if let Some((_, _, was)) = self.map.insert(key, (record, at, size)) {
            self.bytes -= was;
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((_, _, size)) = self.map.remove(key) {
            self.bytes -= size;
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&JobRecord, Instant) -> bool) {
        let mut bytes = self.bytes;
        self.map.retain(|_, (r, at, size)| {
            let kept = keep(r, *at);
            if !kept {
                bytes -= *size;
            }
            kept
        });
        self.bytes = bytes;
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

#[derive(Debug)]
pub(crate) struct JobsView {
    records: Mutex<Held>,
    /// The bucket's age limit: a record not written for this long is gone from it
    /// (without a delete marker), so from here too.
    keep: Duration,
    /// When records past `keep` were last forgotten.
    pruned: Mutex<Option<Instant>>,
    /// Whether a watch follows the bucket, and when the view was last read.
    following: Mutex<Following>,
    /// Whether the view has caught up with the bucket since its watch began.
    caught_up: watch::Sender<bool>,
    /// How long the bucket is followed after the view was last read.
    idle: Duration,
    /// The most records held.
    cap: usize,
    /// The most bytes of records (as stored) held.
    max_bytes: usize,
    /// Until when the view is partial: the latest a record it forgot for its
    /// `cap` would have expired from the bucket.
    left_out: Mutex<Option<Instant>>,
}

#[derive(Debug)]
struct Following {
    on: bool,
    /// tokio's clock: the tests' paused one.
    last_read: tokio::time::Instant,
}

/// How often records past their age are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// How long a read waits, at most, for a view whose watch has just begun to catch
/// up with the bucket (a few ms when all is well; JetStream's own requests give up
/// after 5 s); past it, the read answers what the view holds, marked stale.
const CATCH_UP: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl JobsView {
    /// The view of `bucket`'s records, forgotten with the bucket's own age limit.
    pub(crate) fn new(opts: &crate::NatsOptions, bucket: &kv::Store) -> JobsView {
        // A bucket without an age limit: a century (an instant plus it is still one).
        let keep = bucket.stream.cached_info().config.max_age;
        let keep = if keep.is_zero() {
            Duration::from_secs(100 * 365 * 24 * 3600)
        } else {
            keep
        };
        JobsView::with(keep, opts.watch_idle, opts.view_max_records).max_bytes(opts.view_max_bytes)
    }

    fn with(keep: Duration, idle: Duration, cap: usize) -> JobsView {
        JobsView {
            records: Mutex::default(),
            keep,
            pruned: Mutex::default(),
            following: Mutex::new(Following {
                on: false,
                last_read: tokio::time::Instant::now(),
            }),
            caught_up: watch::Sender::new(false),
            idle,
            cap: cap.max(1),
            max_bytes: usize::MAX,
            left_out: Mutex::default(),
        }
    }

    fn max_bytes(self, max_bytes: usize) -> JobsView {
        JobsView {
            max_bytes: max_bytes.max(1),
            ..self
        }
    }

    /// Readies the view for a read: followed from now until `idle` after this read
    /// (its watch begun on `store` if none is running), and caught up with the
    /// bucket, which is waited for (up to `CATCH_UP`) while `connected`. Whether it
    /// has caught up.
    pub(crate) async fn ready(self: &Arc<Self>, store: &kv::Store, connected: bool) -> bool {
        let begin = |view| {
            tokio::spawn(follow(store.clone(), view));
        };
        self.ready_with(begin, connected).await
    }

    /// [`ready`](Self::ready), its watch begun by `begin`.
    async fn ready_with(self: &Arc<Self>, begin: impl FnOnce(Arc<Self>), connected: bool) -> bool {
        let first = {
            let mut f = lock(&self.following);
            f.last_read = tokio::time::Instant::now();
            !std::mem::replace(&mut f.on, true)
        };
        if first {
            begin(Arc::clone(self));
        }
        let mut caught_up = self.caught_up.subscribe();
        if !connected {
            // Nothing to wait for: answered at once, from what the view holds.
            return *caught_up.borrow();
        }
        tokio::time::timeout(CATCH_UP, caught_up.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops following when the view was not read for `idle` (or the transport is
    /// gone), and forgets the records; whether it stopped. Under the same lock as a
    /// read's start, so a read either keeps this watch or begins the next. Never
    /// within `CATCH_UP` of a read: a read still waiting for the watch to catch up
    /// keeps it.
    fn stop_if_idle(self: &Arc<Self>) -> bool {
        let mut f = lock(&self.following);
        let gone = Arc::strong_count(self) == 1;
        if !gone && f.last_read.elapsed() < self.idle.max(CATCH_UP) {
            return false;
        }
        f.on = false;
        self.caught_up.send_replace(false);
        lock(&self.records).clear();
        *lock(&self.left_out) = None;
        true
    }

    fn apply(&self, key: String, operation: kv::Operation, value: &[u8]) {
        match operation {
            kv::Operation::Put => match serde_json::from_slice::<JobRecord>(value) {
                Ok(r) => self.put(key, r, value.len()),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "unreadable job record in the cluster's bucket")
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => self.remove(&key),
        }
    }

    fn put(&self, key: String, record: JobRecord, size: usize) {
        let now = Instant::now();
        let mut m = lock(&self.records);
        m.insert(key, record, now, size);
        // Forgetting scans every record: once a second at most, not per write.
        let due = {
            let mut at = lock(&self.pruned);
            let due = at.is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY);
            if due {
                *at = Some(now);
            }
            due
        };
        if due {
            let keep = self.keep;
            m.retain(|_, at| now.duration_since(at) <= keep);
        }
        // Past a cap by a quarter (or at all, once a second): back to it, so
        // that the work of forgetting is spread over the writes.
        let over = |n: usize, cap: usize| n > cap.saturating_add(cap / 4) || (due && n > cap);
        if over(m.map.len(), self.cap) || over(m.bytes, self.max_bytes) {
            self.trim(&mut m, now);
        }
    }

    /// Forgets records down to the caps (count and bytes): successes and cancels
    /// first, then jobs still to end, then failures; in each, the least recently
    /// written.
    fn trim(&self, m: &mut Held, now: Instant) {
        let excess = m.map.len().saturating_sub(self.cap);
        let excess_bytes = m.bytes.saturating_sub(self.max_bytes);
        if excess == 0 && excess_bytes == 0 {
            return;
        }
        // Dead jobs last: a job still to end comes back at its next write, a dead
        // one never does (under the byte cap, large queued jobs pushed out every
        // dead one for good: `dead: 0` while five waited; found by a probe).
        let class = |r: &JobRecord| match r.state {
            JobState::Succeeded | JobState::Cancelled => 0,
            JobState::Dead => 2,
            _ => 1,
        };
        let mut order: Vec<(u8, Instant, &String, usize)> = m
            .map
            .iter()
            .map(|(k, (r, at, size))| (class(r), *at, k, *size))
            .collect();
        let key = |&(c, at, _, _): &(u8, Instant, &String, usize)| (c, at);
        let gone: Vec<(String, Instant)> = if excess_bytes == 0 {
            // By count alone: the `excess` first in order, without sorting them all.
            order.select_nth_unstable_by_key(excess - 1, key);
            order[..excess]
                .iter()
                .map(|&(_, at, k, _)| (k.clone(), at))
                .collect()
        } else {
            // By bytes too: the first in order until both caps hold.
            order.sort_unstable_by_key(key);
            let (mut n, mut freed) = (0, 0);
            order
                .iter()
                .take_while(|&&(_, _, _, size)| {
                    let more = n < excess || freed < excess_bytes;
                    n += 1;
                    freed += size;
                    more
                })
                .map(|&(_, at, k, _)| (k.clone(), at))
                .collect()
        };
        let mut until = lock(&self.left_out);
        for (key, at) in gone {
            m.remove(&key);
            let expiry = at + self.keep;
            if until.is_none_or(|u| u < expiry) {
                *until = Some(expiry);
            }
        }
        // (Already past: nothing left out is still kept by the bucket.)
        if until.is_some_and(|u| u <= now) {
            *until = None;
        }
    }

    /// Whether the view left out records the bucket still keeps (its cap).
    fn partial(&self) -> bool {
        lock(&self.left_out).is_some_and(|u| Instant::now() < u)
    }

    /// Takes `record`, read as its job's stored outcome says it ended
    /// (`record_outcome.rs`), in place of `was`, when that is still the one held
    /// under `key`, so this host's counts and state filters agree with a read of
    /// the job; the bucket's next write of it replaces it as any.
    pub(crate) fn put_read(&self, key: &str, was: &JobRecord, record: JobRecord) {
        if !lock(&self.following).on {
            return;
        }
        // Only over the record it was read from: a write or a delete heard
        // meanwhile stands (an old read brought back a deleted job; a review).
        // Weighed as stored: read from an outcome, it may carry a large result
        // its record lacked (a review).
        let size = serde_json::to_vec(&record).map_or(0, |b| b.len());
        let mut m = lock(&self.records);
        let Some((held, _, held_size)) = m.map.get_mut(key) else {
            return;
        };
        if held != was {
            return;
        }
        *held = record;
        let before = std::mem::replace(held_size, size);
        m.bytes = m.bytes - before + size;
    }

    /// Up to `max` of the records still to end that the view heard written
    /// `age` ago or more and `skip` does not skip, the longest unwritten first.
    pub(crate) fn open_since(
        &self,
        age: Duration,
        max: usize,
        skip: impl Fn(&str) -> bool,
    ) -> Vec<(String, JobRecord)> {
        let m = lock(&self.records);
        let mut open: Vec<(&String, &JobRecord, Instant)> = m
            .map
            .iter()
            .filter(|(k, (r, at, _))| !r.state.is_final() && at.elapsed() >= age && !skip(k))
            .map(|(k, (r, at, _))| (k, r, *at))
            .collect();
        if open.len() > max {
            open.select_nth_unstable_by_key(max, |&(_, _, at)| at);
            open.truncate(max);
        }
        open.into_iter()
            .map(|(k, r, _)| (k.clone(), r.clone()))
            .collect()
    }

    /// How long ago the view heard the record under `key` written.
    pub(crate) fn written_ago(&self, key: &str) -> Option<Duration> {
        lock(&self.records)
            .map
            .get(key)
            .map(|(_, at, _)| at.elapsed())
    }

    fn remove(&self, key: &str) {
        lock(&self.records).remove(key);
    }

    /// A page, newest first (by id), older than the query's cursor. Only the
    /// page's records are copied: the matches are chosen by reference (the page
    /// and one more, to know whether another follows), then sorted. Copying and
    /// sorting every match took 515 ms a page over 200,000 records, with the
    /// view's lock held (its watch's writes waiting).
    pub(crate) fn list(&self, query: &JobQuery) -> JobPage {
        let size = query.page_size();
        let newest_first = |a: &&JobRecord, b: &&JobRecord| b.id.cmp(&a.id);
        let mut jobs: Vec<JobRecord> = {
            let m = lock(&self.records);
            let mut matches: Vec<&JobRecord> = m
                .map
                .values()
                .map(|(r, _, _)| r)
                .filter(|r| query.cursor.as_ref().is_none_or(|c| &r.id < c))
                .filter(|r| query.matches(r))
                .collect();
            if matches.len() > size + 1 {
                matches.select_nth_unstable_by(size, newest_first);
                matches.truncate(size + 1);
            }
            matches.sort_unstable_by(newest_first);
            matches.into_iter().cloned().collect()
        };
        let next_cursor = if jobs.len() > size {
            jobs.truncate(size);
            jobs.last().map(|r| r.id.clone())
        } else {
            None
        };
        JobPage {
            jobs,
            next_cursor,
            stale: false,
            partial: self.partial(),
        }
    }

    pub(crate) fn counts(&self, service: Option<&str>) -> JobCounts {
        let m = lock(&self.records);
        let by_state = JobState::ALL
            .into_iter()
            .map(|s| {
                let n = m
                    .map
                    .values()
                    .filter(|(r, _, _)| r.state == s)
                    .filter(|(r, _, _)| {
                        service.is_none_or(|name| r.service.eq_ignore_ascii_case(name))
                    })
                    .count();
                (s, n as u64)
            })
            .collect();
        JobCounts::new(by_state).partial(self.partial())
    }
}

/// Follows the bucket until the view is not read for its `idle` time.
async fn follow(store: kv::Store, view: Arc<JobsView>) {
    let mut check = tokio::time::interval(view.idle.clamp(Duration::from_millis(10), PRUNE_EVERY));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // An empty bucket's watch delivers nothing: caught up as soon as it begins.
        let end = crate::streams::bucket_end(&store).await;
        let empty = end == Some(0);
        let watch = store.watch_with_history(">").await;
        if let Err(e) = &watch {
            tracing::warn!(error = %e, "cannot watch the cluster's job records; trying again");
        }
        if let Ok(mut watch) = watch {
            if empty {
                view.caught_up.send_replace(true);
            }
            loop {
                tokio::select! {
                    entry = watch.next() => match entry {
                        Some(Ok(entry)) => {
                            let current = crate::streams::caught_up(&entry, end);
                            view.apply(entry.key, entry.operation, &entry.value);
                            if current && !*view.caught_up.borrow() {
                                view.caught_up.send_replace(true);
                            }
                        }
                        // The watch broke (a NATS restart, say): make a new one.
                        _ => break,
                    },
                    _ = check.tick() => if view.stop_if_idle() {
                        return;
                    },
                }
            }
        }
        if view.stop_if_idle() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests;
