//! B6's lateness: 10,000 periodic services every 100 ms, each run's distance from
//! its grid, against bare tokio interval tasks and tokio-cron-scheduler.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use koan::{BoxError, Host, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions};

use crate::common::{Better, Opts, Row, median, percentile};

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

    /// Lets every job run once (and learn its grid) and settle for three periods,
    /// then records the runs of `window`.
    async fn measure(&self, window: Duration) -> (Vec<f64>, usize) {
        tokio::time::sleep(PERIOD * 3).await;
        self.measuring.store(true, Ordering::Release);
        tokio::time::sleep(window).await;
        self.take()
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
    let out = l.measure(window).await;
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
    let out = l.measure(window).await;
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
    let out = l.measure(window).await;
    sched
        .shutdown()
        .await
        .map_err(|e| anyhow!("tcs shutdown: {e}"))?;
    Ok(out)
}

/// The lateness rows of B6: alternating koan, bare-interval and peer rounds.
pub(crate) async fn rows(opts: Opts) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
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
