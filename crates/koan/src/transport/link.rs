//! What a transport and an operator's view need of a host, kept off the handle a
//! service's author uses: import [`HostLink`] to reach it.

use std::future::Future;

use crate::error::Result;
use crate::event::EventEnvelope;
use crate::host::HostHandle;
use crate::transport::{Instance, Liveness};

/// The host's side of the link to other processes: implemented for [`HostHandle`].
/// `koan-nats` delivers remote events through it; `koan-http` lists the cluster.
pub trait HostLink {
    /// Delivers an event that arrived from another process to this host's subscribers.
    fn deliver_remote_event(&self, event: &EventEnvelope) -> impl Future<Output = ()> + Send;

    /// Every host of the cluster, through the transport (empty without one).
    fn instances(&self) -> impl Future<Output = Result<Vec<Instance>>> + Send;

    /// How the transport's listing tells a live instance from a silent one (`None`
    /// without a transport, or one that lists no other instances).
    fn liveness(&self) -> Option<Liveness>;

    /// Whether this host runs service `name` itself.
    fn hosts(&self, name: &str) -> bool;
}

impl HostLink for HostHandle {
    async fn deliver_remote_event(&self, event: &EventEnvelope) {
        self.inner.events.publish(event).await;
    }

    async fn instances(&self) -> Result<Vec<Instance>> {
        match &self.inner.transport {
            Some(t) => t.instances().await,
            None => Ok(Vec::new()),
        }
    }

    fn liveness(&self) -> Option<Liveness> {
        self.inner.transport.as_ref()?.liveness()
    }

    fn hosts(&self, name: &str) -> bool {
        self.inner.registry.by_name(name).is_some()
    }
}
