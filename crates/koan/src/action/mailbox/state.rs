//! The jobs of a mailbox waiting under its lock: every priority but 0's, which go
//! through the lane (`lane.rs`).

use std::collections::VecDeque;

use super::Job;

/// Jobs of every priority but 0 (those go through the lane): one FIFO queue per
/// priority, highest first, so a job is moved in once and out once and equal
/// priorities keep their order.
#[derive(Default)]
pub(super) struct State {
    /// Sorted by priority, highest first.
    pub(super) queues: Vec<(i32, VecDeque<Job>)>,
    pub(super) len: usize,
}

/// Empty queues of rarer priorities are dropped once there are more than this many.
const KEEP_QUEUES: usize = 8;

impl State {
    pub(super) fn push(&mut self, job: Job) {
        let p = job.priority;
        let i = match self.queues.binary_search_by(|(q, _)| p.cmp(q)) {
            Ok(i) => i,
            Err(i) => {
                self.queues.insert(i, (p, VecDeque::new()));
                i
            }
        };
        self.queues[i].1.push_back(job);
        self.len += 1;
    }

    /// The priority of the job [`pop`](Self::pop) would take.
    pub(super) fn top_priority(&self) -> Option<i32> {
        self.queues
            .iter()
            .find(|(_, q)| !q.is_empty())
            .map(|(p, _)| *p)
    }

    pub(super) fn pop(&mut self) -> Option<Job> {
        let i = self.queues.iter().position(|(_, q)| !q.is_empty())?;
        let job = self.queues[i].1.pop_front()?;
        self.len -= 1;
        if self.queues[i].1.is_empty() && self.queues.len() > KEEP_QUEUES {
            self.queues.remove(i);
        }
        Some(job)
    }
}
