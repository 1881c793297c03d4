//! The state of the connection to the NATS server, followed from the client's
//! connect and disconnect events.

use std::sync::Arc;

use tokio::sync::watch;

/// Whether the connection to the NATS server is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected: calls, events and publishes reach the server.
    Connected,
    /// The server is gone; the client keeps reconnecting in the background.
    Disconnected,
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
        })
    }
}

/// The sending side, fed by the client's event callback.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionWatch(Arc<watch::Sender<ConnectionState>>);

impl ConnectionWatch {
    /// Starts as connected: the client exists only once its first connect succeeded.
    pub(crate) fn new() -> Self {
        ConnectionWatch(Arc::new(watch::Sender::new(ConnectionState::Connected)))
    }

    pub(crate) fn set(&self, state: ConnectionState) {
        self.0
            .send_if_modified(|s| std::mem::replace(s, state) != state);
    }

    pub(crate) fn get(&self) -> ConnectionState {
        *self.0.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<ConnectionState> {
        self.0.subscribe()
    }
}
