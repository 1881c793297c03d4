//! The demo host: the seed's sample services running on a real host.
//!
//! Run with: `cargo run -p koan-demo`
//!
//! This first cut runs the startup, background and periodic patterns on an
//! in-memory log table and prints the services' status every few seconds; the
//! HTTP control plane, dashboard and SQLite store arrive with their issues.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use koan::{
    Background, BackgroundService, BoxError, BuildContext, FromContext, Host, Periodic,
    PeriodicService, Service, ServiceContext, ServiceOptions, Startup, StartupService,
};

/// Log entries with their creation time; shared by the services.
#[derive(Default)]
struct LogTable {
    ready: AtomicBool,
    rows: Mutex<Vec<SystemTime>>,
}

fn table(cx: &BuildContext<'_>) -> koan::Result<Arc<LogTable>> {
    Ok(cx.resource::<Arc<LogTable>>()?.as_ref().clone())
}

/// Startup: prepares the table before anything else runs.
struct DatabaseMigrationService(Arc<LogTable>);
impl FromContext for DatabaseMigrationService {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(Self(table(cx)?))
    }
}
impl Service for DatabaseMigrationService {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::default()
            .order(1)
            .timeout(Duration::from_secs(60))
    }
    async fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Acquire)
    }
}
impl StartupService for DatabaseMigrationService {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.0.ready.store(true, Ordering::Release);
        tracing::info!("schema ready");
        Ok(())
    }
}

/// Background: writes log entries continuously, some of them already old.
struct LogProducer(Arc<LogTable>);
impl FromContext for LogProducer {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(Self(table(cx)?))
    }
}
impl Service for LogProducer {
    type Kind = Background;
}
impl BackgroundService for LogProducer {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let mut n: u64 = 0;
        while cx.sleep(Duration::from_millis(500)).await {
            n += 1;
            let age = if n % 3 == 0 {
                Duration::from_secs(40 * 24 * 3600)
            } else {
                Duration::ZERO
            };
            if let Ok(mut rows) = self.0.rows.lock() {
                rows.push(SystemTime::now() - age);
            }
        }
        Ok(())
    }
}

/// Periodic: deletes entries older than 30 days.
struct DataCleanupService(Arc<LogTable>);
impl FromContext for DataCleanupService {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(Self(table(cx)?))
    }
}
impl Service for DataCleanupService {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::default()
            .every(Duration::from_secs(5))
            .run_on_startup(true)
    }
}
impl PeriodicService for DataCleanupService {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        let cutoff = SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
        let mut rows = self.0.rows.lock().map_err(|_| "log table poisoned")?;
        let before = rows.len();
        rows.retain(|t| *t >= cutoff);
        tracing::info!(
            deleted = before - rows.len(),
            remaining = rows.len(),
            "data cleanup completed"
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let host = Host::builder()
        .resource(Arc::new(LogTable::default()))
        .service::<DatabaseMigrationService>()
        .service::<LogProducer>()
        .service::<DataCleanupService>()
        .build()?;
    let handle = host.handle();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        loop {
            every.tick().await;
            for s in handle.statuses() {
                tracing::info!(service = %s.name, state = %s.state, runs = s.runs, failures = s.failures, "status");
            }
        }
    });
    println!("koan-demo running; press Ctrl-C to stop");
    host.run().await?;
    Ok(())
}
