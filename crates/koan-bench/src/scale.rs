//! B6: many services — start-to-ready, shutdown, memory per idle service (each size in
//! a fresh child process, so freed memory of an earlier size does not hide growth);
//! the scheduling lateness of 10k periodic services is in [`crate::lateness`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use koan::{
    Background, BackgroundService, BoxError, Host, Service, ServiceContext, ServiceOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::common::{Better, Opts, Row, median, vm_rss_kib};

/// What one child process measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ScaleResult {
    pub(crate) count: usize,
    pub(crate) ready_ms: f64,
    pub(crate) shutdown_ms: f64,
    pub(crate) rss_per_service_bytes: f64,
}

/// How many of `target` services are running; the last to arrive wakes the waiter at
/// once. (The waiter used to poll every 200 µs, which tokio's timer rounds up to
/// 1 ms: ±1 ms on a start of a few ms made the 1,000-service figure, and the growth
/// ratio built on it, swing by half.)
struct Arrivals {
    count: AtomicUsize,
    target: usize,
    all: tokio::sync::Notify,
}

impl Arrivals {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Arrivals {
            count: AtomicUsize::new(0),
            target,
            all: tokio::sync::Notify::new(),
        })
    }

    fn arrive(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            // A permit is kept if the waiter is not waiting yet.
            self.all.notify_one();
        }
    }

    async fn all_running(&self) -> anyhow::Result<()> {
        if self.count.load(Ordering::Acquire) >= self.target {
            return Ok(());
        }
        tokio::time::timeout(Duration::from_secs(300), self.all.notified())
            .await
            .map_err(|_| {
                anyhow!(
                    "only {} of {} running after 300 s",
                    self.count.load(Ordering::Acquire),
                    self.target
                )
            })
    }
}

/// An idle background service: counts itself running, then waits to be stopped.
struct Idle {
    running: Arc<Arrivals>,
}

impl Service for Idle {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Idle")
    }
}

impl BackgroundService for Idle {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.running.arrive();
        cx.cancelled().await;
        Ok(())
    }
}

/// The child side: `koan-bench __scale koan|raw <n>`; prints one JSON line.
pub(crate) async fn child(mode: &str, n: usize) -> anyhow::Result<ScaleResult> {
    let running = Arrivals::new(n);
    let rss0 = vm_rss_kib().context("no VmRSS")?;
    let (ready_ms, rss1, shutdown_ms) = match mode {
        "koan" => {
            let mut b = Host::builder().shutdown_grace(Duration::from_secs(60));
            for i in 0..n {
                b = b.instance_named(
                    format!("idle-{i}"),
                    Idle {
                        running: Arc::clone(&running),
                    },
                );
            }
            // Start-to-ready: building (constructing every cell) and starting, until
            // every service's `run` is executing.
            let t = Instant::now();
            let host = b.build()?.start();
            host.started().await?;
            running.all_running().await?;
            let ready = t.elapsed();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let rss1 = vm_rss_kib().context("no VmRSS")?;
            let t = Instant::now();
            host.shutdown();
            host.wait().await.into_result()?;
            (ready, rss1, t.elapsed())
        }
        "raw" => {
            let (tx, rx) = watch::channel(false);
            let t = Instant::now();
            let mut tasks = Vec::with_capacity(n);
            for _ in 0..n {
                let (mut rx, running) = (rx.clone(), Arc::clone(&running));
                tasks.push(tokio::spawn(async move {
                    running.arrive();
                    let _ = rx.wait_for(|stop| *stop).await;
                }));
            }
            running.all_running().await?;
            let ready = t.elapsed();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let rss1 = vm_rss_kib().context("no VmRSS")?;
            let t = Instant::now();
            tx.send_replace(true);
            for task in tasks {
                task.await?;
            }
            (ready, rss1, t.elapsed())
        }
        other => return Err(anyhow!("unknown scale mode `{other}`")),
    };
    Ok(ScaleResult {
        count: n,
        ready_ms: ready_ms.as_secs_f64() * 1e3,
        shutdown_ms: shutdown_ms.as_secs_f64() * 1e3,
        rss_per_service_bytes: rss1.saturating_sub(rss0) as f64 * 1024.0 / n as f64,
    })
}

async fn run_child(mode: &str, n: usize) -> anyhow::Result<ScaleResult> {
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .args(["__scale", mode, &n.to_string()])
        .output()
        .await?;
    if !out.status.success() {
        return Err(anyhow!(
            "scale child ({mode}, {n}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(line.trim())?)
}

/// A size measured in fresh children, each figure the median of theirs: five
/// below 100,000 services (a start or stop of a few ms swings with the machine),
/// three at 100,000 (under a second each). The growth ratio divides the largest
/// size's cost by the smallest's; with three children at 1,000 and one at
/// 100,000, one unusually fast 1,000-service shutdown (0.73 ms against
/// 1.64–2.02 ms) once made it 2.11× (thirty-seventh round).
async fn run_children(mode: &str, n: usize) -> anyhow::Result<ScaleResult> {
    let times = if n < 100_000 { 5 } else { 3 };
    let mut all = Vec::with_capacity(times);
    for _ in 0..times {
        all.push(run_child(mode, n).await?);
    }
    let of = |f: fn(&ScaleResult) -> f64| median(&all.iter().map(f).collect::<Vec<_>>());
    Ok(ScaleResult {
        count: n,
        ready_ms: of(|r| r.ready_ms),
        shutdown_ms: of(|r| r.shutdown_ms),
        rss_per_service_bytes: of(|r| r.rss_per_service_bytes),
    })
}

pub(crate) async fn b6(opts: Opts) -> anyhow::Result<Vec<Row>> {
    let sizes: &[usize] = if crate::common::solo().is_some() {
        &[]
    } else if opts.quick {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let mut rows = Vec::new();
    let mut koan_res = Vec::new();
    for &n in sizes {
        let k = run_children("koan", n).await?;
        let r = run_children("raw", n).await?;
        rows.push(
            Row::new(
                "B6",
                &format!("{n} services: start-to-ready"),
                "ms",
                Better::Lower,
                k.ready_ms,
            )
            .baseline("raw tokio tasks (info)", Some(r.ready_ms)),
        );
        rows.push(
            Row::new(
                "B6",
                &format!("{n} services: shutdown"),
                "ms",
                Better::Lower,
                k.shutdown_ms,
            )
            .baseline("raw tokio tasks (info)", Some(r.shutdown_ms)),
        );
        let kib = k.rss_per_service_bytes / 1024.0;
        rows.push(
            Row::new(
                "B6",
                &format!("{n} idle services: RSS per service"),
                "KiB",
                Better::Lower,
                kib,
            )
            .baseline(
                "raw tokio task (info)",
                Some(r.rss_per_service_bytes / 1024.0),
            )
            .goal("≤ 16 KiB", Some(kib <= 16.0)),
        );
        koan_res.push(k);
    }
    if let (Some(first), Some(last)) = (koan_res.first(), koan_res.last())
        && koan_res.len() > 1
    {
        let per = |ms: f64, n: usize| ms / n as f64 * 1e3;
        let ready_growth = per(last.ready_ms, last.count) / per(first.ready_ms, first.count);
        let stop_growth = per(last.shutdown_ms, last.count) / per(first.shutdown_ms, first.count);
        let worst = ready_growth.max(stop_growth);
        rows.push(
            Row::new(
                "B6",
                &format!(
                    "per-service cost at {} ÷ at {} (start {:.2}×, shutdown {:.2}×)",
                    last.count, first.count, ready_growth, stop_growth
                ),
                "×",
                Better::Lower,
                worst,
            )
            .goal("linear: ≤ 2×", Some(worst <= 2.0)),
        );
    }
    rows.extend(crate::lateness::rows(opts).await?);
    Ok(rows)
}
