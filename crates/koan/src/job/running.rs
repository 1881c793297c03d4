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

/// The last registration's number, and each run's number and stops by job id.
type Runs = (u64, HashMap<String, (u64, Stops)>);

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
        let mut runs = self.lock();
        runs.0 += 1;
        let number = runs.0;
        runs.1
            .insert(id.to_owned(), (number, stops.into_iter().collect()));
        Registered {
            running: self,
            id: id.to_owned(),
            number,
        }
    }

    /// Stops the run of job `id` on this host, if any (it was cancelled).
    pub fn stop(&self, id: &str) {
        if let Some((_, stops)) = self.lock().1.get(id) {
            stops.iter().for_each(CancellationToken::cancel);
        }
    }
}

/// A run's registration, removed when dropped.
#[derive(Debug)]
pub struct Registered<'a> {
    running: &'a Running,
    id: String,
    number: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut runs = self.running.lock();
        if runs.1.get(&self.id).is_some_and(|(n, _)| *n == self.number) {
            runs.1.remove(&self.id);
        }
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
        assert!(second.iter().all(CancellationToken::is_cancelled));
        assert!(!first.iter().any(CancellationToken::is_cancelled));
        drop(b);
        assert!(running.lock().1.is_empty());
    }
}
