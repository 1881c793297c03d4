//! Run with: `cargo run -p koan --example data_cleanup_service`
//!
//! The seed's `DataCleanupService`: a periodic service (hourly, run on startup) that
//! deletes log entries older than the retention period. It is also pokable: the
//! example triggers it on demand and sends it a `process-batch` with arguments.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use koan::{
    BoxError, Host, PeriodicService, ServiceContext, service::BatchRequest, service::BuildContext,
    service::FromContext,
};

/// A tiny in-memory log table, shared with the host as a resource.
#[derive(Default)]
struct LogStore {
    entries: Mutex<Vec<SystemTime>>,
}

impl LogStore {
    fn add(&self, age: Duration) {
        if let Ok(mut e) = self.entries.lock() {
            e.push(SystemTime::now() - age);
        }
    }
    fn delete_older_than(&self, cutoff: SystemTime, limit: usize) -> usize {
        let Ok(mut e) = self.entries.lock() else {
            return 0;
        };
        let before = e.len();
        let mut removed = 0;
        e.retain(|t| {
            if *t < cutoff && removed < limit {
                removed += 1;
                false
            } else {
                true
            }
        });
        before - e.len()
    }
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

/// `[KoanPeriodicService(IntervalSeconds = 3600, RunOnStartup = true)]`
#[koan::service(
    every = "1h",
    run_on_startup,
    description = "Deletes log entries older than 30 days"
)]
struct DataCleanupService {
    store: Arc<LogStore>,
    retention: Duration,
}

impl FromContext for DataCleanupService {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(DataCleanupService {
            store: cx.resource::<Arc<LogStore>>()?.as_ref().clone(),
            retention: Duration::from_secs(30 * 24 * 3600),
        })
    }
}

impl DataCleanupService {
    fn cleanup(&self, limit: usize) -> usize {
        let cutoff = SystemTime::now() - self.retention;
        let deleted = self.store.delete_older_than(cutoff, limit);
        tracing::info!(
            deleted,
            remaining = self.store.len(),
            "data cleanup completed"
        );
        deleted
    }
}

impl PeriodicService for DataCleanupService {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.cleanup(usize::MAX);
        Ok(())
    }

    async fn process_batch(
        &self,
        batch: BatchRequest,
        _cx: ServiceContext,
    ) -> Result<(), BoxError> {
        let limit = batch.batch_size.unwrap_or(1000) as usize;
        tracing::info!(limit, filter = ?batch.filter, "processing a batch");
        self.cleanup(limit);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), koan::Error> {
    tracing_subscriber::fmt().with_target(false).init();
    let store = Arc::new(LogStore::default());
    for _ in 0..5 {
        store.add(Duration::from_secs(40 * 24 * 3600));
    }
    let host = Host::builder()
        .resource(Arc::clone(&store))
        .discover()
        .build()?
        .start();
    host.started().await?;
    // The startup run (run_on_startup) has happened once startup is done and the
    // driver started; trigger and process-batch below are queued behind it.

    let cleanup = host.services::<DataCleanupService>();
    for _ in 0..3 {
        store.add(Duration::from_secs(40 * 24 * 3600));
    }
    let outcome = cleanup.trigger().await?;
    println!(
        "trigger: coalesced={} outcome={:?}",
        outcome.coalesced, outcome.run.outcome
    );
    for _ in 0..4 {
        store.add(Duration::from_secs(40 * 24 * 3600));
    }
    cleanup
        .process_batch(BatchRequest::new(Some(2), Some("old".into())))
        .await?;
    let status = cleanup.status().await?;
    println!(
        "runs={} remaining={} next_run={:?}",
        status.runs,
        store.len(),
        status.next_run
    );
    host.shutdown();
    host.wait().await.into_result()
}
