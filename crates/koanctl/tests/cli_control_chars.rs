//! `koanctl` shows the control characters in a server's text instead of sending them
//! to the terminal: a job error holding `ESC [2J` (clear the screen) or
//! `ESC ]0;TITLE BEL` (set the window's title) is printed as `\u{1b}[2J`, in tables,
//! fields, error messages and events alike; `--json` stays the server's JSON.

mod common;

use common::fake::{Fake, Reply};
use common::{Run, koanctl};
use serde_json::{Value, json};

/// Text that would steer a terminal: clear the screen, set the title, return to the
/// start of the line, back up, delete, and a C1 "control sequence introducer".
const HOSTILE: &str = "boom\u{1b}[2J\u{1b}]0;TITLE\u{7}\r\u{8}\u{7f}\u{9b}31m";

fn job() -> Value {
    json!({
        "id": "j1", "state": "dead", "service": "Evil\u{1b}[2J", "action": "say",
        "params": { "text": HOSTILE }, "priority": 0, "attempts": 1, "max_attempts": 1,
        "created_at": "2025-01-02T03:04:05Z", "run_at": "2025-01-02T03:04:05Z",
        "finished_at": "2025-01-02T03:04:06Z", "correlation_id": HOSTILE,
        "idempotency_key": null, "result": null, "error": { "message": HOSTILE },
        "history": [{ "attempt": 1, "started_at": "2025-01-02T03:04:05Z",
                      "finished_at": "2025-01-02T03:04:06Z",
                      "instance": HOSTILE, "error": { "message": HOSTILE } }],
    })
}

fn route(line: &str) -> Reply {
    let path = line.split_once(' ').map_or(line, |(_, p)| p);
    match path {
        "/api/services" => Reply::json(&json!([{
            "name": HOSTILE, "kind": "background", "state": "running", "health": HOSTILE,
            "runs": 1, "failures": 0, "queue_depth": 0, "next_run": HOSTILE,
        }])),
        "/api/services/evil/status" => Reply::json(&json!({
            "name": "Evil", "kind": "periodic", "state": HOSTILE, "enabled": false,
            "disabled_reason": HOSTILE, "last_error": HOSTILE, "critical": false,
            "started_at": null, "next_run": null, "runs": 1, "failures": 1,
            "consecutive_failures": 1, "restarts": 0, "queue_depth": 0, "in_flight": 0,
            "last_run": { "reason": "trigger", "outcome": "failure", "error": HOSTILE },
        })),
        "/api/services/evil/history" => Reply::json(&json!({
            "service": HOSTILE, "capacity": 50, "actions_succeeded": 0, "actions_failed": 0,
            "runs": [{ "started_at": "2025-01-02T03:04:05Z", "reason": HOSTILE,
                       "duration_ms": 3, "outcome": "failure", "error": HOSTILE }],
        })),
        "/api/services/evil/actions/say?wait=true" => Reply::json(&json!({
            "service": "Evil", "action": "say", "result": format!("line one\n{HOSTILE}"),
        })),
        "/api/jobs" => Reply::json(&json!({ "jobs": [job()], "next_cursor": HOSTILE })),
        "/api/jobs/j1" => Reply::json(&job()),
        "/api/services/json-error" => Reply::Body {
            status: 500,
            content_type: "application/json",
            body: json!({ "error": HOSTILE, "message": format!("{HOSTILE}\nhint: fake") })
                .to_string()
                .into_bytes(),
        },
        "/api/events" => {
            let event = json!({
                "service": HOSTILE, "event": "E", "correlation_id": HOSTILE,
                "time": "2025-01-02T03:04:05Z", "seq": 1, "payload": HOSTILE,
            });
            Reply::Stream {
                body: format!("event: E\ndata: {event}\n\ndata: {HOSTILE}\n\n").into_bytes(),
                close: true,
            }
        }
        _ => Reply::Body {
            status: 404,
            content_type: "text/plain",
            body: HOSTILE.as_bytes().to_vec(),
        },
    }
}

/// Asserts that nothing in `run`'s output steers a terminal (line breaks aside), and
/// that the hostile text shows as escapes.
fn shown_not_obeyed(args: &[&str], run: &Run) {
    for (name, out) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        let bad: Vec<char> = out
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(bad.is_empty(), "{args:?}: {bad:?} on {name}: {run:#?}");
    }
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains(r"\u{1b}[2J\u{1b}]0;TITLE\u{7}\r\u{8}\u{7f}\u{9b}31m"),
        "{args:?}: {run:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_the_server_are_shown_escaped() -> anyhow::Result<()> {
    let fake = Fake::start(route).await?;
    let url = fake.url.as_str();
    for (args, code) in [
        (&["services"][..], 0),
        (&["status", "evil"], 0),
        (&["history", "evil"], 0),
        (&["jobs", "list"], 0),
        (&["jobs", "show", "j1"], 0),
        (&["act", "evil", "say"], 0),
        (&["info", "text-error"], 3),
        (&["info", "json-error"], 3),
        (&["events"], 4),
    ] {
        let mut all = vec!["--url", url];
        all.extend_from_slice(args);
        let run = koanctl(&all, &[]).await?;
        assert_eq!(run.code, Some(code), "{args:?}: {run:#?}");
        shown_not_obeyed(args, &run);
    }

    // A table stays aligned on what it shows; an action's text keeps its lines.
    let run = koanctl(&["--url", url, "services"], &[]).await?;
    let out = run.ok();
    let header = out.lines().next().unwrap_or_default();
    let row = out.lines().nth(1).unwrap_or_default();
    assert_eq!(
        row.find(" background"),
        header.find("KIND").map(|i| i - 1),
        "{out}"
    );
    let run = koanctl(&["--url", url, "act", "evil", "say"], &[]).await?;
    assert!(run.ok().starts_with("line one\nboom\\u{1b}[2J"), "{run:#?}");
    // The server's message cannot forge a line of koanctl's own.
    let run = koanctl(&["--url", url, "info", "json-error"], &[]).await?;
    assert_eq!(run.failed(3).lines().count(), 1, "{run:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_stays_the_server_s_json() -> anyhow::Result<()> {
    let fake = Fake::start(route).await?;
    let run = koanctl(&["--url", &fake.url, "--json", "jobs", "show", "j1"], &[]).await?;
    assert_eq!(run.json()?, job());
    let run = koanctl(&["--url", &fake.url, "--json", "events"], &[]).await?;
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 2, "{run:#?}");
    assert_eq!(lines[0]["service"], HOSTILE, "{run:#?}");
    // Data that is not JSON becomes a JSON string, so no line carries raw controls.
    assert_eq!(lines[1], HOSTILE, "{run:#?}");
    assert!(!run.stdout.contains('\u{1b}'), "{run:#?}");
    Ok(())
}
