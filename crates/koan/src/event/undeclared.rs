//! An event emitted from inside a service that the service does not declare: still
//! delivered, but warned about once per name and counted, because the context's
//! `emit` returns nothing to the caller (see `ActionTable::check_event`, the rule
//! subscribing follows too).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::bus::EventBus;

/// Emits refused for a name that is no name, in this process.
static BAD_NAMES: crate::util::Sparse = crate::util::Sparse::new();

impl EventBus {
    /// Emits event `name` of the service in `cell` from inside it (its context). An
    /// event the service does not declare is still delivered, but counted in
    /// `koan_events_undeclared_total` and warned about once per name: the context's
    /// `emit` returns nothing, so the log is where the mistake shows.
    pub(crate) async fn emit_from<E: Serialize + Send + Sync + 'static>(
        &self,
        cell: &crate::registry::ServiceCell,
        name: &str,
        correlation_id: Option<Arc<str>>,
        payload: E,
    ) {
        if let Err(e) = cell.spec.actions.check_event(&cell.spec.name, name) {
            if e.kind() == crate::error::ErrorKind::InvalidParameters {
                // No name: not emitted (it would reach no one elsewhere, and cut
                // the NATS connection when long), said at the 1st, 2nd, 4th, … one.
                if let Some(n) = BAD_NAMES.hit() {
                    tracing::warn!(service = %cell.spec.name, emits = n, "{}; the event was not emitted", e.message());
                }
                return;
            }
            let key = self.key(&cell.spec.name, name);
            key.undeclared.increment(1);
            if !key.undeclared_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    service = %cell.spec.name,
                    event = %name,
                    "{}; emitted all the same in this process, but other processes \
                     do not deliver it (declare it with `Actions::event` or \
                     `#[service(event(…))]`; only its first emit is logged)",
                    e.message()
                );
            }
        }
        self.emit(&cell.spec.name, name, correlation_id, payload)
            .await;
    }
}
