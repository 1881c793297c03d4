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
    push_last: Mutex<Option<(String, std::time::Instant)>>,
    /// When the runner's failure was last said in the log.
    said_at: Mutex<Option<std::time::Instant>>,
}

/// How often a lasting failure of the runner's passes is said again: each pass's
/// warning, once a second for each service, wrote tens of thousands of lines a day
/// to a full disk (found by a probe).
const SAY_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a refused enqueue is said in health, unless one is stored sooner: it is
/// not in readiness, which nothing would clear once traffic is taken away (found by
/// a review).
const PUSH_SAID_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Sets `slot` to `failure` (read without its lock while well: `flag`).
fn set<T>(flag: &AtomicBool, slot: &Mutex<Option<T>>, failure: Option<T>) {
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
        let failure = failure.map(|e| (e, std::time::Instant::now()));
        set(&self.push_failing, &self.push_last, failure);
    }

    /// The runner's failure as an operator reads it (`describe`: the store), if the
    /// store is failing it: what readiness says.
    pub(crate) fn said(&self, describe: &str) -> Option<String> {
        let e = self.failing()?;
        Some(format!(
            "the job store is failing ({describe}): {e}; the jobs it accepts wait until it answers"
        ))
    }

    /// [`said`](Self::said), else an enqueue the store refused within the last
    /// minute: what health says.
    pub(crate) fn said_with_enqueues(&self, describe: &str) -> Option<String> {
        if let Some(said) = self.said(describe) {
            return Some(said);
        }
        if !self.push_failing.load(Ordering::Acquire) {
            return None;
        }
        let (e, at) = self.push_last.lock().ok().and_then(|l| l.clone())?;
        let ago = at.elapsed();
        (ago < PUSH_SAID_FOR).then(|| {
            format!(
                "the job store refused an enqueue {} ago ({describe}): {e}; new jobs are refused (503) until it stores one",
                crate::util::fmt_duration(std::time::Duration::from_secs(ago.as_secs()))
            )
        })
    }

    /// What the runner's last pass found: `Some` failure, or `None` when the store
    /// answered every question.
    pub(crate) fn note(&self, failure: Option<String>) {
        let was = self.failing.load(Ordering::Acquire);
        if failure.is_none() && !was {
            return;
        }
        self.say(was, failure.as_deref());
        set(&self.failing, &self.last, failure);
    }

    /// Says in the log that the runner's passes began to fail (`was` not), still
    /// fail (once a minute), or no longer do.
    #[cold]
    fn say(&self, was: bool, failure: Option<&str>) {
        let Ok(mut said) = self.said_at.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        match failure {
            Some(e) if !was => {
                tracing::warn!(error = %e, "the job store fails the runner; it tries again each pass (said again each minute while it lasts)");
                *said = Some(now);
            }
            Some(e) if said.is_none_or(|t| now.duration_since(t) >= SAY_AGAIN_AFTER) => {
                tracing::warn!(error = %e, "the job store still fails the runner");
                *said = Some(now);
            }
            Some(_) => {}
            None => {
                tracing::info!("the job store answers the runner again");
                *said = None;
            }
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
