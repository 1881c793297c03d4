//! How the host's job runner stops with its host: it claims no more jobs, tells
//! the handlers of the running ones to stop, and waits for them until the grace
//! ends. With a store that does not survive the process, the queued jobs are run
//! first instead, and their handlers are not told to stop (they would be lost).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::record::JobState;
use super::runner::{JobRunner, job_services};
use super::store::{Claim, Finish};
use crate::host::HostInner;

/// The claims of the runs in progress, by job id, each with the time it was due
/// (its place in the queue).
#[derive(Debug, Default)]
pub(crate) struct InHand(Mutex<HashMap<String, (Claim, DateTime<Utc>)>>);

/// A run's claim in hand, let go when dropped.
pub(super) struct Held<'a> {
    in_hand: &'a InHand,
    claim: Claim,
}

impl InHand {
    /// Holds `claim` (of a job due at `run_at`) while the returned guard lives.
    pub(super) fn hold(&self, claim: &Claim, run_at: DateTime<Utc>) -> Held<'_> {
        if let Ok(mut m) = self.0.lock() {
            m.insert(claim.id.clone(), (claim.clone(), run_at));
        }
        Held {
            in_hand: self,
            claim: claim.clone(),
        }
    }

    fn take_all(&self) -> Vec<(Claim, DateTime<Utc>)> {
        self.0
            .lock()
            .map(|mut m| m.drain().map(|(_, v)| v).collect())
            .unwrap_or_default()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.in_hand.0.lock()
            && m.get(&self.claim.id)
                .is_some_and(|(c, _)| c.token == self.claim.token)
        {
            m.remove(&self.claim.id);
        }
    }
}

impl JobRunner {
    /// Says how many jobs a store that does not survive the process still holds
    /// waiting once the grace is over: lost with it (a probe's 172 queued pokes
    /// went without a word; only the one running was said).
    async fn say_lost_queued(&self, names: &[String]) {
        let Ok(counts) = self.store.counts(None).await else {
            return;
        };
        let waiting: u64 = [JobState::Scheduled, JobState::Queued, JobState::Retrying]
            .into_iter()
            .map(|s| counts.get(s))
            .sum();
        if waiting > 0 && !names.is_empty() {
            tracing::warn!(
                waiting,
                "jobs still waiting to run at the end of the grace period are lost (queued, scheduled or to be retried): the job store keeps them in memory only; configure a durable job store"
            );
        }
    }

    /// Stops claiming, and waits (until `deadline`) for the runs in progress.
    ///
    /// With a durable store, each running job's handler is told to stop at once
    /// (its token; its claim is kept and renewed): a run that ends at its token
    /// goes back to the queue, is not an attempt and runs again after the restart
    /// (`Finish::Stopped`); one that ignores it may
    /// still finish within the grace. Before, the handlers were told only when
    /// the grace had run out, so one job held the whole grace and every service
    /// was then aborted unasked (found by a probe).
    ///
    /// With a store that does not survive the process, queued jobs are run first,
    /// until none is due or the deadline passes.
    pub(crate) async fn stop(&self, host: &HostInner, deadline: Instant) {
        let durable = self.store.is_durable();
        if !durable {
            let names = job_services(host);
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let due = self
                    .store
                    .next_due(&names)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|at| at <= host.config.clock.now());
                if (!due && self.running.load(Ordering::Acquire) == 0) || Instant::now() >= deadline
                {
                    break;
                }
                self.wake();
                let _ = tokio::time::timeout_at(deadline, changed).await;
            }
            self.say_lost_queued(&names).await;
        }
        self.closing.store(true, Ordering::Release);
        if durable {
            self.halt.cancel();
        }
        self.wake();
        loop {
            // Registered before the count is read: a run that ends between the two
            // is not missed (it would have held the stop until the deadline).
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let running = self.running.load(Ordering::Acquire);
            if running == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                if durable {
                    // Put back in their places, not an attempt, as a run that ends
                    // at its token is: left `running`, they waited for their
                    // claims to lapse, ran again as a new attempt, their history
                    // blaming a crash (found by a probe).
                    let now = host.config.clock.now();
                    let mut back = 0;
                    for (claim, at) in self.in_hand.take_all() {
                        if let Ok(true) =
                            self.store.finish(&claim, Finish::Stopped { at }, now).await
                        {
                            back += 1;
                        }
                    }
                    tracing::warn!(
                        running,
                        back,
                        "jobs still running at the end of the grace period (their handlers were told to stop at its start, and did not): put back in the queue, not counted as attempts; they run again after the restart (their side effects may be done twice)"
                    );
                } else {
                    tracing::warn!(
                        running,
                        "jobs still running at the end of the grace period are lost: the job store keeps them in memory only"
                    );
                }
                return;
            }
        }
    }
}
