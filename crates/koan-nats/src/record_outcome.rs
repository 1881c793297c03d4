//! A job's record in line with its run's stored outcome. The outcome (in
//! `koan_outcomes`) is a run's commit point; the record (`records.rs`) follows it
//! in a write of its own, which can be lost: its process stopped or was killed
//! between the two, the write timed out, or the records' bucket was full. Such a
//! record said `queued` or `running` until the bucket forgot it (a probe's burst
//! left 84 of 165 finished jobs so). Whoever meets a record behind its outcome
//! brings it in line ([`align`]: a redelivery, the stranded jobs' watch, a cancel,
//! a read), and a read answers the record as the outcome says it ended even
//! while the write cannot be made.

use chrono::Utc;
use futures_util::StreamExt;
use koan::job::{Finish, JobPage, JobQuery, JobRecord, JobState, apply_finish};

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

/// How a stored outcome says its job ended, and of which run: `None` for one that
/// cannot be read, or a cancel's (the cancel wrote its record first).
fn finish_of(outcome: &[u8]) -> Option<(i64, Finish)> {
    let o = serde_json::from_slice::<crate::wire::Outcome>(outcome).ok()?;
    let how = match o.reply.into_result() {
        Ok(value) => crate::records::succeeded(value),
        Err(e) if koan::job::is_cancelled(&e) => return None,
        Err(e) => crate::records::dead(&e),
    };
    Some((o.attempts, how))
}

/// Brings the record of job `id` in line with its stored `outcome` when the
/// record is not final: a record left `running` after its run's outcome was
/// stored stayed so for ever, and refused retry and delete (seen in a probe, 1 job
/// in 750 at a rolling deploy, 4 in 1,616 with the broker paused).
pub(crate) async fn align(t: &NatsTransport, id: &str, outcome: &[u8]) {
    align_where(t, id, outcome, false).await;
}

/// [`align`], also over a cancel that came after the run's outcome was stored
/// (the outcome is the commit point: the cancel lost).
pub(crate) async fn align_over_cancel(t: &NatsTransport, id: &str, outcome: &[u8]) {
    align_where(t, id, outcome, true).await;
}

async fn align_where(t: &NatsTransport, id: &str, outcome: &[u8], over_cancel: bool) {
    let Some((attempts, how)) = finish_of(outcome) else {
        return;
    };
    let now = Utc::now();
    let r = change_from(t, id, None, None, |r| {
        if !ends(r, attempts, over_cancel) {
            return Ok(false);
        }
        apply_finish(r, how.clone(), now);
        Ok(true)
    })
    .await;
    if let Err(e) = r {
        tracing::debug!(id = %id, error = %e, "could not bring a durable job's record in line with its outcome");
    }
}

/// Record `r` as a read answers it: as its run's stored outcome says it ended,
/// when the record has not followed it (brought in line meanwhile, in the
/// background). One read of the outcome, for a record still to end only; a read
/// that fails answers the record as it is.
pub(crate) async fn as_read(t: &NatsTransport, r: JobRecord) -> JobRecord {
    if r.state.is_final() {
        return r;
    }
    let key = subjects::key(&r.id);
    let Ok(Some(outcome)) = t.inner.outcomes.get(&key).await else {
        return r;
    };
    ended(t, r, outcome)
}

/// `r` as `outcome` ends it, when it does; its record brought in line.
fn ended(t: &NatsTransport, mut r: JobRecord, outcome: bytes::Bytes) -> JobRecord {
    let Some((attempts, how)) = finish_of(&outcome) else {
        return r;
    };
    if !ends(&r, attempts, false) {
        return r;
    }
    apply_finish(&mut r, how, Utc::now());
    let (t, id) = (t.clone(), r.id.clone());
    tokio::spawn(async move { align(&t, &id, &outcome).await });
    r
}

/// How long a record must have said it is still to end before a listing reads
/// its outcome: a run's own record write follows its outcome within milliseconds,
/// and a listing of many running jobs would otherwise read each one's.
const LISTED_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// How many outcomes a listing's page reads at once.
const READ_AT_ONCE: usize = 16;

/// A listing's page as [`as_read`] answers each record, for the records that
/// have said for [`LISTED_AFTER`] that they are still to end; a record that no
/// longer passes the query's filters (`state=running`) leaves the page.
pub(crate) async fn page_as_read(t: &NatsTransport, page: &mut JobPage, query: &JobQuery) {
    let since = Utc::now() - LISTED_AFTER;
    let settled = |r: &JobRecord| {
        let at = match (r.state, r.history.last()) {
            (JobState::Running, Some(run)) => run.started_at,
            _ => r.run_at,
        };
        !r.state.is_final() && at <= since
    };
    if !page.jobs.iter().any(settled) {
        return;
    }
    let jobs = std::mem::take(&mut page.jobs);
    let mut read: Vec<(usize, JobRecord)> =
        futures_util::stream::iter(jobs.into_iter().enumerate())
            .map(|(i, r)| async move {
                if settled(&r) {
                    (i, as_read(t, r).await)
                } else {
                    (i, r)
                }
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
        assert!(finish_of(&cancelled).is_none());
        let ok = o(crate::wire::Reply::of(Ok(serde_json::json!(7))));
        let (attempts, how) = finish_of(&ok).expect("a run's outcome");
        assert_eq!(attempts, 2);
        assert!(matches!(how, Finish::Succeeded { .. }));
        assert!(finish_of(b"{").is_none());
    }
}
