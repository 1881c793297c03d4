//! B6: many services — start-to-ready, shutdown, memory per idle service (each size in
//! a fresh child process, so freed memory of an earlier size does not hide growth), and
//! scheduling lateness of 10k periodic services against tokio-cron-scheduler.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use koan::{
    Background, BackgroundService, BoxError, Host, Periodic, PeriodicService, Service,
    ServiceContext, ServiceOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::common::{Better, Opts, Row, median, percentile, vm_rss_kib};

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

/// A size measured in fresh children: three times below 100,000 services, each
/// figure the median of its three (a start or stop of a few ms swings with the
/// machine), once at 100,000 (seconds, and steady).
async fn run_children(mode: &str, n: usize) -> anyhow::Result<ScaleResult> {
    let times = if n < 100_000 { 3 } else { 1 };
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

// ---------------------------------------------------------------- lateness

const PERIOD: Duration = Duration::from_millis(100);

/// Lateness samples (µs) and tick counts, shared by every periodic job of a run.
#[derive(Default)]
struct Lateness {
    measuring: AtomicBool,
    samples: Mutex<Vec<f64>>,
    ticks: AtomicUsize,
}

impl Lateness {
    /// Records a run at `now` of a job whose grid starts at `anchor`: the lateness is
    /// the distance to the latest grid point at or before `now`.
    fn record(&self, anchor: Instant, now: Instant) {
        if !self.measuring.load(Ordering::Acquire) || now < anchor {
            return;
        }
        let since = (now - anchor).as_nanos();
        let late = since % PERIOD.as_nanos();
        self.ticks.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.samples.lock() {
            s.push(late as f64 / 1e3);
        }
    }

    fn reset(&self) {
        self.measuring.store(false, Ordering::Release);
        self.ticks.store(0, Ordering::Release);
        if let Ok(mut s) = self.samples.lock() {
            s.clear();
        }
    }

    fn take(&self) -> (Vec<f64>, usize) {
        self.measuring.store(false, Ordering::Release);
        let s = self
            .samples
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        (s, self.ticks.load(Ordering::Acquire))
    }
}

struct Ticker {
    lateness: Arc<Lateness>,
    /// The instant of this service's first due tick, learnt on its first run.
    anchor: Mutex<Option<Instant>>,
}

impl Service for Ticker {
    type Kind = Periodic;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Ticker").every(PERIOD)
    }
}

impl PeriodicService for Ticker {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let now = Instant::now();
        let known = self.anchor.lock().ok().and_then(|g| *g);
        match known {
            Some(anchor) => self.lateness.record(anchor, now),
            None => {
                // The due time of this first run is the status' `next_run` (it moves on
                // only after the run); the grid is anchored there.
                let host = cx.host().ok_or("no host")?;
                let status = host.status(cx.name())?;
                let due = status.next_run.ok_or("no next_run")?;
                let wall_now = chrono::Utc::now();
                let behind = (wall_now - due).to_std().unwrap_or(Duration::ZERO);
                if let Ok(mut g) = self.anchor.lock() {
                    *g = Some(now - behind);
                }
            }
        }
        Ok(())
    }
}

/// One koan round: `n` periodic services every 100 ms, measured for `window`.
async fn koan_lateness(
    n: usize,
    window: Duration,
    l: &Arc<Lateness>,
) -> anyhow::Result<(Vec<f64>, usize)> {
    l.reset();
    let mut b = Host::builder().shutdown_grace(Duration::from_secs(30));
    for i in 0..n {
        b = b.instance_named(
            format!("tick-{i}"),
            Ticker {
                lateness: Arc::clone(l),
                anchor: Mutex::new(None),
            },
        );
    }
    let host = b.build()?.start();
    host.started().await?;
    // Every service has run once (and learnt its grid) after one period; settle.
    tokio::time::sleep(PERIOD * 3).await;
    l.measuring.store(true, Ordering::Release);
    tokio::time::sleep(window).await;
    let out = l.take();
    host.shutdown();
    host.wait().await.into_result()?;
    Ok(out)
}

/// One round of bare tokio tasks, each on a `tokio::time::interval` of the same
/// period (the floor the runtime itself sets on these 2 cores).
async fn raw_lateness(
    n: usize,
    window: Duration,
    l: &Arc<Lateness>,
) -> anyhow::Result<(Vec<f64>, usize)> {
    l.reset();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let l = Arc::clone(l);
            tokio::spawn(async move {
                let anchor = Instant::now() + PERIOD;
                let mut iv = tokio::time::interval_at(anchor.into(), PERIOD);
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    iv.tick().await;
                    l.record(anchor, Instant::now());
                }
            })
        })
        .collect();
    tokio::time::sleep(PERIOD * 3).await;
    l.measuring.store(true, Ordering::Release);
    tokio::time::sleep(window).await;
    let out = l.take();
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(out)
}

/// One tokio-cron-scheduler round with the same jobs.
async fn tcs_lateness(
    n: usize,
    window: Duration,
    l: &Arc<Lateness>,
) -> anyhow::Result<(Vec<f64>, usize)> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    l.reset();
    let mut sched = JobScheduler::new().await.map_err(|e| anyhow!("tcs: {e}"))?;
    for _ in 0..n {
        let anchor = Instant::now();
        let l = Arc::clone(l);
        let job = Job::new_repeated_async(PERIOD, move |_id, _lock| {
            let l = Arc::clone(&l);
            Box::pin(async move { l.record(anchor, Instant::now()) })
        })
        .map_err(|e| anyhow!("tcs job: {e}"))?;
        sched.add(job).await.map_err(|e| anyhow!("tcs add: {e}"))?;
    }
    sched.start().await.map_err(|e| anyhow!("tcs start: {e}"))?;
    tokio::time::sleep(PERIOD * 3).await;
    l.measuring.store(true, Ordering::Release);
    tokio::time::sleep(window).await;
    let out = l.take();
    sched
        .shutdown()
        .await
        .map_err(|e| anyhow!("tcs shutdown: {e}"))?;
    Ok(out)
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

    // Lateness: alternate koan and tokio-cron-scheduler rounds.
    let n = opts.pick(10_000, 1_000);
    let window = opts.pick(Duration::from_secs(3), Duration::from_millis(1200));
    let rounds = opts.rounds(2);
    let l = Arc::new(Lateness::default());
    let (mut k99, mut t99, mut kfrac, mut tfrac) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut r99 = Vec::new();
    let due = n as f64 * window.as_secs_f64() / PERIOD.as_secs_f64();
    let solo = crate::common::solo();
    let print = |who: &str, s: &[f64]| {
        eprintln!(
            "{who} lateness ms: p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            percentile(s, 50.0) / 1e3,
            percentile(s, 90.0) / 1e3,
            percentile(s, 99.0) / 1e3,
            percentile(s, 100.0) / 1e3
        );
    };
    for _ in 0..rounds {
        // Solo: 0 runs koan's rounds only, 1 the bare tokio ones, 2 the peer's.
        if solo.is_none_or(|i| i == 0) {
            let (s, ticks) = koan_lateness(n, window, &l).await?;
            if solo.is_some() {
                print("koan", &s);
            }
            k99.push(percentile(&s, 99.0) / 1e3);
            kfrac.push(ticks as f64 / due);
        }
        if solo.is_none_or(|i| i == 1) {
            let (s, _) = raw_lateness(n, window, &l).await?;
            if solo.is_some() {
                print("raw", &s);
            }
            r99.push(percentile(&s, 99.0) / 1e3);
        }
        if solo.is_none_or(|i| i == 2) {
            let (s, ticks) = tcs_lateness(n, window, &l).await?;
            t99.push(if s.is_empty() {
                f64::NAN
            } else {
                percentile(&s, 99.0) / 1e3
            });
            tfrac.push(ticks as f64 / due);
        }
    }
    let k = median(&k99);
    let t = median(&t99);
    let t_opt = (!t.is_nan()).then_some(t);
    let bare = (!r99.is_empty()).then(|| median(&r99));
    let row = Row::new(
        "B6",
        &format!("{n} periodic services @100 ms: lateness p99"),
        "ms",
        Better::Lower,
        k,
    )
    .baseline("tokio-cron-scheduler", t_opt)
    .baseline("raw tokio interval", bare);
    let met = Some(k <= 5.0 && bare.is_none_or(|b| k <= 1.5 * b) && t_opt.is_none_or(|t| k < t));
    rows.push(row.goal("≤ 5 ms, ≤ 1.5× raw interval and below the peer", met).note(format!(
        "ticks run / due: koan {:.0}%, tokio-cron-scheduler {:.0}%; {rounds} rounds × {:.1} s",
        median(&kfrac) * 100.0,
        median(&tfrac) * 100.0,
        window.as_secs_f64()
    )));
    Ok(rows)
}
