//! Whether the job store answers the runner: its last pass's failure, if it failed.
//! `/health` shows it (`jobs:store`, `warn`) and readiness fails while it lasts: a
//! host whose store cannot be read strands the jobs it accepts (a corrupt file, a
//! lock held elsewhere, a full disk), where its health said `pass` throughout
//! (seen in a probe).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The store's failure as the runner last saw it.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    /// Set while `last` holds a failure: a pass that finds the store well, as
    /// nearly every pass does (B9: a pass per finished job), reads only this.
    failing: AtomicBool,
    last: Mutex<Option<String>>,
}

impl StoreHealth {
    /// What the runner's last pass found: `Some` failure, or `None` when the store
    /// answered every question.
    pub(crate) fn note(&self, failure: Option<String>) {
        if failure.is_none() && !self.failing.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut last) = self.last.lock() {
            self.failing.store(failure.is_some(), Ordering::Release);
            *last = failure;
        }
    }

    /// The failure of the last pass, if it failed.
    pub(crate) fn failing(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.last.lock().ok().and_then(|last| last.clone())
    }
}
