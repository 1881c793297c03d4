//! `koanctl` against hosts whose answers are not the koan API's (a fake server on a
//! loopback port): an answer without the fields a command shows is refused (exit 1)
//! rather than shown as `-`, a redirect is refused rather than followed, a `--limit`
//! that would hide every run is a usage error, and with `--json` an error the API
//! answers is printed on stdout as well, for scripts to read its kind.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fake::{Fake, Reply};
use common::{Run, koanctl};
use serde_json::{Value, json};

/// Runs `koanctl --url URL [--json] ARGS…`.
async fn run(url: &str, json: bool, args: &[&str]) -> anyhow::Result<Run> {
    let mut all = vec!["--url", url];
    if json {
        all.push("--json");
    }
    all.extend_from_slice(args);
    koanctl(&all, &[]).await
}

/// Asserts that `run` refused an answer without `field`: exit 1, nothing on stdout,
/// and a message naming the field, pointing at `--url`, and showing what came back.
fn refused(args: &[&str], run: &Run, field: &str, excerpt: &str) {
    let err = run.failed(1);
    assert!(err.contains(&format!("`{field}`")), "{args:?}: {err}");
    assert!(err.contains("--url"), "{args:?}: {err}");
    assert!(err.contains(excerpt), "{args:?}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_the_promised_fields_is_refused() -> anyhow::Result<()> {
    let fake = Fake::always(|| Reply::json(&json!({}))).await?;
    let url = fake.url.as_str();
    for (args, field) in [
        (&["services"][..], "name"),
        (&["info", "X"], "name"),
        (&["status", "X"], "state"),
        (&["health"], "status"),
        (&["health", "X"], "status"),
        (&["history", "X"], "runs"),
        (&["instances"], "instances"),
        (&["jobs", "list"], "jobs"),
        (&["jobs", "counts"], "counts"),
        (&["jobs", "show", "J"], "state"),
        (&["jobs", "retry", "J"], "state"),
        (&["jobs", "cancel", "J"], "state"),
        (&["jobs", "retry-dead"], "retried"),
        (&["trigger", "X"], "result"),
        (&["check-queue", "X"], "result"),
        (&["process-batch", "X"], "result"),
        (&["act", "S", "a", "--params", "{}"], "result"),
        (&["act", "S", "a", "--no-wait"], "status_url"),
    ] {
        for json in [false, true] {
            let got = run(url, json, args).await?;
            refused(args, &got, field, "{}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_documents_of_the_wrong_shape_are_refused() -> anyhow::Result<()> {
    let fake = Fake::start(|line| {
        let path = line.split_once(' ').map_or(line, |(_, p)| p);
        match path {
            // A list of rows that are not services, or of jobs that are not jobs.
            "/api/services" => Reply::json(&json!([{ "hello": "world" }])),
            "/api/jobs" => Reply::json(&json!({ "jobs": [{ "hello": "world" }] })),
            // A list where a document is promised.
            "/api/services/X/status" => Reply::json(&json!([1, 2])),
            // Nothing at all.
            "/api/jobs/counts" => Reply::Body {
                status: 200,
                content_type: "application/json",
                body: Vec::new(),
            },
            // A health page of another program.
            _ => Reply::json(&json!({ "healthy": true })),
        }
    })
    .await?;
    let url = fake.url.as_str();
    for (args, field, excerpt) in [
        (&["services"][..], "name", r#"{"hello":"world"}"#),
        (&["jobs", "list"], "id", r#"{"hello":"world"}"#),
        (&["status", "X"], "name", "[1,2]"),
        (&["jobs", "counts"], "counts", "nothing"),
        (&["health"], "status", r#"{"healthy":true}"#),
    ] {
        for json in [false, true] {
            let got = run(url, json, args).await?;
            refused(args, &got, field, excerpt);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poke_shows_its_run_or_the_declared_action_s_result() -> anyhow::Result<()> {
    let fake = Fake::start(|line| {
        let path = line.split_once(' ').map_or(line, |(_, p)| p);
        let answer = |result: Value| {
            Reply::json(&json!({
                "service": "S", "action": "trigger", "correlation_id": "c", "result": result,
            }))
        };
        match path {
            // The built-in poke: the run that served it.
            "/api/services/S/trigger?wait=true" => answer(json!({
                "coalesced": false,
                "run": { "reason": "trigger", "started_at": "2025-01-02T03:04:05Z",
                         "duration_ms": 7, "outcome": "success" },
            })),
            // An action the service declares under the route's name: its own result.
            "/api/services/S/check-queue?wait=true" => answer(json!("3 items queued")),
            // A run without the fields a run has.
            _ => answer(json!({ "run": {} })),
        }
    })
    .await?;
    let url = fake.url.as_str();
    let got = run(url, false, &["trigger", "S"]).await?;
    assert_eq!(got.ok(), "S: trigger run succeeded in 7 ms\n");
    let got = run(url, false, &["check-queue", "S"]).await?;
    assert_eq!(got.ok(), "3 items queued\n");
    for json in [false, true] {
        let args = ["process-batch", "S"];
        let got = run(url, json, &args).await?;
        refused(&args, &got, "outcome", "`result.run` of the answer");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_came_back_is_shown_short_and_escaped() -> anyhow::Result<()> {
    let page = format!("\u{1b}[2J\u{9b}31m{}", "x".repeat(20_000));
    let fake = Fake::always(move || Reply::json(&json!({ "page": page }))).await?;
    let got = run(&fake.url, false, &["health"]).await?;
    let err = got.failed(1);
    assert!(err.contains("`status`"), "{err}");
    assert!(err.contains("page"), "{err}");
    assert!(err.contains('…'), "cut: {err}");
    assert!(err.len() < 1_000, "short: {err}");
    let bad: Vec<char> = err
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(bad.is_empty(), "{bad:?}: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_refused_not_followed() -> anyhow::Result<()> {
    // The host a redirect points at: it must never be asked.
    let asked = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&asked);
    let other = Fake::start(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        Reply::json(&json!({
            "service": "S", "action": "A", "correlation_id": "c",
            "result": "from the other host", "status": "pass", "checks": {},
        }))
    })
    .await?;
    for status in [301u16, 302, 303, 307, 308] {
        let location = format!("{}/elsewhere/{status}", other.url);
        let fake = Fake::always({
            let location = location.clone();
            move || Reply::Redirect {
                status,
                location: location.clone(),
            }
        })
        .await?;
        for args in [
            &["act", "S", "A", "--params", r#"{"x":1}"#][..],
            &["health"],
            &["jobs", "list"],
            &["events"],
        ] {
            for json in [false, true] {
                let got = run(&fake.url, json, args).await?;
                let err = got.failed(1);
                assert!(err.contains(&status.to_string()), "{args:?}: {err}");
                assert!(err.contains(&location), "{args:?}: {err}");
                assert!(err.contains("does not follow redirects"), "{args:?}: {err}");
                assert!(err.contains("--url"), "{args:?}: {err}");
            }
        }
    }
    assert_eq!(asked.load(Ordering::SeqCst), 0, "the other host was asked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_limit_out_of_range_is_a_usage_error() -> anyhow::Result<()> {
    let history = json!({
        "service": "S", "capacity": 50, "actions_succeeded": 0, "actions_failed": 0,
        "runs": [
            { "reason": "trigger", "started_at": "2025-01-02T03:04:05Z", "duration_ms": 3, "outcome": "success" },
            { "reason": "schedule", "started_at": "2025-01-02T02:04:05Z", "duration_ms": 4, "outcome": "success" },
        ],
    });
    let fake = Fake::always({
        let history = history.clone();
        move || Reply::json(&history)
    })
    .await?;
    let url = fake.url.as_str();
    for limit in ["0", "10001"] {
        for json in [false, true] {
            let got = run(url, json, &["history", "S", "--limit", limit]).await?;
            let err = got.failed(2);
            assert!(err.contains("--limit"), "{limit}: {err}");
            assert!(err.contains("1..=10000"), "{limit}: {err}");
        }
    }
    // Within the range, the runs are cut to the limit; the top is the whole answer.
    let got = run(url, true, &["history", "S", "--limit", "10000"]).await?;
    assert_eq!(got.json()?, history);
    let got = run(url, false, &["history", "S", "--limit", "1"]).await?;
    assert!(got.ok().contains("1 run(s) shown"), "{got:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_an_api_error_is_printed_on_stdout_too() -> anyhow::Result<()> {
    let unknown = json!({ "error": "unknown_service", "message": "no service `nope`" });
    let busy = json!({ "error": "queue_full", "message": "the mailbox is full", "retry": 3 });
    let unhealthy = json!({ "status": "fail", "checks": {} });
    let fake = Fake::start({
        let (unknown, busy, unhealthy) = (unknown.clone(), busy.clone(), unhealthy.clone());
        move |line| {
            let path = line.split_once(' ').map_or(line, |(_, p)| p);
            let json = |status, body: &Value| Reply::Body {
                status,
                content_type: "application/json",
                body: body.to_string().into_bytes(),
            };
            match path {
                "/api/services/nope/status" | "/api/events" => json(404, &unknown),
                "/api/services/S/actions/a?wait=true" => json(503, &busy),
                "/health" => json(503, &unhealthy),
                "/api/jobs" => Reply::Body {
                    status: 502,
                    content_type: "text/html",
                    body: b"<html>bad gateway</html>\n".to_vec(),
                },
                _ => Reply::Body {
                    status: 500,
                    content_type: "application/json",
                    body: Vec::new(),
                },
            }
        }
    })
    .await?;
    let url = fake.url.as_str();
    for (args, kind, body) in [
        (&["status", "nope"][..], "unknown_service", unknown.clone()),
        (&["events"], "unknown_service", unknown),
        (&["act", "S", "a"], "queue_full", busy),
        (
            &["jobs", "list"],
            "http_502",
            json!({ "error": "http_502", "message": "<html>bad gateway</html>" }),
        ),
        (
            &["jobs", "counts"],
            "http_500",
            json!({ "error": "http_500", "message": "the server answered 500 Internal Server Error" }),
        ),
    ] {
        let got = run(url, true, args).await?;
        assert_eq!(got.code, Some(3), "{args:?}: {got:#?}");
        assert!(
            got.stderr.starts_with(&format!("error: {kind}: ")),
            "{args:?}: {got:#?}"
        );
        assert_eq!(got.stdout.lines().count(), 1, "{args:?}: {got:#?}");
        let printed: Value = serde_json::from_str(&got.stdout)?;
        assert_eq!(printed, body, "{args:?}: {got:#?}");
        // Without `--json`, people read the error on stderr alone.
        run(url, false, args).await?.api_error(kind);
    }
    // An unhealthy host's document is printed once: it is the answer.
    let got = run(url, true, &["health"]).await?;
    assert_eq!(got.code, Some(3), "{got:#?}");
    assert_eq!(got.stdout.lines().count(), 1, "{got:#?}");
    assert_eq!(serde_json::from_str::<Value>(&got.stdout)?, unhealthy);
    Ok(())
}

/// `act --no-wait` answered `created: false` (a repeat under an idempotency key)
/// says that nothing new was stored, where it printed the first job as if new
/// (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_under_an_idempotency_key_says_nothing_was_stored() -> anyhow::Result<()> {
    let answer = |created: bool| json!({ "id": "J1", "correlation_id": "c1", "status_url": "/api/jobs/J1", "created": created });
    let repeat = Fake::always(move || Reply::json(&answer(false))).await?;
    let run = koanctl(
        &[
            "--url",
            &repeat.url,
            "act",
            "S",
            "a",
            "--no-wait",
            "--idempotency-key",
            "k1",
        ],
        &[],
    )
    .await?;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("nothing new was stored"), "{run:#?}");
    let new = Fake::always(move || Reply::json(&answer(true))).await?;
    let run = koanctl(&["--url", &new.url, "act", "S", "a", "--no-wait"], &[]).await?;
    assert!(!run.stdout.contains("nothing new"), "{run:#?}");
    Ok(())
}

/// A cluster host's job listing or counts marked `stale` (it could not read the
/// cluster's records) are printed, then warned of on stderr with exit 5: a script
/// checking for dead jobs was told there were none, exit 0 (a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_listing_or_count_is_printed_and_warned_of_with_exit_5() -> anyhow::Result<()> {
    let counts =
        json!({ "counts": { "dead": 0 }, "durable": true, "store": "nats", "stale": true });
    let list = json!({ "jobs": [], "next_cursor": null, "stale": true });
    for (args, body) in [(&["jobs", "counts"][..], counts), (&["jobs", "list"], list)] {
        let fake = Fake::always(move || Reply::json(&body)).await?;
        for json in [false, true] {
            let got = run(fake.url.as_str(), json, args).await?;
            assert_eq!(got.code, Some(5), "{args:?} json={json}: {got:#?}");
            assert!(
                got.stderr.starts_with("warning: stale:"),
                "{args:?}: {}",
                got.stderr
            );
            if json {
                let printed: Value = serde_json::from_str(&got.stdout)?;
                assert_eq!(printed["stale"], true);
            } else {
                assert!(
                    got.stdout.contains("STATE") || got.stdout.contains("ID"),
                    "{got:#?}"
                );
            }
        }
    }
    Ok(())
}

/// In a cluster `services` names each row's host: the same service listed twice
/// had nothing to tell the rows apart (a probe). Alone, no HOST column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_in_a_cluster_name_each_rows_host() -> anyhow::Result<()> {
    let row = json!({ "name": "Translation", "kind": "background", "state": "running",
        "health": "healthy", "runs": 0, "failures": 0, "queue_depth": 0, "next_run": null });
    let mut remote = row.clone();
    remote["remote"] = json!(true);
    remote["host"] = json!("other-4242");
    remote["stale"] = json!(true);
    remote["actions_succeeded"] = json!(5);
    remote["actions_failed"] = json!(1);
    let both = json!([row.clone(), remote]);
    let fake = Fake::always(move || Reply::json(&both)).await?;
    let got = run(fake.url.as_str(), false, &["services"]).await?;
    let out = got.ok();
    assert!(
        out.lines().next().is_some_and(|h| h.contains("HOST")),
        "{out}"
    );
    assert!(
        out.contains("other-4242 (stale)") && out.contains("(this host)"),
        "{out}"
    );
    // A background service's work is its actions, as on the dashboard.
    assert!(out.contains("6 actions"), "{out}");
    let alone = json!([row]);
    let fake = Fake::always(move || Reply::json(&alone)).await?;
    let got = run(fake.url.as_str(), false, &["services"]).await?;
    assert!(!got.ok().contains("HOST"), "{got:#?}");
    Ok(())
}

/// A host's `note` on a job listing, counts or `retry-dead` (its service filter
/// names no service it knows) is a warning on stderr, the answer printed, exit 0:
/// a typo read as "no jobs" (a re-probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_on_jobs_is_warned_of() -> anyhow::Result<()> {
    let note = "no service named `Gone` runs on this host";
    let counts =
        json!({ "counts": { "dead": 0 }, "durable": true, "store": "sqlite", "note": note });
    let retried = json!({ "retried": 0, "note": note });
    for (args, body) in [
        (&["jobs", "counts", "--service", "Gone"][..], counts),
        (&["jobs", "retry-dead", "--service", "Gone"], retried),
    ] {
        let fake = Fake::always(move || Reply::json(&body)).await?;
        let got = run(fake.url.as_str(), false, args).await?;
        assert_eq!(got.code, Some(0), "{args:?}: {got:#?}");
        assert!(
            got.stderr.contains(&format!("warning: {note}")),
            "{args:?}: {got:#?}"
        );
    }
    Ok(())
}
