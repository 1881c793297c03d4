//! Another host's services are shown with the health their own checks report: the
//! registry entry carries each service's last health report (its texts cut to a
//! size every heartbeat can carry). Before, the entry carried none, and a reader
//! judged it from run counts alone: a service its own check called degraded or
//! unhealthy on host A read "healthy" from host B (found by a probe). An entry
//! of a host older than the field (no `health`) is still read, judged as before.

use std::sync::{Arc, Mutex};

use koan::health::{HealthReport, HealthStatus};
use koan::transport::{HostLink as _, Instance};
use koan::{Background, BackgroundService, BoxError, Service, ServiceContext, ServiceOptions};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{wait_for, within};

/// `Gauge`: healthy by its runs, its own check says what the test set.
struct Gauge {
    says: Arc<Mutex<HealthReport>>,
}

impl Service for Gauge {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Gauge")
    }

    async fn health(&self) -> HealthReport {
        self.says
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| HealthReport::unhealthy("poisoned"))
    }
}

impl BackgroundService for Gauge {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// What `reader` shows of `Gauge` on `host`: its instance's health verdict and
/// report, once it is announced.
async fn gauge_seen(reader: &Member, host: &str) -> Option<(HealthStatus, Option<HealthReport>)> {
    let list = reader.host.instances().await.ok()?;
    let i = list.iter().find(|i| i.host_id == host)?;
    let s = i.services.iter().find(|s| s.name == "Gauge")?;
    Some((i.health_of(s), i.health.get("Gauge").cloned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_service_shows_the_health_its_own_check_reports() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let says = Arc::new(Mutex::new(HealthReport::degraded(
        "the translation backlog is 1200",
    )));
    let gauge = Gauge {
        says: Arc::clone(&says),
    };
    let (a, b) =
        Member::worker_and_client(test_options(&server.url()), "Gauge", |h| h.instance(gauge))
            .await?;
    let host_a = a.id();
    // No failed run: by its counts alone it reads healthy.
    assert_eq!(a.host.status("Gauge")?.consecutive_failures, 0);

    let report = wait_for("B to see Gauge's own report", async || {
        Ok(match gauge_seen(&b, &host_a).await {
            Some((HealthStatus::Degraded, Some(r))) => Some(r),
            _ => None,
        })
    })
    .await?;
    assert_eq!(
        report.description.as_deref(),
        Some("the translation backlog is 1200")
    );

    // A change is announced, and a 60 KB sentence is cut, saying so.
    let long = format!("cannot reach the database: {}", "x".repeat(60 * 1024));
    *says.lock().map_err(|_| anyhow::anyhow!("poisoned"))? =
        HealthReport::unhealthy(long).with_error("connection refused");
    let report = wait_for("B to see Gauge unhealthy", async || {
        Ok(match gauge_seen(&b, &host_a).await {
            Some((HealthStatus::Unhealthy, Some(r))) => Some(r),
            _ => None,
        })
    })
    .await?;
    let said = report.description.unwrap_or_default();
    assert!(
        said.starts_with("cannot reach the database: xxx") && said.len() < 2048,
        "{} bytes: {said:.200}",
        said.len()
    );
    assert!(
        said.contains("61467 bytes; the registry keeps the first 512"),
        "{said:.2000}"
    );
    assert_eq!(report.error.as_deref(), Some("connection refused"));
    // The entry itself stays small.
    let kv = async_nats::jetstream::new(b.nats.client().clone())
        .get_key_value("koan_registry")
        .await?;
    let entry = within("A's entry", kv.get(&host_a)).await??;
    let len = entry.map_or(0, |e| e.len());
    assert!(len > 0 && len < 8 * 1024, "A's registry entry: {len} bytes");
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// An entry as a host older than the field writes it (no `health`): read, and
/// its services judged from their status as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_health_reports_is_read_from_an_older_host() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let reader = Member::join(test_options(&server.url()), |h| h).await?;
    let old = serde_json::json!({
        "host_id": "old-host", "seen_at": chrono::Utc::now(),
        "services": [
            {"name": "Broken", "kind": "background", "state": "failed", "enabled": true,
             "critical": false, "started_at": null, "last_run": null, "next_run": null,
             "runs": 0, "failures": 1, "consecutive_failures": 1, "restarts": 0,
             "queue_depth": 0, "in_flight": 0, "last_error": "its database is gone"},
            {"name": "Fine", "kind": "background", "state": "running", "enabled": true,
             "critical": false, "started_at": null, "last_run": null, "next_run": null,
             "runs": 0, "failures": 0, "consecutive_failures": 0, "restarts": 0,
             "queue_depth": 0, "in_flight": 0, "last_error": null}
        ],
    });
    let kv = async_nats::jetstream::new(reader.nats.client().clone())
        .get_key_value("koan_registry")
        .await?;
    // Written again until read: a heartbeat, as its host would.
    let body = serde_json::to_vec(&old)?;
    let i: Instance = wait_for("the older host's entry to be read", async || {
        kv.put("old-host", body.clone().into()).await?;
        Ok(reader
            .host
            .instances()
            .await?
            .into_iter()
            .find(|i| i.host_id == "old-host"))
    })
    .await?;
    assert!(i.health.is_empty());
    let verdicts: Vec<_> = i.services.iter().map(|s| i.health_of(s)).collect();
    assert_eq!(
        verdicts,
        [HealthStatus::Unhealthy, HealthStatus::Healthy],
        "{i:?}"
    );
    reader.stop().await?;
    Ok(())
}
