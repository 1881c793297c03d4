//! Who settles a queued call that has a deadline: a worker taking it, or its caller
//! giving up at the deadline. Whichever is first decides, so the caller knows
//! whether its call started, and a call given up on frees its place in the mailbox.
//!
//! Before, a caller answered at its deadline was told the outcome was unknown ("may
//! have finished … may never have started") though the host knew the call would
//! never run, and the dead call kept its place until a worker reached it: callers
//! were refused `busy` by a mailbox full of calls nobody waited for.

use super::{Job, Mailbox};
use crate::sync::{AtomicU8, Ordering};

/// Still queued: neither taken nor given up on.
const QUEUED: u8 = 0;
/// Taken out of the mailbox by a worker (it may run).
const TAKEN: u8 = 1;
/// Given up on by its caller, its place counted out of the mailbox then.
const FREED: u8 = 2;
/// Given up on by its caller, its place still counted (too many were freed).
const HELD: u8 = 3;

/// One queued call's claim, shared by the call (its [`Job`](super::Job)) and its
/// caller's deadline.
#[derive(Debug)]
pub(crate) struct Claim(AtomicU8);

/// What a worker taking a job learns of its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Its caller still waits: the job is the worker's.
    Run,
    /// Its caller gave up and its place was counted out then.
    Freed,
    /// Its caller gave up; its place is counted out now, as it leaves.
    Held,
}

impl Claim {
    pub(crate) fn new() -> Self {
        Claim(AtomicU8::new(QUEUED))
    }

    /// Taken by a worker (or by a closing mailbox): from now on its caller cannot
    /// give up on it.
    pub(crate) fn take(&self) -> Taken {
        match self
            .0
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(TAKEN) => Taken::Run,
            Err(FREED) => Taken::Freed,
            Err(_) => Taken::Held,
        }
    }

    /// Given up on by its caller, its place freed (`free`) or held: `true` when no
    /// worker took it first, so it never started and never will.
    pub(crate) fn give_up(&self, free: bool) -> bool {
        let to = if free { FREED } else { HELD };
        self.0
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether its caller gave up on it (it is not run).
    pub(crate) fn given_up(&self) -> bool {
        matches!(self.0.load(Ordering::Acquire), FREED | HELD)
    }
}

impl Mailbox {
    /// A caller giving up on its queued call at the call's deadline: `true` when no
    /// worker took the call first, so it never starts (a worker reaching it drops
    /// it). Its place is counted out at once, so that callers are not refused
    /// `busy` by calls nobody waits for, unless as many as the capacity are so
    /// freed and still queued: then it keeps its place until a worker reaches it.
    pub(crate) fn give_up(&self, claim: &Claim) -> bool {
        let free = self.freed.fetch_add(1, Ordering::SeqCst) < self.capacity;
        let won = claim.give_up(free);
        if free && won {
            self.count_out(1);
        } else {
            self.freed.fetch_sub(1, Ordering::SeqCst);
        }
        won
    }

    /// How much `job`, leaving the queue, counts out: nothing if its place was freed
    /// when its caller gave up on it (see [`give_up`](Self::give_up)). From now on
    /// its caller cannot give up on it.
    pub(super) fn leaving(&self, job: &Job) -> usize {
        match job.claim.as_deref().map(Claim::take) {
            Some(Taken::Freed) => {
                self.freed.fetch_sub(1, Ordering::SeqCst);
                0
            }
            _ => 1,
        }
    }

    /// [`leaving`](Self::leaving) for each of `jobs`.
    pub(super) fn leaving_all<'j>(&self, jobs: impl IntoIterator<Item = &'j Job>) -> usize {
        jobs.into_iter().map(|j| self.leaving(j)).sum()
    }
}

/// A caller giving up at its deadline races a worker taking its call: exactly one
/// wins, and whichever does, the place is counted out once.
#[cfg(all(test, koan_loom))]
mod loom_tests {
    use std::sync::Arc;

    use super::super::loom_model::{job, mailbox};
    use super::Claim;
    use crate::sync::Ordering;

    #[test]
    fn loom_a_call_given_up_or_taken_is_counted_out_once() {
        loom::model(|| {
            let mailbox = mailbox();
            let claim = Arc::new(Claim::new());
            let mut queued = job(0);
            queued.claim = Some(Arc::clone(&claim));
            mailbox.push(queued).expect("room for it");
            let caller = {
                let (mailbox, claim) = (Arc::clone(&mailbox), Arc::clone(&claim));
                loom::thread::spawn(move || mailbox.give_up(&claim))
            };
            let taken = mailbox.next_in_slot().expect("the call is still queued");
            let won = caller.join().expect("the caller");
            assert_eq!(won, claim.given_up(), "the caller won, or the worker");
            assert!(taken.claim.is_some());
            assert_eq!(mailbox.len(), 0, "its place counted out once");
            assert_eq!(mailbox.freed.load(Ordering::SeqCst), 0);
        });
    }
}
