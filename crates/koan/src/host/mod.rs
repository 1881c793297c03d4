//! The host: builds services, runs them through their lifecycle, and stops them.
//!
//! Startup services run first, one at a time by `order`, each under its timeout; then
//! every other service starts concurrently (higher `priority` first); on shutdown they
//! are stopped in reverse (those of one priority together), within a grace period,
//! after which they are aborted.

mod builder;
mod caller;
mod environment;
mod exit;
mod global;
mod handle;
mod kind_fit;
mod lifecycle;
mod machine;
mod probes;
mod restart;
mod signals;
mod supervisor;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use builder::HostBuilder;
pub(crate) use caller::{CallerHost, OwnHost};
pub use environment::Environment;
pub use exit::HostExit;
pub(crate) use global::host_for;
pub use handle::HostHandle;
pub(crate) use lifecycle::in_startup;
pub use machine::machine_name;
pub(crate) use probes::timed_health;

use crate::clock::Clock;
use crate::error::Result;
use crate::event::EventBus;
use crate::registry::{Registry, ServiceCell};
use crate::service::{RunReason, ServiceContext};
use crate::transport::Transport;

/// Settings of the host as a whole.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    pub(crate) grace: Duration,
    pub(crate) environment: Environment,
    pub(crate) startup_timeout: Duration,
    pub(crate) fail_fast: bool,
    pub(crate) clock: Clock,
    pub(crate) action_grace: Duration,
}

/// The shared state of a running host.
pub(crate) struct HostInner {
    pub(crate) registry: Registry,
    pub(crate) config: HostConfig,
    pub(crate) stop_request: CancellationToken,
    /// Set while the host accepts no calls: until [`Host::start`], and from its
    /// shutdown on ([`HostInner::refusal`] says which).
    pub(crate) stopping: AtomicBool,
    /// Set by [`Host::start`].
    pub(crate) launched: AtomicBool,
    /// Set once startup is done; [`HostHandle::started`] waits on it.
    pub(crate) startup_done: watch::Sender<bool>,
    pub(crate) critical_tx: mpsc::UnboundedSender<(String, String)>,
    pub(crate) critical_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, String)>>>,
    pub(crate) exit: watch::Sender<Option<HostExit>>,
    /// A failure that stops the host (a startup or critical service's), set as
    /// its stop begins: a signal while it stops keeps its exit code
    /// (`host::signals`).
    pub(crate) failure: std::sync::OnceLock<HostExit>,
    pub(crate) events: EventBus,
    pub(crate) jobs: crate::job::JobRunner,
    pub(crate) transport: Option<Arc<dyn Transport>>,
    /// Finished runs and actions per second and per hour, of every service.
    pub(crate) throughput: Arc<crate::registry::Throughput>,
}

impl HostInner {
    /// Why a call for `what` is refused while [`stopping`](Self::stopping) is set:
    /// the host shuts down, or was never started (a call made before
    /// [`Host::start`] is refused, not queued: nothing would ever run it if the
    /// host were not started).
    #[cold]
    pub(crate) fn refusal(&self, what: &str) -> crate::error::Error {
        use crate::error::{Error, ErrorKind};
        if self.launched.load(Ordering::Acquire) {
            return Error::shutting_down(what);
        }
        let why = if self.exit.borrow().is_some() {
            "the host was dropped without being started"
        } else {
            "the host is not started: call `Host::start()` (or `run()`) first; a call made before it is refused, not queued"
        };
        Error::new(ErrorKind::ServiceUnavailable, format!("{what}: {why}"))
    }

    /// Whether the host is shutting down (or was asked to).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire) || self.stop_request.is_cancelled()
    }

    pub(crate) fn context(&self, cell: &Arc<ServiceCell>, reason: RunReason) -> ServiceContext {
        ServiceContext::new(
            Arc::clone(&cell.spec.name),
            Arc::clone(&cell.life.token),
            Arc::downgrade(cell),
            reason,
        )
    }
}

/// A built host, ready to start.
///
/// ```no_run
/// # use koan::{Background, BackgroundService, BoxError, Host, Service, ServiceContext};
/// # #[derive(Default)] struct Heartbeat;
/// # impl Service for Heartbeat { type Kind = Background; }
/// # impl BackgroundService for Heartbeat {
/// #     async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> { cx.cancelled().await; Ok(()) }
/// # }
/// #[tokio::main]
/// async fn main() -> Result<(), koan::Error> {
///     Host::builder().service::<Heartbeat>().build()?.run().await
/// }
/// ```
pub struct Host {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("services", &self.inner.registry.names())
            .finish()
    }
}

impl Host {
    /// A new [`HostBuilder`].
    pub fn builder() -> HostBuilder {
        HostBuilder::new()
    }

    /// A handle to this host, usable before and after `start`: subscriptions made
    /// before it are in place when services start; calls and enqueues made before
    /// it are refused (`ServiceUnavailable`, "the host is not started"), not
    /// queued. Dropped without being started, the host ends: `wait()` returns.
    pub fn handle(&self) -> HostHandle {
        HostHandle::from_inner(Arc::clone(&self.inner))
    }

    /// Starts the host in the background and returns its handle at once: startup
    /// services run, then the others. Must be called inside a tokio runtime.
    ///
    /// From now until it stops, [`crate::services`] may reach this host: see
    /// there for how it picks one of several.
    pub fn start(self) -> HostHandle {
        global::started(&self.inner);
        self.inner.launched.store(true, Ordering::Release);
        self.inner.stopping.store(false, Ordering::Release);
        lifecycle::spawn(Arc::clone(&self.inner));
        HostHandle::from_inner(Arc::clone(&self.inner))
    }

    /// Starts the host and runs it until SIGINT/SIGTERM/SIGHUP or until it stops by itself;
    /// then shuts down gracefully. An error means startup or a critical service failed,
    /// so `main` exits non-zero.
    pub async fn run(self) -> Result<()> {
        self.start().run_until_signal().await
    }
}

/// A host dropped without being started ends there: its handles' `wait()` returns,
/// `started()` fails, and calls are refused, where they waited for ever before
/// (seen in a probe).
impl Drop for Host {
    fn drop(&mut self) {
        if !self.inner.launched.load(Ordering::Acquire) {
            self.inner.exit.send_replace(Some(HostExit::Stopped));
            self.inner.stop_request.cancel();
        }
    }
}
