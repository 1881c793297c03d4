//! Run with: `koan-bench B9` builds and runs it; by hand,
//! `cargo run --release --manifest-path crates/koan-bench/apalis-peer/Cargo.toml -- 2000 32 32 /tmp/b9.db`
//!
//! The apalis 1.0 + apalis-sqlite contender of koan-bench's B9 (durable enqueue →
//! done): `jobs` no-op jobs pushed by `producers` tasks into a fresh SQLite file,
//! run by one worker with `concurrency` in flight. Prints one JSON line with the
//! figures, the same fields koan-bench's own contender prints.
//!
//! It is a build of its own because apalis-sqlite's sqlx and koan-sqlite's rusqlite
//! link different `libsqlite3-sys` versions, which one Cargo graph cannot hold.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use apalis::prelude::*;
use apalis_sqlite::{Config, SqlitePool, SqliteStorage};
use futures::StreamExt;
use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteOperation, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;

/// What one run measured (the protocol with koan-bench's `jobs.rs`).
#[derive(Debug, Serialize)]
struct Figures {
    jobs: u64,
    seconds: f64,
    jobs_per_sec: f64,
    enqueue_p50_us: f64,
    enqueue_p99_us: f64,
    sqlite_version: String,
    synchronous: i64,
    journal_mode: String,
}

/// Counts the jobs the handler ran; wakes the waiter at the last one.
#[derive(Debug, Default)]
struct Progress {
    ran: AtomicU64,
    target: AtomicU64,
    all_ran: Notify,
}

/// The job: nothing to do beyond being counted.
async fn noop(_n: u64, progress: Data<Arc<Progress>>) -> Result<(), BoxDynError> {
    let ran = progress.ran.fetch_add(1, Ordering::AcqRel) + 1;
    if ran == progress.target.load(Ordering::Acquire) {
        progress.all_ran.notify_one();
    }
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    let s = args.get(i).ok_or_else(|| {
        anyhow!("missing argument {i} ({what}); usage: <jobs> <producers> <concurrency> <file>")
    })?;
    s.parse()
        .map_err(|e| anyhow!("argument {i} ({what}) `{s}`: {e}"))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let jobs: u64 = arg(&args, 0, "jobs")?;
    let producers: u64 = arg(&args, 1, "producers")?;
    let concurrency: usize = arg(&args, 2, "concurrency")?;
    let path: PathBuf = arg(&args, 3, "file")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = rt.block_on(run(jobs, producers, concurrency, path))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// The `p`th percentile (nearest rank) of sorted `v`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run(
    jobs: u64,
    producers: u64,
    concurrency: usize,
    path: PathBuf,
) -> anyhow::Result<Figures> {
    // koan-sqlite's settings on every connection: WAL, synchronous = FULL. The busy
    // timeout is 60 s, not koan-sqlite's 5 s: sqlx's pool (10 connections, its
    // default) makes them wait for each other's write lock, and with 5 s pushes
    // fail with "database is locked" from about 6,400 jobs on (koan-sqlite has one
    // connection, so its timeout never comes into play here).
    // `SqliteStorage::setup` would set `synchronous = OFF` (on the one connection it
    // runs on), so it is not called; its other pragmas are kept.
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(60))
        .pragma("temp_store", "MEMORY")
        .pragma("cache_size", "64000")
        .pragma("journal_size_limit", "67108864");
    // What `SqliteStorage::connect_with_callback` does (which takes only a URL): an
    // update hook on every connection that signals each insert into `Jobs`.
    let (hook_tx, hook_rx) = futures::channel::mpsc::unbounded::<()>();
    let pool: SqlitePool = SqlitePoolOptions::new()
        .after_connect(move |conn, _meta| {
            let tx = hook_tx.clone();
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                handle.set_update_hook(move |ev| {
                    if ev.operation == SqliteOperation::Insert && ev.table == "Jobs" {
                        let _ = tx.unbounded_send(());
                    }
                });
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("open {}", path.display()))?;
    SqliteStorage::migrations()
        .run(&pool)
        .await
        .context("apalis-sqlite migrations")?;

    let sqlite_version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&pool)
        .await?;
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&pool)
        .await?;
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await?;

    // One fetch takes up to `concurrency` jobs, as koan's runner claims up to its
    // free slots.
    let config = Config::default().queue("b9").batch_size(concurrency);
    let progress = Arc::new(Progress::default());
    progress.target.store(jobs, Ordering::Release);
    let strategy = Strategy::new()
        .stream(hook_rx.ready_chunks(concurrency))
        .interval(Duration::from_millis(100));
    let backend = SqliteStorage::<u64>::new(&pool)
        .with_config(config.clone())
        .poll_with_strategy(strategy);
    let worker = WorkerBuilder::new("b9-worker")
        .backend(backend)
        .concurrency(concurrency)
        .data(Arc::clone(&progress))
        .build(noop);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stop_rx.await;
        Ok::<(), WorkerError>(())
    }));
    // The worker is ready once it registered itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Workers")
            .fetch_one(&pool)
            .await?;
        if n > 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(anyhow!("the apalis worker did not register within 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let per = jobs / producers;
    let total = per * producers;
    progress.target.store(total, Ordering::Release);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let mut storage = SqliteStorage::<u64>::new(&pool).with_config(config.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            for i in 0..per {
                let t0 = Instant::now();
                storage.push(p * per + i).await.map_err(|e| {
                    anyhow!("push failed after {:.1} s: {e}", t0.elapsed().as_secs_f64())
                })?;
                lat.push(t0.elapsed().as_secs_f64() * 1e6);
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
        while progress.ran.load(Ordering::Acquire) < total {
            progress.all_ran.notified().await;
        }
        loop {
            let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE status = 'Done'")
                .fetch_one(&pool)
                .await?;
            if done as u64 >= total {
                return Ok::<(), anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .with_context(|| {
        format!(
            "apalis: {} of {total} jobs ran within 300 s",
            progress.ran.load(Ordering::Acquire)
        )
    })??;
    let seconds = t.elapsed().as_secs_f64();

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
    pool.close().await;

    lat.sort_by(f64::total_cmp);
    Ok(Figures {
        jobs: total,
        seconds,
        jobs_per_sec: total as f64 / seconds,
        enqueue_p50_us: percentile(&lat, 50.0),
        enqueue_p99_us: percentile(&lat, 99.0),
        sqlite_version,
        synchronous,
        journal_mode,
    })
}
