use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::correlation::{Correlation, CorrelationText};
use crate::host::{HostHandle, HostInner};
use crate::registry::ServiceCell;

thread_local! {
    /// The correlation id of the action whose handler is being polled on this thread:
    /// set around each poll of a handler's future (and around its drop), so that it
    /// reads as a task-local would. Our own rather than `tokio::task_local!`: its
    /// `sync_scope` (a `RefCell` swapped in and out, and the value moved through
    /// three layers) was 7.5 % of B1's samples.
    static CURRENT: Cell<Option<Correlation>> = const { Cell::new(None) };
}

/// The correlation id of the action running on this task, if any.
pub(crate) fn current_correlation() -> Option<Arc<str>> {
    CURRENT
        .try_with(|current| {
            let id = current.take();
            let text = id.as_ref().map(Correlation::to_arc);
            current.set(id);
            text
        })
        .ok()
        .flatten()
}

/// The correlation id of the action running on this task, as it is (a generated
/// one not formatted): what a call or job made by its handler takes when given
/// none, so that the work an action causes is found under the action's id (a
/// job enqueued by a handler called with `X-Correlation-Id: http-chain-1` was
/// listed under an id of its own; found by a probe).
pub(crate) fn current() -> Option<Correlation> {
    CURRENT
        .try_with(|current| {
            let id = current.take();
            current.set(id.clone());
            id
        })
        .ok()
        .flatten()
}

/// Runs `f` with `id` as the current correlation id; the one before is put back
/// after, also if `f` unwinds.
#[inline]
pub(crate) fn in_scope<R>(id: &Correlation, f: impl FnOnce() -> R) -> R {
    /// Puts the id before back as it drops.
    struct Restore(Option<Correlation>);

    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            let _ = CURRENT.try_with(|current| current.set(before));
        }
    }

    let before = CURRENT
        .try_with(|current| current.replace(Some(id.clone())))
        .ok()
        .flatten();
    let _restore = Restore(before);
    f()
}

/// A handler's future polled, and dropped, with its action's correlation id current.
pub(crate) struct Scoped<F> {
    id: Correlation,
    /// `None` only while it drops.
    fut: Option<F>,
}

impl<F> Scoped<F> {
    pub(crate) fn new(id: Correlation, fut: F) -> Self {
        Scoped { id, fut: Some(fut) }
    }
}

impl<F: Future + Unpin> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(fut) = this.fut.as_mut() else {
            panic!("a handler's future polled as it dropped");
        };
        in_scope(&this.id, || Pin::new(fut).poll(cx))
    }
}

impl<F> Drop for Scoped<F> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            in_scope(&self.id, || drop(fut));
        }
    }
}

/// What the runner hands the call path when it runs a stored job.
#[derive(Debug, Clone)]
pub(crate) struct JobMeta {
    pub(crate) info: Arc<crate::job::JobInfo>,
    /// The run's token: cancelled when the host stops or the job's claim is lost.
    pub(crate) token: CancellationToken,
}

/// What an action handler gets besides its parameters.
#[derive(Clone)]
pub struct ActionContext {
    pub(crate) cell: Arc<ServiceCell>,
    /// The action's index in its service's table (`ActionEntry::index`).
    pub(crate) action: usize,
    pub(crate) job: Option<Arc<crate::job::JobInfo>>,
    pub(crate) correlation: CorrelationText,
    pub(crate) priority: i32,
    /// The action's own token (a child of the service's), made up front when there is
    /// a deadline, on first use otherwise.
    pub(crate) token: std::sync::OnceLock<CancellationToken>,
    pub(crate) deadline: Option<Instant>,
}

impl std::fmt::Debug for ActionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionContext")
            .field("service", &self.cell.spec.name)
            .field("action", &self.action())
            .field("correlation_id", &self.correlation_id())
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl ActionContext {
    /// The service handling the action.
    pub fn service(&self) -> &str {
        &self.cell.spec.name
    }

    /// The action's name.
    pub fn action(&self) -> &str {
        self.cell
            .spec
            .actions
            .entries
            .get(self.action)
            .map_or("", |e| &e.name)
    }

    /// The job's id, when the action runs as a stored job (`enqueue()`).
    pub fn id(&self) -> Option<&str> {
        self.job.as_ref().map(|j| j.id.as_str())
    }

    /// The job this action runs as, when it was enqueued: its id, its attempt
    /// number (2 and up after a failure, or after the process that ran it died) and
    /// its idempotency key. Use them to make side effects happen once, e.g. a row
    /// keyed by the job id.
    ///
    /// ```
    /// # use koan::{ActionContext, BoxError};
    /// async fn translate(file: String, cx: &ActionContext) -> Result<String, BoxError> {
    ///     let key = cx.job().map_or_else(|| file.clone(), |j| j.id.clone());
    ///     // INSERT … ON CONFLICT(job_id) DO NOTHING, keyed by `key`
    ///     Ok(key)
    /// }
    /// ```
    pub fn job(&self) -> Option<&crate::job::JobInfo> {
        self.job.as_deref()
    }

    /// The attempt number: 1 for a direct call and a job's first run.
    pub fn attempt(&self) -> u32 {
        self.job.as_ref().map_or(1, |j| j.attempt)
    }

    /// The correlation id (given by the caller or generated).
    pub fn correlation_id(&self) -> &str {
        self.correlation.as_str()
    }

    /// The priority the action was sent with.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// Resolves at the deadline or when the host stops.
    pub async fn cancelled(&self) {
        match self.token.get() {
            Some(t) => t.cancelled().await,
            None => self.cell.life.token.cancelled().await,
        }
    }

    /// Whether the deadline passed or the host is stopping.
    pub fn is_cancelled(&self) -> bool {
        match self.token.get() {
            Some(t) => t.is_cancelled(),
            None => self.cell.life.token.is_cancelled(),
        }
    }

    /// The token cancelled at the deadline or when the host stops, to pass to other
    /// code. Cancelling it cancels this action only.
    pub fn token(&self) -> &CancellationToken {
        self.token
            .get_or_init(|| self.cell.life.token.child_token())
    }

    /// Time left before the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Emits event `name` from this service, carrying this action's correlation id.
    ///
    /// A name the service does not declare is delivered all the same, but warned
    /// about (once per name) and counted in `koan_events_undeclared_total`.
    pub async fn emit<E: Serialize + Send + Sync + 'static>(&self, name: &str, payload: E) {
        if let Some(host) = self.host_inner() {
            host.events
                .emit_from(
                    &self.cell,
                    name,
                    Some(Arc::clone(self.correlation.as_arc())),
                    payload,
                )
                .await;
        }
    }

    /// Emits a typed event under its own name, with this action's correlation id.
    pub async fn emit_event<E: crate::Event>(&self, event: E) {
        self.emit(E::NAME, event).await
    }

    /// The host, while it exists (to call other services).
    pub fn host(&self) -> Option<HostHandle> {
        self.host_inner().map(HostHandle::from_inner)
    }

    fn host_inner(&self) -> Option<std::sync::Arc<HostInner>> {
        self.cell.host()
    }
}
