//! This host's live view of the cluster registry: one watch of the `koan_registry`
//! bucket keeps every announced instance in memory, so listings answer at once —
//! also while the broker is unreachable, from the last view, marked stale — and a
//! job for a service the cluster never announced is refused.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use koan::transport::Instance;

use crate::announced::Announced;
use crate::routes::{Route, Routes};

/// The instances the registry announced, as last heard.
#[derive(Debug, Default)]
pub(crate) struct RegistryView {
    instances: Mutex<HashMap<String, Heard>>,
    /// The instances of each service that take calls, as a call's routing reads
    /// them: changed with `instances`, under their lock (an announcement replaces its host's).
    routes: Mutex<Routes>,
    /// An entry not refreshed for this long is forgotten: a host that died sends no
    /// delete, and the bucket's max age drops its key without a marker, so every
    /// crashed or killed process would otherwise stay here for the connection's life.
    forget_after: Duration,
    /// Every service name (lower case) an instance announced since this host
    /// connected: a job for one of them waits for an instance to come back. With
    /// each, when it was last announced (ms) and the action and event names its
    /// instances announced. At most [`MAX_SEEN`], the least recently announced
    /// forgotten first, and none of a name over [`MAX_NAME`] bytes: a client of the
    /// broker forging entries of made-up services grew every host by 550 MB, kept
    /// after the entries aged out (found by a probe).
    seen: Mutex<HashMap<String, (i64, Announced)>>,
    /// When `seen`, full, may next be pruned of names no longer announced (ms).
    pruned_at: std::sync::atomic::AtomicI64,
    /// Set once the watch delivered the bucket's contents: before that, the view
    /// cannot say that a service is unknown.
    synced: AtomicBool,
    /// What every time above is read on.
    clock: ViewClock,
}

/// An instance as last announced, with when this host heard it on the view's
/// clock ([`ViewClock`], in milliseconds): what a call's routing compares with
/// the clock, read once a call. Through `chrono` (its `Utc::now` and the
/// cut-off's date arithmetic) they were ≈ 210 instructions of each routed call
/// (B8, by callgrind).
#[derive(Debug)]
struct Heard {
    at: i64,
    instance: Instance,
}

/// The view's clock, in milliseconds: the wall clock as it read when the view
/// was made, advanced since by the monotonic clock. A step of the wall clock
/// (a time sync, a VM resumed) moves neither the age of what was heard nor the
/// window it is live in: read from the wall clock, a step forward of more than
/// three heartbeats took every instance for gone until the next heartbeat, and a
/// call was refused "no instance heard from" (CI saw one, in a test whose
/// instance had announced itself under half a second before).
#[derive(Debug)]
struct ViewClock {
    wall_ms: i64,
    started: std::time::Instant,
}

impl Default for ViewClock {
    fn default() -> Self {
        ViewClock {
            wall_ms: wall_ms(),
            started: std::time::Instant::now(),
        }
    }
}

impl ViewClock {
    fn now(&self) -> i64 {
        let since = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.wall_ms.saturating_add(since)
    }

    /// When an entry the broker stored at `stored_ms` (its wall clock) was
    /// heard, on this clock: as long ago as the wall clock says now, and not
    /// after now.
    fn heard_when_stored(&self, stored_ms: i64) -> i64 {
        let age = wall_ms().saturating_sub(stored_ms).max(0);
        self.now().saturating_sub(age)
    }

    /// The wall-clock time of `at`, a time on this clock: as long ago as it is.
    fn wall_of(&self, at: i64) -> Option<chrono::DateTime<chrono::Utc>> {
        let age = self.now().saturating_sub(at).max(0);
        chrono::DateTime::from_timestamp_millis(wall_ms().saturating_sub(age))
    }
}

/// The wall clock now, in milliseconds since the epoch ([`crate::wire::unix_ms`]).
fn wall_ms() -> i64 {
    i64::try_from(crate::wire::unix_ms()).unwrap_or(i64::MAX)
}

impl RegistryView {
    pub(crate) fn new(forget_after: Duration) -> RegistryView {
        RegistryView {
            forget_after,
            ..RegistryView::default()
        }
    }

    /// Takes an announcement as its writer dated it (never ahead of now).
    #[cfg(test)]
    fn put(&self, key: String, instance: Instance) {
        let at = self
            .clock
            .heard_when_stored(instance.seen_at.timestamp_millis());
        self.put_heard(key, instance, at);
    }

    /// Takes an announcement heard at `at` (on the view's clock): its age counts
    /// from then, whatever its writer's clock said (a forged entry an hour ahead
    /// stayed live an hour after its key had gone; a peer 8 s behind was taken
    /// for gone; one heard late while this host was busy looked stale; found by
    /// probes).
    fn put_heard(&self, key: String, mut instance: Instance, at: i64) {
        let now = self.clock.now();
        if let Some(heard) = self.clock.wall_of(at) {
            instance.seen_at = heard;
        }
        if let Ok(mut seen) = self.seen.lock() {
            for s in instance
                .services
                .iter()
                .filter(|s| s.name.len() <= MAX_NAME)
            {
                // Names it leaves unknown stay so while it announces them, and
                // for as long as the view keeps its entry after.
                let until = now.saturating_add(
                    i64::try_from(self.forget_after.as_millis()).unwrap_or(i64::MAX),
                );
                let announced = Announced::of(&s.name, &instance.actions, &instance.events, until);
                let name = s.name.to_ascii_lowercase();
                if !seen.contains_key(&name) && seen.len() >= MAX_SEEN {
                    // Full: the names no instance announced for the view's
                    // forget time go; if none did, the new name is not kept (its
                    // jobs are refused as of an unknown service) rather than
                    // one a live instance announces (a flood of forged names
                    // pushed out live services, answered 404 for seconds).
                    if seen.len() >= MAX_SEEN && now >= self.pruned_at.load(Ordering::Relaxed) {
                        let cutoff = heard_since(now, self.forget_after);
                        seen.retain(|_, (last, _)| *last >= cutoff);
                        // At most once a second: a flood of fresh names does not
                        // scan all for each.
                        self.pruned_at
                            .store(now.saturating_add(1000), Ordering::Relaxed);
                    }
                    if seen.len() >= MAX_SEEN {
                        continue;
                    }
                }
                match seen.entry(name) {
                    Entry::Occupied(mut known) => {
                        let (last, names) = known.get_mut();
                        *last = now;
                        names.merge(announced);
                    }
                    Entry::Vacant(place) => {
                        place.insert((now, announced));
                    }
                }
            }
        }
        if let Ok(mut m) = self.instances.lock() {
            // Under the instances' lock: the routes change with them, in order.
            let mut routes = self
                .routes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);

            // The announcement before this one out first (its routes are this
            // host's, as the new ones are).
            if let Some(old) = m.remove(&key) {
                routes.remove(&old.instance);
            }
            routes.add(at, &instance);
            m.insert(key, Heard { at, instance });
            let oldest = heard_since(now, self.forget_after);
            m.retain(|_, h| {
                let keep = h.at >= oldest;
                if !keep {
                    routes.remove(&h.instance);
                }
                keep
            });
        }
    }

    fn remove(&self, key: &str) {
        if let Ok(mut m) = self.instances.lock()
            && let Some(old) = m.remove(key)
        {
            self.routes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&old.instance);
        }
    }

    /// Calls `f` with each live instance (heartbeat within `stale_after`) of
    /// `service` that takes new calls: what a call's routing reads on every call.
    pub(crate) fn each_route(&self, stale_after: Duration, service: &str, f: impl FnMut(&Route)) {
        let Ok(r) = self.routes.lock() else { return };
        r.each(service, heard_since(self.clock.now(), stale_after), f);
    }

    /// Calls `f` with each live instance (heartbeat within `stale_after`), under the
    /// view's lock and without copying (each [`Instance`] holds its services' whole
    /// status): what a call in flight reads at each heartbeat to learn whether its
    /// instance is still there.
    pub(crate) fn each_live(&self, stale_after: Duration, mut f: impl FnMut(&Instance)) {
        let Ok(m) = self.instances.lock() else { return };
        let oldest = heard_since(self.clock.now(), stale_after);
        for h in m.values().filter(|h| h.at >= oldest) {
            f(&h.instance);
        }
    }

    /// The live instances (heartbeat within `stale_after`), sorted by id. When the
    /// view cannot be refreshed (`connected` false), the instances live when it was
    /// last refreshed, each marked stale.
    pub(crate) fn instances(&self, stale_after: Duration, connected: bool) -> Vec<Instance> {
        let Ok(m) = self.instances.lock() else {
            return Vec::new();
        };
        // Offline, nothing new arrives: age is measured from the newest heartbeat heard.
        let now = if connected {
            self.clock.now()
        } else {
            m.values()
                .map(|h| h.at)
                .max()
                .unwrap_or_else(|| self.clock.now())
        };
        let oldest = heard_since(now, stale_after);
        let mut out: Vec<Instance> = m
            .values()
            .filter(|h| h.at >= oldest)
            .map(|h| h.instance.clone())
            .map(|mut i| {
                i.stale = !connected;
                i
            })
            .collect();
        out.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        out
    }

    /// Whether `me` has the lowest host id among the live instances (heartbeat
    /// within `stale_after`) that run `service`, or none does: the one that keeps
    /// the records of its jobs waiting in the work queue (`keeper.rs`).
    pub(crate) fn first_running(&self, stale_after: Duration, service: &str, me: &str) -> bool {
        let mut first = true;
        self.each_live(stale_after, |i| {
            let runs = i
                .services
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(service));
            first &= !(runs && i.host_id.as_str() < me);
        });
        first
    }

    /// When `me` has the lowest host id among the live instances (heartbeat
    /// within `stale_after`), or none is live: the services they run, by subject
    /// token. That host keeps the records of the jobs of every other service
    /// (`keeper.rs`); `None` for every other host.
    pub(crate) fn first_host(&self, stale_after: Duration, me: &str) -> Option<HashSet<String>> {
        let mut first = true;
        let mut running = HashSet::new();
        self.each_live(stale_after, |i| {
            first &= i.host_id.as_str() >= me;
            running.extend(i.services.iter().map(|s| crate::subjects::token(&s.name)));
        });
        first.then_some(running)
    }

    /// What `host_id` announced last, however long ago.
    pub(crate) fn last_of(&self, host_id: &str) -> Option<Instance> {
        let m = self.instances.lock().ok()?;
        m.values()
            .map(|h| &h.instance)
            .find(|i| i.host_id == host_id)
            .cloned()
    }

    /// Whether some instance announced `service` since this host connected (it may
    /// be down now: its jobs wait for it); `None` before the view is synced.
    pub(crate) fn knows(&self, service: &str) -> Option<bool> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        self.seen
            .lock()
            .ok()
            .map(|seen| seen.contains_key(&service.to_ascii_lowercase()))
    }

    /// Every action name announced for `service` since this host connected; `None`
    /// before the view is synced, for a service never announced, and once an
    /// instance of it announced no action names.
    pub(crate) fn actions_of(&self, service: &str) -> Option<Vec<String>> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let seen = self.seen.lock().ok()?;
        seen.get(&service.to_ascii_lowercase())?
            .1
            .actions(self.clock.now())
    }

    /// Whether some instance of `service` declares event `event`; `None` when it
    /// cannot tell (not synced, the service never announced, or its events not
    /// known).
    pub(crate) fn declares_event(&self, service: &str, event: &str) -> Option<bool> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let seen = self.seen.lock().ok()?;
        seen.get(&service.to_ascii_lowercase())?
            .1
            .declares_event(event, self.clock.now())
    }
}

/// The most service names the view keeps (see `RegistryView::seen`).
const MAX_SEEN: usize = 10_000;

/// The longest service name the view keeps, in bytes.
const MAX_NAME: usize = 256;

/// The oldest heartbeat (ms since the epoch) still within `window` of `now`: an
/// instance heard at or after it counts. One cut-off, each heartbeat compared with
/// it (a difference per instance cost about 110 instructions a routed call, B8 by
/// callgrind).
fn heard_since(now: i64, window: Duration) -> i64 {
    now.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX))
}

/// Follows the registry bucket for the transport's life (it is cancelled when the
/// transport is dropped); a broken watch is started again (from each key's latest
/// value) once the server is back.
pub(crate) async fn follow(store: kv::Store, view: std::sync::Arc<RegistryView>) {
    loop {
        let end = crate::streams::bucket_end(&store).await;
        if let Ok(mut watch) = store.watch_with_history(">").await {
            // An empty bucket delivers nothing: it is synced from the start.
            let mut caught_up = end == Some(0);
            if caught_up {
                view.synced.store(true, Ordering::Release);
            }
            while let Some(Ok(entry)) = watch.next().await {
                match entry.operation {
                    kv::Operation::Put => {
                        if let Ok(i) = serde_json::from_slice::<Instance>(&entry.value) {
                            // Heard now once this watch is caught up; before (its
                            // start, or its restart after the broker came back:
                            // the latest entry of every key again), as the broker
                            // stored it, so that a host dead a while is not taken
                            // for live (a review).
                            let heard = if caught_up {
                                view.clock.now()
                            } else {
                                view.clock.heard_when_stored(
                                    i64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000)
                                        .unwrap_or(0),
                                )
                            };
                            view.put_heard(entry.key.clone(), i, heard);
                        }
                    }
                    kv::Operation::Delete | kv::Operation::Purge => view.remove(&entry.key),
                }
                if crate::streams::caught_up(&entry, end) {
                    caught_up = true;
                    view.synced.store(true, Ordering::Release);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests;
