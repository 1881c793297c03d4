//! `koan-load`: drives a koan host past its capacity and checks that every request is
//! answered — done, or refused with `Busy` / 429 — and that no accepted work is lost.
//!
//! Modes:
//! - `fluent`: many concurrent callers push actions through the fluent API into a
//!   service with a small mailbox.
//! - `http`: the same through `POST /api/services/Sink/actions/work` against an
//!   in-process koan-http server on 127.0.0.1:0, over keep-alive connections.
//! - `shutdown`: fluent load, with the host shut down half-way: every call is still
//!   answered (done, busy or shutting down).
//! - `soak --duration 60s`: fluent, enqueued and HTTP calls mixed, for a chosen time,
//!   reporting RSS, latency and counts every few seconds.
//!
//! - `attack slow-body|cardinality|burst`: the hostile clients of the control plane's
//!   hardening (see `attack.rs`).
//!
//! Loopback only; every run is bounded in count and time. Exits non-zero when anything
//! was lost or answered otherwise.

mod attack;
mod histogram;
mod run;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Host, HostHandle, Service,
    ServiceContext, ServiceOptions,
};

/// Load runs against an in-process koan host.
#[derive(Debug, Parser)]
#[command(name = "koan-load", about)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Actions through the fluent API, past the mailbox's capacity.
    Fluent(Common),
    /// Actions through HTTP POST on keep-alive connections.
    Http(Common),
    /// Fluent load with the host shut down half-way.
    Shutdown(Common),
    /// Mixed load for a chosen duration, reporting as it goes.
    Soak {
        /// How long to run (e.g. `60s`, `5m`).
        #[arg(long, default_value = "60s")]
        duration: String,
        /// Time between reports.
        #[arg(long, default_value = "5s")]
        report_every: String,
        #[command(flatten)]
        common: Common,
    },
    /// Hostile clients against the HTTP control plane.
    Attack(attack::AttackArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct Common {
    /// Most requests to send (a soak also stops at its duration).
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Concurrent callers.
    #[arg(long, default_value_t = 256)]
    callers: usize,
    /// Mailbox capacity of the target service.
    #[arg(long, default_value_t = 64)]
    mailbox: usize,
    /// Handlers of the target service running at once.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Time each action takes, in microseconds (0: it only yields).
    #[arg(long, default_value_t = 0)]
    work_us: u64,
    /// How long a caller refused with busy waits before its next request, in
    /// microseconds (0: it only yields).
    #[arg(long, default_value_t = 1000)]
    backoff_us: u64,
    /// Hard limit of the whole run, after which it fails.
    #[arg(long, default_value = "10m")]
    limit: String,
}

/// Mailbox capacity and concurrency, fixed before the host is built.
static SINK_OPTIONS: OnceLock<(usize, usize, u64)> = OnceLock::new();
/// Completed executions of `work`.
static EXECUTED: AtomicU64 = AtomicU64::new(0);

/// The target: one action, `work(n) -> n`.
struct Sink;

impl Service for Sink {
    type Kind = Background;

    fn options() -> ServiceOptions {
        let (capacity, workers, _) = SINK_OPTIONS.get().copied().unwrap_or((64, 2, 0));
        ServiceOptions::named("Sink")
            .mailbox_capacity(capacity)
            .max_concurrency(workers)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "work",
            |_svc: Arc<Self>, n: u64, _cx: ActionContext| async move {
                let work_us = SINK_OPTIONS.get().map_or(0, |o| o.2);
                if work_us == 0 {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_micros(work_us)).await;
                }
                EXECUTED.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(n)
            },
        );
    }
}

impl BackgroundService for Sink {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

use histogram::Histogram;
use run::{Counts, Path, Run};

/// `VmRSS` and `VmHWM` (peak) of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    koan::schedule::parse_duration(s).with_context(|| format!("--{what} `{s}`"))
}

async fn start_host(c: &Common, http: bool) -> anyhow::Result<(HostHandle, Option<String>)> {
    let _ = SINK_OPTIONS.set((c.mailbox, c.workers, c.work_us));
    let host = Host::builder().instance(Sink).build()?.start();
    host.started().await?;
    let url = if http {
        let options = koan_http::HttpOptions {
            from_configuration: true,
            ..koan_http::HttpOptions::default()
        }
        .with_bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let server = koan_http::serve(host.clone(), options).await?;
        Some(format!(
            "http://{}/api/services/Sink/actions/work",
            server.local_addr()
        ))
    } else {
        None
    };
    Ok((host, url))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Mode::Attack(a) = args.mode {
        return attack::run(a).await;
    }
    let (name, common, soak) = match &args.mode {
        Mode::Fluent(c) => ("fluent", c.clone(), None),
        Mode::Http(c) => ("http", c.clone(), None),
        Mode::Shutdown(c) => ("shutdown", c.clone(), None),
        Mode::Soak {
            duration: d,
            report_every,
            common,
        } => (
            "soak",
            common.clone(),
            Some((
                duration("duration", d)?,
                duration("report-every", report_every)?,
            )),
        ),
        Mode::Attack(_) => unreachable!("handled above"),
    };
    let limit = duration("limit", &common.limit)?;
    let needs_http = matches!(args.mode, Mode::Http(_) | Mode::Soak { .. });
    let (host, url) = start_host(&common, needs_http).await?;
    let http = match url {
        Some(url) => Some((
            reqwest::Client::builder()
                .pool_max_idle_per_host(common.callers)
                .build()?,
            url,
        )),
        None => None,
    };
    let requests = if soak.is_some() && common.requests == 100_000 {
        u64::MAX
    } else {
        common.requests
    };
    let run = Arc::new(Run {
        host: host.clone(),
        counts: Counts::default(),
        total: Histogram::new(),
        window: Histogram::new(),
        next: AtomicU64::new(0),
        requests,
        stop: AtomicBool::new(false),
        peak_depth: AtomicUsize::new(0),
        peak_in_flight: AtomicUsize::new(0),
        first_errors: std::sync::Mutex::new(Vec::new()),
        http,
        backoff: Duration::from_micros(common.backoff_us),
    });
    println!(
        "koan-load {name}: callers={} mailbox={} workers={} work={}us backoff={}us requests={}",
        common.callers,
        common.mailbox,
        common.workers,
        common.work_us,
        common.backoff_us,
        if requests == u64::MAX {
            "unbounded (time-bounded)".to_owned()
        } else {
            requests.to_string()
        }
    );
    let (rss0, _) = rss_kib();
    let started = Instant::now();
    let sampler = tokio::spawn(Arc::clone(&run).sampler());
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..common.callers {
        let path = match (&args.mode, i % 3) {
            (Mode::Http(_), _) => Path::Http,
            (Mode::Soak { .. }, 0) => Path::Execute,
            (Mode::Soak { .. }, 1) => Path::Enqueue,
            (Mode::Soak { .. }, _) => Path::Http,
            _ => Path::Execute,
        };
        callers.spawn(Arc::clone(&run).caller(path));
    }

    let watch = {
        let run = Arc::clone(&run);
        let host = host.clone();
        let is_shutdown = matches!(args.mode, Mode::Shutdown(_));
        async move {
            let mut tick =
                tokio::time::interval(soak.map_or(Duration::from_millis(5), |(_, every)| every));
            tick.tick().await;
            loop {
                tick.tick().await;
                let c = &run.counts;
                if is_shutdown && c.sent.load(Ordering::Relaxed) >= run.requests / 2 {
                    println!(
                        "shutting the host down after {} requests",
                        c.sent.load(Ordering::Relaxed)
                    );
                    host.shutdown();
                    return;
                }
                if let Some((total, _)) = soak {
                    let w = run.window.snapshot(true);
                    let (rss, hwm) = rss_kib();
                    println!(
                        "t={:>4}s sent={} ok={} busy={} other={} rss={:.1}MiB peak_rss={:.1}MiB p50={}us p99={}us peak_queue={}",
                        started.elapsed().as_secs(),
                        c.sent.load(Ordering::Relaxed),
                        c.ok.load(Ordering::Relaxed),
                        c.busy.load(Ordering::Relaxed),
                        c.other.load(Ordering::Relaxed),
                        rss as f64 / 1024.0,
                        hwm as f64 / 1024.0,
                        Histogram::quantile(&w, 0.5),
                        Histogram::quantile(&w, 0.99),
                        run.peak_depth.load(Ordering::Relaxed),
                    );
                    if started.elapsed() >= total {
                        run.stop.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    };
    let watcher = tokio::spawn(watch);
    let drained = tokio::time::timeout(limit, async {
        while callers.join_next().await.is_some() {}
    })
    .await;
    let elapsed = started.elapsed();
    run.stop.store(true, Ordering::Relaxed);
    watcher.abort();
    let _ = sampler.await;

    host.shutdown();
    let exit = tokio::time::timeout(Duration::from_secs(30), host.wait()).await;

    let c = &run.counts;
    let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
    let (sent, answered, ok, busy, down, other, mixed) = (
        get(&c.sent),
        get(&c.answered),
        get(&c.ok),
        get(&c.busy),
        get(&c.shutting_down),
        get(&c.other),
        get(&c.mixed_up),
    );
    let executed = EXECUTED.load(Ordering::SeqCst);
    let all = run.total.snapshot(false);
    let (rss, hwm) = rss_kib();
    println!("--- koan-load {name} ---");
    println!("elapsed            {:.2}s", elapsed.as_secs_f64());
    println!(
        "sent               {sent} ({:.0}/s)",
        sent as f64 / elapsed.as_secs_f64()
    );
    println!("answered           {answered}");
    println!("completed (ok)     {ok}");
    println!("rejected busy      {busy}");
    println!("rejected shutdown  {down}");
    println!("other outcome      {other}");
    println!("wrong result       {mixed}");
    println!("handler executions {executed}");
    println!(
        "latency            p50={}us p99={}us max<={}us",
        Histogram::quantile(&all, 0.5),
        Histogram::quantile(&all, 0.99),
        Histogram::quantile(&all, 1.0)
    );
    println!(
        "peak queue depth   {} (capacity {})",
        run.peak_depth.load(Ordering::Relaxed),
        common.mailbox
    );
    println!(
        "peak in flight     {} (workers {})",
        run.peak_in_flight.load(Ordering::Relaxed),
        common.workers
    );
    println!(
        "rss                start={:.1}MiB end={:.1}MiB peak={:.1}MiB",
        rss0 as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    for e in run
        .first_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        println!("other: {e}");
    }

    let mut failures = Vec::new();
    if drained.is_err() {
        failures.push(format!("callers still waiting after {limit:?}"));
    }
    if exit.is_err() {
        failures.push("the host did not stop within 30s".to_owned());
    }
    if answered != sent {
        failures.push(format!("{} requests never answered", sent - answered));
    }
    if ok + busy + down + other != sent {
        failures.push("completed + rejected + other != sent".to_owned());
    }
    if other > 0 {
        failures.push(format!(
            "{other} answers other than done / busy / shutting down"
        ));
    }
    if down > 0 && !matches!(args.mode, Mode::Shutdown(_)) {
        failures.push(format!("{down} shutting-down answers while running"));
    }
    if mixed > 0 {
        failures.push(format!("{mixed} callers got another caller's result"));
    }
    // Every success ran exactly once; outside a shutdown, nothing ran unanswered.
    if executed < ok || (!matches!(args.mode, Mode::Shutdown(_)) && executed != ok) {
        failures.push(format!("{executed} executions for {ok} completions"));
    }
    if run.peak_depth.load(Ordering::Relaxed) > common.mailbox {
        failures.push("the queue grew past its capacity".to_owned());
    }
    if failures.is_empty() {
        println!(
            "PASS: every request answered; completed + rejected = sent ({ok} + {} = {sent}); nothing lost",
            busy + down
        );
        Ok(())
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        std::process::exit(1);
    }
}
