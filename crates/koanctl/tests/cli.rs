//! `koanctl` against a live control plane: a small koan host served on a loopback
//! port, and the compiled binary run against it. Every subcommand's success path, the
//! options reaching the server, `--json`, following events, completions and jobs. The
//! exit codes of the error paths are in `cli_errors.rs`.

mod common;

use std::sync::atomic::Ordering;

use common::{Follower, Live, koanctl, line_ending, line_holding, words};
use koan::service::BatchRequest;
use serde_json::{Value, json};

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
            // A background service's work is its actions, as on the dashboard.
            "0",
            "actions",
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

/// `restart` reaches `POST /api/services/{name}/restart` (its success is
/// `koan-http`'s `http_restart`): a service its supervisor did not give up on is
/// refused, the host's reason printed, exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_a_running_service_is_refused_with_the_reason() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let run = live.run(&["restart", "greeter"]).await?;
    let err = run.failed(3);
    assert!(err.contains("`Greeter` is `running`"), "{err}");
    let run = live.run(&["restart", "cleanup"]).await?;
    let err = run.failed(3);
    assert!(err.contains("not a background service"), "{err}");
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
    // The host's 204 names the job deleted, which koanctl requires.
    let deleted = live.run(&["jobs", "delete", &later_id]).await?;
    assert_eq!(deleted.ok(), format!("deleted {later_id}\n"));
    let gone = live.run(&["jobs", "show", &later_id]).await?;
    assert!(gone.failed(3).contains("no job with id"), "{gone:?}");
    live.stop().await
}
