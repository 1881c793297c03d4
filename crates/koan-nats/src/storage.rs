//! The broker's storage as koan meets it: each stream's share of
//! `koan.nats.storage_budget_mb`, and the last write the broker refused for want
//! of room, which `/health` shows.
//!
//! With JetStream's storage full, every write fails alike (nats-server's 10023
//! "insufficient resources"): jobs ran but could not store their outcomes and ran
//! again elsewhere, a restarted host could not announce itself, and `/health`
//! said nothing of it (found by a probe). A stream's `max_bytes` reserves nothing
//! at run time: only when every stream is bounded, their sum under the server's
//! `max_file_store`, does each fail alone at its own limit — the work queue
//! refusing enqueues (10077 "maximum bytes exceeded") while outcomes, records and
//! heartbeats still have room.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::options::NatsOptions;
use crate::subjects;

/// Each stream's share of the budget, in hundredths. What each job keeps for
/// `outcome_ttl` most: its record (its parameters and result) and its outcome
/// (its result); the work queue holds only the jobs still to run. The sum is 100.
/// (With the work queue at 40 %, the outcomes filled first: a probe's 40 KB jobs
/// found room for 200 in the queue and 78 outcomes.)
const SHARES: [(&str, u64); 9] = [
    (subjects::WORK_STREAM, 25),
    (subjects::DELAYED_STREAM, 5),
    (subjects::STRANDED_STREAM, 2),
    (subjects::DLQ_STREAM, 8),
    (subjects::OUTCOMES_BUCKET, 22),
    (subjects::JOBS_BUCKET, 30),
    (subjects::REGISTRY_BUCKET, 2),
    (subjects::LEASES_BUCKET, 1),
    (subjects::CANCELS_BUCKET, 5),
];

/// The `max_bytes` of stream or bucket `name` (a bucket by its own name, not its
/// stream's): its share of the budget, or -1 (no limit) without one.
pub(crate) fn max_bytes(opts: &NatsOptions, name: &str) -> i64 {
    let Some(budget) = opts.storage_budget_bytes else {
        return -1;
    };
    let share = SHARES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, s)| *s);
    i64::try_from(budget / 100 * share).unwrap_or(i64::MAX)
}

/// How long a refused write is shown in `/health` after the last one.
const SHOWN_FOR: Duration = Duration::from_secs(60);

/// The last write the broker refused for want of room (when, what, and its
/// words), and how many runs' outcomes wait here to be stored.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// When, what, its words, and why.
    last: Mutex<Option<(Instant, &'static str, String, Refused)>>,
    held: AtomicUsize,
}

/// An outcome held until the broker takes it (see [`Refusals::hold`]).
pub(crate) struct Holding<'a>(&'a AtomicUsize);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// The broker refused it for want of room.
    Full,
    /// This host refused it for want of room (see [`Refusals::note_full`]).
    OwnFull,
    /// The broker had no stream to store it in: the stream's server is down
    /// (see [`Refusals::note_unreachable`]).
    NoStream,
}

impl Refusals {
    /// Counts an outcome held until the broker takes it, while the guard lives:
    /// meanwhile this host's workers take no new job (each would run to an
    /// outcome it could not store either: a probe saw 264 finished runs held at
    /// once, the whole backlog run).
    pub(crate) fn hold(&self) -> Holding<'_> {
        self.held.fetch_add(1, Ordering::AcqRel);
        Holding(&self.held)
    }

    /// Waits until no outcome is held here (at once when none is).
    pub(crate) async fn unheld(&self) {
        while self.held.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Notes `error`, met writing `what`, when it is the broker refusing for want
    /// of room; other errors are not this one's business.
    pub(crate) fn note(&self, what: &'static str, error: &str) {
        if is_full(error) {
            self.keep(what, error, Refused::Full);
        } else if no_stream(error) {
            self.keep(what, error, Refused::NoStream);
        }
    }

    /// Notes a refusal for want of room that this host made itself (a new job
    /// refused while the outcomes or records have none).
    pub(crate) fn note_full(&self, what: &'static str, words: &str) {
        self.keep(what, words, Refused::OwnFull);
    }

    fn keep(&self, what: &'static str, words: &str, why: Refused) {
        if let Ok(mut last) = self.last.lock() {
            let words: String = words.chars().take(300).collect();
            *last = Some((Instant::now(), what, words, why));
        }
    }

    /// What `/health` says of the last refusal, for a minute after it.
    pub(crate) fn said(&self) -> Option<String> {
        let last = self.last.lock().ok()?;
        let (at, what, words, why) = last.as_ref()?;
        let ago = at.elapsed();
        if ago >= SHOWN_FOR {
            return None;
        }
        let who = match why {
            Refused::OwnFull => "this host refused",
            Refused::Full => "the broker refused to store",
            // Every enqueue refused while health said pass (a probe, a cluster
            // node down with the only copy of the work stream).
            Refused::NoStream => {
                // A record's bucket is made again only by a reconnect or a
                // restart; a new job's stream, by the next consumer's retry.
                let (again, so) = match *what {
                    RECORD => (
                        "made again when this host reconnects or restarts",
                        "jobs are taken and run, but their records are not written, and listings do not show them",
                    ),
                    _ => (
                        "made again by the next consumer's retry",
                        "new jobs are refused until it is back",
                    ),
                };
                return Some(format!(
                    "the broker could not store {what} {}s ago ({words}): the server holding its stream is unreachable (a cluster node down with the stream's only copy: see `koan.nats.replicas`), or the stream was deleted ({again}) — {so}",
                    ago.as_secs()
                ));
            }
        };
        let so = match *what {
            NEW_JOB => "new jobs are refused",
            OUTCOME => {
                "runs that ended wait to store their outcomes, and this host takes no new job meanwhile"
            }
            HEARTBEAT => "this host's heartbeats fail: the cluster may take it for gone",
            _ => "job records are not kept up to date",
        };
        Some(format!(
            "{who} {what} {}s ago for want of room ({words}): its JetStream storage (`max_file_store`) or the stream's share of `koan.nats.storage_budget_mb` is full — {so}",
            ago.as_secs()
        ))
    }
}

/// Whether a publish's error is JetStream having no stream for its subject: the
/// stream's server is down (or the stream was deleted).
pub(crate) fn no_stream(error: &str) -> bool {
    error.contains("no stream found")
        || error.contains("stream not found")
        || error.contains("no responders")
}

/// How full (in hundredths of its share) the outcomes' or records' bucket may be
/// before new jobs are refused: an accepted job needs room for both.
const FULL_AT: u64 = 90;

/// How often, at most, [`Room::for_new_job`] reads the buckets' size.
const ROOM_READ_EVERY: Duration = Duration::from_secs(1);

/// Whether the cluster's outcomes and records have room for a new job's, with a
/// storage budget: a job accepted while either was full could not store its
/// record or its outcome (a probe saw 190 accepted jobs answer 404, and finished
/// runs held for want of room while the work queue still took jobs).
#[derive(Debug, Default)]
pub(crate) struct Room {
    /// When the buckets were last read, and what was found full then.
    last: Mutex<(Option<Instant>, Option<String>)>,
    /// One caller reads them at a time; the others take the last answer (a slow
    /// broker held every enqueue behind the read; a review).
    reading: std::sync::atomic::AtomicBool,
}

/// How long a read of the buckets' size may take before the last answer stands.
const ROOM_READ_WAIT: Duration = Duration::from_secs(2);

impl Room {
    /// `Err` (why) when a new job would find no room for its record or outcome;
    /// read at most once a second (at once without a budget).
    pub(crate) async fn for_new_job(
        &self,
        (outcomes, records): (
            &async_nats::jetstream::kv::Store,
            &async_nats::jetstream::kv::Store,
        ),
        opts: &NatsOptions,
    ) -> Result<(), String> {
        if opts.storage_budget_bytes.is_none() {
            return Ok(());
        }
        let (due, answer) = match self.last.lock() {
            Ok(last) => (
                last.0.is_none_or(|at| at.elapsed() >= ROOM_READ_EVERY),
                last.1.clone(),
            ),
            Err(_) => (false, None),
        };
        if !due || self.reading.swap(true, Ordering::AcqRel) {
            return answer.map_or(Ok(()), Err);
        }
        let read = tokio::time::timeout(ROOM_READ_WAIT, full_bucket(outcomes, records)).await;
        self.reading.store(false, Ordering::Release);
        let answer = match read {
            Ok(full) => {
                if let Ok(mut last) = self.last.lock() {
                    *last = (Some(Instant::now()), full.clone());
                }
                full
            }
            Err(_) => answer,
        };
        answer.map_or(Ok(()), Err)
    }
}

/// The outcomes' or records' bucket at [`FULL_AT`] of its limit, said so (both
/// read at once).
async fn full_bucket(
    outcomes: &async_nats::jetstream::kv::Store,
    records: &async_nats::jetstream::kv::Store,
) -> Option<String> {
    let (o, r) = tokio::join!(outcomes.stream.get_info(), records.stream.get_info());
    for (info, what, each) in [(o, "outcomes", "outcome"), (r, "records", "record")] {
        let Ok(info) = info else { continue };
        let (held, max) = (info.state.bytes, info.config.max_bytes);
        if let Ok(max) = u64::try_from(max)
            && held.saturating_mul(100) >= max.saturating_mul(FULL_AT)
        {
            return Some(format!(
                "the cluster's job {what} fill {held} of their {max} bytes (`koan.nats.storage_budget_mb`): a new job would find no room for its {each} — refused until older ones expire (`outcome_ttl`), or raise the budget"
            ));
        }
    }
    None
}

/// What was refused, as [`Refusals::note`] is told (and health says).
pub(crate) const NEW_JOB: &str = "a new job";
pub(crate) const OUTCOME: &str = "a job's outcome";
pub(crate) const HEARTBEAT: &str = "this host's heartbeat";
pub(crate) const RECORD: &str = "a job's record";

/// Whether `error` is JetStream refusing a write for want of room: the server's
/// or the account's storage full, or the stream at its `max_bytes`.
pub(crate) fn is_full(error: &str) -> bool {
    [
        "error code 10023",
        "error code 10077",
        "error code 10047",
        "error code 10002",
        "insufficient resources",
        "insufficient storage",
        "maximum bytes exceeded",
        "resource limits exceeded",
    ]
    .iter()
    .any(|sign| error.contains(sign))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shares_make_the_whole_budget_and_none_without_one() {
        assert_eq!(SHARES.iter().map(|(_, s)| s).sum::<u64>(), 100);
        let mut opts = NatsOptions::default();
        assert_eq!(max_bytes(&opts, subjects::WORK_STREAM), -1);
        opts.storage_budget_bytes = Some(1000 * 1024 * 1024);
        assert_eq!(max_bytes(&opts, subjects::WORK_STREAM), 250 * 1024 * 1024);
        let sum: i64 = SHARES.iter().map(|(n, _)| max_bytes(&opts, n)).sum();
        assert!(sum <= 1000 * 1024 * 1024);
    }

    #[test]
    fn only_a_refusal_for_want_of_room_is_noted_and_said_for_a_minute() {
        let r = Refusals::default();
        r.note(OUTCOME, "timed out");
        assert_eq!(r.said(), None);
        r.note(
            OUTCOME,
            "publish failed: insufficient resources (code 503, error code 10023)",
        );
        let said = r.said().expect("noted");
        assert!(
            said.contains("store a job's outcome")
                && said.contains("10023")
                && said.contains("takes no new job"),
            "{said}"
        );
    }
}
