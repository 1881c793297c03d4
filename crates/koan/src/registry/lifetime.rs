//! A service's lifetime: the token its tasks and handlers watch, and the tasks the
//! host joins at shutdown. (A periodic driver reads its own flag instead of the
//! token's lock: `PeriodicControl::cancel`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) struct Lifetime {
    /// Shared, so that a run's context costs a reference count, not the token's lock.
    pub(crate) token: Arc<CancellationToken>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set once the supervisor gave up on the service (`host::supervisor::give_up`):
    /// calls are refused from then on, until a restart by hand (`host::restart`).
    failed: AtomicBool,
    /// Set when the host's grace ran out for the service: actions its callers run
    /// themselves (`action::inline`) are stopped then, as its tasks are aborted.
    /// The process is ended if it lingers after that (`host::signals`).
    aborted: AtomicBool,
    /// Told of it: made only when such an action first waits (a token in every
    /// service cost 160 bytes a service: B6's memory).
    abort_token: OnceLock<CancellationToken>,
}

impl Lifetime {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Lifetime {
            token: Arc::new(token),
            tasks: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            abort_token: OnceLock::new(),
        }
    }

    /// The end of the grace: actions run by their callers stop.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        if let Some(t) = self.abort_token.get() {
            t.cancel();
        }
    }

    /// Whether the grace ran out for the service (its tasks or its callers'
    /// actions were stopped then).
    pub(crate) fn aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// A token cancelled at [`abort`](Self::abort) (at once, if it came already).
    pub(crate) fn abort_token(&self) -> CancellationToken {
        let token = self.abort_token.get_or_init(CancellationToken::new).clone();
        // After the token is in place: an `abort` before it is seen here, one
        // after it finds the token (both `SeqCst`).
        if self.aborted.load(Ordering::SeqCst) {
            token.cancel();
        }
        token
    }

    /// Marks the service failed for good.
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Takes back a failure for good, for a restart by hand: `true` for the one
    /// caller that does, of a failed service.
    pub(crate) fn recover(&self) -> bool {
        self.failed
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
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
