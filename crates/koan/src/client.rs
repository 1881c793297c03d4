//! The fluent API: `koan::services::<T>()`, `host.services::<T>()`, `host.service(name)`
//! (`services::<T>().translate(…)`, `.action(…)`, `.on::<E>()`, `.status()`).

use std::marker::PhantomData;
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use serde::{Deserialize, Serialize};

use crate::action::{
    ActionInfo, ActionRequest, Target, declared_local, local_cell_pub, poke_direct,
};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventInfo;
use crate::event::{Emits, SubscriptionBuilder, TypedSubscriptionBuilder};
use crate::health::ServiceHealth;
use crate::host::{HostHandle, OwnHost, host_for};
use crate::registry::ServiceStatus;
use crate::schedule::Poke;
use crate::schedule::TriggerOutcome;
use crate::service::{BatchRequest, Service, ServiceKind};
use crate::transport::RemoteQuery;
use crate::util::short_type_name;
use crate::well_known::actions;

/// Everything a service declares: its kind, settings, actions and events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct ServiceInfo {
    /// The name.
    pub name: String,
    /// The kind.
    pub kind: ServiceKind,
    /// The description.
    pub description: Option<String>,
    /// `every 1h`, `cron …`, or none.
    pub schedule: Option<String>,
    /// Whether it is critical.
    pub critical: bool,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Startup order (startup services).
    pub order: Option<i32>,
    /// Whether its scheduled ticks run on one host of the cluster at a time.
    #[serde(default)]
    pub singleton: bool,
    /// How many of its actions may run at once (`max_concurrency`): a durable queue
    /// takes no more jobs than this at a time.
    #[serde(default = "one")]
    pub max_concurrency: usize,
    /// Its actions, with the JSON Schema of their parameters.
    pub actions: Vec<ActionInfo>,
    /// Its events, with the JSON Schema of their payloads.
    pub events: Vec<EventInfo>,
}

fn one() -> usize {
    1
}

impl ServiceInfo {
    /// The action `name` resolves to, matched as a host matches a call: case and
    /// separators (`-`, `_`, `.`, space) ignored.
    pub fn action(&self, name: &str) -> Option<&ActionInfo> {
        let key = crate::action::normalized(name);
        self.actions
            .iter()
            .find(|a| crate::action::normalized(&a.name) == key)
    }
}

/// The fluent API of service `T`.
pub struct Services<T> {
    /// Its own, one per clone: its requests count on this, not on the host (see
    /// `CallerHost`).
    pub(crate) host: OwnHost,
    name: Arc<str>,
    /// Where this host's registry (fixed once the host is built) holds `T`, when it
    /// runs one: each call names it by this index, without looking it up again.
    local: Option<usize>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Services<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("service", &self.name)
            .finish()
    }
}

impl<T> Clone for Services<T> {
    fn clone(&self) -> Self {
        Services {
            host: Arc::new(CachePadded::new(HostHandle::clone(&self.host))),
            name: Arc::clone(&self.name),
            local: self.local,
            _t: PhantomData,
        }
    }
}

/// The fluent API of the running host's service `T`.
///
/// Reaches the one running host (started, not yet stopped) that has `T`. With
/// several hosts in one process (tests, a multi-tenant app), a host that has
/// `T` is reached before one that does not, and none is guessed: when several
/// running hosts have `T`, or several run and none has it, the call is refused
/// (`ServiceUnavailable`, naming how many) and
/// [`HostHandle::services`] must name the host. One running host without `T`
/// is reached (it may reach `T` in another process through its transport, or
/// says that it has no such service). When no host runs, the host started last
/// is reached if it is still held (its calls answer that it stopped).
///
/// # Panics
/// When no host is running, or when which host is meant cannot be told (see
/// above). Use [`try_services`] to get the error instead.
pub fn services<T: Service>() -> Services<T> {
    match try_services::<T>() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`services`], with an error when no host runs or which host is meant
/// cannot be told.
pub fn try_services<T: Service>() -> Result<Services<T>> {
    let name = T::options()
        .name
        .map_or_else(|| short_type_name::<T>().to_owned(), |n| n.into_owned());
    host_for(std::any::TypeId::of::<T>(), &name).map(|h| h.services::<T>())
}

impl<T: Service> Services<T> {
    pub(crate) fn new(host: HostHandle) -> Self {
        let found = host.inner.registry.by_type_at(std::any::TypeId::of::<T>());
        let name: Arc<str> = match found {
            Some((_, cell)) => Arc::clone(&cell.spec.name),
            None => Arc::from(
                T::options()
                    .name
                    .as_deref()
                    .unwrap_or_else(|| short_type_name::<T>()),
            ),
        };
        Services {
            local: found.map(|(index, _)| index),
            host: Arc::new(CachePadded::new(host)),
            name,
            _t: PhantomData,
        }
    }

    /// The same service by name: calls and subscriptions checked when they run, as
    /// HTTP, JSON and other processes make them (`.by_name().on("EventName")` for an
    /// event whose payload type two of its events share).
    pub fn by_name(&self) -> ServiceRef {
        ServiceRef {
            host: HostHandle::clone(&self.host),
            name: Arc::clone(&self.name),
            target: Target::of_type(std::any::TypeId::of::<T>(), Arc::clone(&self.name)),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts an action request by the action's name (the typed callers of
    /// `#[koan::actions]` check the name and types at compile time).
    pub fn action<P: Serialize + Send + 'static>(&self, name: &str, params: P) -> ActionRequest {
        // A local service (found when this handle was made): the request names it by
        // its index (no count taken on its name), and a declared action by its entry.
        let Some((index, cell)) = self
            .local
            .and_then(|i| Some((i, self.host.inner.registry.all().get(i)?)))
        else {
            let target = Target::of_type(std::any::TypeId::of::<T>(), Arc::clone(&self.name));
            return ActionRequest::new(self.host.clone(), target).action(name, params);
        };
        let target = Target::Local(index);
        match cell.spec.actions.get(name) {
            Some(entry) => {
                ActionRequest::with_declared(self.host.clone(), target, entry.index, params)
            }
            None => ActionRequest::new(self.host.clone(), target).action(name, params),
        }
    }

    /// Subscribes to the service's event whose payload is `E`: it must be one the
    /// service declares (`#[koan::service(event(E))]`), and handlers take `E`, so
    /// the compiler checks both. By name (for events of services this crate does
    /// not link): `host.service("Name").on("EventName")`.
    pub fn on<E>(&self) -> TypedSubscriptionBuilder<T, E>
    where
        T: Emits<E>,
        E: serde::de::DeserializeOwned + Clone + Send + 'static,
    {
        TypedSubscriptionBuilder::new(self.by_name().subscription())
    }

    /// Runs the tick now and waits for that run; coalesced with a run in progress.
    /// A service with nothing running or queued runs it on the caller's own task
    /// (in the service's span, as its driver would), without waking its driver.
    pub async fn trigger(&self) -> Result<TriggerOutcome> {
        // Straight to a local driver, without building a by-name handle first (nor
        // looking the service up again, nor taking a count on its name).
        let target = match self.local {
            Some(index) => Target::Local(index),
            None => Target::of_type(std::any::TypeId::of::<T>(), Arc::clone(&self.name)),
        };
        if let Some(r) = poke_direct(&self.host, &target, Poke::Trigger).await {
            return r;
        }
        self.by_name().trigger().await
    }

    /// The `check-queue` command; waits for the run.
    pub async fn check_queue(&self) -> Result<TriggerOutcome> {
        self.by_name().check_queue().await
    }

    /// The `process-batch` command; waits for the run.
    pub async fn process_batch(&self, batch: BatchRequest) -> Result<TriggerOutcome> {
        self.by_name().process_batch(batch).await
    }

    /// The service's current status.
    pub async fn status(&self) -> Result<ServiceStatus> {
        self.by_name().status().await
    }

    /// The health report.
    pub async fn health(&self) -> Result<ServiceHealth> {
        self.by_name().health().await
    }

    /// Kind, schedule, actions with parameter schemas, events.
    pub async fn info(&self) -> Result<ServiceInfo> {
        self.by_name().info().await
    }

    /// The value of `T` this host runs, shared with the host: what a test reads to
    /// see the service's own state (no `Arc` fields kept on the side).
    ///
    /// An `UnknownService` error when this host does not run a `T` (not registered,
    /// or only reachable in another process through a transport).
    ///
    /// ```
    /// # use std::sync::atomic::{AtomicU32, Ordering};
    /// # use koan::{BoxError, Host, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions};
    /// #[derive(Default)]
    /// struct Counter { ticks: AtomicU32 }
    /// # impl Service for Counter {
    /// #     type Kind = Periodic;
    /// #     fn options() -> ServiceOptions { ServiceOptions::default().every(std::time::Duration::from_secs(60)) }
    /// # }
    /// impl PeriodicService for Counter {
    ///     async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
    ///         self.ticks.fetch_add(1, Ordering::Relaxed);
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), koan::Error> {
    /// let host = Host::builder().service::<Counter>().build()?.start();
    /// host.started().await?;
    /// host.services::<Counter>().trigger().await?;
    /// let counter = host.services::<Counter>().instance()?;
    /// assert_eq!(counter.ticks.load(Ordering::Relaxed), 1);
    /// # host.shutdown();
    /// # host.wait().await.into_result()
    /// # }
    /// ```
    pub fn instance(&self) -> Result<Arc<T>> {
        let registry = &self.host.inner.registry;
        let missing = || {
            let names = registry.names();
            Error::new(
                ErrorKind::UnknownService,
                format!(
                    "this host runs no service of type `{}` (register it with \
                     `HostBuilder::service` or `HostBuilder::instance`); services: {}",
                    std::any::type_name::<T>(),
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        };
        let cell = registry
            .by_type(std::any::TypeId::of::<T>())
            .ok_or_else(missing)?;
        Arc::clone(&cell.spec.service)
            .into_any()
            .downcast::<T>()
            .map_err(|_| missing())
    }
}

/// The fluent API of a service named at run time.
#[derive(Debug, Clone)]
pub struct ServiceRef {
    pub(crate) host: HostHandle,
    name: Arc<str>,
    pub(crate) target: Target,
}

impl ServiceRef {
    pub(crate) fn new(host: HostHandle, name: &str) -> Self {
        // A local service spelled as declared is named by its place: its calls find
        // it without a look-up by name (two a call served from another process, B8's
        // profile). Another spelling keeps it, for the messages that name it.
        let (target, name) = match host.inner.registry.by_name_at(name) {
            Some((index, cell)) if *cell.spec.name == *name => {
                (Target::Local(index), Arc::clone(&cell.spec.name))
            }
            _ => {
                let name: Arc<str> = Arc::from(name);
                (Target::Name(Arc::clone(&name)), name)
            }
        };
        ServiceRef { host, target, name }
    }

    /// Starts an action request.
    pub fn action<P: Serialize + Send + 'static>(&self, name: &str, params: P) -> ActionRequest {
        let (host, target) = (self.host.clone(), self.target.clone());
        // A local service's action declared under exactly this name is found now,
        // once (no copy of the name, no second look-up); other spellings, built-ins
        // and remote services are resolved when the request runs, as before.
        match declared_local(&self.host, &self.target, name) {
            Some(action) => ActionRequest::with_declared(host, target, action, params),
            None => ActionRequest::new(host, target).action(name, params),
        }
    }

    /// Starts an event subscription to this service.
    pub fn on(&self, event: &str) -> SubscriptionBuilder {
        self.subscription().on(event)
    }

    /// A subscription to this service's events, under the name it runs with.
    fn subscription(&self) -> SubscriptionBuilder {
        let name = local_cell_pub(&self.host, &self.target)
            .map(|c| Arc::clone(&c.spec.name))
            .unwrap_or_else(|| Arc::clone(&self.name));
        SubscriptionBuilder::new(self.host.clone(), Some(name))
    }

    async fn poke(&self, action: &str, params: serde_json::Value) -> Result<TriggerOutcome> {
        let out = self.action(action, params).execute().await?;
        out.value::<TriggerOutcome>().map_err(|e| {
            // A service's own action of the built-in's name is called in its place
            // (as the HTTP poke routes call it): its result is its own, and one
            // that is not a run's outcome is said to be so, rather than blamed on
            // parameters (seen in a probe).
            Error::new(
                e.kind(),
                format!(
                    "the action `{action}` of `{}` ran (a service's own action of that name takes the built-in's place), but its result is not a run's outcome: call it with `.action(\"{action}\", …)` to read its own result ({})",
                    self.target.name(&self.host.inner),
                    e.message()
                ),
            )
        })
    }

    /// Runs the tick now (see [`Services::trigger`]).
    pub async fn trigger(&self) -> Result<TriggerOutcome> {
        if let Some(r) = poke_direct(&self.host, &self.target, Poke::Trigger).await {
            return r;
        }
        self.poke(actions::TRIGGER, serde_json::Value::Null).await
    }

    /// The `check-queue` command.
    pub async fn check_queue(&self) -> Result<TriggerOutcome> {
        if let Some(r) = poke_direct(&self.host, &self.target, Poke::CheckQueue).await {
            return r;
        }
        self.poke(actions::CHECK_QUEUE, serde_json::Value::Null)
            .await
    }

    /// The `process-batch` command.
    pub async fn process_batch(&self, batch: BatchRequest) -> Result<TriggerOutcome> {
        let direct = poke_direct(&self.host, &self.target, Poke::ProcessBatch(batch.clone()));
        if let Some(r) = direct.await {
            return r;
        }
        let params = serde_json::to_value(batch).unwrap_or_default();
        self.poke(actions::PROCESS_BATCH, params).await
    }

    /// How a failed job of `action` of this (local) service is retried: declared
    /// (`max_attempts`, `backoff`) or configured over it. A transport that runs
    /// durable jobs of the service asks for it to retry them as the host's own
    /// store would. `UnknownService` when this host does not run the service,
    /// `UnknownAction` when it has no such action.
    pub fn retry_policy(&self, action: &str) -> Result<crate::job::RetryPolicy> {
        let cell = self.cell()?;
        let entry = cell.spec.actions.get(action).ok_or_else(|| {
            Error::new(
                ErrorKind::UnknownAction,
                format!(
                    "service `{}` has no action `{action}`; its actions: {}",
                    self.name,
                    cell.spec
                        .actions
                        .info()
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        Ok(entry.retry)
    }

    fn cell(&self) -> Result<Arc<crate::registry::ServiceCell>> {
        local_cell_pub(&self.host, &self.target)
            .ok_or_else(|| self.host.inner.registry.unknown(&self.name))
    }

    /// Asks another process when the service is not local and a transport exists.
    async fn remote<T: serde::de::DeserializeOwned>(
        &self,
        query: RemoteQuery,
    ) -> Option<Result<T>> {
        if local_cell_pub(&self.host, &self.target).is_some() {
            return None;
        }
        let transport = self.host.inner.transport.as_ref()?;
        Some(transport.query(&self.name, query).await.and_then(|v| {
            crate::payload::from_json::<T>(v, &|| {
                format!("{} of remote service `{}`", query.as_str(), self.name)
            })
        }))
    }

    /// The status (of a local service, or asked over the transport).
    pub async fn status(&self) -> Result<ServiceStatus> {
        if let Some(r) = self.remote(RemoteQuery::Status).await {
            return r;
        }
        Ok(self.cell()?.snapshot())
    }

    /// Its recent runs and action counts (of a local service, or asked over the
    /// transport: another instance's history answered "no service named" here;
    /// found by a probe).
    pub async fn history(&self) -> Result<crate::status::ServiceHistory> {
        if let Some(r) = self.remote(RemoteQuery::History).await {
            return r;
        }
        let cell = self.cell()?;
        Ok(cell.board.activity().history(&cell.spec.name))
    }

    /// The health report (of a local service, or asked over the transport).
    pub async fn health(&self) -> Result<ServiceHealth> {
        if let Some(r) = self.remote(RemoteQuery::Health).await {
            return r;
        }
        // Within 5 s, as `/health` checks it: a hanging `health()` held the
        // service's own route for ever (found by a probe).
        let cell = self.cell()?;
        Ok(crate::host::timed_health(&cell).await)
    }

    /// Kind, schedule, actions with parameter schemas, events (of a local service, or
    /// asked over the transport).
    pub async fn info(&self) -> Result<ServiceInfo> {
        if let Some(r) = self.remote(RemoteQuery::Info).await {
            return r;
        }
        let cell = self.cell()?;
        Ok(ServiceInfo {
            name: cell.spec.name.to_string(),
            kind: cell.spec.kind,
            description: cell.spec.options.description.clone(),
            schedule: cell.spec.schedule.as_ref().map(|s| s.describe()),
            critical: cell.spec.options.critical,
            enabled: cell.spec.disabled.is_none(),
            order: (cell.spec.kind == ServiceKind::Startup).then_some(cell.spec.options.order),
            singleton: cell.spec.options.singleton,
            max_concurrency: cell.spec.options.max_concurrency,
            actions: cell.spec.actions.info(),
            events: cell.spec.actions.events.clone(),
        })
    }
}
