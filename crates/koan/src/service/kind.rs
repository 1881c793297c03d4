use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    BackgroundService, BatchRequest, PeriodicService, RunReason, Service, ServiceContext,
    StartupService,
};
use crate::error::BoxError;
use crate::health::HealthReport;
use crate::util::BoxFuture;

/// The three kinds of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ServiceKind {
    /// Runs until stopped.
    Background,
    /// Runs `tick` on a schedule and on demand.
    Periodic,
    /// Runs once, in order, before the others.
    Startup,
}

impl ServiceKind {
    /// `background`, `periodic` or `startup`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Background => "background",
            ServiceKind::Periodic => "periodic",
            ServiceKind::Startup => "startup",
        }
    }
}

/// Marker for [`BackgroundService`]s: `type Kind = Background;`.
#[derive(Debug, Clone, Copy)]
pub struct Background;
/// Marker for [`PeriodicService`]s: `type Kind = Periodic;`.
#[derive(Debug, Clone, Copy)]
pub struct Periodic;
/// Marker for [`StartupService`]s: `type Kind = Startup;`.
#[derive(Debug, Clone, Copy)]
pub struct Startup;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Background {}
    impl Sealed for super::Periodic {}
    impl Sealed for super::Startup {}
}

/// Connects a kind marker to the trait that service must implement. Sealed: the three
/// markers are the only implementors.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a service kind for `{T}`",
    note = "use `type Kind = koan::Background`, `koan::Periodic` or `koan::Startup`, and implement the matching trait"
)]
pub trait KindOf<T>: sealed::Sealed + Send + Sync + 'static {
    /// Which kind this marker stands for.
    const KIND: ServiceKind;
    #[doc(hidden)]
    fn runner(service: Arc<T>) -> Runner;
}

/// A type-erased way to run a service. Not part of the stable API.
#[doc(hidden)]
pub enum Runner {
    /// `run` of a background service.
    Background(RunFn),
    /// `run` of a startup service.
    Startup(RunFn),
    /// The periodic entry points.
    Periodic(Arc<dyn PeriodicRun>),
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Runner::Background(_) => "Runner::Background",
            Runner::Startup(_) => "Runner::Startup",
            Runner::Periodic(_) => "Runner::Periodic",
        })
    }
}

/// A boxed `run` entry point.
#[doc(hidden)]
pub type RunFn =
    Arc<dyn Fn(ServiceContext) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;

/// The erased periodic entry point. Not part of the stable API.
#[doc(hidden)]
pub trait PeriodicRun: Send + Sync {
    /// Spawns the driver task of the service, built where its type is known: each
    /// run's future lives inside the driver's own, and the driver's in the task (not
    /// in a box of its own, which every poll would reach through one more pointer and
    /// cache line).
    fn spawn(
        &self,
        driver: crate::schedule::Driver,
        span: tracing::Span,
    ) -> tokio::task::JoinHandle<()>;
}

struct PeriodicAdapter<T>(Arc<T>);

impl<T: PeriodicService> PeriodicRun for PeriodicAdapter<T> {
    fn spawn(
        &self,
        driver: crate::schedule::Driver,
        span: tracing::Span,
    ) -> tokio::task::JoinHandle<()> {
        use tracing::Instrument;
        tokio::spawn(driver.drive(Arc::clone(&self.0)).instrument(span))
    }
}

/// One run of a periodic service: `tick`, `check_queue` or `process_batch`, per the
/// context's reason.
pub(crate) async fn run_periodic<T: PeriodicService>(
    svc: &T,
    cx: ServiceContext,
) -> Result<(), BoxError> {
    match cx.reason() {
        RunReason::CheckQueue => svc.check_queue(cx).await,
        RunReason::ProcessBatch => {
            let batch = cx.batch().cloned().unwrap_or_else(BatchRequest::default);
            svc.process_batch(batch, cx).await
        }
        _ => svc.tick(cx).await,
    }
}

impl<T: BackgroundService> KindOf<T> for Background {
    const KIND: ServiceKind = ServiceKind::Background;
    fn runner(service: Arc<T>) -> Runner {
        Runner::Background(Arc::new(move |cx| {
            let svc = Arc::clone(&service);
            Box::pin(async move { BackgroundService::run(&*svc, cx).await })
        }))
    }
}

impl<T: StartupService> KindOf<T> for Startup {
    const KIND: ServiceKind = ServiceKind::Startup;
    fn runner(service: Arc<T>) -> Runner {
        Runner::Startup(Arc::new(move |cx| {
            let svc = Arc::clone(&service);
            Box::pin(async move { StartupService::run(&*svc, cx).await })
        }))
    }
}

impl<T: PeriodicService> KindOf<T> for Periodic {
    const KIND: ServiceKind = ServiceKind::Periodic;
    fn runner(service: Arc<T>) -> Runner {
        Runner::Periodic(Arc::new(PeriodicAdapter(service)))
    }
}

/// The object-safe face of any service: health, readiness, and the value itself.
pub(crate) trait ErasedService: Send + Sync {
    fn health(&self) -> BoxFuture<'_, HealthReport>;
    fn is_ready(&self) -> BoxFuture<'_, bool>;
    /// The service itself, for [`Services::instance`](crate::Services::instance).
    fn into_any(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn std::any::Any + Send + Sync>;
}

impl<T: Service> ErasedService for T {
    fn health(&self) -> BoxFuture<'_, HealthReport> {
        Box::pin(Service::health(self))
    }
    fn is_ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(Service::is_ready(self))
    }
    fn into_any(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}
