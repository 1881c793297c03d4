//! The fluent subscription API: `.on(name).filter(…).once().handle(…)`, `.subscribe()`.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};

use serde::de::DeserializeOwned;

use super::bus::{Filter, Route, Sub};
use super::envelope::EventEnvelope;
use super::handler::Handler;
use super::misfit::{Misfit, Skipped};
use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::host::{HostHandle, HostInner};

/// What happens when a subscriber's buffer is full: a choice each subscriber makes,
/// because neither answer is right for every subscriber.
///
/// - [`DropNewest`](Overflow::DropNewest) (the default) keeps emitters free of slow
///   subscribers: a dashboard, a log, a metric. Each dropped event is logged
///   (`warn`) and counted in `koan_events_dropped_total{service, event}`.
/// - [`Wait`](Overflow::Wait) loses nothing: choose it when every event matters. The
///   emitter then waits for the slowest such subscriber, so a handler must not wait,
///   directly or through an action, on the emitter it listens to (a handler that
///   emits the event it handles, or calls an action of the emitting service, can
///   stall once its buffer is full).
///
/// `.once()` handlers always wait: their one event is never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// The emitter never waits: the new event is dropped for that subscriber, logged
    /// and counted in `koan_events_dropped_total` (default).
    #[default]
    DropNewest,
    /// The emitter waits for room: no event is lost, and a slow subscriber slows the
    /// emitter down.
    Wait,
}

/// What an event handler may return: `()` or a `Result`.
pub trait HandlerOutput: Send + 'static {
    /// Converts to a result; errors are logged and counted.
    fn into_result(self) -> Result<(), BoxError>;
}

impl HandlerOutput for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError> + Send + 'static> HandlerOutput for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

struct PendingRoute {
    event: Option<Arc<str>>,
    once: bool,
    filter: Option<Filter>,
}

/// Builds a subscription of one or more handlers: `.on(name)`, then optional
/// `.filter(…)` and `.once()`, then `.handle(…)`, repeated; `.subscribe()` ends it.
#[must_use = "nothing is subscribed until `.subscribe().await`"]
pub struct SubscriptionBuilder {
    host: HostHandle,
    service: Option<Arc<str>>,
    routes: Vec<Route>,
    pending: Option<PendingRoute>,
    capacity: usize,
    overflow: Overflow,
    error: Option<Error>,
    /// Run once the handlers are subscribed (a chain that starts with actions).
    then_run: Option<crate::util::BoxFuture<'static, Result<()>>>,
}

impl std::fmt::Debug for SubscriptionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionBuilder")
            .field("service", &self.service)
            .field("routes", &self.routes.len())
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .finish()
    }
}

impl SubscriptionBuilder {
    pub(crate) fn new(host: HostHandle, service: Option<Arc<str>>) -> Self {
        SubscriptionBuilder {
            host,
            service,
            routes: Vec::new(),
            pending: None,
            capacity: 1024,
            overflow: Overflow::DropNewest,
            error: None,
            then_run: None,
        }
    }

    /// Runs `work` once the handlers are subscribed (a chain that starts with
    /// actions, `.action(…).on(…)`), so no event it causes is missed.
    pub(crate) fn then_run(mut self, work: crate::util::BoxFuture<'static, Result<()>>) -> Self {
        self.then_run = Some(work);
        self
    }

    /// Starts a handler for event `name` (`"*"` for every event).
    pub fn on(mut self, name: impl Into<String>) -> Self {
        let mut name: String = name.into();
        // A local service's event is named as it declares it (names match without
        // regard to case; the declared spelling is the one envelopes carry).
        if let Some(service) = &self.service
            && let Ok(cell) = self.host.inner.registry.find(service)
            && let Some(declared) = cell
                .spec
                .actions
                .events
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(&name))
        {
            name.clone_from(&declared.name);
        }
        if let Some(service) = &self.service
            && self.error.is_none()
            && let Ok(cell) = self.host.inner.registry.find(service)
        {
            if let Err(e) = cell.spec.actions.check_event(service, &name) {
                self.error = Some(e);
            } else if cell.spec.actions.events.is_empty() && name != "*" {
                // A service that declares none takes any name: under the wrong
                // service, a subscription to another's declared event heard
                // nothing, without a word (found by a probe).
                let elsewhere = self.host.inner.registry.all().iter().find(|c| {
                    c.spec
                        .actions
                        .events
                        .iter()
                        .any(|e| e.name.eq_ignore_ascii_case(&name))
                });
                if let Some(owner) = elsewhere {
                    tracing::warn!(
                        service = %service,
                        event = %name,
                        declared_by = %owner.spec.name,
                        "subscribed to an event of `{}` under `{service}`, which declares no events: it hears only what `{service}` emits under that name (subscribe under `{}`?)",
                        owner.spec.name,
                        owner.spec.name,
                    );
                }
            }
        }
        self.pending = Some(PendingRoute {
            event: (name != "*").then(|| Arc::from(name)),
            once: false,
            filter: None,
        });
        self
    }

    fn pending(&mut self) -> &mut PendingRoute {
        self.pending.get_or_insert(PendingRoute {
            event: None,
            once: false,
            filter: None,
        })
    }

    /// Delivers the current event at most once — exactly once, even under concurrent
    /// emits — then stops.
    pub fn once(mut self) -> Self {
        self.pending().once = true;
        self
    }

    /// Only events whose payload, as `E`, passes `filter` reach the handler (and count
    /// for `once`). A payload that does not fit `E` does not pass: that is counted in
    /// `koan_event_payload_mismatches_total` and warned about the first time.
    pub fn filter<E, F>(mut self, filter: F) -> Self
    where
        E: DeserializeOwned + Clone + 'static,
        F: Fn(&E) -> bool + Send + Sync + 'static,
    {
        let misfit = Misfit::new::<E>("filter");
        self.pending().filter = Some(Box::new(move |env: &EventEnvelope| {
            match env.payload::<E>() {
                Ok(e) => filter(&e),
                Err(e) => {
                    misfit.note(env, &e);
                    false
                }
            }
        }));
        self
    }

    /// Handles the current event with a typed payload `E` (the handler's own type is
    /// passed through; anything else is converted through serde). A payload that does
    /// not fit `E` skips the handler: that is counted in
    /// `koan_event_payload_mismatches_total` and warned about the first time.
    pub fn handle<E, F, Fut>(self, handler: F) -> Self
    where
        E: DeserializeOwned + Clone + Send + 'static,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let misfit = Misfit::new::<E>("handler");
        self.route(super::handler::handler(move |env: &EventEnvelope| {
            // The payload is taken out and the handler called now: the future holds
            // no part of the envelope and no reference to the handler.
            match env.payload::<E>() {
                Ok(payload) => Ok(handler(payload)),
                Err(e) => {
                    misfit.note(env, &e);
                    Err(BoxError::from(Skipped))
                }
            }
        }))
    }

    /// Handles the current event with the whole envelope (name, correlation id, time,
    /// sequence number, JSON payload).
    pub fn handle_envelope<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(EventEnvelope) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        self.route(super::handler::handler(move |env: &EventEnvelope| {
            Ok(handler(env.clone()))
        }))
    }

    fn route(mut self, handler: Handler) -> Self {
        let p = self.pending.take().unwrap_or(PendingRoute {
            event: None,
            once: false,
            filter: None,
        });
        self.routes.push(Route {
            event: p.event,
            once: p.once.then(|| AtomicBool::new(false)),
            filter: p.filter,
            handler,
        });
        self
    }

    /// Size of this subscriber's buffer (default 1024).
    pub fn buffer(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// What happens when the buffer is full (default [`Overflow::DropNewest`]: events
    /// that do not fit are dropped, logged and counted). Choose [`Overflow::Wait`] when
    /// every event matters; see [`Overflow`] for what each costs.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Registers every handler; delivery starts now and stops when the returned
    /// [`Subscription`] is dropped. When the chain began with actions
    /// (`.action(…).on(…)`), they run after the handlers are in place; the first
    /// failure is returned and nothing stays subscribed — once the handlers of the
    /// events the actions emitted before it have run to their ends (for at most
    /// the host's [shutdown grace](crate::host::HostBuilder::shutdown_grace), after
    /// which a handler still running is stopped; not past the host's stop).
    pub async fn subscribe(self) -> Result<Subscription> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if let Some(service) = &self.service
            && self.host.inner.registry.by_name(service).is_none()
            && self.host.inner.transport.is_none()
        {
            return Err(self.host.inner.registry.unknown(service));
        }
        if self.routes.is_empty() {
            return Err(Error::new(
                ErrorKind::UnknownEvent,
                "a subscription needs at least one `.on(name).handle(…)`",
            ));
        }
        // A service disabled here emits nothing here: said, as a subscription to
        // one that is absent is refused (it was taken without a word; a probe).
        if let Some(service) = &self.service
            && let Some(cell) = self.host.inner.registry.by_name(service)
            && let Some(reason) = &cell.spec.disabled
        {
            // In a cluster, other instances may run it: said, not warned.
            if self.host.inner.transport.is_some() {
                tracing::info!(service = %cell.spec.name, "subscribed to the events of service `{}`, which is disabled on this host ({reason}): its events come from the instances that run it", cell.spec.name);
            } else {
                tracing::warn!(service = %cell.spec.name, "subscribed to the events of service `{}`, which is disabled on this host ({reason}): none of its events will come from this host", cell.spec.name);
            }
        }
        // What follows the last handler applies to none: `.handle(h).once()` ran
        // `h` at every event, without a word (found by a probe).
        if let Some(p) = &self.pending {
            let what = match (p.once, p.filter.is_some(), &p.event) {
                (true, _, _) => "`.once()`".to_owned(),
                (false, true, _) => "`.filter(…)`".to_owned(),
                (false, false, Some(event)) => format!("`.on(\"{event}\")`"),
                (false, false, None) => "`.on(\"*\")`".to_owned(),
            };
            return Err(Error::new(
                ErrorKind::InvalidParameters,
                format!(
                    "{what} after the last `.handle(…)` applies to no handler: `.filter(…)` and `.once()` go between `.on(…)` and the `.handle(…)` they apply to, and each `.on(…)` needs a `.handle(…)`"
                ),
            ));
        }
        let (sub, task) = self.host.inner.events.add(
            self.service,
            self.routes,
            self.capacity,
            self.overflow,
            self.then_run.is_some(),
        );
        let subscription = Subscription {
            host: Arc::downgrade(&self.host.inner),
            id: sub.id,
            sub: Arc::downgrade(&sub),
            task,
            detached: false,
        };
        if let Some(work) = self.then_run
            && let Err(e) = work.await
        {
            // The events it emitted before failing are the failure's own story
            // (a `…Failed` event): their handlers run to their ends before it
            // unsubscribes. Dropped at once, they stopped mid-`.await` or never
            // started (a probe).
            subscription.settle(&self.host.inner).await;
            return Err(e);
        }
        Ok(subscription)
    }
}

/// A live subscription; dropping it unsubscribes and stops delivery at once.
///
/// Exactly: once `drop` returns, none of its handlers starts on another event
/// (what its buffer holds is dropped with it), and a handler waiting at an
/// `.await` is not polled again (it is dropped with the subscription's task). A
/// handler's code that is running as it is dropped — the handler that drops it,
/// or one on another worker thread — is not cut short: that step runs to its next
/// `.await` or its end, and none follows. Only on another worker thread can that
/// step still begin as `drop` runs (the event it starts on was taken just before).
///
/// Keep it for as long as events should arrive (in a variable, a field, or with
/// [`Subscription::detach`] for the host's whole life): `….subscribe().await?;` on
/// its own line unsubscribes on the spot and nothing is ever delivered.
#[derive(Debug)]
#[must_use = "dropping a `Subscription` unsubscribes at once: keep it in a named variable (`let _sub = …`; `let _ = …` drops it too), or call `.detach()` to keep it for the host's life"]
pub struct Subscription {
    host: Weak<HostInner>,
    id: u64,
    /// Told first when dropped (weak: a handler may keep its own subscription).
    sub: Weak<Sub>,
    task: tokio::task::JoinHandle<()>,
    detached: bool,
}

impl Subscription {
    /// Unsubscribes once the handlers of the events it has been given have run:
    /// for at most the host's shutdown grace (a handler that hangs is then
    /// stopped, as by a drop), and no longer once the host is stopping.
    async fn settle(mut self, host: &HostInner) {
        let settled = host.events.settle(self.id, &mut self.task);
        tokio::select! {
            r = tokio::time::timeout(host.config.grace, settled) => {
                if r.is_err() {
                    tracing::warn!(
                        grace = %crate::util::fmt_duration(host.config.grace),
                        "the handlers of the events of a failed action did not finish within the shutdown grace; stopped"
                    );
                }
            }
            () = host.stop_request.cancelled() => {}
        }
    }

    /// Unsubscribes (same as dropping).
    pub fn unsubscribe(self) {}

    /// Keeps the subscription for the rest of the host's life: delivery goes on
    /// after this value is gone, and stops when the host shuts down.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.detached {
            // The delivery task runs on; the host's shutdown closes its buffer.
            return;
        }
        // Before it leaves the ring: once it has, the emitter may overwrite what
        // its task has not read, and the task must read none of it.
        if let Some(sub) = self.sub.upgrade() {
            sub.stop();
        }
        if let Some(host) = self.host.upgrade() {
            host.events.remove(self.id);
        }
        self.task.abort();
    }
}
