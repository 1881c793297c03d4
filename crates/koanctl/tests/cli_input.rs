//! What the operator types, read as the host reads it: `--params` whose object names
//! a key twice (refused: the host refuses such a body), `--at` with an offset or in
//! lower case (taken: the host takes it), and a global option given before and after
//! the subcommand (refused, as twice at one level), a `--correlation-id` with a space
//! (taken: the host takes it).

mod common;

use std::process::Stdio;

use chrono::{FixedOffset, SecondsFormat, TimeDelta, Utc};
use common::{Live, Run, command};
use koan_test_support::within;
use tokio::io::AsyncWriteExt;

/// Runs `koanctl ARGS…` with `input` on its standard input.
async fn with_stdin(args: &[&str], input: &str) -> anyhow::Result<Run> {
    let mut cmd = tokio::process::Command::from(command(args, &[]));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    stdin.write_all(input.as_bytes()).await?;
    drop(stdin);
    let out = within("koanctl reading its stdin", child.wait_with_output()).await??;
    Ok(Run::from(out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_naming_a_key_twice_are_refused_as_the_host_refuses_them() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    // Read as a map and written out again, this ran as the call with "Eve" (the last
    // key won), exit 0 (a probe).
    let twice = r#"{"name": "Ada", "times": 1, "name": "Eve"}"#;
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("koanctl-twice.json");
    std::fs::write(&file, twice)?;
    let at_file = format!("@{}", file.display());
    let base = live.api.base.as_str();
    let greet = ["--url", base, "act", "greeter", "greet", "--params"];
    for (params, origin) in [
        (twice, "--params"),
        (at_file.as_str(), "file `"),
        ("@-", "standard input"),
    ] {
        let mut args = greet.to_vec();
        args.push(params);
        let run = with_stdin(&args, twice).await?;
        let err = run.failed(2);
        assert!(
            err.starts_with(&format!("error: {origin}")),
            "{params}: {err}"
        );
        assert!(
            err.contains("key `name` appears twice in one object at line 1 column 34"),
            "{params}: {err}"
        );
        assert!(err.contains("give each key once"), "{params}: {err}");
    }
    // Nested, and in a list, too; the same key in two objects is no repeat.
    let run = live
        .run(&[
            "act",
            "greeter",
            "greet",
            "--params",
            r#"{"name": "Ada", "times": 1, "x": [{"k": 1, "k": 2}]}"#,
        ])
        .await?;
    assert!(run.failed(2).contains("key `k` appears twice"), "{run:?}");
    let run = with_stdin(&greet.iter().copied().chain(["@-"]).collect::<Vec<_>>(), {
        r#" {"name": "Ada", "times": 1, "x": [{"k": 1}, {"k": 2}]} "#
    })
    .await?;
    assert_eq!(run.ok(), "Hello Ada!\n");
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_takes_any_rfc_3339_time_as_the_host_does() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let india = FixedOffset::east_opt(5 * 3600 + 1800)
        .ok_or_else(|| anyhow::anyhow!("+05:30 is an offset"))?;
    let when = (Utc::now() + TimeDelta::hours(2))
        .with_timezone(&india)
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let instant = chrono::DateTime::parse_from_rfc3339(&when)?.to_utc();
    let lower = instant
        .to_rfc3339_opts(SecondsFormat::Secs, true)
        .to_lowercase();
    // `2026-…T…+05:30` (a `+` that must reach the host as `%2B`) and `2026-…t…z` were
    // refused as "not an RFC 3339 time", exit 2 (a probe).
    for at in [when.as_str(), lower.as_str()] {
        let body = live.enqueue_whoami(&["--at", at]).await?;
        let id = body["id"].as_str().unwrap_or_default();
        let record = live.api.host.jobs().get(id).await?;
        assert_eq!(record.run_at, instant, "--at {at}");
    }
    // Still refused: no offset, no time.
    for at in ["2026-12-24T18:00:00", "2026-12-24"] {
        let run = live.whoami(&["--no-wait", "--at", at]).await?;
        assert!(run.failed(2).contains("is not an RFC 3339 time"), "{run:?}");
    }
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_option_before_and_after_the_subcommand_is_refused() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let base = live.api.base.as_str();
    // The first `--url` names no host: the command ran against the second, exit 0,
    // where `--url` twice before the subcommand is refused (a probe).
    let nowhere = "http://127.0.0.1:1";
    for args in [
        &["--url", nowhere, "services", "--url", base][..],
        &["--url", nowhere, "jobs", "list", &format!("--url={base}")],
        &["--url", base, "--json", "services", "--json"],
        &["--url", base, "--token", "a", "services", "--token", "b"],
    ] {
        let run = common::koanctl(args, &[]).await?;
        let err = run.failed(2);
        assert!(
            err.contains("cannot be used multiple times"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("'a'") && !err.contains("'b'"),
            "no token: {err}"
        );
    }
    // Once, at either level, as before.
    let run = common::koanctl(&["services", "--url", base], &[]).await?;
    assert!(run.ok().contains("Greeter"), "{run:?}");
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_id_the_host_takes_is_taken() -> anyhow::Result<()> {
    // `order 42` (a space) was refused, exit 2, where the host takes it (a probe).
    let live = Live::start(None).await?;
    for id in ["order 42", "a\"b'c"] {
        let run = live.whoami(&["--correlation-id", id]).await?;
        let seen: serde_json::Value = serde_json::from_str(run.ok())?;
        assert_eq!(seen["correlation_id"], id, "{run:?}");
    }
    // What the host refuses is refused before anything is sent, naming the flag.
    for id in ["", "tab\there", "é"] {
        let run = live.whoami(&["--correlation-id", id]).await?;
        let err = run.failed(2);
        assert!(err.contains("--correlation-id"), "{id:?}: {err}");
        assert!(err.contains("printable ASCII"), "{id:?}: {err}");
    }
    // A space at either end would not reach the host (a header's value loses it):
    // ` x ` was recorded as `x`.
    let run = live.whoami(&["--correlation-id", " x "]).await?;
    assert!(
        run.failed(2).contains("starts or ends with a space"),
        "{run:?}"
    );
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_id_or_filter_the_host_would_refuse_is_refused_naming_it() -> anyhow::Result<()> {
    // `jobs show ""` came back as "not_found: no route `/api/jobs/`", exit 3, and
    // `jobs list --service ""` as "query parameter `service` …": words the operator
    // never typed (a probe).
    let live = Live::start(None).await?;
    let long = "x".repeat(201);
    for (args, says) in [
        (&["jobs", "show", ""][..], "<ID>"),
        (&["jobs", "delete", ""], "<ID>"),
        (&["jobs", "retry", long.as_str()], "<ID>"),
        (&["jobs", "list", "--service", ""], "--service"),
        (
            &["jobs", "list", "--correlation-id", long.as_str()],
            "--correlation-id",
        ),
        (&["jobs", "list", "--cursor", ""], "--cursor"),
        (&["jobs", "counts", "--service", ""], "--service"),
    ] {
        let run = live.run(args).await?;
        let err = run.failed(2);
        assert!(
            err.contains(says) && err.contains("1 to 200"),
            "{args:?}: {err}"
        );
    }
    live.stop().await
}
