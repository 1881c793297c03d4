//! A service's lifetime: the token its tasks and handlers watch, and the tasks the
//! host joins at shutdown. (A periodic driver reads its own flag instead of the
//! token's lock: `PeriodicControl::cancel`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) struct Lifetime {
    /// Shared, so that a run's context costs a reference count, not the token's lock.
    pub(crate) token: Arc<CancellationToken>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set once the supervisor gave up on the service (`host::supervisor::give_up`):
    /// calls are refused from then on.
    failed: AtomicBool,
    /// Cancelled when the host's grace ran out for the service: actions its
    /// callers run themselves (`action::inline`) are stopped then, as its tasks are
    /// aborted.
    pub(crate) aborted: CancellationToken,
}

impl Lifetime {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Lifetime {
            token: Arc::new(token),
            tasks: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
            aborted: CancellationToken::new(),
        }
    }

    /// Marks the service failed for good.
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Whether the service failed for good.
    #[inline(always)]
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Cancels the token (the service's tasks and handlers see it).
    pub(crate) fn cancel(&self) {
        self.token.cancel();
    }

    pub(crate) fn push_task(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    pub(crate) fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        self.tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}
