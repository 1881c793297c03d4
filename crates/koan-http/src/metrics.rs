//! `/metrics`: the `metrics` facade rendered by the Prometheus recorder, plus gauges
//! read from every service's status at scrape time.

use std::fmt::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use koan::{HostHandle, health::HealthStatus, status::ServiceState};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often the recorder's buffered histogram samples are folded into their
/// histograms (or summaries), scraped or not.
const UPKEEP: Duration = Duration::from_secs(1);

/// Upkeeps run so far (read by the tests).
static UPKEEPS: AtomicU64 = AtomicU64::new(0);

/// Upper bounds, in seconds, of the buckets of koan's timings (every `koan_*`
/// histogram is in seconds): 100 µs to a minute. They render as Prometheus
/// histograms, which sum across a cluster's instances (a summary's quantiles do
/// not), and the upkeep files a sample by a look-up among these bounds instead of an
/// insert into a quantile sketch: the sketch was 7.9 % of the CPU under B3's load
/// with the metrics on.
const SECONDS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Installs the Prometheus recorder as the global `metrics` recorder (once per
/// process). Returns `false` when another recorder was installed first; `/metrics`
/// then shows only the status gauges.
///
/// koan's timings (`koan_action_duration_seconds`, `koan_action_queue_seconds`,
/// `koan_job_queue_wait_seconds`) render as histograms with buckets from 100 µs to
/// 60 s; other histograms recorded through the `metrics` facade, as summaries.
///
/// The recorder keeps every histogram sample (each action's run and queue time) in
/// a buffer until it is drained into its histogram, which a scrape does, and so
/// does the upkeep that this starts every second on a thread of its own. Without it,
/// a host nobody scraped grew by about 33 bytes an action (B3 with metrics on: 10.7 MB
/// → 49.9 MB RSS after 1.2 million actions), without bound.
pub fn install_metrics() -> bool {
    let installed = HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Prefix("koan_".into()), &SECONDS)
                .ok()?
                .install_recorder()
                .ok()?;
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("koan-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP);
                        upkeep.run_upkeep();
                        UPKEEPS.fetch_add(1, Ordering::Relaxed);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread: histogram samples are drained only when /metrics is scraped");
            }
            Some(handle)
        })
        .is_some();
    if installed {
        metrics::describe_counter!(
            SSE_DROPPED,
            "events not sent to an event-stream client that could not keep up"
        );
        // Shown from the start, at 0, so a scrape can tell "none lost" from "not counted".
        metrics::counter!(SSE_DROPPED).increment(0);
    }
    installed
}

const SSE_DROPPED: &str = "koan_sse_dropped_total";

/// Counts an event dropped for a slow event-stream client.
pub(crate) fn sse_dropped() {
    metrics::counter!(SSE_DROPPED).increment(1);
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text for `host`.
pub(crate) async fn render(host: &HostHandle) -> String {
    let mut out = HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    let statuses = host.statuses();
    let health = host.health().await;
    // By name: a look-up in the list for each service was 50 million string
    // comparisons a scrape with 10,000 services.
    let health: std::collections::HashMap<&str, HealthStatus> = health
        .services
        .iter()
        .map(|h| (h.service.as_str(), h.report.status))
        .collect();
    let gauges: [(&str, &str, &str); 7] = [
        (
            "koan_service_up",
            "gauge",
            "1 when the service is running or idle, or is a startup service that finished its work",
        ),
        (
            "koan_service_queue_depth",
            "gauge",
            "actions and runs waiting",
        ),
        ("koan_service_in_flight", "gauge", "actions running now"),
        ("koan_service_runs_total", "counter", "runs finished"),
        ("koan_service_failures_total", "counter", "runs that failed"),
        (
            "koan_service_restarts_total",
            "counter",
            "restarts by the supervisor",
        ),
        (
            "koan_service_health",
            "gauge",
            "0 healthy, 1 degraded, 2 unhealthy",
        ),
    ];
    for (i, (name, kind, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &statuses {
            let value = match i {
                // A startup service done with its work is `stopped`, as it should
                // be: 0 tripped a "service down" alert for good (a probe).
                0 => u64::from(
                    matches!(s.state, ServiceState::Running | ServiceState::Idle)
                        || (s.kind == koan::service::ServiceKind::Startup
                            && s.state == ServiceState::Stopped
                            && s.last_run.as_ref().is_some_and(|r| r.outcome.is_success())),
                ),
                1 => s.queue_depth as u64,
                2 => s.in_flight as u64,
                3 => s.runs,
                4 => s.failures,
                5 => u64::from(s.restarts),
                _ => match health.get(s.name.as_str()) {
                    Some(HealthStatus::Degraded) => 1,
                    Some(HealthStatus::Unhealthy) => 2,
                    _ => 0,
                },
            };
            let _ = writeln!(out, "{name}{{service=\"{}\"}} {value}", label(&s.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upkeep drains the recorder's buffers while nobody scrapes: it runs on its
    /// own, within a bound far above its period.
    #[test]
    fn the_upkeep_runs_without_a_scrape() {
        assert!(install_metrics(), "another recorder was installed first");
        let before = UPKEEPS.load(Ordering::Relaxed);
        let bound = std::time::Instant::now() + 60 * UPKEEP;
        while UPKEEPS.load(Ordering::Relaxed) < before + 2 {
            assert!(
                std::time::Instant::now() < bound,
                "no upkeep within {:?}",
                60 * UPKEEP
            );
            std::thread::sleep(UPKEEP / 10);
        }
    }
}
