//! `SystemHealthMonitor`: reads the machine's CPU and memory use on a timer, logs each
//! reading to the database and reports degraded health above the thresholds.

use std::sync::Mutex;
use std::time::Duration;

use koan::{
    BackgroundService, BoxError, ServiceContext, health::HealthReport, service::BuildContext,
    service::FromContext,
};
use serde::{Deserialize, Serialize};

use crate::db::{Db, now_secs};

/// Alert thresholds (`Settings.AlertThresholds`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AlertThresholds {
    /// CPU use that turns the service degraded.
    pub cpu_percent: f64,
    /// Memory use that turns the service degraded.
    pub memory_percent: f64,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            cpu_percent: 80.0,
            memory_percent: 85.0,
        }
    }
}

/// Settings of the monitor: how often it checks (in minutes, or in seconds for demos)
/// and when it reports degraded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MonitorSettings {
    /// Minutes between checks.
    pub check_interval_minutes: Option<u64>,
    /// Seconds between checks (wins over minutes; the demo's default is 5).
    pub check_interval_seconds: Option<u64>,
    /// When to report degraded.
    pub alert_thresholds: AlertThresholds,
}

/// One reading.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reading {
    /// CPU use since the previous reading, in percent.
    pub cpu_percent: f64,
    /// Memory in use, in percent.
    pub memory_percent: f64,
}

/// Watches CPU and memory.
#[koan::service(description = "Reads CPU and memory use, logs them, alerts above thresholds",
    event(name = "SystemHealth.Checked", payload = Reading), health = Self::check)]
#[derive(Debug)]
pub struct SystemHealthMonitor {
    db: Db,
    settings: MonitorSettings,
    last: Mutex<Option<Reading>>,
}

impl FromContext for SystemHealthMonitor {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(SystemHealthMonitor {
            db: cx.resource::<Db>()?.as_ref().clone(),
            settings: cx.settings()?,
            last: Mutex::new(None),
        })
    }
}

impl SystemHealthMonitor {
    fn interval(&self) -> Duration {
        match (
            self.settings.check_interval_seconds,
            self.settings.check_interval_minutes,
        ) {
            (Some(s), _) => Duration::from_secs(s.max(1)),
            (None, Some(m)) => Duration::from_secs(m.max(1) * 60),
            (None, None) => Duration::from_secs(5),
        }
    }

    async fn check(&self) -> HealthReport {
        let Some(r) = self.last.lock().ok().and_then(|g| *g) else {
            return HealthReport::healthy("no reading yet");
        };
        let t = &self.settings.alert_thresholds;
        let text = format!("cpu {:.1}%, memory {:.1}%", r.cpu_percent, r.memory_percent);
        let report = if r.cpu_percent > t.cpu_percent || r.memory_percent > t.memory_percent {
            HealthReport::degraded(format!("{text} (above thresholds)"))
        } else {
            HealthReport::healthy(text)
        };
        report
            .with_data("cpu_percent", r.cpu_percent)
            .with_data("memory_percent", r.memory_percent)
    }
}

/// Total and idle jiffies from the first line of `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((fields.iter().sum(), idle))
}

fn memory_percent() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
    (total > 0.0).then(|| (total - available) * 100.0 / total)
}

impl BackgroundService for SystemHealthMonitor {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let mut prev = cpu_times();
        loop {
            if !cx.sleep(self.interval()).await {
                return Ok(());
            }
            let now = cpu_times();
            let cpu_percent = match (prev, now) {
                (Some((t0, i0)), Some((t1, i1))) if t1 > t0 => {
                    100.0 * (1.0 - (i1 - i0) as f64 / (t1 - t0) as f64)
                }
                _ => 0.0,
            };
            prev = now;
            let reading = Reading {
                cpu_percent,
                memory_percent: memory_percent().unwrap_or(0.0),
            };
            if let Ok(mut last) = self.last.lock() {
                *last = Some(reading);
            }
            let message = format!(
                "cpu {:.1}% memory {:.1}%",
                reading.cpu_percent, reading.memory_percent
            );
            self.db
                .run(move |c| {
                    c.execute(
                        "INSERT INTO log_entries (created_at, level, message) VALUES (?1, 'info', ?2)",
                        (now_secs(), message),
                    )
                })
                .await?;
            cx.emit("SystemHealth.Checked", reading).await;
        }
    }
}
