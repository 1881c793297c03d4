use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Environment, HostExit, HostInner};

use crate::client::{ServiceRef, Services};
use crate::error::{Error, Result};
use crate::event::SubscriptionBuilder;
use crate::registry::ServiceStatus;
use crate::service::Service;

/// A cheap, cloneable handle to a host: stop it, wait for it, query it, call its
/// services.
#[derive(Clone)]
pub struct HostHandle {
    pub(crate) inner: Arc<HostInner>,
}

impl std::fmt::Debug for HostHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostHandle")
            .field("services", &self.inner.registry.names())
            .finish()
    }
}

impl HostHandle {
    pub(crate) fn from_inner(inner: Arc<HostInner>) -> Self {
        HostHandle { inner }
    }

    /// Asks the host to stop: no new work is accepted, queued actions are answered
    /// `ShuttingDown`, services are cancelled in reverse start order (those of one
    /// priority together) and aborted after the grace period. Returns at once; [`HostHandle::wait`] for the end.
    pub fn shutdown(&self) {
        self.inner.stop_request.cancel();
    }

    /// Resolves as soon as the host is asked to stop (before services are stopped):
    /// the moment to stop taking new work from outside, such as a queue consumer.
    pub async fn stopping(&self) {
        self.inner.stop_request.cancelled().await
    }

    /// Whether the host has been asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop_request.is_cancelled()
    }

    /// Waits until the host has stopped, and says how.
    pub async fn wait(&self) -> HostExit {
        let mut rx = self.inner.exit.subscribe();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                return HostExit::Stopped;
            }
        }
    }

    /// Runs until SIGINT, SIGTERM or SIGHUP, or until the host stops by itself, then
    /// shuts down gracefully. An error means startup or a critical service failed.
    ///
    /// The signals are taken over when this is called, before the future is first
    /// polled: a signal sent right after (say, once the process printed that it
    /// listens) stops the host gracefully rather than killing the process.
    ///
    /// A second signal a second or more after the first, while the host stops,
    /// ends the process at once (exit code 128 + the signal's number). A host
    /// that stops because a critical or startup service failed keeps that
    /// failure's exit code (2 or 1, [`HostExit::exit_code`]) through any signal:
    /// one while it stops is absorbed by the stop in progress, and one that ends
    /// the process (a second, or one after the host stopped) ends it with the
    /// failure's code, not 128 + the signal's number. Should
    /// work abandoned at the grace's end (a handler's `spawn_blocking` task, which
    /// no abort reaches) keep the process alive once its runtime shuts down (after
    /// `main` returned), it is ended 5 s later, with the host's exit code.
    pub fn run_until_signal(&self) -> impl std::future::Future<Output = Result<()>> + '_ {
        let signals = super::signals::Signals::take_over();
        super::signals::run_until_signal(self, signals)
    }

    /// The host's wall clock: the system's, or a test's (`testing::host_at`).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.config.clock.now()
    }

    /// The exit, if the host has stopped.
    pub fn exit(&self) -> Option<HostExit> {
        self.inner.exit.borrow().clone()
    }

    /// Waits until startup is done (`Ok`) or the host stopped before that (its error).
    ///
    /// It waits on the host's notifications, with no timer of its own: on a paused
    /// tokio clock, waiting here does not move time.
    pub async fn started(&self) -> Result<()> {
        let mut exit = self.inner.exit.subscribe();
        let mut done = self.inner.startup_done.subscribe();
        loop {
            if *done.borrow_and_update() {
                return Ok(());
            }
            if let Some(exit) = exit.borrow_and_update().clone() {
                return match exit {
                    HostExit::Stopped => Err(Error::shutting_down("startup")),
                    other => other.into_result(),
                };
            }
            // Both senders live as long as the host this handle holds.
            tokio::select! {
                _ = done.changed() => {}
                _ = exit.changed() => {}
            }
        }
    }

    /// Whether startup is done.
    pub fn is_started(&self) -> bool {
        *self.inner.startup_done.borrow()
    }

    /// The environment the host runs in.
    pub fn environment(&self) -> Environment {
        self.inner.config.environment.clone()
    }

    /// Names of every registered service, in registration order.
    pub fn service_names(&self) -> Vec<String> {
        self.inner
            .registry
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The typed handle of service `T` on this host: its actions, events, status,
    /// health and info.
    pub fn services<T: Service>(&self) -> Services<T> {
        Services::new(self.clone())
    }

    /// The fluent API of a service by name (case-insensitive): what HTTP and NATS use.
    pub fn service(&self, name: &str) -> ServiceRef {
        ServiceRef::new(self.clone(), name)
    }

    /// Subscribes to events of every service.
    pub fn events(&self) -> SubscriptionBuilder {
        SubscriptionBuilder::new(self.clone(), None)
    }

    /// The status of every service.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.inner
            .registry
            .all()
            .iter()
            .map(|c| c.snapshot())
            .collect()
    }

    /// The action names of every service (built-ins included), by service name:
    /// what a cluster transport announces beside [`statuses`](Self::statuses).
    pub fn action_names(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.inner
            .registry
            .all()
            .iter()
            .map(|c| (c.spec.name.to_string(), c.spec.actions.names()))
            .collect()
    }

    /// The event names each service that declares events declares, by service
    /// name: what a cluster transport announces beside
    /// [`action_names`](Self::action_names). A service that declares none takes
    /// any name, here and elsewhere, and is left out.
    pub fn event_names(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.inner
            .registry
            .all()
            .iter()
            .filter(|c| !c.spec.actions.events.is_empty())
            .map(|c| {
                let events = c.spec.actions.events.iter().map(|e| e.name.clone());
                (c.spec.name.to_string(), events.collect())
            })
            .collect()
    }

    /// The service's own spelling of `name` (looked up as `service` does,
    /// case-insensitively), `None` for a service this host does not run. Cheaper
    /// than [`status`](Self::status) when the name is all that is wanted.
    pub fn canonical_name(&self, name: &str) -> Option<&str> {
        self.inner.registry.by_name(name).map(|c| &*c.spec.name)
    }

    /// The status of one service, by name.
    pub fn status(&self, name: &str) -> Result<ServiceStatus> {
        Ok(self.inner.registry.find(name)?.snapshot())
    }

    /// The last runs of one service (newest first, as many as
    /// `koan.background_services.history_size`, 50 unless set) and how many of its
    /// actions succeeded and failed.
    pub fn history(&self, name: &str) -> Result<crate::status::ServiceHistory> {
        let cell = self.inner.registry.find(name)?;
        Ok(cell.board.activity().history(&cell.spec.name))
    }

    /// Succeeded and failed runs and actions of every service of this host, per
    /// second for the last two minutes and per hour for the last day (in memory:
    /// counted since the host started).
    pub fn throughput(&self) -> crate::status::ThroughputSnapshot {
        self.inner
            .throughput
            .snapshot(self.inner.config.clock.now())
    }

    /// The last events this host saw (its own and those of other hosts delivered to
    /// it), newest first: at most [`RECENT_EVENTS`](crate::event::RECENT_EVENTS), kept in
    /// memory so a dashboard opened now is not empty.
    pub fn recent_events(&self) -> Vec<crate::event::EventEnvelope> {
        self.inner.events.recent()
    }

    /// The kept events this host numbered after `arrival`
    /// ([`EventEnvelope::arrival`](crate::event::EventEnvelope::arrival)), oldest
    /// first, and whether some after it are no longer kept: what a client that
    /// saw up to `arrival` missed (an event stream's `Last-Event-ID`). Only those
    /// `wanted` takes are returned (a stream's filter), read in place.
    pub fn recent_events_since(
        &self,
        arrival: u64,
        wanted: &dyn Fn(&crate::event::EventEnvelope) -> bool,
    ) -> crate::event::EventsSince {
        self.inner.events.recent_since(arrival, wanted)
    }

    /// The kept event this host numbered `arrival`, if it still keeps it: what an
    /// event stream sends, one at a time, of the numbers
    /// [`recent_events_since`](Self::recent_events_since) gave it (as the client
    /// reads, so a stream holds one event's frame, not every kept one's).
    pub fn recent_event(&self, arrival: u64) -> Option<crate::event::EventEnvelope> {
        self.inner.events.recent_one(arrival)
    }

    /// The jobs of this host's store: list, inspect, retry, cancel, delete.
    pub fn jobs(&self) -> crate::job::Jobs {
        crate::job::Jobs::new(self.clone())
    }

    /// This host's id in the cluster (from the transport), if any.
    pub fn host_id(&self) -> Option<String> {
        self.inner.transport.as_ref().and_then(|t| t.host_id())
    }

    /// This host's name for operators: its cluster id when it has a transport, else
    /// the name its job attempts carry (`$HOSTNAME-pid`).
    pub fn instance_name(&self) -> String {
        self.host_id()
            .unwrap_or_else(|| self.inner.jobs.instance().to_owned())
    }

    /// Emits an event on behalf of service `service` (from outside a service).
    ///
    /// The same rule as subscribing: an event the service does not declare is an
    /// [`ErrorKind::UnknownEvent`](crate::error::ErrorKind::UnknownEvent) error that lists
    /// the declared ones (a service that declares none takes any name).
    pub async fn emit<E: serde::Serialize + Send + Sync + 'static>(
        &self,
        service: &str,
        name: &str,
        payload: E,
    ) -> Result<()> {
        let cell = self.inner.registry.find(service)?;
        cell.spec.actions.check_event(&cell.spec.name, name)?;
        // A host not started, or stopped, has no subscriber running and no transport
        // to carry the event: said, where `Ok` claimed a delivery (found by a probe).
        // While it stops, its services may still emit and be heard.
        if !self.inner.launched.load(Ordering::Acquire) {
            return Err(self
                .inner
                .refusal(&format!("event `{name}` of `{service}`")));
        }
        if self.inner.exit.borrow().is_some() {
            return Err(Error::new(
                crate::error::ErrorKind::ShuttingDown,
                format!(
                    "event `{name}` of `{service}`: the host has stopped; nothing would deliver it"
                ),
            ));
        }
        self.inner
            .events
            .emit(
                &cell.spec.name,
                name,
                crate::action::current_correlation(),
                payload,
            )
            .await;
        Ok(())
    }
}
