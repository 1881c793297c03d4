//! Run with: `cargo run -p koan --example system_health_monitor`
//!
//! The seed's `SystemHealthMonitor`: a background service that checks the machine on
//! its own timer until the host stops it. Here it reads the load average and the
//! memory in use from `/proc` every second, reports degraded health above a
//! threshold, and the example stops the host after a few checks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use koan::{BackgroundService, BoxError, Host, ServiceContext, health::HealthReport};

/// `[KoanBackgroundService(Enabled = true, RunInProduction = true)]`
#[koan::service(
    enabled = true,
    run_in_production = true,
    description = "Checks CPU load and memory on a timer",
    health = Self::check
)]
#[derive(Default)]
struct SystemHealthMonitor {
    checks: AtomicU64,
    last_memory_percent: AtomicU64,
}

impl SystemHealthMonitor {
    async fn check(&self) -> HealthReport {
        let mem = self.last_memory_percent.load(Ordering::Relaxed);
        if mem > 85 {
            HealthReport::degraded(format!("memory at {mem}%"))
        } else {
            HealthReport::healthy(format!("memory at {mem}%"))
        }
    }
}

impl BackgroundService for SystemHealthMonitor {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        // Like the seed's PeriodicTimer loop: check, then wait — until cancelled.
        loop {
            let (load, mem) = read_system();
            self.last_memory_percent.store(mem, Ordering::Relaxed);
            let n = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::info!(
                check = n,
                load1 = load,
                memory_percent = mem,
                "system health check"
            );
            if !cx.sleep(Duration::from_secs(1)).await {
                return Ok(());
            }
        }
    }
}

/// The 1-minute load average and the percentage of memory in use.
fn read_system() -> (f64, u64) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (total, available) = (field("MemTotal:"), field("MemAvailable:"));
    let used = ((total - available.min(total)) * 100)
        .checked_div(total)
        .unwrap_or(0);
    (load, used)
}

#[tokio::main]
async fn main() -> Result<(), koan::Error> {
    tracing_subscriber::fmt().with_target(false).init();
    // Discovered without registration (the seed's `AddKoan()`).
    let host = Host::builder().discover().build()?.start();
    host.started().await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let health = host.services::<SystemHealthMonitor>().health().await?;
    println!(
        "SystemHealthMonitor health: {:?} ({})",
        health.report.status,
        health.report.description.unwrap_or_default()
    );
    host.shutdown();
    host.wait().await.into_result()
}
