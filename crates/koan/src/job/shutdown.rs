//! How the host's job runner stops with its host: it claims no more jobs, tells
//! the handlers of the running ones to stop, and waits for them until the grace
//! ends. With a store that does not survive the process, the queued jobs are run
//! first instead, and their handlers are not told to stop (they would be lost).

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::runner::{JobRunner, job_services};
use crate::host::HostInner;

impl JobRunner {
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
                    tracing::warn!(
                        running,
                        "jobs still running at the end of the grace period (their handlers were told to stop at its start); they run again once their claims lapse"
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
