//! `MessagingLifecycle`: follows the connection of the demo's transport (NATS, with
//! `--nats`), emits `Messaging.Ready` when it is up and `Messaging.Failed` when it
//! drops, and is not ready while it is down, so `/health/ready` follows the broker.
//! Without a transport the demo is local only, and says so in its health data.

use std::sync::Mutex;

use koan::well_known::events::messaging::{FAILED, READY};
use koan::{
    ActionContext, BackgroundService, BoxError, ServiceContext, health::HealthReport,
    service::BuildContext, service::FromContext,
};
use koan_nats::{ConnectionState, NatsTransport};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::db::now_secs;

/// Payload of `Messaging.Ready`: the transport is connected (or there is none, and
/// the host runs local only).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagingReady {
    /// Unix seconds.
    pub started_at: i64,
    /// The transport: its URL, or `none` when local only.
    pub transport: String,
}

/// Payload of `Messaging.Failed`: the connection dropped; the client reconnects.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagingFailed {
    /// What went wrong.
    pub error: String,
}

/// What the service last saw of the connection.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When the connection last changed (Unix seconds).
    since: i64,
    disconnects: u64,
}

/// Follows the transport's connection.
#[koan::service(description = "Follows the messaging transport's connection and drives readiness",
    run_in_production = true,
    event(name = READY, payload = MessagingReady),
    event(name = FAILED, payload = MessagingFailed),
    ready = Self::connected,
    health = Self::report)]
#[derive(Debug)]
pub struct MessagingLifecycle {
    /// `None`: no transport, local only.
    nats: Option<NatsTransport>,
    seen: Mutex<Option<Seen>>,
}

impl FromContext for MessagingLifecycle {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        // The demo registers the transport as a resource only when run with `--nats`.
        Ok(MessagingLifecycle {
            nats: cx
                .resource::<NatsTransport>()
                .ok()
                .map(|n| n.as_ref().clone()),
            seen: Mutex::new(None),
        })
    }
}

#[koan::actions]
impl MessagingLifecycle {
    /// Drops the connection and reconnects; `Messaging.Ready` follows once it is back.
    #[action(
        koan::well_known::actions::messaging::RESTART_MESSAGING,
        description = "Reconnect to the messaging transport"
    )]
    async fn restart_messaging(&self, _cx: &ActionContext) -> Result<String, BoxError> {
        match &self.nats {
            None => Ok("no transport: local only; nothing to restart".to_owned()),
            Some(n) => {
                tracing::info!(url = %n.url(), "reconnecting to NATS on request");
                n.client().force_reconnect().await?;
                // Ready is emitted by the run loop when the connection is back.
                Ok(format!("reconnecting to {}", n.url()))
            }
        }
    }
}

impl MessagingLifecycle {
    async fn connected(&self) -> bool {
        self.nats
            .as_ref()
            .is_none_or(|n| n.connection_state() == ConnectionState::Connected)
    }

    async fn report(&self) -> HealthReport {
        let Some(n) = &self.nats else {
            return HealthReport::healthy("no transport: local only")
                .with_data("transport", "none");
        };
        let seen = self.seen.lock().ok().and_then(|g| *g);
        let report = match n.connection_state() {
            ConnectionState::Connected => {
                HealthReport::healthy(format!("connected to {}", n.url()))
            }
            _ => HealthReport::degraded(format!("disconnected from {}; reconnecting", n.url())),
        };
        let report = report
            .with_data("transport", n.url())
            .with_data("state", n.connection_state().to_string());
        match seen {
            Some(s) => report
                .with_data("since", s.since)
                .with_data("disconnects", s.disconnects),
            None => report,
        }
    }

    fn record(&self, state: ConnectionState) {
        if let Ok(mut seen) = self.seen.lock() {
            let disconnects = seen.map_or(0, |s| s.disconnects)
                + u64::from(state == ConnectionState::Disconnected);
            *seen = Some(Seen {
                since: now_secs(),
                disconnects,
            });
        }
    }

    async fn announce(&self, cx: &ServiceContext, n: &NatsTransport, state: ConnectionState) {
        self.record(state);
        match state {
            ConnectionState::Connected => {
                tracing::info!(url = %n.url(), "messaging ready");
                cx.emit(
                    READY,
                    MessagingReady {
                        started_at: now_secs(),
                        transport: n.url().to_owned(),
                    },
                )
                .await;
            }
            _ => {
                tracing::warn!(url = %n.url(), "messaging disconnected");
                cx.emit(
                    FAILED,
                    MessagingFailed {
                        error: format!("disconnected from NATS at {}; reconnecting", n.url()),
                    },
                )
                .await;
            }
        }
    }
}

impl BackgroundService for MessagingLifecycle {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let Some(n) = &self.nats else {
            tracing::info!("messaging: no transport, local only");
            cx.emit(
                READY,
                MessagingReady {
                    started_at: now_secs(),
                    transport: "none".to_owned(),
                },
            )
            .await;
            cx.cancelled().await;
            return Ok(());
        };
        let mut conn = n.watch_connection();
        let mut last = *conn.borrow_and_update();
        self.announce(&cx, n, last).await;
        loop {
            tokio::select! {
                _ = cx.cancelled() => return Ok(()),
                changed = conn.changed() => {
                    if changed.is_err() {
                        // The transport is gone (the process is shutting down).
                        cx.cancelled().await;
                        return Ok(());
                    }
                }
            }
            let now = *conn.borrow_and_update();
            if now != last {
                last = now;
                self.announce(&cx, n, now).await;
            }
        }
    }
}
