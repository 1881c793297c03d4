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

/// How many fresh children measure a size, each figure the median of theirs: five
/// below 100,000 services (a start or stop of a few ms swings with the machine),
/// three at 100,000 (under a second each).
fn children(n: usize) -> usize {
    if n < 100_000 { 5 } else { 3 }
}

/// How many children a round's figure of a size is the median of: three below
/// 10,000 services, whose start and stop take a millisecond or two, one above.
/// With one, a round's shutdown of 1,000 services swung enough to make the
/// growth 2.07× once in the forty-second round, where the medians of each size's
/// five and three shutdowns gave 1.13×.
fn per_round(n: usize) -> usize {
    if n < 10_000 { 3 } else { 1 }
}

/// Every size's children for koan (`[0]`) and raw tokio (`[1]`), taken in rounds
/// (each size once a round, koan then raw), not size after size: a change of the
/// machine's pace (this VM has a slower and a faster mode) then falls on every
/// size alike, and the growth ratio is taken round by round. Size after size,
/// one fast run of 1,000-service shutdowns (0.63 ms against 1.3–2.1 ms) once
/// made the growth 2.49× (thirty-ninth round). A round's figure of a small size
/// is the median of [`per_round`] children, run back to back.
async fn run_sizes(sizes: &[usize]) -> anyhow::Result<[Vec<Vec<ScaleResult>>; 2]> {
    let mut all = [vec![Vec::new(); sizes.len()], vec![Vec::new(); sizes.len()]];
    let rounds = sizes.iter().map(|&n| children(n)).max().unwrap_or(0);
    for round in 0..rounds {
        for (i, &n) in sizes.iter().enumerate() {
            if round < children(n) {
                let (mut koan, mut raw) = (Vec::new(), Vec::new());
                for _ in 0..per_round(n) {
                    koan.push(run_child("koan", n).await?);
                    raw.push(run_child("raw", n).await?);
                }
                all[0][i].push(summary(&koan, n));
                all[1][i].push(summary(&raw, n));
            }
        }
    }
    Ok(all)
}

/// One size's figures: the median of its children's.
fn summary(all: &[ScaleResult], n: usize) -> ScaleResult {
    let of = |f: fn(&ScaleResult) -> f64| median(&all.iter().map(f).collect::<Vec<_>>());
    ScaleResult {
        count: n,
        ready_ms: of(|r| r.ready_ms),
        shutdown_ms: of(|r| r.shutdown_ms),
        rss_per_service_bytes: of(|r| r.rss_per_service_bytes),
    }
}

/// The median over the rounds of the per-service cost at the largest size ÷ at
/// the smallest, each round's two measured in the same round: (start, shutdown).
fn growth(first: &[ScaleResult], last: &[ScaleResult]) -> (f64, f64) {
    let per = |ms: f64, n: usize| ms / n as f64;
    let ratio = |f: fn(&ScaleResult) -> f64| {
        let each: Vec<f64> = first
            .iter()
            .zip(last)
            .map(|(a, b)| per(f(b), b.count) / per(f(a), a.count))
            .collect();
        median(&each)
    };
    (ratio(|r| r.ready_ms), ratio(|r| r.shutdown_ms))
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
    let [koan_all, raw_all] = run_sizes(sizes).await?;
    for (i, &n) in sizes.iter().enumerate() {
        let k = summary(&koan_all[i], n);
        let r = summary(&raw_all[i], n);
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
    }
    if let (Some(first), Some(last), true) = (koan_all.first(), koan_all.last(), sizes.len() > 1) {
        let (ready_growth, stop_growth) = growth(first, last);
        let worst = ready_growth.max(stop_growth);
        rows.push(
            Row::new(
                "B6",
                &format!(
                    "per-service cost at {} ÷ at {}, median of the rounds' (start {:.2}×, shutdown {:.2}×)",
                    sizes[sizes.len() - 1], sizes[0], ready_growth, stop_growth
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
