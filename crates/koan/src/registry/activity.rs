//! What a service did lately: its last runs (bounded), and how many of its actions
//! succeeded and failed. Each finished run and action also counts in the host's
//! [`Throughput`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::status::{RunRecord, RunStamp};
use super::throughput::Throughput;
use crate::action::Slots;
use crate::clock::WallNanos;

/// How many runs a service keeps unless configured
/// (`koan.background_services.history_size`).
pub const DEFAULT_HISTORY_SIZE: usize = 50;

/// One service's recent activity.
pub(crate) struct Activity {
    capacity: usize,
    runs: Mutex<VecDeque<RunStamp>>,
    /// Where the service's finished actions are counted: beside its concurrency
    /// slots, on the line a caller running an action already writes (see `Slots`).
    actions: Option<Arc<Slots>>,
    throughput: Arc<Throughput>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Activity {
    pub(crate) fn new(capacity: usize, throughput: Arc<Throughput>) -> Self {
        Activity {
            capacity,
            // Grown on the first run, so a host of many idle services pays nothing
            // for their history.
            runs: Mutex::new(VecDeque::new()),
            actions: None,
            throughput,
        }
    }

    /// Reads the service's action counts from its slots.
    pub(crate) fn counting_actions_in(mut self, slots: Arc<Slots>) -> Self {
        self.actions = Some(slots);
        self
    }

    /// Keeps a finished run (forgetting the oldest past the capacity); says whether
    /// it kept it (a history of capacity 0 keeps none). `whole`: a periodic run, whose
    /// service will fill its history soon, so the first run reserves all of it.
    pub(crate) fn run_finished(&self, record: &RunStamp, at: WallNanos, whole: bool) -> bool {
        self.throughput
            .record_secs(at.unix_secs(), record.is_failure());
        if self.capacity == 0 {
            return false;
        }
        if let Ok(mut runs) = self.runs.lock() {
            if runs.len() >= self.capacity {
                runs.pop_front();
            } else if whole && runs.capacity() == 0 {
                // Not grown as runs come: each growth copies the history and costs
                // a periodic run ten cache misses (three growths in its first 16
                // runs). Not for every service either: a background service
                // records one run, when it stops, and 100,000 of them reserving
                // all made 280 MB of histories (B6's shutdown took 25 % longer).
                runs.reserve_exact(self.capacity);
            }
            runs.push_back(record.clone());
            return true;
        }
        false
    }

    /// Loads the word of its history's lock, and nothing else (see
    /// [`StatusBoard::touch`](super::board::StatusBoard::touch)).
    #[inline]
    pub(crate) fn touch(&self) -> bool {
        self.runs.is_poisoned()
    }

    /// The newest run it keeps (the status's last run).
    pub(crate) fn last_run(&self) -> Option<RunStamp> {
        self.runs.lock().ok()?.back().cloned()
    }

    /// Counts a finished action in the host's throughput, at `secs` seconds since
    /// the Unix epoch ([`crate::clock::Clock::unix_secs`]); the service's own count
    /// is its slots' (`Slots::count_action`).
    pub(crate) fn action_finished(&self, secs: i64, failed: bool) {
        self.throughput.record_secs(secs, failed);
    }

    pub(crate) fn history(&self, service: &str) -> ServiceHistory {
        let (actions_succeeded, actions_failed) = self
            .actions
            .as_ref()
            .map_or((0, 0), |slots| slots.actions_counted());
        let runs = self
            .runs
            .lock()
            .map(|r| r.iter().rev().map(RunStamp::record).collect())
            .unwrap_or_default();
        ServiceHistory {
            service: service.to_owned(),
            capacity: self.capacity,
            runs,
            actions_succeeded,
            actions_failed,
        }
    }
}

/// A service's recent runs and action counts ([`crate::HostHandle::history`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceHistory {
    /// The service.
    pub service: String,
    /// How many runs it keeps (`koan.background_services.history_size`, 50 unless set).
    pub capacity: usize,
    /// Its last runs, newest first: reason, start, duration and outcome.
    pub runs: Vec<RunRecord>,
    /// Actions that succeeded since the host started.
    pub actions_succeeded: u64,
    /// Actions that failed (errors, panics, timeouts) since the host started.
    pub actions_failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::status::RunOutcome;
    use crate::service::RunReason;

    fn stamp() -> RunStamp {
        RunStamp::new(
            RunReason::Scheduled,
            WallNanos::from(chrono::Utc::now()),
            1,
            RunOutcome::Success,
        )
    }

    /// A periodic run reserves the whole history at once (no growth, with its copy,
    /// later); a background service's one run does not.
    #[test]
    fn only_a_periodic_run_reserves_the_whole_history() {
        let periodic = Activity::new(50, Arc::default());
        assert!(periodic.run_finished(&stamp(), stamp().started, true));
        let reserved = periodic.runs.lock().map(|r| r.capacity()).unwrap_or(0);
        assert!(reserved >= 50, "reserved {reserved}");

        let background = Activity::new(50, Arc::default());
        assert!(background.run_finished(&stamp(), stamp().started, false));
        let reserved = background.runs.lock().map(|r| r.capacity()).unwrap_or(0);
        assert!(reserved < 50, "reserved {reserved}");

        let none = Activity::new(0, Arc::default());
        assert!(!none.run_finished(&stamp(), stamp().started, true));
        assert!(none.last_run().is_none());
    }
}
