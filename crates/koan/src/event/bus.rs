//! The host's event bus: emission, per-subscriber bounded buffers, delivery tasks.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::mpsc;

use super::envelope::EventEnvelope;
use super::subscribe::Overflow;
use crate::clock::Clock;
use crate::error::BoxError;
use crate::util::{BoxFuture, CatchUnwind};

/// Runs on one delivery. It borrows the shared envelope and takes out what its
/// future needs (a typed handler: its payload), so a delivery costs no reference
/// counts on the envelope's parts.
pub(crate) type Handler =
    Arc<dyn Fn(&EventEnvelope) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;
/// One envelope shared by every subscriber it goes to: one reference count per
/// delivery instead of one per part.
type Shared = Arc<EventEnvelope>;
pub(crate) type Filter = Box<dyn Fn(&EventEnvelope) -> bool + Send + Sync>;

pub(crate) struct Route {
    pub(crate) event: Option<Arc<str>>,
    pub(crate) once: Option<AtomicBool>,
    pub(crate) filter: Option<Filter>,
    pub(crate) handler: Handler,
}

pub(crate) struct Sub {
    pub(crate) id: u64,
    pub(crate) service: Option<Arc<str>>,
    pub(crate) routes: Vec<Route>,
    pub(crate) overflow: Overflow,
    tx: mpsc::Sender<(usize, Shared)>,
}

impl Sub {
    fn wants(&self, service: &str) -> bool {
        self.service
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(service))
    }
}

/// The interned names of one (service, event) pair and its metric handles, so the
/// hot path neither allocates names nor builds metric keys per event.
pub(crate) struct EventKey {
    service: Arc<str>,
    name: Arc<str>,
    emitted: metrics::Counter,
    delivered: metrics::Counter,
    failed: metrics::Counter,
    dropped: metrics::Counter,
}

impl EventKey {
    fn new(service: &str, name: &str) -> Self {
        let (s, n) = (service.to_owned(), name.to_owned());
        EventKey {
            service: Arc::from(service),
            name: Arc::from(name),
            emitted: metrics::counter!("koan_events_emitted_total", "service" => s.clone(), "event" => n.clone()),
            delivered: metrics::counter!("koan_events_delivered_total", "service" => s.clone(), "event" => n.clone()),
            failed: metrics::counter!("koan_event_handler_failures_total", "service" => s.clone(), "event" => n.clone()),
            dropped: metrics::counter!("koan_events_dropped_total", "service" => s, "event" => n),
        }
    }
}

type KeyMap =
    std::collections::HashMap<Box<str>, std::collections::HashMap<Box<str>, Arc<EventKey>>>;

pub(crate) struct EventBus {
    keys: RwLock<KeyMap>,
    transport: Option<Arc<dyn crate::transport::Transport>>,
    subs: RwLock<Arc<Vec<Arc<Sub>>>>,
    next_id: AtomicU64,
    seq: AtomicU64,
    clock: Clock,
}

impl EventBus {
    pub(crate) fn new(
        clock: Clock,
        transport: Option<Arc<dyn crate::transport::Transport>>,
    ) -> Self {
        EventBus {
            keys: RwLock::new(KeyMap::new()),
            transport,
            subs: RwLock::new(Arc::new(Vec::new())),
            next_id: AtomicU64::new(1),
            seq: AtomicU64::new(0),
            clock,
        }
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Sub>>> {
        self.subs.read().map(|g| Arc::clone(&g)).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut Vec<Arc<Sub>>)) {
        if let Ok(mut g) = self.subs.write() {
            let mut v: Vec<Arc<Sub>> = g.as_ref().clone();
            f(&mut v);
            *g = Arc::new(v);
        }
    }

    /// Emits an event; returns it as delivered. Waits only for subscribers whose
    /// overflow policy is `Wait` (and `once` routes, which must not lose their event).
    pub(crate) async fn emit<E: Serialize + Send + Sync + 'static>(
        &self,
        service: &str,
        name: &str,
        correlation_id: Option<Arc<str>>,
        payload: E,
    ) -> EventEnvelope {
        let key = self.key(service, name);
        key.emitted.increment(1);
        let env = EventEnvelope {
            service: Arc::clone(&key.service),
            name: Arc::clone(&key.name),
            correlation_id,
            time: self.clock.now(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            payload: Arc::new(payload),
            key: Some(key),
        };
        let shared = Arc::new(env);
        self.publish_shared(&shared).await;
        if let Some(t) = &self.transport {
            t.publish(&shared);
        }
        Arc::try_unwrap(shared).unwrap_or_else(|s| (*s).clone())
    }

    /// The interned key of (service, event), made on first use.
    fn key(&self, service: &str, name: &str) -> Arc<EventKey> {
        if let Ok(keys) = self.keys.read()
            && let Some(k) = keys.get(service).and_then(|m| m.get(name))
        {
            return Arc::clone(k);
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let by_name = keys.entry(Box::from(service)).or_default();
        Arc::clone(
            by_name
                .entry(Box::from(name))
                .or_insert_with(|| Arc::new(EventKey::new(service, name))),
        )
    }

    /// Delivers an envelope (local or arrived from another process).
    pub(crate) async fn publish(&self, env: &EventEnvelope) {
        self.publish_shared(&Arc::new(env.clone())).await;
    }

    async fn publish_shared(&self, env: &Shared) {
        let subs = self.snapshot();
        for sub in subs.iter().filter(|s| s.wants(&env.service)) {
            for (i, route) in sub.routes.iter().enumerate() {
                if route
                    .event
                    .as_deref()
                    .is_some_and(|e| !e.eq_ignore_ascii_case(&env.name))
                {
                    continue;
                }
                if let Some(filter) = &route.filter {
                    let pass = std::panic::catch_unwind(AssertUnwindSafe(|| filter(env)));
                    if !matches!(pass, Ok(true)) {
                        if pass.is_err() {
                            tracing::error!(event = %env.name, "event filter panicked; event skipped for that subscriber");
                        }
                        continue;
                    }
                }
                if let Some(fired) = &route.once
                    && fired.swap(true, Ordering::AcqRel)
                {
                    continue;
                }
                let wait = route.once.is_some() || sub.overflow == Overflow::Wait;
                deliver(sub, i, Arc::clone(env), wait).await;
            }
        }
    }

    pub(crate) fn add(
        &self,
        service: Option<Arc<str>>,
        routes: Vec<Route>,
        capacity: usize,
        overflow: Overflow,
    ) -> (u64, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(usize, Shared)>(capacity.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Arc::new(Sub {
            id,
            service,
            routes,
            overflow,
            tx,
        });
        let handlers: Vec<Handler> = sub.routes.iter().map(|r| Arc::clone(&r.handler)).collect();
        self.update(|v| v.push(sub));
        let task = tokio::spawn(async move {
            // Drain what is buffered in one go: one wake-up for a burst of events.
            let mut batch = Vec::with_capacity(64);
            while rx.recv_many(&mut batch, 64).await > 0 {
                for (i, env) in batch.drain(..) {
                    let Some(handler) = handlers.get(i) else {
                        continue;
                    };
                    deliver_one(handler, env).await;
                }
            }
        });
        (id, task)
    }

    pub(crate) fn remove(&self, id: u64) {
        self.update(|v| v.retain(|s| s.id != id));
    }

    /// Drops every subscriber's sender so their tasks finish after draining.
    pub(crate) fn close(&self) {
        self.update(Vec::clear);
    }
}

/// Runs one handler on one event; failures and panics are logged and counted.
async fn deliver_one(handler: &Handler, env: Shared) {
    let (service, name, key) = (&env.service, &env.name, &env.key);
    let failed = match CatchUnwind(handler(&env)).await {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            tracing::warn!(service = %service, event = %name, error = %e, "event handler failed");
            true
        }
        Err(panic) => {
            tracing::error!(service = %service, event = %name, panic = %panic, "event handler panicked");
            true
        }
    };
    match (key, failed) {
        (Some(k), true) => k.failed.increment(1),
        (Some(k), false) => k.delivered.increment(1),
        (None, _) => {
            let metric = if failed {
                "koan_event_handler_failures_total"
            } else {
                "koan_events_delivered_total"
            };
            metrics::counter!(metric, "service" => service.to_string(), "event" => name.to_string()).increment(1);
        }
    }
}

async fn deliver(sub: &Sub, route: usize, env: Shared, wait: bool) {
    if wait {
        let _ = sub.tx.send((route, env)).await;
        return;
    }
    if let Err(mpsc::error::TrySendError::Full((_, env))) = sub.tx.try_send((route, env)) {
        tracing::warn!(service = %env.service, event = %env.name, subscriber = sub.id, "subscriber buffer full; event dropped (overflow policy: drop-newest)");
        match &env.key {
            Some(k) => k.dropped.increment(1),
            None => metrics::counter!("koan_events_dropped_total", "service" => env.service.to_string(), "event" => env.name.to_string()).increment(1),
        }
    }
}
