//! A job's record in line with its run's stored outcome. The outcome (in
//! `koan_outcomes`) is a run's commit point; the record (`records.rs`) follows it
//! in a write of its own, which can be lost: its process stopped or was killed
//! between the two, the write timed out, or the records' bucket was full. Such a
//! record said `queued` or `running` until the bucket forgot it (a probe's burst
//! left 84 of 165 finished jobs so). Whoever meets a record behind its outcome
//! brings it in line ([`align`]: a redelivery, the stranded jobs' watch, a cancel,
//! a read), and a read answers the record as the outcome says it ended even
//! while the write cannot be made.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use koan::job::{ClaimRequest, Finish, JobPage, JobQuery, JobRecord, JobState, apply_finish};

use crate::records::change_from;
use crate::subjects;
use crate::transport::NatsTransport;

/// Whether the outcome of run `attempts` ends record `r`: the record is still to
/// end (or, `over_cancel`, says cancelled: the outcome stored first won), and the
/// outcome is its run's or a later one's — not an earlier run's, which a retry by
/// hand leaves in place for a moment after it set the record `queued` again.
fn ends(r: &JobRecord, attempts: i64, over_cancel: bool) -> bool {
    let recorded = i64::from(r.attempts);
    match r.state {
        JobState::Running => attempts >= recorded,
        JobState::Cancelled => over_cancel && attempts >= recorded,
        JobState::Succeeded | JobState::Dead => false,
        // Queued, scheduled or retrying: the run to come is a later one.
        _ => attempts > recorded,
    }
}

/// What a stored outcome says of its run: which attempt, where it ran, and how
/// it ended; `None` for one that cannot be read, or a cancel's (the cancel wrote
/// its record first).
struct Ended {
    attempts: i64,
    host: String,
    how: Finish,
}

fn ended_of(outcome: &[u8]) -> Option<Ended> {
    let o = serde_json::from_slice::<crate::wire::Outcome>(outcome).ok()?;
    let how = match o.reply.into_result() {
        Ok(value) => crate::records::succeeded(value),
        Err(e) if koan::job::is_cancelled(&e) => return None,
        Err(e) => crate::records::dead(&e),
    };
    Some(Ended {
        attempts: o.attempts,
        host: o.host,
        how,
    })
}

/// Ends `r` as `ended` says, when it ends it: a run the record never showed
/// `running` (its one write, claim and end, is what was lost) is claimed first,
/// so the record counts the attempt, names its host and keeps its history entry
/// (a record ended without it said "0 of 3" attempts, no host; a review).
fn end(r: &mut JobRecord, ended: &Ended, over_cancel: bool, now: DateTime<Utc>) -> bool {
    if !ends(r, ended.attempts, over_cancel) {
        return false;
    }
    let attempt = u32::try_from(ended.attempts).unwrap_or(u32::MAX);
    let claimed =
        r.attempts >= attempt && matches!(r.state, JobState::Running | JobState::Cancelled);
    if !claimed {
        // Cancelled before the run was recorded, its outcome stored first (the
        // commit point): claimed as any run, not left with no attempt (a review).
        if r.state == JobState::Cancelled {
            r.state = JobState::Queued;
        }
        let claim = ClaimRequest {
            service: r.service.clone(),
            limit: 1,
            now,
            lease_until: now,
            instance: ended.host.clone(),
        };
        let max = r.max_attempts;
        crate::run_record::claim_for(r, &claim, attempt, max);
    }
    apply_finish(r, ended.how.clone(), now);
    true
}

/// Brings the record of job `id` in line with its stored `outcome` when the
/// record is not final: a record left `running` after its run's outcome was
/// stored stayed so for ever, and refused retry and delete (seen in a probe, 1 job
/// in 750 at a rolling deploy, 4 in 1,616 with the broker paused).
pub(crate) async fn align(t: &NatsTransport, id: &str, outcome: &[u8]) {
    align_where(t, id, outcome, false, Utc::now()).await;
}

/// [`align`], also over a cancel that came after the run's outcome was stored
/// (the outcome is the commit point: the cancel lost).
pub(crate) async fn align_over_cancel(t: &NatsTransport, id: &str, outcome: &[u8]) {
    align_where(t, id, outcome, true, Utc::now()).await;
}

/// [`align`] of an outcome stored at `now` (its end, for the record).
async fn align_where(
    t: &NatsTransport,
    id: &str,
    outcome: &[u8],
    over_cancel: bool,
    now: DateTime<Utc>,
) {
    let Some(ended) = ended_of(outcome) else {
        return;
    };
    let r = change_from(t, id, None, None, |r| Ok(end(r, &ended, over_cancel, now))).await;
    if let Err(e) = r {
        tracing::debug!(id = %id, error = %e, "could not bring a durable job's record in line with its outcome");
    }
}

/// How long a record must have said it is still to end before a read of it
/// looks for its outcome, or writes it in line: a run's own record write follows
/// its outcome within milliseconds, and a read that wrote first made that write
/// lose its compare-and-set (a review).
const BEHIND_AFTER: Duration = Duration::from_secs(2);

/// How long a record found without an outcome is not looked up again by
/// listings: a listing of many jobs still to end read each one's outcome at every
/// refresh of every page.
const LOOK_AGAIN_AFTER: Duration = Duration::from_secs(10);

/// What reads found lately: the records without an outcome (listings look each
/// up again only after [`LOOK_AGAIN_AFTER`]), and the records being written in
/// line (one write each at a time, however many reads find them behind).
#[derive(Debug, Default)]
pub(crate) struct Looked {
    without: Mutex<HashMap<String, Instant>>,
    aligning: Mutex<std::collections::HashSet<String>>,
    /// When a count last brought the view in line.
    counted: Mutex<Option<Instant>>,
}

/// How often, at most, counts bring the view in line with stored outcomes.
const COUNT_EVERY: Duration = Duration::from_secs(2);

impl Looked {
    /// Whether `key` was found without an outcome lately.
    fn lately_without(&self, key: &str) -> bool {
        self.without
            .lock()
            .is_ok_and(|m| m.get(key).is_some_and(|at| at.elapsed() < LOOK_AGAIN_AFTER))
    }

    /// Notes `key` found without an outcome that ends it.
    fn found_without(&self, key: &str) {
        if let Ok(mut m) = self.without.lock() {
            // Bounded: all marks go at once when there are many (a pass over
            // them at each new one was quadratic; a review).
            if m.len() >= 10_000 {
                m.clear();
            }
            m.insert(key.to_owned(), Instant::now());
        }
    }

    /// Whether a count may bring the view in line now: once in [`COUNT_EVERY`]
    /// (each dashboard polls counts; a review).
    fn count_due(&self) -> bool {
        let Ok(mut last) = self.counted.lock() else {
            return false;
        };
        if last.is_some_and(|at| at.elapsed() < COUNT_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Whether a write of `key` in line may start now (none under way).
    fn start_aligning(&self, key: &str) -> bool {
        self.aligning
            .lock()
            .is_ok_and(|mut s| s.insert(key.to_owned()))
    }

    fn done_aligning(&self, key: &str) {
        if let Ok(mut s) = self.aligning.lock() {
            s.remove(key);
        }
    }
}

/// Record `r` as a read of job `id` answers it: as its run's stored outcome
/// says it ended, when the record has not followed it for [`BEHIND_AFTER`]
/// (`age`), and brought in line in the bucket. One read
/// of the outcome, for a record still to end only; a read that fails answers the
/// record as it is.
pub(crate) async fn as_read(t: &NatsTransport, r: JobRecord, age: Duration) -> JobRecord {
    // A record written lately is answered as it is: its run's own write (with
    // what only the worker knows: the action's `max_attempts`, the run's start)
    // follows its outcome within milliseconds (answered from the outcome, a job
    // read just after its outcome said 3 attempts allowed where its action
    // allows 1; the suite).
    if r.state.is_final() || age < BEHIND_AFTER {
        return r;
    }
    let key = subjects::key(&r.id);
    match stored_outcome(t, &key).await {
        Some(outcome) => as_outcome_says(t, r, outcome, true),
        None => r,
    }
}

/// The outcome stored under `key`, with when it was stored (the run's end, as
/// near as is known: the outcome holds no time; a record ended by a read said
/// the read's time, a new one at each read; a probe). `None` when there is none
/// or it cannot be read.
async fn stored_outcome(t: &NatsTransport, key: &str) -> Option<(bytes::Bytes, DateTime<Utc>)> {
    let entry = t.inner.outcomes.entry(key).await.ok()??;
    if entry.operation != async_nats::jetstream::kv::Operation::Put {
        return None;
    }
    let ms = i64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).ok()?;
    let at = DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now);
    Some((entry.value, at))
}

/// `r` as `outcome` (stored at its time) ends it, when it does; written in line
/// when `write`.
fn as_outcome_says(
    t: &NatsTransport,
    mut r: JobRecord,
    (outcome, at): (bytes::Bytes, DateTime<Utc>),
    write: bool,
) -> JobRecord {
    let Some(ended) = ended_of(&outcome) else {
        return r;
    };
    if !end(&mut r, &ended, false, at) {
        return r;
    }
    let key = subjects::key(&r.id);
    // And the outcome too has stood [`BEHIND_AFTER`]: a record written long
    // ago (a job that waited, then ran a short run) is written by its run just
    // after its outcome (a review).
    let stood = (Utc::now() - at).to_std().is_ok_and(|d| d >= BEHIND_AFTER);
    if write && stood && t.inner.looked.start_aligning(&key) {
        let (t, id) = (t.clone(), r.id.clone());
        tokio::spawn(async move {
            align_where(&t, &id, &outcome, false, at).await;
            t.inner.looked.done_aligning(&key);
        });
    }
    r
}

/// How many records still to end a count looks up against their outcomes at
/// most, the longest unwritten first: a count said `queued` and `running` of
/// jobs a read of each called ended (1,459 of them in a probe), and the records
/// no listing shows converge this way.
const COUNT_LOOKS: usize = 64;

/// Brings this host's view in line with the stored outcomes of up to
/// [`COUNT_LOOKS`] of its records still to end (and those records in the
/// bucket), before a count.
pub(crate) async fn view_as_read(t: &NatsTransport) {
    let looked = &t.inner.looked;
    if !looked.count_due() {
        return;
    }
    let open = t
        .inner
        .jobs_view
        .open_since(BEHIND_AFTER, COUNT_LOOKS, |k| looked.lately_without(k));
    futures_util::stream::iter(open)
        .for_each_concurrent(READ_AT_ONCE, |(key, r): (String, JobRecord)| async move {
            look_up(t, &key, r).await;
        })
        .await;
}

/// Record `r` (under `key`, held by this host's view) as its stored outcome says
/// it ended, if it did: written in line, and taken by the view so that its counts
/// and filters agree; noted when it has no outcome.
async fn look_up(t: &NatsTransport, key: &str, r: JobRecord) -> JobRecord {
    let Some(outcome) = stored_outcome(t, key).await else {
        // (A read that failed is noted too: looked up again in a while.)
        t.inner.looked.found_without(key);
        return r;
    };
    let read = as_outcome_says(t, r.clone(), outcome, true);
    if read.state.is_final() {
        t.inner.jobs_view.put_read(key, &r, read.clone());
    } else {
        // An outcome that does not end it (a cancel's, an earlier run's): not
        // looked up again at once, or the same few would be at every count.
        t.inner.looked.found_without(key);
    }
    read
}

/// Record `r` written in line with its stored outcome now, when it is behind
/// it: before an operator's retry or delete, which act on the bucket's record (a
/// read answered "succeeded" while a retry said "is running"). The record as it
/// then reads.
pub(crate) async fn settled(t: &NatsTransport, r: JobRecord) -> JobRecord {
    match ended_by_outcome(t, &r).await {
        Some((read, outcome, at)) => {
            align_where(t, &r.id, &outcome, false, at).await;
            read
        }
        None => r,
    }
}

/// Record `r` as its stored outcome ends it, when it is behind it: the record as
/// read, the outcome and when it was stored; written nowhere.
pub(crate) async fn ended_by_outcome(
    t: &NatsTransport,
    r: &JobRecord,
) -> Option<(JobRecord, Vec<u8>, DateTime<Utc>)> {
    if r.state.is_final() {
        return None;
    }
    let (outcome, at) = stored_outcome(t, &subjects::key(&r.id)).await?;
    let ended = ended_of(&outcome)?;
    let mut read = r.clone();
    end(&mut read, &ended, false, at).then(|| (read, outcome.to_vec(), at))
}

/// How many outcomes a listing's page reads at once.
const READ_AT_ONCE: usize = 16;

/// A listing's page as [`as_read`] answers each record, for the records this
/// host's view heard written [`BEHIND_AFTER`] ago or more (`written_ago`) and not
/// found without an outcome in the last [`LOOK_AGAIN_AFTER`]; a record that no longer passes the
/// query's filters (`state=running`) leaves the page.
pub(crate) async fn page_as_read(
    t: &NatsTransport,
    page: &mut JobPage,
    query: &JobQuery,
    written_ago: impl Fn(&str) -> Option<Duration>,
) {
    let due: Vec<bool> = page
        .jobs
        .iter()
        .map(|r| {
            let key = subjects::key(&r.id);
            !r.state.is_final()
                && written_ago(&key).is_some_and(|ago| ago >= BEHIND_AFTER)
                && !t.inner.looked.lately_without(&key)
        })
        .collect();
    if !due.contains(&true) {
        return;
    }
    let jobs = std::mem::take(&mut page.jobs);
    let mut read: Vec<(usize, JobRecord)> =
        futures_util::stream::iter(jobs.into_iter().zip(due).enumerate())
            .map(|(i, (r, due))| async move {
                if !due {
                    return (i, r);
                }
                let key = subjects::key(&r.id);
                (i, look_up(t, &key, r).await)
            })
            .buffer_unordered(READ_AT_ONCE)
            .collect()
            .await;
    read.sort_unstable_by_key(|(i, _)| *i);
    page.jobs = read
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| query.matches(r))
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: JobState, attempts: u32) -> JobRecord {
        let mut r = koan::job::NewJob {
            id: "j".into(),
            service: "S".into(),
            steps: vec![koan::job::JobStep {
                action: "a".into(),
                params: serde_json::Value::Null,
                timeout_ms: None,
            }],
            priority: 0,
            correlation_id: "c".into(),
            idempotency_key: None,
            created_at: Utc::now(),
            run_at: Utc::now(),
            max_attempts: 3,
        }
        .into_record();
        r.state = state;
        r.attempts = attempts;
        r
    }

    #[test]
    fn an_outcome_ends_its_own_run_or_a_later_one_never_an_earlier_one() {
        // Its run's outcome, the record left running or never written past queued.
        assert!(ends(&record(JobState::Running, 2), 2, false));
        assert!(ends(&record(JobState::Queued, 0), 1, false));
        assert!(ends(&record(JobState::Retrying, 1), 2, false));
        // A retry by hand: the record queued again, the old run's outcome not yet removed.
        assert!(!ends(&record(JobState::Queued, 2), 2, false));
        // An earlier run's outcome under a later run's record.
        assert!(!ends(&record(JobState::Running, 3), 2, false));
        // Final records stay; a cancel only when the outcome stored first won.
        assert!(!ends(&record(JobState::Succeeded, 1), 1, false));
        assert!(!ends(&record(JobState::Dead, 1), 2, false));
        assert!(!ends(&record(JobState::Cancelled, 1), 1, false));
        assert!(ends(&record(JobState::Cancelled, 1), 1, true));
    }

    #[test]
    fn a_run_never_recorded_is_claimed_as_it_ends_over_a_cancel_too() {
        let ended = Ended {
            attempts: 1,
            host: "h-1".into(),
            how: crate::records::succeeded(serde_json::json!(7)),
        };
        for (state, over_cancel) in [(JobState::Queued, false), (JobState::Cancelled, true)] {
            let mut r = record(state, 0);
            assert!(end(&mut r, &ended, over_cancel, Utc::now()), "{state:?}");
            assert_eq!(r.state, JobState::Succeeded);
            assert_eq!((r.attempts, r.history.len()), (1, 1), "{r:?}");
            assert_eq!(r.history[0].instance, "h-1");
        }
        // A run recorded running: its own history entry ends, no second one.
        let mut running = record(JobState::Queued, 0);
        end(&mut running, &ended, false, Utc::now());
        running.state = JobState::Running;
        let before = running.history.len();
        assert!(end(&mut running, &ended, false, Utc::now()));
        assert_eq!(running.history.len(), before);
    }

    #[test]
    fn a_cancels_outcome_ends_nothing_and_a_runs_says_how_it_ended() {
        let o = |reply: crate::wire::Reply| {
            serde_json::to_vec(&crate::wire::Outcome {
                id: "j".into(),
                host: "h".into(),
                attempts: 2,
                reply,
            })
            .expect("an outcome serializes")
        };
        let cancelled = o(crate::wire::Reply::of(Err(koan::job::cancelled("j"))));
        assert!(ended_of(&cancelled).is_none());
        let ok = o(crate::wire::Reply::of(Ok(serde_json::json!(7))));
        let ended = ended_of(&ok).expect("a run's outcome");
        assert_eq!((ended.attempts, ended.host.as_str()), (2, "h"));
        assert!(matches!(ended.how, Finish::Succeeded { .. }));
        assert!(ended_of(b"{").is_none());
    }
}
