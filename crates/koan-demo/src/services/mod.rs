//! The sample services, each doing real work on the demo's SQLite database.

pub mod cleanup;
pub mod flow;
mod flow_stages;
pub mod health_monitor;
pub mod messaging;
pub mod migration;
pub mod outbox;
pub mod probe;
pub mod translation;
mod translation_dictionary;

use std::future::Future;

use serde::Serialize;

/// Emits an event from a service's own loop ([`koan::ServiceContext`]) or from one of
/// its actions ([`koan::ActionContext`]), so that work shared by both paths emits its
/// events in one place.
pub(crate) trait Emitter: Sync {
    fn emit<E: Serialize + Send + Sync + 'static>(
        &self,
        name: &str,
        payload: E,
    ) -> impl Future<Output = ()> + Send;
}

impl Emitter for koan::ServiceContext {
    fn emit<E: Serialize + Send + Sync + 'static>(
        &self,
        name: &str,
        payload: E,
    ) -> impl Future<Output = ()> + Send {
        koan::ServiceContext::emit(self, name, payload)
    }
}

impl Emitter for koan::ActionContext {
    fn emit<E: Serialize + Send + Sync + 'static>(
        &self,
        name: &str,
        payload: E,
    ) -> impl Future<Output = ()> + Send {
        koan::ActionContext::emit(self, name, payload)
    }
}
