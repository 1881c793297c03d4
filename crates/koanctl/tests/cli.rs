//! `koanctl` against a live control plane: a small koan host served on a loopback
//! port, and the compiled binary run against it. Every subcommand's success path, the
//! options reaching the server, `--json`, following events, completions, and the exit
//! codes of the error paths.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use koan::service::BatchRequest;
use koan_test_support::http::{Api, loopback, serve_greeter_and_cleanup};
use koan_test_support::services::Seen;
use koan_test_support::{PATIENCE, within};
use serde_json::{Value, json};

/// A served host, and what its periodic service saw.
struct Live {
    api: Api,
    seen: Arc<Seen>,
}

impl Live {
    /// Starts the host and serves it on loopback, with `token` when given.
    async fn start(token: Option<&str>) -> anyhow::Result<Live> {
        let mut options = loopback();
        if let Some(t) = token {
            options = options.with_token(t);
        }
        let (api, seen) = serve_greeter_and_cleanup(options).await?;
        Ok(Live { api, seen })
    }

    /// Runs `koanctl --url <this host> ARGS…`.
    async fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        let mut all = vec!["--url", self.api.base.as_str()];
        all.extend_from_slice(args);
        koanctl(&all, &[]).await
    }

    /// Runs `koanctl --url <this host> --json ARGS…`, which must succeed, and parses
    /// its output.
    async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run(&all).await?.json()
    }

    /// Runs `koanctl act greeter whoami OPTIONS…` (its answer: how the call arrived).
    async fn whoami(&self, options: &[&str]) -> anyhow::Result<Run> {
        let mut all = vec!["act", "greeter", "whoami"];
        all.extend_from_slice(options);
        self.run(&all).await
    }

    /// Enqueues `Greeter`'s `whoami` as a job (`--no-wait`) with `options`, and returns
    /// the JSON answer.
    async fn enqueue_whoami(&self, options: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["act", "greeter", "whoami", "--no-wait"];
        all.extend_from_slice(options);
        self.json(&all).await
    }

    /// Stops the host; the server ends with it.
    async fn stop(self) -> anyhow::Result<()> {
        self.api.stop().await
    }
}

/// How a run of `koanctl` ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit code 0 and returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "koanctl failed: {self:#?}");
        &self.stdout
    }

    /// Asserts exit code 0 and parses stdout as JSON.
    fn json(&self) -> anyhow::Result<Value> {
        let out = self.ok();
        serde_json::from_str(out).map_err(|e| anyhow::anyhow!("not JSON ({e}): {out}"))
    }

    /// Asserts the exit code, an empty stdout, and returns stderr.
    fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "exit code: {self:#?}");
        assert!(self.stdout.is_empty(), "stdout of a failure: {self:#?}");
        &self.stderr
    }

    /// Asserts an error the API answered (exit code 3) of `kind`, and returns stderr.
    fn api_error(&self, kind: &str) -> &str {
        let err = self.failed(3);
        assert!(err.starts_with(&format!("error: {kind}: ")), "{self:#?}");
        err
    }
}

/// A `koanctl` command with a clean environment.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_koanctl"));
    cmd.args(args)
        .env_remove("KOAN_URL")
        .env_remove("KOAN_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Runs `koanctl ARGS…` off the async threads, so the server keeps serving.
async fn koanctl(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Run> {
    let mut cmd = command(args, env);
    let out = within("koanctl", tokio::task::spawn_blocking(move || cmd.output())).await???;
    Ok(Run::from(out))
}

/// A running `koanctl events`, its output read line by line.
struct Follower {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Follower {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Follower> {
        let mut child = command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = lines(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
        );
        let stderr = lines(
            child
                .stderr
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stderr"))?,
        );
        Ok(Follower {
            child,
            stdout,
            stderr,
        })
    }

    /// Waits for a line of `rx` satisfying `pred`, returning it.
    async fn line_of(
        rx: &mpsc::Receiver<String>,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let mut skipped = Vec::new();
        loop {
            let got = tokio::task::block_in_place(|| rx.recv_timeout(PATIENCE));
            match got {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(line) => skipped.push(line),
                Err(e) => anyhow::bail!("no line with {what} ({e}); saw {skipped:?}"),
            }
        }
    }

    /// Waits until the stream is open: the server has subscribed before it answers,
    /// so no event emitted after this is missed.
    async fn connected(&self) -> anyhow::Result<()> {
        Follower::line_of(&self.stderr, "the stream open", |l| {
            l.starts_with("following events from")
        })
        .await
        .map(drop)
    }

    async fn stdout_line(&self, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        Follower::line_of(&self.stdout, "the event", pred).await
    }

    fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_table_and_json() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let run = live.run(&["services"]).await?;
    let out = run.ok();
    let mut rows = out.lines();
    let header = rows.next().unwrap_or_default();
    let columns: Vec<&str> = header.split("  ").filter(|c| !c.is_empty()).collect();
    let columns: Vec<&str> = columns.iter().map(|c| c.trim()).collect();
    assert_eq!(
        columns,
        [
            "NAME", "KIND", "STATE", "HEALTH", "RUNS", "FAILURES", "QUEUE", "NEXT RUN"
        ],
        "{out}"
    );
    let greeter: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        greeter,
        [
            "Greeter",
            "background",
            "running",
            "healthy",
            "0",
            "0",
            "0",
            "-"
        ],
        "{out}"
    );
    let cleanup: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        cleanup[..7],
        ["Cleanup", "periodic", "idle", "healthy", "0", "0", "0"],
        "{out}"
    );
    assert!(cleanup[7].ends_with('Z'), "next run in {out}");
    // The columns are aligned: every row's KIND starts where the header's does.
    let kind_at = header.find("KIND");
    for line in out.lines().skip(1) {
        assert_eq!(
            line.find(|c: char| c.is_whitespace())
                .and_then(|i| line[i..].find(|c: char| !c.is_whitespace()).map(|j| i + j)),
            kind_at,
            "{out}"
        );
    }

    let body = live.json(&["services"]).await?;
    let names: Vec<&str> = body
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["Greeter", "Cleanup"]);
    live.stop().await
}

/// The words of a command line (none of them holds a space).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Whether a line of `out` starts with `start` and ends with `end`.
fn line_ending(out: &str, start: &str, end: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with(start) && l.ends_with(end))
}

/// Whether a line of `out` starts with `start` and holds `part`.
fn line_holding(out: &str, start: &str, part: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with(start) && l.contains(part))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_status_and_health() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let run = live.run(&["info", "greeter"]).await?;
    let out = run.ok();
    assert!(out.contains("name:") && out.contains("Greeter"), "{out}");
    assert!(out.contains("Says hello"), "{out}");
    let greet = out
        .lines()
        .find(|l| l.starts_with("greet "))
        .unwrap_or_default();
    assert!(greet.contains("name*, times*"), "{out}");
    assert!(greet.contains("Greets someone"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("whoami")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("Greeted")), "{out}");
    let info = live.json(&["info", "cleanup"]).await?;
    assert_eq!(info["schedule"], "every 1h");

    let run = live.run(&["status", "Cleanup"]).await?;
    let out = run.ok();
    assert!(line_ending(out, "state:", "idle"), "{out}");
    assert!(line_ending(out, "kind:", "periodic"), "{out}");
    let status = live.json(&["status", "greeter"]).await?;
    assert_eq!(status["state"], "running");

    let run = live.run(&["health"]).await?;
    let out = run.ok();
    assert!(out.starts_with("status: pass"), "{out}");
    assert!(out.contains("SERVICE") && out.contains("OUTPUT"), "{out}");
    assert!(line_holding(out, "Greeter", "pass"), "{out}");
    assert!(line_holding(out, "Cleanup", "pass"), "{out}");
    let health = live.json(&["health"]).await?;
    assert_eq!(health["status"], "pass");
    let one = live.json(&["health", "greeter"]).await?;
    assert_eq!(one["service"], "Greeter");
    assert_eq!(one["status"], "pass");
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn act_with_params_inline_and_from_a_file() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let run = live
        .run(&words(
            r#"act greeter greet --params {"name":"Ada","times":2}"#,
        ))
        .await?;
    assert_eq!(run.ok(), "Hello Ada! Hello Ada!\n");

    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("koanctl-params.json");
    std::fs::write(&file, r#"{ "name": "Bob", "times": 1 }"#)?;
    let arg = format!("@{}", file.display());
    let body = live
        .json(&["act", "Greeter", "greet", "--params", &arg])
        .await?;
    assert_eq!(body["result"], "Hello Bob!");
    assert_eq!(body["service"], "Greeter");
    assert_eq!(body["action"], "greet");
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_timeout_and_correlation_id_reach_the_action() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let run = live
        .whoami(&words(
            "--priority -3 --timeout 30s --correlation-id req-42",
        ))
        .await?;
    let seen: Value = serde_json::from_str(run.ok())?;
    assert_eq!(seen["priority"], -3);
    assert_eq!(seen["correlation_id"], "req-42");
    let remaining = seen["remaining_ms"].as_u64().unwrap_or(u64::MAX);
    assert!(remaining <= 30_000, "{seen}");

    let seen = live.whoami(&["--priority", "7"]).await?;
    let seen: Value = serde_json::from_str(seen.ok())?;
    assert_eq!(seen["priority"], 7);
    assert_eq!(seen["remaining_ms"], Value::Null);
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wait_prints_the_id_and_status_url() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let run = live
        .whoami(&["--no-wait", "--correlation-id", "nw-1"])
        .await?;
    let out = run.ok();
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let id = value("id");
    assert!(!id.is_empty(), "{out}");
    assert_eq!(value("correlation_id"), "nw-1");
    assert_eq!(
        value("status_url"),
        format!("{}/api/jobs/{id}", live.api.base)
    );
    let record = live.api.host.jobs().get(&id).await?;
    assert_eq!(record.correlation_id, "nw-1");

    let body = live.enqueue_whoami(&[]).await?;
    let id = body["id"].as_str().unwrap_or_default();
    assert_eq!(body["status_url"], format!("/api/jobs/{id}"));
    assert_eq!(live.api.host.jobs().get(id).await?.action, "whoami");
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_check_queue_and_process_batch() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let run = live.run(&["trigger", "cleanup"]).await?;
    let out = run.ok();
    assert!(
        out.starts_with("Cleanup: trigger run succeeded in "),
        "{out}"
    );
    assert_eq!(live.seen.ticks.load(Ordering::SeqCst), 1);

    let body = live.json(&["check-queue", "Cleanup"]).await?;
    assert_eq!(body["result"]["run"]["reason"], "check-queue");
    assert_eq!(live.seen.queue_checks.load(Ordering::SeqCst), 1);

    let run = live
        .run(&[
            "process-batch",
            "cleanup",
            "--batch-size",
            "5",
            "--filter",
            "old",
        ])
        .await?;
    assert!(
        run.ok().starts_with("Cleanup: process-batch run succeeded"),
        "{run:?}"
    );
    live.run(&["process-batch", "cleanup"]).await?.ok();
    let batches = live.seen.batches();
    assert_eq!(
        batches,
        [
            BatchRequest::new(Some(5), Some("old".into())),
            BatchRequest::default()
        ]
    );
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_stream() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let follower = Follower::spawn(
        &["--url", &live.api.base, "events", "--service", "greeter"],
        &[],
    )?;
    let json = Follower::spawn(
        &[
            "--url",
            &live.api.base,
            "--json",
            "events",
            "--event",
            "greeted",
        ],
        &[],
    )?;
    follower.connected().await?;
    json.connected().await?;
    live.run(&[
        "act",
        "greeter",
        "greet",
        "--params",
        r#"{"name":"Eve","times":1}"#,
        "--correlation-id",
        "evt-1",
    ])
    .await?
    .ok();

    let line = follower.stdout_line(|l| l.contains("Greeted")).await?;
    let cols: Vec<&str> = line.split("  ").collect();
    assert_eq!(cols.len(), 5, "{line}");
    assert!(
        cols[0].ends_with('Z') && cols[0].contains('T'),
        "time in {line}"
    );
    assert_eq!(cols[1..4], ["Greeter", "Greeted", "evt-1"], "{line}");
    assert_eq!(
        serde_json::from_str::<Value>(cols[4])?,
        json!({ "name": "Eve" })
    );

    let line = json.stdout_line(|l| l.contains("Greeted")).await?;
    let env: Value = serde_json::from_str(&line)?;
    assert_eq!(env["service"], "Greeter");
    assert_eq!(env["event"], "Greeted");
    assert_eq!(env["correlation_id"], "evt-1");
    assert_eq!(env["payload"]["name"], "Eve");
    follower.kill()?;
    json.kill()?;
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_print_a_script() -> anyhow::Result<()> {
    for shell in ["bash", "zsh", "fish"] {
        let run = koanctl(&["completions", shell], &[]).await?;
        let out = run.ok();
        assert!(out.contains("koanctl"), "{shell}: {out}");
        assert!(out.contains("process-batch"), "{shell}: {out}");
    }
    let run = koanctl(&["completions", "bash"], &[]).await?;
    assert!(run.ok().contains("complete -F"), "{run:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_an_api_error() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    for args in [
        &["info", "nope"][..],
        &["act", "nope", "x"],
        &["trigger", "nope"],
    ] {
        let run = live.run(args).await?;
        let err = run.api_error("unknown_service");
        assert!(err.contains("nope"), "{args:?}: {err}");
    }
    let run = live.run(&["act", "greeter", "nope"]).await?;
    run.api_error("unknown_action");
    let run = live
        .run(&["act", "greeter", "greet", "--params", r#"{"name":1}"#])
        .await?;
    run.api_error("invalid_parameters");
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_local_input_exits_2() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let run = live
        .run(&["act", "greeter", "greet", "--params", "{nope"])
        .await?;
    assert!(run.failed(2).contains("not valid JSON"), "{run:?}");
    let run = live
        .run(&["act", "greeter", "greet", "--params", "@/no/such/file.json"])
        .await?;
    assert!(run.failed(2).contains("/no/such/file.json"), "{run:?}");
    // Usage errors are clap's: exit 2 too.
    assert_eq!(live.run(&["act", "greeter"]).await?.code, Some(2));
    assert_eq!(live.run(&["frobnicate"]).await?.code, Some(2));
    assert_eq!(
        koanctl(&["--url", "not a url", "services"], &[])
            .await?
            .code,
        Some(2)
    );
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_exits_4_naming_the_url() -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = koanctl(&["--url", &url, "services"], &[]).await?;
    let err = run.failed(4);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("--url") && err.contains("KOAN_URL"), "{err}");
    // KOAN_URL is read too.
    let run = koanctl(&["trigger", "x"], &[("KOAN_URL", &url)]).await?;
    assert!(
        run.failed(4).contains(&format!("127.0.0.1:{port}")),
        "{run:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_as_a_bearer_header() -> anyhow::Result<()> {
    let live = Live::start(Some("secret")).await?;
    let run = live
        .run(&["--token", "wrong", "trigger", "cleanup"])
        .await?;
    run.api_error("unauthorized");
    let run = live.run(&["trigger", "cleanup"]).await?;
    run.api_error("unauthorized");
    assert_eq!(live.seen.ticks.load(Ordering::SeqCst), 0);

    live.run(&["--token", "secret", "trigger", "cleanup"])
        .await?
        .ok();
    let url = live.api.base.clone();
    koanctl(
        &["--url", &url, "check-queue", "cleanup"],
        &[("KOAN_TOKEN", "secret")],
    )
    .await?
    .ok();
    assert_eq!(live.seen.ticks.load(Ordering::SeqCst), 1);
    assert_eq!(live.seen.queue_checks.load(Ordering::SeqCst), 1);

    let run = live.run(&["--token", "wrong", "events"]).await?;
    run.api_error("unauthorized");
    let follower = Follower::spawn(&["--url", &url, "--token", "secret", "events"], &[])?;
    follower.connected().await?;
    follower.kill()?;
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_enqueued_listed_shown_cancelled_retried_and_deleted() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    // Two enqueues with one key: one job.
    let first = live.enqueue_whoami(&["--idempotency-key", "once"]).await?;
    let again = live.enqueue_whoami(&["--idempotency-key", "once"]).await?;
    let id = first["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["created"], false);
    koan::testing::wait_for_job(&live.api.host, &id, koan::job::JobState::Succeeded).await;

    let shown = live.run(&["jobs", "show", &id]).await?;
    let text = shown.ok();
    assert!(
        text.contains("state:") && text.contains("succeeded"),
        "{text}"
    );
    assert!(text.contains("idempotency_key: once"), "{text}");
    assert!(text.contains("ATTEMPT"), "lists the attempts: {text}");

    // A delayed job waits: cancelled, it is listed as such, then retried and deleted.
    let later = live.enqueue_whoami(&["--delay", "1h"]).await?;
    let later_id = later["id"].as_str().unwrap_or_default().to_owned();
    let list = live.run(&["jobs", "list", "--state", "scheduled"]).await?;
    assert!(list.ok().contains(&later_id), "{}", list.ok());
    let cancelled = live.run(&["jobs", "cancel", &later_id]).await?;
    assert!(cancelled.ok().contains("cancelled"), "{}", cancelled.ok());
    let listed = live.json(&["jobs", "list", "--state", "cancelled"]).await?;
    assert_eq!(listed["jobs"][0]["id"], later_id.as_str());
    let counts = live.json(&["jobs", "counts"]).await?;
    assert_eq!(counts["counts"]["cancelled"], 1, "{counts}");
    assert_eq!(counts["counts"]["succeeded"], 1, "{counts}");

    // A cancelled job cannot be cancelled again: a clear error, exit code 3 (the API said no).
    let refused = live.run(&["jobs", "cancel", &later_id]).await?;
    assert!(refused.failed(3).contains("cancelled"), "{refused:?}");

    let retried = live.run(&["jobs", "retry", &later_id]).await?;
    assert!(retried.ok().contains("queued"), "{}", retried.ok());
    koan::testing::wait_for_job(&live.api.host, &later_id, koan::job::JobState::Succeeded).await;
    live.run(&["jobs", "delete", &later_id]).await?.ok();
    let gone = live.run(&["jobs", "show", &later_id]).await?;
    assert!(gone.failed(3).contains("no job with id"), "{gone:?}");
    live.stop().await
}
