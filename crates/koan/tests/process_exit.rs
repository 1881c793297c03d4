//! A process run by `run_until_signal` ends when told to, as a user's `main` meets
//! it: this test binary starts itself again as the host's process
//! ([`child_host`]), signals it and waits for its end.
//!
//! - A service waiting on blocking work (`spawn_blocking`, as the guide says to
//!   run it) is aborted at the grace's end, but its thread is not: the runtime's
//!   drop at the end of `main` waited for it for good (a probe's host said "host
//!   stopped" and lived on). It is ended once it lingers.
//! - A second signal while the host stops ends it at once: a hung stop could be
//!   ended only by SIGKILL, the signals still taken over.
//! - A signal while the host stops because a critical service failed keeps the
//!   failure's exit code (2): it made the process exit 143, as if stopped on
//!   request.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use koan::service::RestartPolicy;
use koan::{
    Background, BackgroundService, BoxError, Host, Service, ServiceContext, ServiceOptions,
};

/// Set for the process started by a test: which host [`child_host`] runs.
const CHILD: &str = "KOAN_TEST_PROCESS_EXIT_CHILD";

/// How long a test waits for the process to end before it fails: far more than
/// either end needs (5 s of linger; a second signal's at once), far less than the
/// hour of grace the second test gives.
const PATIENCE: Duration = Duration::from_secs(120);

/// `run` waits on blocking work that never ends.
struct Blocked;

impl Service for Blocked {
    type Kind = Background;
}

impl BackgroundService for Blocked {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        tokio::task::spawn_blocking(|| {
            loop {
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await?;
        Ok(())
    }
}

/// `run` ignores its token and never ends.
struct Deaf;

impl Service for Deaf {
    type Kind = Background;
}

impl BackgroundService for Deaf {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// Fails at once, for good, and is critical: its host stops with exit code 2.
struct Critical;

impl Service for Critical {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("critical")
            .critical(true)
            .restart(RestartPolicy::Never)
    }
}

impl BackgroundService for Critical {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Err("its disk is gone".into())
    }
}

/// Set for the process started by a test: a file whose existence ends
/// [`SlowToStop`]'s stop.
const RELEASE: &str = "KOAN_TEST_PROCESS_EXIT_RELEASE";

/// Once cancelled, says so and stops only when the test creates the file
/// `RELEASE` names: a stop the test holds open while it signals.
struct SlowToStop;

impl Service for SlowToStop {
    type Kind = Background;
}

impl BackgroundService for SlowToStop {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        eprintln!("slow stop begun");
        let release = std::path::PathBuf::from(std::env::var(RELEASE)?);
        while !release.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// The host's process, when started by a test (`CHILD` names its service);
/// nothing otherwise. A `main` as a user writes it: a runtime, the host run until
/// a signal, the runtime dropped.
#[test]
fn child_host() -> anyhow::Result<()> {
    let Ok(which) = std::env::var(CHILD) else {
        return Ok(());
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let exit = runtime.block_on(async {
        let builder = match which.as_str() {
            "blocked" | "cleanup" => Host::builder()
                .shutdown_grace(Duration::from_millis(100))
                .instance(Blocked),
            "critical" => Host::builder()
                .shutdown_grace(Duration::from_secs(3600))
                .instance(SlowToStop)
                .instance(Critical),
            "critical-cleanup" => Host::builder().instance(Critical),
            _ => Host::builder()
                .shutdown_grace(Duration::from_secs(3600))
                .instance(Deaf),
        };
        let host = builder.build()?.start();
        let run = host.run_until_signal();
        host.started().await?;
        // (On the harness's "test child_host ... " line.)
        println!("child ready");
        let result = run.await;
        if which.ends_with("cleanup") {
            // `main`'s own work once the host stopped (waiting for its HTTP plane,
            // flushing telemetry): longer than the linger, and not cut short.
            tokio::time::sleep(Duration::from_secs(6)).await;
            eprintln!("cleanup done");
        }
        if let Err(e) = result {
            // As the demo's `main` does: exit 2 for a critical failure.
            eprintln!("the host stopped with a failure: {e}");
            std::process::exit(i32::from(e.exit_code()));
        }
        anyhow::Ok(())
    });
    drop(runtime);
    exit
}

/// This binary started as `which`'s host, once it says it is ready; its stderr's
/// lines as they come.
fn start(which: &str) -> anyhow::Result<(Child, mpsc::Receiver<String>)> {
    start_with(which, &[])
}

/// [`start`], with more variables in the process's environment.
fn start_with(
    which: &str,
    env: &[(&str, &std::path::Path)],
) -> anyhow::Result<(Child, mpsc::Receiver<String>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "child_host", "--nocapture", "--test-threads=1"])
        .env(CHILD, which)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.ends_with("child ready"));
    anyhow::ensure!(ready, "the host's process ended before it was ready");
    Ok((child, lines))
}

fn signal(child: &Child, sig: &str) -> anyhow::Result<()> {
    let sent = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()?;
    anyhow::ensure!(sent.success(), "kill {sig} failed");
    Ok(())
}

/// Waits until a line of `lines` contains `text`; every line read on the way.
fn line_with(lines: &mpsc::Receiver<String>, text: &str) -> anyhow::Result<String> {
    let mut seen = String::new();
    loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .map_err(|_| anyhow::anyhow!("no line with {text:?}; the process said:\n{seen}"))?;
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(text) {
            return Ok(seen);
        }
    }
}

/// The process's exit status once it ended (killed, and a failure, if it does
/// not within `PATIENCE`).
fn ends(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let since = Instant::now();
    while since.elapsed() < PATIENCE {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    anyhow::bail!("the process did not end within {PATIENCE:?} of its host's stop")
}

/// Sends SIGTERM every 100 ms until the process ends (within `PATIENCE`).
fn again_until_it_ends(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let since = Instant::now();
    while since.elapsed() < PATIENCE {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        signal(child, "-TERM")?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    anyhow::bail!("the process did not end within {PATIENCE:?} of signals")
}

#[test]
fn a_process_kept_alive_by_abandoned_blocking_work_is_ended() -> anyhow::Result<()> {
    let (mut child, lines) = start("blocked")?;
    signal(&child, "-TERM")?;
    let status = ends(&mut child)?;
    assert_eq!(
        status.code(),
        Some(0),
        "the host stopped as asked: {status}"
    );
    line_with(&lines, "did not end after its host stopped")?;
    Ok(())
}

/// The linger is timed from the runtime's end, not from `run_until_signal`'s
/// return: `main`'s own work after it is not cut short (a review).
#[test]
fn main_s_work_after_the_host_stopped_is_not_cut_short() -> anyhow::Result<()> {
    let (mut child, lines) = start("cleanup")?;
    signal(&child, "-TERM")?;
    let status = ends(&mut child)?;
    assert_eq!(status.code(), Some(0), "{status}");
    let said = line_with(&lines, "did not end after its host stopped")?;
    assert!(
        said.contains("cleanup done"),
        "the cleanup ran first:\n{said}"
    );
    Ok(())
}

/// A signal after the host stopped, while `main` still works, ends the process:
/// it was swallowed, a hung cleanup ended only by SIGKILL (a re-probe).
#[test]
fn a_signal_after_the_host_stopped_ends_the_process() -> anyhow::Result<()> {
    let (mut child, lines) = start("cleanup")?;
    signal(&child, "-TERM")?;
    line_with(&lines, "host stopped")?;
    let status = again_until_it_ends(&mut child)?;
    assert_eq!(status.code(), Some(143), "128 + SIGTERM: {status}");
    // Every line it wrote, to its end (the reader's channel closes with it).
    let rest: Vec<String> = std::iter::from_fn(|| lines.recv_timeout(PATIENCE).ok()).collect();
    assert!(!rest.iter().any(|l| l.contains("cleanup done")), "{rest:?}");
    Ok(())
}

#[test]
fn a_second_signal_ends_a_stopping_process_at_once() -> anyhow::Result<()> {
    let (mut child, lines) = start("deaf")?;
    signal(&child, "-TERM")?;
    // The first is heard before the second is sent (two pending at once are one).
    line_with(&lines, "shutdown signal received")?;
    // A second within a second of the first is taken as the same (a wrapper
    // forwarding one its process group also got): sent again until one counts.
    let status = again_until_it_ends(&mut child)?;
    assert_eq!(status.code(), Some(143), "128 + SIGTERM: {status}");
    line_with(&lines, "a second shutdown signal")?;
    Ok(())
}

/// A host stopping because a critical service failed, its stop held open while
/// SIGTERMs come: the first is absorbed by the stop in progress, and a later one
/// ends the process at once, as a second signal does, but with the failure's
/// exit code (2), not 143 (128 + SIGTERM): the operator lost the fact that a
/// critical service had failed (a probe).
#[test]
fn signals_during_a_critical_stop_keep_its_exit_code() -> anyhow::Result<()> {
    // A file never made: the stop is held until the process is ended.
    let never = std::env::temp_dir().join(format!("koan-never-made-{}", std::process::id()));
    let (mut child, lines) = start_with("critical", &[(RELEASE, &never)])?;
    line_with(&lines, "slow stop begun")?;
    let status = again_until_it_ends(&mut child)?;
    let said: Vec<String> = std::iter::from_fn(|| lines.recv_timeout(PATIENCE).ok()).collect();
    assert_eq!(
        status.code(),
        Some(2),
        "the critical failure's code: {status}\n{}",
        said.join("\n")
    );
    assert!(
        said.iter()
            .any(|l| l.contains("critical service `critical` failed: its disk is gone")),
        "the signal's line names the failure: {said:?}"
    );
    Ok(())
}

/// The same once the host stopped, while `main` still works: a signal ends
/// the process with the failure's code (it exited 143).
#[test]
fn a_signal_after_a_critical_stop_keeps_its_exit_code() -> anyhow::Result<()> {
    let (mut child, lines) = start("critical-cleanup")?;
    line_with(&lines, "host stopped with a failure")?;
    let status = again_until_it_ends(&mut child)?;
    let said: Vec<String> = std::iter::from_fn(|| lines.recv_timeout(PATIENCE).ok()).collect();
    assert_eq!(status.code(), Some(2), "{status}\n{}", said.join("\n"));
    assert!(!said.iter().any(|l| l.contains("cleanup done")), "{said:?}");
    Ok(())
}
