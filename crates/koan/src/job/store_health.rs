//! Whether the job store answers the runner: its last pass's failure, if it failed.
//! `/health` shows it (`jobs:store`, `warn`) and readiness fails while it lasts: a
//! host whose store cannot be read strands the jobs it accepts (a corrupt file, a
//! lock held elsewhere, a full disk), where its health said `pass` throughout
//! (seen in a probe).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The store's failure as the runner last saw it, and as the last enqueue did.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    /// Set while `last` holds a failure: a pass that finds the store well, as
    /// nearly every pass does (B9: a pass per finished job), reads only this.
    failing: AtomicBool,
    last: Mutex<Option<String>>,
    /// The same for enqueues: a full disk refused every new job (503) while the
    /// runner's passes, which write nothing when nothing is due, went well, and
    /// health said `pass` (found by a probe).
    push_failing: AtomicBool,
    push_last: Mutex<Option<String>>,
}

/// Sets `slot` to `failure` (read without its lock while well: `flag`).
fn set(flag: &AtomicBool, slot: &Mutex<Option<String>>, failure: Option<String>) {
    if failure.is_none() && !flag.load(Ordering::Acquire) {
        return;
    }
    if let Ok(mut last) = slot.lock() {
        flag.store(failure.is_some(), Ordering::Release);
        *last = failure;
    }
}

impl StoreHealth {
    /// What the last enqueue found: `Some` failure (the store refused to store
    /// the job), or `None` once one is stored.
    pub(crate) fn note_push(&self, failure: Option<String>) {
        set(&self.push_failing, &self.push_last, failure);
    }

    /// The store's failure as an operator reads it (`describe`: the store), if it
    /// is failing: the runner's, else the last enqueue's.
    pub(crate) fn said(&self, describe: &str) -> Option<String> {
        if let Some(e) = self.failing() {
            return Some(format!(
                "the job store is failing ({describe}): {e}; the jobs it accepts wait until it answers"
            ));
        }
        if !self.push_failing.load(Ordering::Acquire) {
            return None;
        }
        let e = self.push_last.lock().ok().and_then(|l| l.clone())?;
        Some(format!(
            "the job store refused the last enqueue ({describe}): {e}; new jobs are refused (503) until it stores one"
        ))
    }

    /// What the runner's last pass found: `Some` failure, or `None` when the store
    /// answered every question.
    pub(crate) fn note(&self, failure: Option<String>) {
        set(&self.failing, &self.last, failure);
    }

    /// The failure of the last pass, if it failed.
    pub(crate) fn failing(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.last.lock().ok().and_then(|last| last.clone())
    }
}
