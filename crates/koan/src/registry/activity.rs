//! What a service did lately: its last runs (bounded), and how many of its actions
//! succeeded and failed. Each finished run and action also counts in the host's
//! [`Throughput`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::history::History;
use super::status::{RunRecord, RunStamp};
use super::throughput::Throughput;
use crate::action::Slots;
use crate::clock::WallNanos;

/// How many runs a service keeps unless configured
/// (`koan.background_services.history_size`).
pub const DEFAULT_HISTORY_SIZE: usize = 50;

/// One service's recent activity.
pub(crate) struct Activity {
    runs: History,
    /// Where the service's finished actions are counted: beside its concurrency
    /// slots, on the line a caller running an action already writes (see `Slots`).
    actions: Option<Arc<Slots>>,
    throughput: Arc<Throughput>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("capacity", &self.runs.capacity())
            .finish_non_exhaustive()
    }
}

impl Activity {
    pub(crate) fn new(capacity: usize, throughput: Arc<Throughput>) -> Self {
        Activity {
            // Made on the first run, so a host of many idle services pays nothing
            // for their history.
            runs: History::new(capacity),
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
    /// it kept it (a history of capacity 0 keeps none). `periodic`: a periodic run,
    /// whose service will fill its history soon (see [`History`]).
    pub(crate) fn run_finished(&self, record: &RunStamp, at: WallNanos, periodic: bool) -> bool {
        self.throughput
            .record_secs(at.unix_secs(), record.is_failure());
        self.runs.push(record, periodic)
    }

    /// Loads the word of its history's lock and of the history's next slot, and
    /// nothing else (see [`StatusBoard::touch`](super::board::StatusBoard::touch)).
    #[inline]
    pub(crate) fn touch(&self) -> (bool, u32) {
        self.runs.touch()
    }

    /// The first word of its history's next slot (see [`History::next_word`]).
    pub(crate) fn next_history_word(&self) -> Option<&std::sync::atomic::AtomicU32> {
        self.runs.next_word()
    }

    /// The newest run it keeps (the status's last run).
    pub(crate) fn last_run(&self) -> Option<RunStamp> {
        self.runs.newest()
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
            .newest_first()
            .iter()
            .map(RunStamp::record)
            .collect();
        ServiceHistory {
            service: service.to_owned(),
            capacity: self.runs.capacity(),
            runs,
            actions_succeeded,
            actions_failed,
        }
    }
}

/// A service's recent runs and action counts ([`crate::HostHandle::history`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
