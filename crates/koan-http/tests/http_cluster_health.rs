//! `GET /api/services` shows another host's service with the health its own check
//! reported there (from that host's registry entry), and its sentence: before, the
//! row's health was judged from the service's run counts alone, and a service
//! degraded by its own check read "healthy" from every other host (found by a
//! probe). An entry without reports (a host older than them) is judged as before.

use std::collections::BTreeMap;

use koan::health::HealthReport;
use koan::status::ServiceStatus;
use koan::transport::{BoxFuture, Instance, RemoteCall, Transport};
use koan::{BackgroundService, BoxError, ServiceContext};
use koan_test_support::http::{Api, send};
use serde_json::{Value, json};

/// A cluster of two other hosts, as their registry entries announce them.
#[derive(Debug)]
struct TwoOthers;

/// A status of a background service `name` in `state`, `failures` failed in a row.
fn status(name: &str, state: &str, failures: u32) -> ServiceStatus {
    serde_json::from_value(json!({
        "name": name, "kind": "background", "state": state, "enabled": true,
        "critical": false, "started_at": null, "last_run": null, "next_run": null,
        "runs": 0, "failures": failures, "consecutive_failures": failures, "restarts": 0,
        "queue_depth": 0, "in_flight": 0, "last_error": null,
    }))
    .unwrap_or_else(|e| panic!("a status: {e}"))
}

impl Transport for TwoOthers {
    fn call(&self, call: RemoteCall) -> BoxFuture<'_, koan::Result<Value>> {
        Box::pin(async move {
            Err(koan::Error::new(
                koan::error::ErrorKind::ServiceUnavailable,
                format!("not served here: `{}`", call.service),
            ))
        })
    }

    fn host_id(&self) -> Option<String> {
        Some("this-host".into())
    }

    fn instances(&self) -> BoxFuture<'_, koan::Result<Vec<Instance>>> {
        Box::pin(async {
            let reports = BTreeMap::from([
                (
                    "Gauge".to_owned(),
                    HealthReport::degraded("the translation backlog is 1200"),
                ),
                (
                    "Store".to_owned(),
                    HealthReport::unhealthy("cannot reach the database"),
                ),
                // Checked before it failed: announced beside its failure until
                // the next round of checks ends.
                ("Crashed".to_owned(), HealthReport::healthy("all good")),
            ]);
            let current = Instance::new(
                "current-host",
                vec![
                    status("Gauge", "running", 0),
                    status("Store", "running", 0),
                    status("Crashed", "failed", 1),
                ],
            )
            .health(reports);
            let older = Instance::new(
                "older-host",
                vec![status("Broken", "failed", 1), status("Fine", "running", 0)],
            );
            Ok(vec![current, older])
        })
    }
}

/// Its own check says degraded.
#[koan::service(health = Self::check)]
#[derive(Default)]
struct Local;

impl Local {
    async fn check(&self) -> HealthReport {
        HealthReport::degraded("half the disk is used")
    }
}

impl BackgroundService for Local {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test]
async fn remote_rows_show_the_health_their_hosts_reported() -> anyhow::Result<()> {
    let host = koan::Host::builder()
        .transport(std::sync::Arc::new(TwoOthers))
        .instance(Local)
        .build()?
        .start();
    let api = Api::open(host).await?;
    let (code, _, body) = send(api.get("/api/services")).await?;
    assert_eq!(code, 200, "{body}");
    let rows = body.as_array().cloned().unwrap_or_default();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no row of {name}: {body}"))
    };
    let said = |r: &Value| (r["health"].clone(), r["health_description"].clone());
    assert_eq!(
        said(&row("Gauge")),
        (json!("degraded"), json!("the translation backlog is 1200"))
    );
    assert_eq!(
        said(&row("Store")),
        (json!("unhealthy"), json!("cannot reach the database"))
    );
    // Failed since its last report: unhealthy, without the report's sentence
    // (it read healthy until the next round of checks; a review).
    assert_eq!(said(&row("Crashed")), (json!("unhealthy"), Value::Null));
    // A host older than the reports: judged from the status, as before.
    assert_eq!(said(&row("Broken")), (json!("unhealthy"), Value::Null));
    assert_eq!(said(&row("Fine")), (json!("healthy"), Value::Null));
    // This host's own row says its sentence too.
    assert_eq!(
        said(&row("Local")),
        (json!("degraded"), json!("half the disk is used"))
    );
    api.stop().await?;
    Ok(())
}
