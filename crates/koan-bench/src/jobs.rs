//! B9: durable enqueue → done on one machine. koan with its embedded SQLite store
//! (`koan_sqlite::SqliteJobStore`) against apalis 1.0 + apalis-sqlite.
//!
//! Each round runs each contender in a fresh process on a fresh file in a temp dir:
//! 32 producers enqueue N no-op jobs (each `enqueue()` / `push()` returns once its
//! insert is committed), one worker runs them 32 at a time; the clock stops when the
//! store records the last job done. Both files are in WAL mode with
//! `synchronous = FULL`.
//!
//! apalis runs from its own build (`apalis-peer/`): its sqlx links a
//! `libsqlite3-sys` that cannot share a Cargo graph with koan-sqlite's rusqlite. This
//! scenario builds it with the cargo that built koan-bench, in the same profile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Host, Service, ServiceContext,
    ServiceOptions, config::Config, job::JobState,
};
use koan_sqlite::SqliteJobStore;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::actions::stop_host;
use crate::common::{Better, Opts, Row, median, micros, percentile};

/// Tasks enqueueing at once.
const PRODUCERS: u64 = 32;
/// Jobs in flight: koan's `max_concurrency`, apalis' `.concurrency()` and fetch size.
const CONCURRENCY: usize = 32;
const APALIS: &str = "apalis 1.0 + apalis-sqlite";

/// koan's runner: its defaults, spelled out (it also wakes on every enqueue).
const KOAN_CONFIG: &str = "
[koan.background_services.jobs]
poll_ms = 1000
lease_seconds = 30
";

/// What one contender's run measured: one JSON line from its process (the peer
/// prints the same fields).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Figures {
    jobs: u64,
    seconds: f64,
    jobs_per_sec: f64,
    enqueue_p50_us: f64,
    enqueue_p99_us: f64,
}

/// Counts the jobs the handler ran; wakes the waiter at the last one.
#[derive(Debug, Default)]
struct Progress {
    ran: AtomicU64,
    target: AtomicU64,
    all_ran: Notify,
}

impl Progress {
    fn ran_one(&self) {
        let ran = self.ran.fetch_add(1, Ordering::AcqRel) + 1;
        if ran == self.target.load(Ordering::Acquire) {
            self.all_ran.notify_one();
        }
    }

    async fn all_ran(&self, total: u64) {
        while self.ran.load(Ordering::Acquire) < total {
            self.all_ran.notified().await;
        }
    }
}

/// The koan service under test: one action that does nothing.
#[derive(Debug)]
struct Noop {
    progress: Arc<Progress>,
}

impl Service for Noop {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Noop").max_concurrency(CONCURRENCY)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "noop",
            |svc: Arc<Self>, _n: u64, _cx: ActionContext| async move {
                svc.progress.ran_one();
                Ok::<(), BoxError>(())
            },
        );
    }
}

impl BackgroundService for Noop {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

pub(crate) async fn b9(opts: Opts) -> anyhow::Result<Vec<Row>> {
    // apalis' time grows faster than N (one run: 2,048 jobs 535/s, 20,000 jobs
    // 114/s), so a full round is 10,000 jobs, not more: rounds stay around a minute.
    let jobs = opts.pick(10_000, 640);
    let rounds = opts.rounds(2);
    let solo = crate::common::solo();
    let dir = TempDir::new()?;
    let peer = if solo == Some(0) {
        Err("not run (KOAN_BENCH_SOLO=0)".to_owned())
    } else {
        build_peer().await
    };
    let (mut ks, mut aps) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let k = if solo.is_none_or(|i| i == 0) {
            let file = dir.file(&format!("koan-{round}.db"));
            let exe = std::env::current_exe()?;
            Some(run_contender(&exe, &["__jobs"], jobs, &file).await?)
        } else {
            None
        };
        let a = match &peer {
            Ok(exe) => {
                let file = dir.file(&format!("apalis-{round}.db"));
                Some(run_contender(exe, &[], jobs, &file).await?)
            }
            Err(_) => None,
        };
        if round > 0 {
            ks.extend(k);
            aps.extend(a);
        }
    }
    let pick = |v: &[Figures], f: fn(&Figures) -> f64| -> Option<f64> {
        (!v.is_empty()).then(|| median(&v.iter().map(f).collect::<Vec<_>>()))
    };
    let nan = f64::NAN;
    let mut note = format!(
        "{jobs} jobs/round from {PRODUCERS} producers, {CONCURRENCY} in flight, no-op job; \
         WAL + synchronous=FULL, fresh file and process per contender and round"
    );
    if let Err(why) = &peer {
        note.push_str(&format!("; apalis {why}"));
    }
    let base = |v| if peer.is_ok() { v } else { None };

    let row = Row::new(
        "B9",
        "durable enqueue → done, SQLite",
        "jobs/s",
        Better::Higher,
        pick(&ks, |f| f.jobs_per_sec).unwrap_or(nan),
    )
    .baseline(APALIS, base(pick(&aps, |f| f.jobs_per_sec)));
    let met = row.ratio(APALIS).map(|r| r >= 1.0);
    let mut rows = vec![row.goal("≥ 1.0× apalis jobs/s", met).note(note)];
    for (metric, f) in [
        (
            "enqueue latency p50 (until committed)",
            (|f: &Figures| f.enqueue_p50_us) as fn(&Figures) -> f64,
        ),
        ("enqueue latency p99 (until committed)", |f| {
            f.enqueue_p99_us
        }),
    ] {
        rows.push(
            Row::new(
                "B9",
                metric,
                "µs",
                Better::Lower,
                pick(&ks, f).unwrap_or(nan),
            )
            .baseline(&format!("{APALIS} (info)"), base(pick(&aps, f))),
        );
    }
    Ok(rows)
}

/// One round of one contender: `exe [args…] <jobs> <producers> <concurrency> <file>`.
async fn run_contender(
    exe: &Path,
    args: &[&str],
    jobs: u64,
    file: &Path,
) -> anyhow::Result<Figures> {
    let out = tokio::process::Command::new(exe)
        .args(args)
        .args([
            jobs.to_string(),
            PRODUCERS.to_string(),
            CONCURRENCY.to_string(),
        ])
        .arg(file)
        .output()
        .await
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !out.status.success() {
        return Err(anyhow!(
            "B9 contender {} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim())
        .with_context(|| format!("B9 contender {} printed `{}`", exe.display(), line.trim()))
}

/// Builds the apalis peer (quietly, once built) in this binary's profile, into
/// `<target>/apalis-peer`; `Err` says why it cannot run.
async fn build_peer() -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("apalis-peer/Cargo.toml");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
    .join("apalis-peer");
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.args(["build", "-q", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .stdout(std::process::Stdio::null());
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| format!("not built: cannot run cargo ({e})"))?;
    if !status.success() {
        return Err(format!(
            "not built: `cargo build --manifest-path {}` failed (it needs crates.io and Rust ≥ 1.94)",
            manifest.display()
        ));
    }
    let exe = target
        .join(if release { "release" } else { "debug" })
        .join("koan-bench-apalis-peer");
    if exe.exists() {
        Ok(exe)
    } else {
        Err(format!("not built: {} is missing", exe.display()))
    }
}

/// A directory under the system temp dir, removed with its files when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("koan-bench-b9-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(TempDir(dir))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The koan contender, in a process of its own (`koan-bench __jobs …`).
pub(crate) async fn child(args: &[String]) -> anyhow::Result<Figures> {
    let arg = |i: usize, what: &str| {
        args.get(i).ok_or_else(|| {
            anyhow!("__jobs needs <jobs> <producers> <concurrency> <file>; {what} is missing")
        })
    };
    let jobs: u64 = arg(0, "jobs")?.parse()?;
    let producers: u64 = arg(1, "producers")?.parse()?;
    let concurrency: usize = arg(2, "concurrency")?.parse()?;
    let file = PathBuf::from(arg(3, "file")?);
    if concurrency != CONCURRENCY {
        return Err(anyhow!(
            "the koan contender runs {CONCURRENCY} jobs at a time, not {concurrency}"
        ));
    }

    let progress = Arc::new(Progress::default());
    let store = SqliteJobStore::open(&file)?;
    let host = Host::builder()
        .config(Config::builder().toml("b9.toml", KOAN_CONFIG)?.build())
        .instance(Noop {
            progress: Arc::clone(&progress),
        })
        .job_store(Arc::new(store))
        .shutdown_grace(Duration::from_secs(5))
        .build()?
        .start();
    host.started().await?;

    let per = jobs / producers;
    let total = per * producers;
    progress.target.store(total, Ordering::Release);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            for i in 0..per {
                let t0 = Instant::now();
                host.service("Noop")
                    .action("noop", p * per + i)
                    .enqueue()
                    .await?;
                lat.push(micros(t0.elapsed()));
            }
            Ok::<Vec<f64>, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(total as usize);
    for task in tasks {
        lat.extend(task.await??);
    }
    // Every job ran; done is when every outcome is recorded in the file.
    tokio::time::timeout(Duration::from_secs(300), async {
        progress.all_ran(total).await;
        loop {
            let counts = host.jobs().counts(Some("Noop")).await?;
            if counts.get(JobState::Succeeded) >= total {
                return Ok::<(), anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .with_context(|| {
        format!(
            "koan: {} of {total} jobs ran within 300 s",
            progress.ran.load(Ordering::Acquire)
        )
    })??;
    let seconds = t.elapsed().as_secs_f64();
    stop_host(host).await;
    Ok(Figures {
        jobs: total,
        seconds,
        jobs_per_sec: total as f64 / seconds,
        enqueue_p50_us: percentile(&lat, 50.0),
        enqueue_p99_us: percentile(&lat, 99.0),
    })
}
