//! `/metrics`: the `metrics` facade rendered by the Prometheus recorder, plus gauges
//! read from every service's status at scrape time.

use std::fmt::Write;
use std::sync::OnceLock;

use koan::{HostHandle, health::HealthStatus, status::ServiceState};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the global `metrics` recorder (once per
/// process). Returns `false` when another recorder was installed first; `/metrics`
/// then shows only the status gauges.
pub fn install_metrics() -> bool {
    let installed = HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
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
    let gauges: [(&str, &str, &str); 7] = [
        (
            "koan_service_up",
            "gauge",
            "1 when the service is running or idle",
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
                0 => u64::from(matches!(
                    s.state,
                    ServiceState::Running | ServiceState::Idle
                )),
                1 => s.queue_depth as u64,
                2 => s.in_flight as u64,
                3 => s.runs,
                4 => s.failures,
                5 => u64::from(s.restarts),
                _ => match health
                    .services
                    .iter()
                    .find(|h| h.service == s.name)
                    .map(|h| h.report.status)
                {
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
