//! What a user implements: the [`Service`] trait and one of the three kinds.
//!
//! | kind                     | trait to implement    | what runs                                    |
//! | ------------------------ | --------------------- | -------------------------------------------- |
//! | `type Kind = Background` | [`BackgroundService`] | `run`, until the host stops                  |
//! | `type Kind = Periodic`   | [`PeriodicService`]   | `tick`, on a schedule or when triggered      |
//! | `type Kind = Startup`    | [`StartupService`]    | `run`, once, before the other services start |
//!
//! Porting a service from the original framework: see `docs/seed-parity.md`.

mod build;
mod context;
mod kind;
mod options;

use std::future::Future;

pub use crate::client::{ServiceInfo, ServiceRef, Services, services, try_services};
pub use build::{BuildContext, FromContext};
pub use context::{BatchRequest, RunReason, ServiceContext};
pub use kind::{Background, KindOf, Periodic, ServiceKind, Startup};
#[doc(hidden)]
pub use kind::{PeriodicRun, RunFn, Runner};
pub use options::{Backoff, Intensity, MAX_CONCURRENCY, RestartPolicy, ServiceOptions};

pub(crate) use build::Resources;
pub(crate) use kind::{ErasedService, run_periodic};
pub(crate) use options::ScheduleSpec;

use crate::action::Actions;
use crate::error::BoxError;
use crate::health::HealthReport;

/// A supervised unit of background work.
///
/// Pick the kind with `type Kind` and implement the matching trait:
///
/// ```
/// use koan::{Background, BackgroundService, BoxError, Service, ServiceContext};
///
/// #[derive(Default)]
/// struct Heartbeat;
///
/// impl Service for Heartbeat {
///     type Kind = Background;
/// }
///
/// impl BackgroundService for Heartbeat {
///     async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
///         cx.cancelled().await; // until the host stops
///         Ok(())
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a koan service",
    label = "needs `impl koan::Service`",
    note = "implement `koan::Service` (choosing `type Kind = Background | Periodic | Startup`) and the matching `BackgroundService`, `PeriodicService` or `StartupService`"
)]
pub trait Service: Sized + Send + Sync + 'static {
    /// [`Background`], [`Periodic`] or [`Startup`].
    type Kind: KindOf<Self>;

    /// Declared options: name, schedule, supervision, startup order, … The defaults
    /// name the service after its type.
    fn options() -> ServiceOptions {
        ServiceOptions::default()
    }

    /// The service's own view of its health, reported by the host's health checks.
    fn health(&self) -> impl Future<Output = HealthReport> + Send {
        async { HealthReport::healthy("") }
    }

    /// Whether the service is ready for work; readiness of
    /// the host is false until every enabled service says true.
    fn is_ready(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }

    /// Declares the service's named actions and events.
    fn actions(actions: &mut Actions<Self>) {
        let _ = actions;
    }
}

/// A service that runs until the host stops it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` declares `type Kind = Background` but does not implement `BackgroundService`",
    note = "add `impl koan::BackgroundService for {Self} {{ async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {{ … }} }}`"
)]
pub trait BackgroundService: Service {
    /// The service's main loop. Return when `cx.cancelled()` resolves; an `Err` or a
    /// panic is a failure that the restart policy answers.
    fn run(&self, cx: ServiceContext) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A service whose `tick` runs on a schedule and on demand (`trigger`, `check-queue`,
/// `process-batch`). Runs never overlap.
#[diagnostic::on_unimplemented(
    message = "`{Self}` declares `type Kind = Periodic` but does not implement `PeriodicService`",
    note = "add `impl koan::PeriodicService for {Self} {{ async fn tick(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {{ … }} }}`"
)]
pub trait PeriodicService: Service {
    /// One run: on schedule, or when triggered.
    fn tick(&self, cx: ServiceContext) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// The built-in `check-queue` action: look for queued work; runs `tick` by default.
    fn check_queue(&self, cx: ServiceContext) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.tick(cx)
    }

    /// The built-in `process-batch` action: work through one batch; runs `tick` by default.
    /// The request is also available as [`ServiceContext::batch`].
    fn process_batch(
        &self,
        batch: BatchRequest,
        cx: ServiceContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = batch;
        self.tick(cx)
    }
}

/// A service that runs once, before every other service, in `order`; the host
/// does not start the others until every startup service has finished.
#[diagnostic::on_unimplemented(
    message = "`{Self}` declares `type Kind = Startup` but does not implement `StartupService`",
    note = "add `impl koan::StartupService for {Self} {{ async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {{ … }} }}`"
)]
pub trait StartupService: Service {
    /// The startup work; it must finish within the service's timeout.
    fn run(&self, cx: ServiceContext) -> impl Future<Output = Result<(), BoxError>> + Send;
}
