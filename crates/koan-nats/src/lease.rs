//! Cluster singletons: a lease per service in the KV bucket `koan_leases`, taken with
//! create (compare-and-set on "absent") and renewed with update on the revision held.
//! The bucket's max age is the lease period, so a dead holder's lease lapses and a
//! waiting host (polling every tenth of the period) takes over; each scheduled tick
//! is run only after the holder renewed its lease with a compare-and-set, so a holder
//! that was frozen past its lease and replaced does not run it too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use koan::HostHandle;

use crate::subjects;
use crate::transport::NatsTransport;

/// Whether this host holds a service's lease, and at which revision.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    pub(crate) leader: AtomicBool,
    revision: AtomicU64,
    /// The host that held the lease when this one last saw it held elsewhere.
    last_holder: Mutex<Option<String>>,
    /// One compare-and-set at a time: a renewal and a tick's confirmation racing on
    /// the same revision would make one of them fail and drop the lease.
    op: tokio::sync::Mutex<()>,
    /// When this host last confirmed a tick (and so started it).
    confirmed_at: Mutex<Option<DateTime<Utc>>>,
    /// Given up for good ([`abandon`](Self::abandon)): no answer arriving later
    /// takes the lease back.
    abandoned: AtomicBool,
}

impl Lease {
    fn held(&self) -> Option<u64> {
        match self.revision.load(Ordering::Acquire) {
            0 => None,
            r => Some(r),
        }
    }

    fn set(&self, held: Option<u64>) {
        self.revision.store(held.unwrap_or(0), Ordering::SeqCst);
        self.leader.store(held.is_some(), Ordering::SeqCst);
        // A compare-and-set answered after `abandon` (a tick's confirmation in
        // flight when the node was dropped) must not make this host the holder
        // again: its ticks would renew the lease with nothing to stop them. Read
        // after the stores, so either this sees the flag or `abandon`'s stores
        // come after these.
        if held.is_some() && self.abandoned.load(Ordering::SeqCst) {
            self.revision.store(0, Ordering::SeqCst);
            self.leader.store(false, Ordering::SeqCst);
        }
    }

    /// Stops acting as the holder on this host, without telling the server (the
    /// lease lapses there at the end of its period).
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.set(None);
    }

    /// Whether the tick due at `due` (a status's `next_run`, which names the tick
    /// being run until its run ends) was confirmed here, so started. `next_run` is
    /// the wall time of the due instant, computed a period earlier: [`DRIFT`]
    /// absorbs the wall clock's drift from the monotonic one over that period.
    pub(crate) fn started(&self, due: DateTime<Utc>) -> bool {
        self.confirmed_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| due <= at + DRIFT)
    }
}

/// See [`Lease::started`]. A schedule with a shorter period loses the catch-up run
/// after a failover (its next tick comes soon anyway).
const DRIFT: chrono::TimeDelta = chrono::TimeDelta::milliseconds(500);

fn key(service: &str) -> String {
    subjects::key(&subjects::token(service))
}

/// A KV operation on the lease takes at most a third of the lease: past that, the
/// answer would come too late to act on.
fn bound(t: &NatsTransport) -> Duration {
    t.inner.opts.lease / 3
}

/// One attempt to take or keep the lease; updates `lease` and says whether it is held.
pub(crate) async fn step(t: &NatsTransport, service: &str, lease: &Lease) -> bool {
    let _one = lease.op.lock().await;
    let me = t.inner.host_id.clone();
    let k = key(service);
    let attempt = async {
        match lease.held() {
            Some(rev) => t.inner.leases.update(&k, me.into(), rev).await.ok(),
            None => t.inner.leases.create(&k, me.into()).await.ok(),
        }
    };
    let held = tokio::time::timeout(bound(t), attempt).await.ok().flatten();
    lease.set(held);
    // Held as `set` left it (not if the lease was abandoned meanwhile).
    let held = lease.held();
    if held.is_none() {
        // Remember who holds it: if that host dies, its missed tick is ours to run.
        if let Ok(Ok(Some(holder))) = tokio::time::timeout(bound(t), t.inner.leases.get(&k)).await
            && let (Ok(holder), Ok(mut last)) =
                (String::from_utf8(holder.to_vec()), lease.last_holder.lock())
        {
            *last = Some(holder);
        }
    }
    held.is_some()
}

/// Right before a poke of the singleton runs here: whether this host holds its
/// lease, renewed with a compare-and-set. Unlike [`confirm`], the poke does not
/// count as a started tick of the schedule; unlike [`step`], a lease not held is
/// not taken: the host that holds it runs the poke.
pub(crate) async fn renew(t: &NatsTransport, service: &str, lease: &Lease) -> bool {
    lease.held().is_some() && step(t, service, lease).await
}

/// The host that holds `service`'s lease, as the bucket says (within a third of
/// the lease): where a poke of the singleton made on another host goes. `None`
/// when none holds it, or the bucket did not answer.
pub(crate) async fn holder(t: &NatsTransport, service: &str) -> Option<String> {
    let held = tokio::time::timeout(bound(t), t.inner.leases.get(key(service))).await;
    let bytes = held.ok()?.ok()??;
    String::from_utf8(bytes.to_vec()).ok()
}

/// Right before a scheduled tick: renews the lease held with a compare-and-set.
/// A holder that was frozen past its lease finds the revision moved (or the key
/// gone) and does not run the tick.
///
/// The tick counts as started from here: the registry entry says so at once (the
/// announced `next_run` would otherwise name it until the next heartbeat), so that
/// a host taking over after this one dies does not run it again.
pub(crate) async fn confirm(t: &NatsTransport, service: &str, lease: &Lease) -> bool {
    if !(lease.held().is_some() && step(t, service, lease).await) {
        return false;
    }
    if let Ok(mut at) = lease.confirmed_at.lock() {
        *at = Some(Utc::now());
    }
    if let Ok(Err(e)) = tokio::time::timeout(bound(t), crate::registry::reannounce(t)).await {
        tracing::debug!(service = %service, error = %e, "could not announce the started tick");
    }
    // Still held after the announcement's round trip: a node dropped meanwhile
    // (`abandon`) stops the tick here, as it promises, rather than a moment after
    // it is gone (B10 counted such ticks of a killed host).
    lease.held().is_some()
}

/// Keeps (or keeps trying to take) the lease of `service` while the host runs.
/// On taking over from a holder that died with a tick overdue, runs that tick once.
pub(crate) async fn hold(t: NatsTransport, host: HostHandle, service: String, lease: Arc<Lease>) {
    loop {
        let was = lease.held().is_some();
        // The holder renews at a third of the lease; the others look ten times per
        // lease, so a lapsed lease is taken within a tenth of a period.
        let pause = if was {
            t.inner.opts.lease / 3
        } else {
            t.inner.opts.lease / 10
        };
        tokio::time::sleep(pause.max(Duration::from_millis(10))).await;
        let now = step(&t, &service, &lease).await;
        match (was, now) {
            (false, true) => {
                tracing::info!(service = %service, "took the singleton lease");
                if missed_by_last_holder(&t, &service, &lease) {
                    tracing::info!(service = %service, "the last holder missed a tick: running it once");
                    if let Err(e) = host.service(&service).trigger().await {
                        tracing::warn!(service = %service, error = %e, "the missed tick failed");
                    }
                }
            }
            (true, false) => tracing::warn!(service = %service, "lost the singleton lease"),
            _ => {}
        }
    }
}

/// Whether the host that held the lease before announced a next tick that is now
/// past: it died (or froze) before running it. A holder that left in good order
/// withdrew from the registry and is not asked.
fn missed_by_last_holder(t: &NatsTransport, service: &str, lease: &Lease) -> bool {
    let Some(holder) = lease.last_holder.lock().ok().and_then(|mut l| l.take()) else {
        return false;
    };
    if holder == t.inner.host_id {
        return false;
    }
    t.view()
        .last_of(&holder)
        .iter()
        .flat_map(|i| &i.services)
        .filter(|s| s.name.eq_ignore_ascii_case(service))
        .any(|s| s.next_run.is_some_and(|due| due <= Utc::now()))
}

/// Gives the lease up if this host holds it (on shutdown), so another host takes
/// over at once.
pub(crate) async fn release(t: &NatsTransport, service: &str, lease: &Lease) {
    if let Some(rev) = lease.held() {
        lease.set(None);
        let _ = t
            .inner
            .leases
            .delete_expect_revision(key(service), Some(rev))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_lease_is_not_taken_back_by_a_late_answer() {
        let lease = Lease::default();
        lease.set(Some(3));
        assert_eq!(lease.held(), Some(3));
        lease.abandon();
        // The renewal that was in flight when the node was dropped succeeds now.
        lease.set(Some(4));
        assert_eq!(lease.held(), None);
        assert!(!lease.leader.load(Ordering::SeqCst));
    }
}
