//! Cluster singletons: a lease per service in the KV bucket `koan_leases`, taken with
//! create (compare-and-set on "absent") and renewed with update on the revision held.
//! The bucket's max age is the lease period, so a dead holder's lease lapses and
//! another host takes over within one period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::subjects;
use crate::transport::NatsTransport;

/// Whether this host holds a service's lease, and at which revision.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    pub(crate) leader: AtomicBool,
    revision: AtomicU64,
}

impl Lease {
    fn held(&self) -> Option<u64> {
        match self.revision.load(Ordering::Acquire) {
            0 => None,
            r => Some(r),
        }
    }

    fn set(&self, held: Option<u64>) {
        self.revision.store(held.unwrap_or(0), Ordering::Release);
        self.leader.store(held.is_some(), Ordering::Release);
    }

    /// Stops acting as the holder on this host, without telling the server (the
    /// lease lapses there at the end of its period).
    pub(crate) fn abandon(&self) {
        self.set(None);
    }
}

fn key(service: &str) -> String {
    subjects::key(&subjects::token(service))
}

/// One attempt to take or keep the lease; updates `lease` and says whether it is held.
pub(crate) async fn step(t: &NatsTransport, service: &str, lease: &Lease) -> bool {
    let me = t.inner.host_id.clone();
    let k = key(service);
    let held = match lease.held() {
        Some(rev) => t.inner.leases.update(&k, me.into(), rev).await.ok(),
        None => t.inner.leases.create(&k, me.into()).await.ok(),
    };
    lease.set(held);
    held.is_some()
}

/// Keeps (or keeps trying to take) the lease of `service` while the host runs.
pub(crate) async fn hold(t: NatsTransport, service: String, lease: Arc<Lease>) {
    let period = t.inner.opts.lease / 3;
    loop {
        tokio::time::sleep(period).await;
        let was = lease.held().is_some();
        let now = step(&t, &service, &lease).await;
        match (was, now) {
            (false, true) => tracing::info!(service = %service, "took the singleton lease"),
            (true, false) => tracing::warn!(service = %service, "lost the singleton lease"),
            _ => {}
        }
    }
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
