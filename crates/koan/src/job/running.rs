//! The jobs a runner is running on this host, so that a cancel stops a run at
//! once: the same as a lost claim (its fence and its handler's token fire),
//! rather than at the run's next heartbeat or progress check, by when a shorter
//! run has done its work though it was cancelled. The host's own runner and a
//! transport's (`koan-nats`, told of cancels by its watch of the cluster's)
//! each keep one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

/// What stops a run (its fence, its handler's token, or one that stands for both).
type Stops = Vec<CancellationToken>;

/// One run: its registration's number, what stops it, whether its handler has
/// returned (its outcome is being recorded), and what fires once it ended.
#[derive(Debug)]
struct Run {
    number: u64,
    stops: Stops,
    finishing: bool,
    /// Stopped by [`Running::stop`] (a cancel), not by a lost claim.
    cancelled: bool,
    ended: CancellationToken,
}

/// The last registration's number, and each run by job id.
type Runs = (u64, HashMap<String, Run>);

/// The runs under way, by job id, each with its registration's number (a job
/// claimed again here, its lapsed run still winding down, takes the id over).
#[derive(Debug, Default)]
pub struct Running {
    runs: Mutex<Runs>,
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, Runs> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the run of job `id`, stopped by cancelling `stops` at a cancel,
    /// until the returned guard is dropped.
    pub fn register(
        &self,
        id: &str,
        stops: impl IntoIterator<Item = CancellationToken>,
    ) -> Registered<'_> {
        self.register_after(id, stops).0
    }

    /// Registers the run of job `id` as [`register`](Self::register) does (a
    /// cancel reaches it from now on), with what fires once the run of it
    /// registered here before has ended, if one is still winding down (cancelled,
    /// or its claim lost): the job's next run (a retry by hand) waits for it, so
    /// that the two do not run at once.
    pub fn register_after(
        &self,
        id: &str,
        stops: impl IntoIterator<Item = CancellationToken>,
    ) -> (Registered<'_>, Option<CancellationToken>) {
        let mut runs = self.lock();
        runs.0 += 1;
        let number = runs.0;
        let ended = CancellationToken::new();
        let run = Run {
            number,
            stops: stops.into_iter().collect(),
            finishing: false,
            cancelled: false,
            ended: ended.clone(),
        };
        let before = runs.1.insert(id.to_owned(), run).map(|old| old.ended);
        let registered = Registered {
            running: self,
            id: id.to_owned(),
            number,
            ended,
        };
        (registered, before)
    }

    /// Whether a run of job `id` is under way on this host (or winding down).
    pub fn has(&self, id: &str) -> bool {
        self.lock().1.contains_key(id)
    }

    /// Stops the run of job `id` on this host, if any (it was cancelled).
    pub fn stop(&self, id: &str) {
        if let Some(run) = self.lock().1.get_mut(id) {
            run.cancelled = true;
            run.stops.iter().for_each(CancellationToken::cancel);
        }
    }

    /// Waits, if the handler of job `id`'s run here has returned, until its
    /// outcome is recorded and the run ended: a cancel then finds the job ended
    /// rather than taking the place of a result already had.
    pub async fn settled(&self, id: &str) {
        let ended = self
            .lock()
            .1
            .get(id)
            .filter(|run| run.finishing)
            .map(|run| run.ended.clone());
        if let Some(ended) = ended {
            ended.cancelled().await;
        }
    }
}

/// A run's registration, removed when dropped (and its end then told).
#[derive(Debug)]
pub struct Registered<'a> {
    running: &'a Running,
    id: String,
    number: u64,
    ended: CancellationToken,
}

impl Registered<'_> {
    /// Whether the run was stopped by a cancel ([`Running::stop`]).
    pub fn cancelled(&self) -> bool {
        self.running
            .lock()
            .1
            .get(&self.id)
            .is_some_and(|run| run.number == self.number && run.cancelled)
    }

    /// The run's handler returned: its outcome is being recorded (see
    /// [`Running::settled`]).
    pub fn finishing(&self) {
        if let Some(run) = self.running.lock().1.get_mut(&self.id)
            && run.number == self.number
        {
            run.finishing = true;
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut runs = self.running.lock();
        if runs
            .1
            .get(&self.id)
            .is_some_and(|run| run.number == self.number)
        {
            runs.1.remove(&self.id);
        }
        self.ended.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_stops_the_run_registered_last_and_none_after_it_ended() {
        let running = Running::default();
        let stops = || [CancellationToken::new(), CancellationToken::new()];
        let (first, second) = (stops(), stops());
        let a = running.register("j", first.clone());
        let b = running.register("j", second.clone());
        // (A second run of the job here, its first still winding down.)
        drop(a);
        running.stop("j");
        assert!(b.cancelled());
        assert!(second.iter().all(CancellationToken::is_cancelled));
        assert!(!first.iter().any(CancellationToken::is_cancelled));
        drop(b);
        assert!(running.lock().1.is_empty());
    }

    #[test]
    fn a_run_registered_after_another_is_told_when_that_one_ends() {
        let running = Running::default();
        let first = running.register("j", []);
        let stop = CancellationToken::new();
        let (second, before) = running.register_after("j", [stop.clone()]);
        let before = before.expect("the first still runs");
        assert!(!before.is_cancelled());
        // A cancel reaches the second at once, though it waits.
        running.stop("j");
        assert!(stop.is_cancelled() && second.cancelled());
        drop(first);
        assert!(before.is_cancelled(), "the first ended");
        drop(second);
        assert!(running.lock().1.is_empty());
        assert!(running.register_after("j", []).1.is_none());
    }

    #[test]
    fn a_cancel_waits_only_for_a_run_whose_handler_returned() {
        use futures_util::FutureExt;
        let running = Running::default();
        let run = running.register("j", []);
        assert!(
            running.settled("j").now_or_never().is_some(),
            "still running"
        );
        run.finishing();
        let mut settled = Box::pin(running.settled("j"));
        assert!(
            (&mut settled).now_or_never().is_none(),
            "its outcome is on its way"
        );
        drop(run);
        assert!(settled.now_or_never().is_some(), "recorded");
    }
}
