//! `HealthProbeScheduler`: probes the configured HTTP targets (a real `GET` under a
//! timeout) and the database on a quantized window, records every result in
//! `probe_results`, emits `Health.ProbeFailed` for a failed probe, and reports
//! degraded health while a target fails. `ForceProbe` probes now.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use koan::well_known::events::health::{PROBE_BROADCAST, PROBE_SCHEDULED};
use koan::{
    ActionContext, BackgroundService, BoxError, ServiceContext, health::HealthReport,
    service::BuildContext, service::FromContext,
};
use serde::{Deserialize, Serialize};

use super::Emitter;
use crate::db::{Db, now_secs};

/// Emitted for each failed probe. Defined here, not in `koan::well_known::events::health`,
/// which names only `ProbeScheduled` and `ProbeBroadcast`.
pub const PROBE_FAILED: &str = "Health.ProbeFailed";

/// The target name of the database probe.
pub const DATABASE_TARGET: &str = "database";

/// Rows of `probe_results` kept; older ones are deleted as new ones come.
const KEEP_RESULTS: i64 = 10_000;

/// Payload of `Health.ProbeScheduled`: a round of probes ran.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProbeScheduled {
    /// Unix seconds.
    pub timestamp: i64,
    /// Targets probed.
    pub targets: usize,
    /// Probes that failed.
    pub failed: usize,
}

/// Payload of `Health.ProbeBroadcast`, and the answer of `ForceProbe`: the results of
/// a round.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProbeBroadcast {
    /// True when asked for with `ForceProbe`.
    pub forced: bool,
    /// Unix seconds.
    pub timestamp: i64,
    /// The results of the round.
    pub results: Vec<ProbeResult>,
}

/// One probe's outcome (a row of `probe_results`, and the `Health.ProbeFailed`
/// payload when it failed).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// A URL, or `database`.
    pub target: String,
    /// Whether it answered in time with success.
    pub ok: bool,
    /// How long it took.
    pub latency_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix seconds.
    pub probed_at: i64,
}

/// `Settings` of the scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ProbeSettings {
    /// Milliseconds between rounds (at least 1000).
    pub quantization_window_ms: u64,
    /// HTTP URLs to `GET`; a 2xx answer within the timeout passes. When absent, the
    /// demo's own `/health/live` (if the host knows its address, see [`SelfUrl`]).
    pub targets: Option<Vec<String>>,
    /// Timeout of each probe, in milliseconds.
    pub timeout_ms: u64,
    /// Probe the database too (`SELECT 1`).
    pub probe_database: bool,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            quantization_window_ms: 10_000,
            targets: None,
            timeout_ms: 2_000,
            probe_database: true,
        }
    }
}

/// The demo's own base URL (`http://127.0.0.1:8080`), registered as a host resource
/// by the binary, so that the default probe target is its own `/health/live`.
#[derive(Debug, Clone)]
pub struct SelfUrl(pub String);

/// Probes targets and records the results.
#[koan::service(description = "Probes HTTP targets and the database, records the results",
    run_in_production = true,
    event(name = PROBE_SCHEDULED, payload = ProbeScheduled),
    event(name = PROBE_BROADCAST, payload = ProbeBroadcast),
    event(name = PROBE_FAILED, payload = ProbeResult),
    health = Self::report)]
#[derive(Debug)]
pub struct HealthProbeScheduler {
    db: Db,
    settings: ProbeSettings,
    targets: Vec<String>,
    http: reqwest::Client,
    /// The last result of each target.
    last: Mutex<BTreeMap<String, ProbeResult>>,
}

impl FromContext for HealthProbeScheduler {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        let settings: ProbeSettings = cx.settings()?;
        let targets = match &settings.targets {
            Some(t) => t.clone(),
            // No address known (a test host without HTTP): only the database.
            None => cx
                .resource::<SelfUrl>()
                .map(|u| vec![format!("{}/health/live", u.0.trim_end_matches('/'))])
                .unwrap_or_default(),
        };
        for t in &targets {
            if reqwest::Url::parse(t).is_err() {
                return Err(koan::Error::new(
                    koan::error::ErrorKind::Config,
                    format!(
                        "settings of service `{}`: probe target `{t}` is not a URL",
                        cx.service_name()
                    ),
                ));
            }
        }
        // A fresh connection for each probe: one kept idle from the last probe,
        // 10 s before, met the server closing it at its idle timeout (10 s) and the
        // probe failed, 3–4 % of probes of a healthy host (found by a probe).
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms.max(1)))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| {
                koan::Error::new(
                    koan::error::ErrorKind::Build,
                    format!("the probe's HTTP client: {e}"),
                )
            })?;
        Ok(HealthProbeScheduler {
            db: cx.resource::<Db>()?.as_ref().clone(),
            settings,
            targets,
            http,
            last: Mutex::new(BTreeMap::new()),
        })
    }
}

#[koan::actions]
impl HealthProbeScheduler {
    /// Probes every target now and broadcasts the results as `Health.ProbeBroadcast`.
    #[action(
        koan::well_known::actions::health::FORCE_PROBE,
        description = "Probe every target now and broadcast the results"
    )]
    async fn force_probe(&self, cx: &ActionContext) -> Result<ProbeBroadcast, BoxError> {
        tracing::info!("force probe requested");
        let results = self.round(cx).await?;
        let b = ProbeBroadcast {
            forced: true,
            timestamp: now_secs(),
            results,
        };
        cx.emit(PROBE_BROADCAST, b.clone()).await;
        Ok(b)
    }
}

/// An error with its causes (`reqwest` keeps "connection refused" in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

impl HealthProbeScheduler {
    async fn report(&self) -> HealthReport {
        let last = self.last.lock().map(|g| g.clone()).unwrap_or_default();
        if last.is_empty() {
            return HealthReport::healthy("no probe yet");
        }
        let failing: Vec<String> = last
            .values()
            .filter(|r| !r.ok)
            .map(|r| format!("{} ({})", r.target, r.error.as_deref().unwrap_or("failed")))
            .collect();
        let report = if failing.is_empty() {
            HealthReport::healthy(format!("{} targets pass", last.len()))
        } else {
            HealthReport::degraded(format!(
                "{} of {} targets failing: {}",
                failing.len(),
                last.len(),
                failing.join("; ")
            ))
        };
        report.with_data("targets", last.into_values().collect::<Vec<_>>())
    }

    async fn probe_http(&self, url: &str) -> ProbeResult {
        let started = Instant::now();
        let outcome = match self.http.get(url).send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("answered {}", resp.status())),
            Err(e) if e.is_timeout() => {
                Err(format!("no answer within {} ms", self.settings.timeout_ms))
            }
            Err(e) => Err(chain(&e)),
        };
        result(url, started, outcome)
    }

    async fn probe_database(&self) -> ProbeResult {
        let started = Instant::now();
        let limit = Duration::from_millis(self.settings.timeout_ms.max(1));
        let query = self
            .db
            .run(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)));
        let outcome = match tokio::time::timeout(limit, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
        };
        result(DATABASE_TARGET, started, outcome)
    }

    /// Probes every target (concurrently), records the results, emits a failure event
    /// per failed probe and `ProbeScheduled` for the round.
    async fn round(&self, out: &impl Emitter) -> Result<Vec<ProbeResult>, BoxError> {
        let mut results =
            futures_util::future::join_all(self.targets.iter().map(|t| self.probe_http(t))).await;
        if self.settings.probe_database {
            results.push(self.probe_database().await);
        }
        if let Ok(mut last) = self.last.lock() {
            for r in &results {
                last.insert(r.target.clone(), r.clone());
            }
        }
        for r in results.iter().filter(|r| !r.ok) {
            tracing::warn!(target_url = %r.target, error = r.error.as_deref().unwrap_or(""), "probe failed");
            out.emit(PROBE_FAILED, r.clone()).await;
        }
        out.emit(
            PROBE_SCHEDULED,
            ProbeScheduled {
                timestamp: now_secs(),
                targets: results.len(),
                failed: results.iter().filter(|r| !r.ok).count(),
            },
        )
        .await;
        let rows = results.clone();
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                for r in &rows {
                    tx.execute(
                        "INSERT INTO probe_results (target, ok, latency_ms, error, probed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        (&r.target, r.ok, r.latency_ms as i64, &r.error, r.probed_at),
                    )?;
                }
                tx.execute(
                    "DELETE FROM probe_results WHERE id <= (SELECT MAX(id) FROM probe_results) - ?1",
                    [KEEP_RESULTS],
                )?;
                tx.commit()
            })
            .await?;
        Ok(results)
    }
}

fn result(target: &str, started: Instant, outcome: Result<(), String>) -> ProbeResult {
    ProbeResult {
        target: target.to_owned(),
        ok: outcome.is_ok(),
        latency_ms: started.elapsed().as_millis() as u64,
        error: outcome.err(),
        probed_at: now_secs(),
    }
}

impl BackgroundService for HealthProbeScheduler {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        // Wait until the host has started: the first target is usually the demo's own
        // HTTP server, which is not listening before.
        if let Some(host) = cx.host() {
            host.started().await?;
        }
        let window = Duration::from_millis(self.settings.quantization_window_ms.max(1000));
        tracing::info!(
            window_ms = window.as_millis() as u64,
            targets = ?self.targets,
            "health probe scheduler starting"
        );
        loop {
            if let Err(e) = self.round(&cx).await {
                // The results could not be stored (the database is down or full):
                // the health report still has them; the next round tries again.
                tracing::error!(error = %e, "could not record probe results");
            }
            if !cx.sleep(window).await {
                return Ok(());
            }
        }
    }
}
