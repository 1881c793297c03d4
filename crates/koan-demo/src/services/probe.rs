//! `HealthProbeScheduler`: schedules health probes on a quantized window (writing a
//! probe message to the outbox) and answers `ForceProbe`.

use std::time::Duration;

use koan::events::health::{PROBE_BROADCAST, PROBE_SCHEDULED};
use koan::{ActionContext, BackgroundService, BoxError, BuildContext, FromContext, ServiceContext};
use serde::{Deserialize, Serialize};

use crate::db::{Db, now_secs};

/// The seed's `ProbeScheduledEventArgs`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProbeScheduled {
    /// Unix seconds.
    pub timestamp: i64,
}

/// The seed's `ProbeBroadcastEventArgs`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProbeBroadcast {
    /// True when asked for with `ForceProbe`.
    pub forced: bool,
    /// Unix seconds.
    pub timestamp: i64,
}

/// `Settings` of the scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ProbeSettings {
    /// The quantization window in milliseconds (at least 1000, as in the seed).
    pub quantization_window_ms: u64,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            quantization_window_ms: 10_000,
        }
    }
}

/// Schedules health probes.
#[koan::service(description = "Schedules health probes and broadcasts forced ones",
    event(name = PROBE_SCHEDULED, payload = ProbeScheduled),
    event(name = PROBE_BROADCAST, payload = ProbeBroadcast))]
#[derive(Debug)]
pub struct HealthProbeScheduler {
    db: Db,
    settings: ProbeSettings,
}

impl FromContext for HealthProbeScheduler {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(HealthProbeScheduler {
            db: cx.resource::<Db>()?.as_ref().clone(),
            settings: cx.settings()?,
        })
    }
}

#[koan::actions]
impl HealthProbeScheduler {
    /// The seed's `ForceProbeAsync`.
    #[action(
        koan::actions::health::FORCE_PROBE,
        description = "Schedule health probes now and broadcast them"
    )]
    async fn force_probe(&self, cx: &ActionContext) -> Result<ProbeBroadcast, BoxError> {
        tracing::info!("force probe requested");
        let timestamp = self.schedule_probes().await?;
        cx.emit(PROBE_SCHEDULED, ProbeScheduled { timestamp }).await;
        let b = ProbeBroadcast {
            forced: true,
            timestamp,
        };
        cx.emit(PROBE_BROADCAST, b.clone()).await;
        Ok(b)
    }
}

impl HealthProbeScheduler {
    async fn schedule_probes(&self) -> Result<i64, BoxError> {
        let ts = now_secs();
        self.db
            .run(move |c| {
                c.execute(
                    "INSERT INTO outbox (topic, payload, created_at) VALUES ('health.probe', ?1, ?2)",
                    (serde_json::json!({ "scheduledAt": ts }).to_string(), ts),
                )
            })
            .await?;
        Ok(ts)
    }
}

impl BackgroundService for HealthProbeScheduler {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let window = Duration::from_millis(self.settings.quantization_window_ms.max(1000));
        tracing::info!(
            window_ms = window.as_millis() as u64,
            "health probe scheduler starting"
        );
        while cx.sleep(window).await {
            let timestamp = self.schedule_probes().await?;
            cx.emit(PROBE_SCHEDULED, ProbeScheduled { timestamp }).await;
        }
        Ok(())
    }
}
