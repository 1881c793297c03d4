use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::host::{HostHandle, HostInner};
use crate::registry::ServiceCell;

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RunReason {
    /// The service was started (background and startup services).
    Start,
    /// A restart after a failure.
    Restart,
    /// The schedule fell due.
    Scheduled,
    /// Someone asked for a run now (`trigger`).
    Trigger,
    /// The `check-queue` command.
    CheckQueue,
    /// The `process-batch` command.
    ProcessBatch,
}

/// The arguments of `process-batch`: how many items to take and which.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchRequest {
    /// How many items to take at most.
    #[serde(default, alias = "batch_size")]
    pub batch_size: Option<u32>,
    /// Which items to take.
    #[serde(default)]
    pub filter: Option<String>,
}

impl BatchRequest {
    /// A request for `batch_size` items matching `filter`.
    pub fn new(batch_size: Option<u32>, filter: Option<String>) -> Self {
        BatchRequest { batch_size, filter }
    }
}

/// What a running service gets from the host: its cancellation signal, why it runs,
/// and a way back to the host.
#[derive(Clone)]
pub struct ServiceContext {
    /// What every run of the service shares: one reference count per run's context
    /// (a periodic service builds one per run) instead of one per part.
    pub(crate) shared: Arc<ContextShared>,
    pub(crate) reason: RunReason,
    pub(crate) batch: Option<BatchRequest>,
}

/// The parts of a [`ServiceContext`] that do not change from run to run.
pub(crate) struct ContextShared {
    pub(crate) name: Arc<str>,
    pub(crate) token: Arc<CancellationToken>,
    /// Set once [`ServiceContext::token`] has handed the token out: only then can code
    /// other than the host cancel it, so only then does a periodic driver read it
    /// after each run (a read takes the token's lock, a cache line of its own).
    lent: AtomicBool,
    /// Its service, through which it reaches the host: a count on the service's own
    /// state, not on the host's (which every service's every run would share).
    pub(crate) cell: Weak<ServiceCell>,
}

impl std::fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContext")
            .field("name", &self.shared.name)
            .field("reason", &self.reason)
            .field("cancelled", &self.shared.token.is_cancelled())
            .finish()
    }
}

impl ServiceContext {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Resolves when the host asks the service to stop.
    pub async fn cancelled(&self) {
        self.shared.token.cancelled().await
    }

    /// Whether the host has asked the service to stop.
    pub fn is_cancelled(&self) -> bool {
        self.shared.token.is_cancelled()
    }

    /// The cancellation token, to hand to other code.
    pub fn token(&self) -> &CancellationToken {
        if !self.shared.lent.load(Ordering::Relaxed) {
            self.shared.lent.store(true, Ordering::Relaxed);
        }
        &self.shared.token
    }

    /// Loads the words a run's context touches (its count, its `lent` flag), and
    /// nothing else: see the periodic driver's `warm`.
    #[inline]
    pub(crate) fn touch(&self) -> (usize, bool) {
        (
            Arc::strong_count(&self.shared),
            self.shared.lent.load(Ordering::Relaxed),
        )
    }

    /// Whether code this context handed its token to cancelled it. The host cancels
    /// through the service's own flag ([`crate::registry`]'s `Lifetime`), which
    /// callers check first. The token is read only once it was lent: the flag is
    /// stored before `token` returns, so a cancel through that token is seen by a
    /// check made after it on the same task (a run's end).
    pub(crate) fn cancelled_by_user(&self) -> bool {
        self.shared.lent.load(Ordering::Relaxed) && self.shared.token.is_cancelled()
    }

    /// Sleeps for `duration`, or less if the service is stopped. Returns `false` when
    /// cut short by cancellation, so loops read `while cx.sleep(period).await { … }`.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.shared.token.cancelled() => false,
            _ = tokio::time::sleep(duration) => true,
        }
    }

    /// Why this run started.
    pub fn reason(&self) -> RunReason {
        self.reason
    }

    /// The `process-batch` arguments, when that is why this run started.
    pub fn batch(&self) -> Option<&BatchRequest> {
        self.batch.as_ref()
    }

    /// The host running this service, while it exists.
    pub fn host(&self) -> Option<HostHandle> {
        self.host_inner().map(HostHandle::from_inner)
    }

    pub(crate) fn host_inner(&self) -> Option<Arc<HostInner>> {
        self.shared.cell.upgrade()?.host()
    }

    /// A context for a service's parts, first built for `reason`.
    pub(crate) fn new(
        name: Arc<str>,
        token: Arc<CancellationToken>,
        cell: Weak<ServiceCell>,
        reason: RunReason,
    ) -> Self {
        ServiceContext {
            shared: Arc::new(ContextShared {
                name,
                token,
                lent: AtomicBool::new(false),
                cell,
            }),
            reason,
            batch: None,
        }
    }

    /// The context of one run: the same parts, one reference count.
    pub(crate) fn for_run(&self, reason: RunReason, batch: Option<BatchRequest>) -> Self {
        ServiceContext {
            shared: Arc::clone(&self.shared),
            reason,
            batch,
        }
    }

    /// The context of one run with a token of its own.
    pub(crate) fn with_token(
        &self,
        token: Arc<CancellationToken>,
        reason: RunReason,
        batch: Option<BatchRequest>,
    ) -> Self {
        let mut cx = ServiceContext::new(
            Arc::clone(&self.shared.name),
            token,
            self.shared.cell.clone(),
            reason,
        );
        cx.batch = batch;
        cx
    }
}

impl ServiceContext {
    /// Emits event `name` from this service. Inside an action handler the event
    /// carries that action's correlation id.
    ///
    /// A name the service does not declare is delivered all the same, but warned
    /// about (once per name) and counted in `koan_events_undeclared_total`.
    pub async fn emit<E: Serialize + Send + Sync + 'static>(&self, name: &str, payload: E) {
        if let Some(cell) = self.shared.cell.upgrade()
            && let Some(host) = cell.host()
        {
            host.events
                .emit_from(&cell, name, crate::action::current_correlation(), payload)
                .await;
        }
    }

    /// Emits a typed event under its own name ([`Event::NAME`](crate::Event::NAME)).
    pub async fn emit_event<E: crate::Event>(&self, event: E) {
        self.emit(E::NAME, event).await
    }

    /// The fluent API of another service of this host.
    ///
    /// # Panics
    /// When the host is gone (a context kept past the host's life).
    pub fn services<T: crate::Service>(&self) -> crate::Services<T> {
        match self.host() {
            Some(h) => h.services::<T>(),
            None => panic!("the host of service `{}` is gone", self.shared.name),
        }
    }
}
