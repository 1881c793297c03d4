//! A service's lifetime: the token its tasks and handlers watch, the flag hot loops
//! read instead of the token's lock, and the tasks the host joins at shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) struct Lifetime {
    /// Shared, so that a run's context costs a reference count, not the token's lock.
    pub(crate) token: Arc<CancellationToken>,
    /// Set with `token` by [`cancel`](Self::cancel): read on hot loops without the
    /// token's lock.
    cancelled: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Lifetime {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Lifetime {
            token: Arc::new(token),
            cancelled: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Cancels the token (the service's tasks and handlers see it).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether [`cancel`](Self::cancel) was called; one atomic load.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
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
