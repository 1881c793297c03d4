//! Whether the job store answers the runner: its last pass's failure, if it failed.
//! `/health` shows it (`jobs:store`, `warn`) and readiness fails while it lasts: a
//! host whose store cannot be read strands the jobs it accepts (a corrupt file, a
//! lock held elsewhere, a full disk), where its health said `pass` throughout
//! (seen in a probe).

use std::sync::Mutex;

/// The store's failure as the runner last saw it.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth(Mutex<Option<String>>);

impl StoreHealth {
    /// What the runner's last pass found: `Some` failure, or `None` when the store
    /// answered every question.
    pub(crate) fn note(&self, failure: Option<String>) {
        if let Ok(mut last) = self.0.lock() {
            *last = failure;
        }
    }

    /// The failure of the last pass, if it failed.
    pub(crate) fn failing(&self) -> Option<String> {
        self.0.lock().ok().and_then(|last| last.clone())
    }
}
