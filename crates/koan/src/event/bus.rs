//! The host's event bus: emission, per-subscriber bounded buffers, delivery tasks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::mpsc;

use super::deliver::{deliver, deliver_one, route_takes, same_name};
use super::envelope::EventEnvelope;
use super::handler::{Handler, Runner};
use super::reader::read_ring;
use super::ring::{Cursor, Ring};
use super::subscribe::Overflow;
use crate::clock::Clock;
use crate::util::FxHashMap;

/// One envelope shared by every subscriber it goes to: one reference count per
/// delivery instead of one per part.
pub(super) type Shared = Arc<EventEnvelope>;
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
    /// Its cursor on the event's shared ring (`Overflow::Wait` with a buffer the
    /// ring can hold); `None`: a channel of its own, whose sender the bus keeps
    /// (its task keeps the `Sub`, and must see the channel end when the bus
    /// lets go of the sender).
    ring: Option<(Arc<Ring>, Arc<Cursor>)>,
    /// Events dropped for it (`Overflow::DropNewest`): the log says so at the 1st,
    /// 2nd, 4th, … drop, not at each (a warning a drop made the emitter ten
    /// times slower, and wrote 66 MB for 200,000 drops; found by a probe).
    pub(crate) dropped: crate::util::Sparse,
    /// Set when its `Subscription` is dropped, before it leaves the bus: its task
    /// starts no handler once it sees it (read before each event). The task's
    /// abort lands only where it waits, and a ring reader with new events never
    /// does: it read on, over slots the emitter no longer kept for it.
    gone: AtomicBool,
}

/// The subscribers with a channel of their own, each with its sender.
type Channels = Vec<(Arc<Sub>, mpsc::Sender<(usize, Shared)>)>;

impl Sub {
    /// One runner per route, for the subscriber's task: a delivery reuses its
    /// route's slot (no allocation per delivery).
    pub(super) fn runners(&self) -> Vec<Box<dyn Runner>> {
        self.routes
            .iter()
            .map(|r| Arc::clone(&r.handler).runner())
            .collect()
    }

    /// Its subscription is dropped: its task starts no handler from now on.
    ///
    /// Relaxed is enough for the ring: a reader that finds a slot overwritten saw
    /// the emitter's block through its lock, the emitter wrote it only after taking
    /// the ring's lock once `leave` had, and `leave` comes after this store.
    pub(crate) fn stop(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }

    /// Whether its subscription is dropped.
    #[inline]
    pub(super) fn gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    pub(super) fn wants(&self, service: &str) -> bool {
        self.service
            .as_deref()
            .is_none_or(|s| same_name(s, service))
    }
}

/// The interned names of one (service, event) pair and its metric handles, so the
/// hot path neither allocates names nor builds metric keys per event.
pub(crate) struct EventKey {
    service: Arc<str>,
    name: Arc<str>,
    emitted: metrics::Counter,
    pub(super) delivered: metrics::Counter,
    pub(super) failed: metrics::Counter,
    pub(super) dropped: metrics::Counter,
    /// Emits of this name that the service does not declare, and whether that was
    /// said in the log (once per name).
    pub(super) undeclared: metrics::Counter,
    pub(super) undeclared_warned: AtomicBool,
    /// The ring of this event's `Overflow::Wait` subscribers, made with the first.
    ring: std::sync::OnceLock<Arc<Ring>>,
}

impl EventKey {
    pub(super) fn new(service: &str, name: &str) -> Self {
        let (s, n) = (service.to_owned(), name.to_owned());
        EventKey {
            service: Arc::from(service),
            name: Arc::from(name),
            emitted: metrics::counter!("koan_events_emitted_total", "service" => s.clone(), "event" => n.clone()),
            delivered: metrics::counter!("koan_events_delivered_total", "service" => s.clone(), "event" => n.clone()),
            failed: metrics::counter!("koan_event_handler_failures_total", "service" => s.clone(), "event" => n.clone()),
            dropped: metrics::counter!("koan_events_dropped_total", "service" => s.clone(), "event" => n.clone()),
            undeclared: metrics::counter!("koan_events_undeclared_total", "service" => s, "event" => n),
            undeclared_warned: AtomicBool::new(false),
            ring: std::sync::OnceLock::new(),
        }
    }
}

/// Hashed with Fx, as the registry's and action table's names are: every emit
/// looks its key up by two names, and SipHash cost 523 of its ≈ 2,500 instructions
/// (B5's profile). The names are the services' own and their peers'.
type KeyMap = FxHashMap<Box<str>, FxHashMap<Box<str>, Arc<EventKey>>>;

/// A channel subscriber's route number that is no route: its task ends there,
/// having run the handlers of every event queued before it ([`EventBus::settle`]).
const FENCE: usize = usize::MAX;

/// The smallest ring made for an event.
const RING_MIN: usize = 64;
/// `Overflow::Wait` subscribers with a buffer this large or larger get a channel
/// of their own rather than a ring that size.
const RING_MAX: usize = 1 << 16;

pub(crate) struct EventBus {
    keys: RwLock<KeyMap>,
    transport: Option<Arc<dyn crate::transport::Transport>>,
    /// The subscribers with a channel of their own: the ones an emit goes through.
    subs: RwLock<Arc<Channels>>,
    /// The ring readers: an emit writes their event once into its ring, without
    /// looking at them (B5: 100 of them a step each, on lines the readers own, per
    /// event).
    readers: Mutex<Vec<Arc<Sub>>>,
    next_id: AtomicU64,
    seq: AtomicU64,
    clock: Clock,
    /// The last events, local and remote, for pages opened after they happened.
    recent: super::recent::Recent,
}

impl EventBus {
    pub(crate) fn new(
        clock: Clock,
        transport: Option<Arc<dyn crate::transport::Transport>>,
    ) -> Self {
        EventBus {
            keys: RwLock::new(KeyMap::default()),
            transport,
            subs: RwLock::new(Arc::new(Vec::new())),
            readers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            seq: AtomicU64::new(0),
            clock,
            recent: super::recent::Recent::new(),
        }
    }

    fn snapshot(&self) -> Arc<Channels> {
        self.subs.read().map(|g| Arc::clone(&g)).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut Channels)) {
        if let Ok(mut g) = self.subs.write() {
            let mut v: Channels = g.as_ref().clone();
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
            arrival: 0,
            weight: 0,
            payload: Arc::new(payload),
            key: Some(key),
        };
        // The copy returned is made before the event is published, while its lines
        // are this core's alone; once published, the readers on the other core read
        // the envelope, and the emitter writes none of it again: its own reference
        // goes into the ring (a copy made after, or a reference dropped after,
        // wrote the counts beside the fields every reader reads).
        let shared = self.recent.keep(env);
        let returned = (*shared).clone();
        match &self.transport {
            None => self.publish_shared(shared).await,
            Some(t) => {
                self.publish_shared(Arc::clone(&shared)).await;
                t.publish(&shared);
            }
        }
        returned
    }

    /// The interned key of (service, event), made on first use. Names match without
    /// regard to case, like subscriptions do: every spelling shares one key (and
    /// so one ring and one set of metrics), named as first seen.
    pub(super) fn key(&self, service: &str, name: &str) -> Arc<EventKey> {
        if let Ok(keys) = self.keys.read()
            && let Some(k) = keys.get(service).and_then(|m| m.get(name))
        {
            return Arc::clone(k);
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let known = keys
            .iter()
            .filter(|(s, _)| s.eq_ignore_ascii_case(service))
            .flat_map(|(_, m)| m.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, k)| Arc::clone(k));
        let key = known.unwrap_or_else(|| Arc::new(EventKey::new(service, name)));
        keys.entry(Box::from(service))
            .or_default()
            .insert(Box::from(name), Arc::clone(&key));
        key
    }

    /// Delivers an envelope (local or arrived from another process).
    pub(crate) async fn publish(&self, env: &EventEnvelope) {
        let shared = self.recent.keep(env.clone());
        self.publish_shared(shared).await;
    }

    /// The kept events, newest first.
    pub(crate) fn recent(&self) -> Vec<EventEnvelope> {
        self.recent.newest_first()
    }

    /// The kept event numbered `arrival`, if it still is.
    pub(crate) fn recent_one(&self, arrival: u64) -> Option<EventEnvelope> {
        self.recent.get(arrival)
    }

    /// The kept events numbered after `arrival` that `wanted` takes, oldest first.
    pub(crate) fn recent_since(
        &self,
        arrival: u64,
        wanted: &dyn Fn(&EventEnvelope) -> bool,
    ) -> super::EventsSince {
        self.recent.since(arrival, wanted)
    }

    /// Delivers `env` to every subscriber; the ring (if the event has one) takes
    /// this reference.
    async fn publish_shared(&self, env: Shared) {
        let subs = self.snapshot();
        // Ring readers take the event from the ring, below.
        for (sub, tx) in subs.iter() {
            if !sub.wants(&env.service) {
                continue;
            }
            for (i, route) in sub.routes.iter().enumerate() {
                if !route_takes(route, &env) {
                    continue;
                }
                let wait = route.once.is_some() || sub.overflow == Overflow::Wait;
                deliver(sub, tx, i, Arc::clone(&env), wait).await;
            }
        }
        // Written once for all of this event's waiting subscribers.
        let key = match &env.key {
            Some(k) => Arc::clone(k),
            None => self.key(&env.service, &env.name),
        };
        if let Some(ring) = key.ring.get() {
            ring.push(env).await;
        }
    }

    /// Adds a subscriber; `settles`: it may be settled ([`EventBus::settle`]), so
    /// it gets a channel of its own, never a ring.
    pub(crate) fn add(
        &self,
        service: Option<Arc<str>>,
        routes: Vec<Route>,
        capacity: usize,
        overflow: Overflow,
        settles: bool,
    ) -> (Arc<Sub>, tokio::task::JoinHandle<()>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // One named event of one service, waiting when full: it reads that event's
        // ring. (A reader holds back only the emitters of events it takes, as with
        // a channel of its own.)
        let ring_key = match (&service, routes.as_slice()) {
            (Some(service), [route])
                if overflow == Overflow::Wait && capacity < RING_MAX && !settles =>
            {
                route.event.as_ref().map(|e| self.key(service, e))
            }
            _ => None,
        };
        // The ring is sized by its first reader; a later one that needs more room
        // than it has gets a channel instead.
        let ring = ring_key.and_then(|key| {
            let ring = key
                .ring
                .get_or_init(|| Arc::new(Ring::new((capacity + 1).max(RING_MIN))));
            (capacity < ring.size()).then(|| (Arc::clone(ring), key.delivered.clone()))
        });
        if let Some((ring, delivered)) = ring {
            let cursor = ring.join(capacity);
            let sub = Arc::new(Sub {
                id,
                service,
                routes,
                overflow,
                ring: Some((Arc::clone(&ring), Arc::clone(&cursor))),
                dropped: crate::util::Sparse::new(),
                gone: AtomicBool::new(false),
            });
            self.readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::clone(&sub));
            let task = tokio::spawn(read_ring(ring, cursor, Arc::clone(&sub), delivered));
            return (sub, task);
        }
        let (tx, mut rx) = mpsc::channel::<(usize, Shared)>(capacity.max(1));
        let sub = Arc::new(Sub {
            id,
            service,
            routes,
            overflow,
            ring: None,
            dropped: crate::util::Sparse::new(),
            gone: AtomicBool::new(false),
        });
        let mut runners = sub.runners();
        self.update(|v| v.push((Arc::clone(&sub), tx)));
        let this = Arc::clone(&sub);
        let task = tokio::spawn(async move {
            // Drain what is buffered in one go: one wake-up for a burst of events.
            // `0` once the channel is closed and drained: the end. (Written `== 0`
            // and `break`, not `while … > 0`: a `>=` slip there spins for ever.)
            let mut batch = Vec::with_capacity(64);
            loop {
                if rx.recv_many(&mut batch, 64).await == 0 {
                    break;
                }
                for (i, env) in batch.drain(..) {
                    // Dropped: what is buffered goes with it. Settled: every
                    // event before the fence is handled.
                    if this.gone() || i == FENCE {
                        return;
                    }
                    let Some(runner) = runners.get_mut(i) else {
                        continue;
                    };
                    deliver_one(&mut **runner, env).await;
                }
            }
        });
        (sub, task)
    }

    pub(crate) fn remove(&self, id: u64) {
        let gone = {
            let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            let at = readers.iter().position(|s| s.id == id);
            at.map(|i| readers.swap_remove(i))
        };
        // A ring reader that leaves no longer holds the emitter back.
        match gone {
            Some(sub) => {
                if let Some((ring, cursor)) = &sub.ring {
                    ring.leave(cursor);
                }
            }
            None => self.update(|v| v.retain(|(s, _)| s.id != id)),
        }
    }

    /// Takes channel subscriber `id` off the bus (no event is queued for it from
    /// now on), then waits until its task has run the handlers of the events
    /// queued before: its task ends at a fence sent after them. Bounded by the
    /// caller; `task` is the subscriber's.
    pub(crate) async fn settle(&self, id: u64, task: &mut tokio::task::JoinHandle<()>) {
        let mut tx = None;
        self.update(|v| {
            if let Some(at) = v.iter().position(|(s, _)| s.id == id) {
                tx = Some(v.remove(at).1);
            }
        });
        // Gone already (the host closed the bus): its task drains what it has.
        if let Some(tx) = tx {
            let fence =
                EventEnvelope::remote("", "", None, self.clock.now(), 0, serde_json::Value::Null);
            let _ = tx.send((FENCE, Arc::new(fence))).await;
        }
        let _ = task.await;
    }

    /// Drops every subscriber's sender so their tasks finish after draining.
    pub(crate) fn close(&self) {
        self.update(Vec::clear);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        for ring in keys
            .values()
            .flat_map(|m| m.values())
            .filter_map(|k| k.ring.get())
        {
            ring.close();
        }
    }
}
