//! The mailbox's lane: the lock-free ring of jobs of priority 0 (nearly every call),
//! and the count of every job waiting, made together at a mailbox's first push.

use crossbeam_utils::CachePadded;

use super::Job;
use crate::sync::{ArrayQueue, AtomicUsize};

/// Room in the lane: a burst of 64 waiting calls (B3's 64 callers) fits; a job of
/// priority 0 pushed while it is full queues under the lock, behind it. 64 slots of
/// a 128-byte job are 8.7 KB, made at a service's first queued call (a mailbox of
/// less capacity gets a ring of its capacity). Two under loom, so its models, whose
/// mailboxes hold four, see the lane fill.
#[cfg(not(koan_loom))]
const LANE_SLOTS: usize = 64;
#[cfg(koan_loom)]
const LANE_SLOTS: usize = 2;

/// What every push and take writes, apart from the flags they read (`closed`,
/// `others`, `sleepers`): sharing a line with the count, the first of those reads
/// in a push or a take missed each time the other core had written the count, and
/// a caller's look at the count before its push did too (B3's profile: a third of
/// `start_step`'s samples, 17 % of the worker loop's, on that load). Made at the
/// first push, in one allocation: the ring's ends are on lines of their own
/// already, and the count gets one beside them. Koan alone, B3's CPU per action
/// fell to 0.96× (19 of 24 pairs); with its peers the ratio did not move beyond
/// its noise (docs/benchmarks/round-20.md).
pub(super) struct Lane {
    /// Jobs of priority 0, in order, older than any of priority 0 under the lock: a
    /// ring of up to [`LANE_SLOTS`] jobs.
    pub(super) jobs: ArrayQueue<Job>,
    /// Jobs accepted and not yet taken, in the lane and under the lock: counted up
    /// before a job goes in (the capacity's reservation) and down once it is out.
    /// Read when the depth is asked for (a service's status, and from it
    /// `koan_service_queue_depth` at each scrape), not copied into a gauge on every
    /// push and take: with a recorder installed, those two writes on a line of the
    /// recorder's were shared by every caller's core and the worker's, and racing
    /// writers could leave a stale depth there.
    pub(super) len: CachePadded<AtomicUsize>,
}

impl Lane {
    /// A lane for a mailbox of `capacity`: a ring of its capacity, at most
    /// [`LANE_SLOTS`], and nothing counted yet.
    pub(super) fn new(capacity: usize) -> Self {
        Lane {
            jobs: ArrayQueue::new(capacity.min(LANE_SLOTS)),
            len: CachePadded::new(AtomicUsize::new(0)),
        }
    }
}
