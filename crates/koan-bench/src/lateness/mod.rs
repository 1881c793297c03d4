//! B6's lateness: 10,000 periodic services every 100 ms, each run's distance from
//! its grid, against bare tokio interval tasks and tokio-cron-scheduler.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use koan::{BoxError, Host, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions};

use crate::common::{Better, Opts, Row, median, percentile};

mod recorder;
use recorder::{Lateness, Window};

const PERIOD: Duration = Duration::from_millis(100);

struct Ticker {
    lateness: Arc<Lateness>,
    /// The instant of this service's first due tick, learnt on its first run.
    /// (Not a lock taken at every run: the bare tasks keep theirs in a local.)
    anchor: OnceLock<Instant>,
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
        match self.anchor.get() {
            Some(&anchor) => self.lateness.record(anchor, now),
            None => {
                // The due time of this first run is the status' `next_run` (it moves on
                // only after the run); the grid is anchored there.
                let host = cx.host().ok_or("no host")?;
                let status = host.status(cx.name())?;
                let due = status.next_run.ok_or("no next_run")?;
                let wall_now = chrono::Utc::now();
                let behind = (wall_now - due).to_std().unwrap_or(Duration::ZERO);
                // Only this service's runs set it, one at a time.
                let _ = self.anchor.set(now - behind);
            }
        }
        Ok(())
    }
}

/// What one contender's rounds saw together.
#[derive(Default)]
struct Seen {
    /// Each round's p99 lateness, in ms (NaN for a round without runs).
    p99: Vec<f64>,
    /// Each round's runs ÷ the runs due.
    frac: Vec<f64>,
    cpu: f64,
    ticks: usize,
}

impl Seen {
    fn add(&mut self, w: &Window, due: f64) {
        self.p99.push(if w.samples.is_empty() {
            f64::NAN
        } else {
            percentile(&w.samples, 99.0) / 1e3
        });
        self.frac.push(w.ticks as f64 / due);
        self.cpu += w.cpu;
        self.ticks += w.ticks;
    }

    /// The process's CPU time per run over every round, in µs (NaN without runs).
    fn cpu_per_run(&self) -> f64 {
        if self.ticks == 0 {
            f64::NAN
        } else {
            self.cpu * 1e6 / self.ticks as f64
        }
    }
}

/// One koan round: `n` periodic services every 100 ms, measured for `window`.
async fn koan_lateness(n: usize, window: Duration, l: &Arc<Lateness>) -> anyhow::Result<Window> {
    l.reset();
    let mut b = Host::builder().shutdown_grace(Duration::from_secs(30));
    for i in 0..n {
        b = b.instance_named(
            format!("tick-{i}"),
            Ticker {
                lateness: Arc::clone(l),
                anchor: OnceLock::new(),
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
async fn raw_lateness(n: usize, window: Duration, l: &Arc<Lateness>) -> anyhow::Result<Window> {
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
async fn tcs_lateness(n: usize, window: Duration, l: &Arc<Lateness>) -> anyhow::Result<Window> {
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
    // Room for every run of a window, and its stragglers.
    let l = Arc::new(Lateness::new(
        n * (window.as_millis() / PERIOD.as_millis() + 2) as usize,
    ));
    let (mut koan, mut raw, mut tcs) = (Seen::default(), Seen::default(), Seen::default());
    let due = n as f64 * window.as_secs_f64() / PERIOD.as_secs_f64();
    let solo = crate::common::solo();
    let print = |who: &str, w: &Window| {
        let s = &w.samples;
        eprintln!(
            "{who} lateness ms: p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}; CPU per run {:.2} µs",
            percentile(s, 50.0) / 1e3,
            percentile(s, 90.0) / 1e3,
            percentile(s, 99.0) / 1e3,
            percentile(s, 100.0) / 1e3,
            w.cpu * 1e6 / w.ticks.max(1) as f64
        );
    };
    for _ in 0..rounds {
        // Solo: 0 runs koan's rounds only, 1 the bare tokio ones, 2 the peer's.
        if solo.is_none_or(|i| i == 0) {
            let w = koan_lateness(n, window, &l).await?;
            if solo.is_some() {
                print("koan", &w);
            }
            koan.add(&w, due);
        }
        if solo.is_none_or(|i| i == 1) {
            let w = raw_lateness(n, window, &l).await?;
            if solo.is_some() {
                print("raw", &w);
            }
            raw.add(&w, due);
        }
        if solo.is_none_or(|i| i == 2) {
            let w = tcs_lateness(n, window, &l).await?;
            tcs.add(&w, due);
        }
    }
    let k = median(&koan.p99);
    let t = median(&tcs.p99);
    let t_opt = (!t.is_nan()).then_some(t);
    let bare = (!raw.p99.is_empty()).then(|| median(&raw.p99));
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
        "ticks run / due: koan {:.0}%, tokio-cron-scheduler {:.0}%; {rounds} rounds × {:.1} s; \
         process CPU per run: koan {:.2} µs, raw tokio interval {:.2} µs",
        median(&koan.frac) * 100.0,
        median(&tcs.frac) * 100.0,
        window.as_secs_f64(),
        koan.cpu_per_run(),
        raw.cpu_per_run()
    )));
    Ok(rows)
}
