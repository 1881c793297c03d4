//! Restarting by hand a background service its supervisor gave up on (`failed`:
//! its restart intensity exceeded, or its policy `never`), as OTP's
//! `restart_child`: until the host restarted, nothing could bring it back (a
//! probe), its calls refused and its status `failed` for good.

use std::sync::Arc;

use tracing::Instrument;

use super::HostHandle;
use super::lifecycle::span;
use super::supervisor::supervise;
use crate::error::{Error, ErrorKind, Result};
use crate::service::Runner;

impl HostHandle {
    /// Starts again the background service `name` that its supervisor gave up on
    /// (state `failed`): its `run` is called anew, with a fresh restart intensity
    /// window, and its calls are taken again. Refused (`ServiceState`) for a
    /// service in any other state, and for one whose own code cancelled its token
    /// (it asked to stop); `ShuttingDown` while the host stops.
    pub fn restart_service(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        let cell = inner
            .registry
            .by_name(name)
            .ok_or_else(|| inner.registry.unknown(name))?;
        let service = &cell.spec.name;
        let Runner::Background(run) = &cell.spec.runner else {
            return Err(Error::new(
                ErrorKind::ServiceState,
                format!(
                    "`{service}` is not a background service: only a background service its supervisor gave up on is restarted (a periodic one goes on after a failed run; a startup one ran once)"
                ),
            ));
        };
        if inner.is_stopping() {
            return Err(Error::shutting_down(&format!("the restart of `{service}`")));
        }
        if cell.life.token.is_cancelled() {
            return Err(Error::new(
                ErrorKind::ServiceState,
                format!(
                    "`{service}` was stopped by its own code (it cancelled its token): it is not restarted before the host is"
                ),
            ));
        }
        // One caller takes the failure back; a second, or a service that did
        // not fail, is told its state.
        if !cell.life.recover() {
            let state = cell.board.state();
            return Err(Error::new(
                ErrorKind::ServiceState,
                format!(
                    "`{service}` is `{}`: only a service its supervisor gave up on (`failed`) is restarted",
                    state.as_str()
                ),
            ));
        }
        tracing::info!(service = %service, "service restarted by hand after its supervisor gave up on it");
        // Said at once: a second restart before the supervisor's first write read
        // "`X` is `failed`: only a service … (`failed`) is restarted" (a review).
        cell.board
            .set_state(crate::registry::ServiceState::Restarting);
        cell.board.clear_failures();
        cell.board.add_restart();
        let task = supervise(Arc::clone(inner), Arc::clone(cell), Arc::clone(run));
        let task = tokio::spawn(task.instrument(span(cell)));
        // A stop that took the service's tasks meanwhile would never join this
        // one: it is stopped here instead.
        if inner.is_stopping() {
            task.abort();
            return Err(Error::shutting_down(&format!("the restart of `{service}`")));
        }
        cell.life.push_task(task);
        Ok(())
    }
}
