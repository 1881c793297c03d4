//! Run with: `cargo run -p koan --example database_migration_service`
//!
//! The seed's `DatabaseMigrationService`: a startup service (order 1, 60 s timeout,
//! fail-fast) that migrates the schema before any other service starts, and reports
//! ready only once the database answers. A background service that needs the schema
//! starts after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use koan::{
    BackgroundService, BoxError, Host, ServiceContext, StartupService, service::BuildContext,
    service::FromContext,
};

/// Stands in for the seed's `IDataContext`.
#[derive(Default)]
struct DataContext {
    schema_version: AtomicU32,
    connected: AtomicBool,
}

/// `[KoanStartupService(StartupOrder = 1, ContinueOnFailure = false, TimeoutSeconds = 60)]`
#[koan::service(startup, order = 1, continue_on_failure = false, timeout = "60s", ready = Self::can_connect)]
struct DatabaseMigrationService {
    db: Arc<DataContext>,
}

impl FromContext for DatabaseMigrationService {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(DatabaseMigrationService {
            db: cx.resource::<Arc<DataContext>>()?.as_ref().clone(),
        })
    }
}

impl DatabaseMigrationService {
    /// The seed's `IsReadyAsync`: ready once the database answers.
    async fn can_connect(&self) -> bool {
        self.db.connected.load(Ordering::Acquire)
    }
}

impl StartupService for DatabaseMigrationService {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        tracing::info!("starting database migration");
        for version in 1..=3 {
            tokio::time::sleep(Duration::from_millis(50)).await; // apply migration `version`
            self.db.schema_version.store(version, Ordering::Release);
        }
        self.db.connected.store(true, Ordering::Release);
        tracing::info!("database migration completed");
        Ok(())
    }
}

#[koan::service]
struct ReportWriter {
    db: Arc<DataContext>,
}

impl FromContext for ReportWriter {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(ReportWriter {
            db: cx.resource::<Arc<DataContext>>()?.as_ref().clone(),
        })
    }
}

impl BackgroundService for ReportWriter {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let v = self.db.schema_version.load(Ordering::Acquire);
        println!("ReportWriter started on schema version {v}");
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), koan::Error> {
    tracing_subscriber::fmt().with_target(false).init();
    let host = Host::builder()
        .resource(Arc::new(DataContext::default()))
        .discover()
        .build()?
        .start();
    println!("ready before startup: {}", host.ready().await.ready);
    host.started().await?;
    let readiness = host.ready().await;
    println!(
        "ready after startup: {} {:?}",
        readiness.ready, readiness.reasons
    );
    host.shutdown();
    host.wait().await.into_result()
}
