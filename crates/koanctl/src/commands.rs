//! What each subcommand does.

use std::io::Write;

use reqwest::Method;
use serde_json::{Value, json};

use crate::act::{act, poke};
use crate::answers::{require, require_list};
use crate::cli::{Cli, Command};
use crate::client::{Client, Failure, api_error};
use crate::output::{self, cell, field, fields, table};

/// Writes `text`, meant for people, to stdout (a trailing newline added when missing):
/// a [`printable_block`](output::printable_block), so nothing in it steers the terminal.
pub(crate) fn emit(text: &str) -> std::io::Result<()> {
    emit_raw(&output::printable_block(text))
}

/// Writes `text` to stdout as it is (a trailing newline added when missing).
pub(crate) fn emit_raw(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Writes `body` as compact JSON, one line (JSON escapes control characters itself).
pub(crate) fn emit_json(body: &Value) -> std::io::Result<()> {
    emit_raw(&body.to_string())
}

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = &cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let mut out = std::io::stdout().lock();
        clap_complete::generate(*shell, &mut cmd, "koanctl", &mut out);
        out.flush()?;
        return Ok(());
    }
    // An empty KOAN_URL (`KOAN_URL= koanctl …`) means the default.
    let url = match cli.url.trim() {
        "" => crate::cli::DEFAULT_URL,
        url => url,
    };
    let token = crate::token::resolve(cli.token.clone(), url, cli.request_timeout)?;
    let client = Client::new(url, token, cli.request_timeout)?;
    let json = cli.json;
    let done = dispatch(&client, cli.command, json).await;
    if json
        && let Err(e) = &done
        && let Some(Failure::Api {
            document: Some(doc),
            ..
        }) = e.downcast_ref::<Failure>()
    {
        // Scripts read the error's kind on stdout; people read the message on stderr.
        // A stdout gone away changes nothing: the exit code still tells the failure.
        let _ = emit_json(doc);
    }
    done
}

/// Runs `command` against `client`.
async fn dispatch(client: &Client, command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Services => services(client, json).await,
        Command::Info { name } => info(client, &name, json).await,
        Command::Status { name } => status(client, &name, json).await,
        Command::Health { name } => health(client, name.as_deref(), json).await,
        Command::Act(args) => act(client, args, json).await,
        Command::Restart { name } => restart(client, &name, json).await,
        Command::Trigger { name, call } => poke(client, &name, "trigger", None, &call, json).await,
        Command::CheckQueue { name, call } => {
            poke(client, &name, "check-queue", None, &call, json).await
        }
        Command::ProcessBatch {
            name,
            batch_size,
            filter,
            call,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(n) = batch_size {
                body.insert("batchSize".into(), json!(n));
            }
            if let Some(f) = filter {
                body.insert("filter".into(), json!(f));
            }
            let body = (!body.is_empty()).then_some(Value::Object(body));
            poke(client, &name, "process-batch", body, &call, json).await
        }
        Command::Events {
            service,
            event,
            idle_timeout,
        } => {
            crate::events::follow(
                client,
                service.as_deref(),
                event.as_deref(),
                idle_timeout,
                json,
            )
            .await
        }
        Command::Jobs(cmd) => crate::jobs::run(client, cmd, json).await,
        Command::History { name, limit } => {
            crate::activity::history(client, &name, limit, json).await
        }
        Command::Instances => crate::activity::instances(client, json).await,
        Command::Completions { .. } => Ok(()),
    }
}

/// The fields of a row of `GET /api/services` that `koanctl services` shows.
const SERVICE_ROW: &[&str] = &[
    "name",
    "kind",
    "state",
    "health",
    "runs",
    "failures",
    "queue_depth",
    "next_run",
];

async fn services(client: &Client, json: bool) -> anyhow::Result<()> {
    let body = client.get_list(&["api", "services"], SERVICE_ROW).await?;
    if json {
        return Ok(emit_json(&body)?);
    }
    let list = body.as_array().map_or(&[][..], Vec::as_slice);
    // In a cluster a service runs on several hosts: each row says which (the same
    // name listed twice, nothing to tell the rows apart; a probe).
    let clustered = list.iter().any(|s| s["remote"] == true);
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let state = if s.get("enabled") == Some(&Value::Bool(false)) {
                "disabled".to_owned()
            } else {
                field(s, "state")
            };
            let (runs, failures) = work(s);
            let mut row = vec![
                field(s, "name"),
                field(s, "kind"),
                state,
                field(s, "health"),
                runs,
                failures,
                // Waiting and running, as the dashboard's mailbox column.
                (count(s, "queue_depth") + count(s, "in_flight")).to_string(),
                output::time(s.get("next_run").unwrap_or(&Value::Null), 0),
            ];
            if clustered {
                // A host that missed a heartbeat says so: its rows are the last it
                // announced (a re-probe read a frozen host's rows as running).
                let host = match (s["remote"] == true, s["stale"] == true) {
                    (false, _) => "(this host)".to_owned(),
                    (true, false) => field(s, "host"),
                    (true, true) => format!("{} (stale)", field(s, "host")),
                };
                row.insert(1, host);
            }
            row
        })
        .collect();
    let mut headers = vec![
        "NAME", "KIND", "STATE", "HEALTH", "RUNS", "FAILURES", "QUEUE", "NEXT RUN",
    ];
    if clustered {
        headers.insert(1, "HOST");
    }
    Ok(emit(&table(&headers, &rows))?)
}

/// A count field of a row, 0 when absent.
fn count(s: &Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or(0)
}

/// A service's runs and failures as the dashboard counts them: a background
/// service's run lasts as long as the host, so its work is its actions (`koanctl
/// services` said 0 runs, 0 failures for one that had handled 6; a re-probe).
fn work(s: &Value) -> (String, String) {
    if s["kind"] == "background" {
        let (ok, failed) = (count(s, "actions_succeeded"), count(s, "actions_failed"));
        let n = ok + failed;
        let runs = format!("{n} action{}", if n == 1 { "" } else { "s" });
        return (runs, (count(s, "failures") + failed).to_string());
    }
    (field(s, "runs"), field(s, "failures"))
}

async fn info(client: &Client, name: &str, json: bool) -> anyhow::Result<()> {
    let segments = ["api", "services", name];
    let body = client
        .get(
            &segments,
            &[
                "name",
                "kind",
                "description",
                "schedule",
                "enabled",
                "critical",
                "order",
                "actions",
                "events",
            ],
        )
        .await?;
    let what = client.what("GET", &segments);
    require_list(
        &body["actions"],
        Some("actions"),
        &["name", "params_schema"],
        &what,
    )?;
    require_list(&body["events"], Some("events"), &["name"], &what)?;
    if json {
        return Ok(emit_json(&body)?);
    }
    let mut text = fields(&[
        ("name", field(&body, "name")),
        ("kind", field(&body, "kind")),
        ("description", field(&body, "description")),
        ("schedule", field(&body, "schedule")),
        ("enabled", field(&body, "enabled")),
        ("critical", field(&body, "critical")),
        ("order", field(&body, "order")),
    ]);
    let empty = Vec::new();
    let actions = body
        .get("actions")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    text.push_str("\nACTIONS\n");
    if actions.is_empty() {
        text.push_str("(none)\n");
    } else {
        let rows: Vec<Vec<String>> = actions
            .iter()
            .map(|a| {
                let mut desc = a.get("description").map(cell).unwrap_or_else(|| "-".into());
                if a.get("builtin") == Some(&Value::Bool(true)) {
                    desc = if desc == "-" {
                        "(built-in)".into()
                    } else {
                        format!("{desc} (built-in)")
                    };
                }
                vec![
                    field(a, "name"),
                    output::params(a.get("params_schema").unwrap_or(&Value::Null)),
                    desc,
                ]
            })
            .collect();
        text.push_str(&table(&["NAME", "PARAMS", "DESCRIPTION"], &rows));
    }
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    text.push_str("\nEVENTS\n");
    if events.is_empty() {
        text.push_str("(none)\n");
    } else {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    field(e, "name"),
                    output::params(e.get("payload_schema").unwrap_or(&Value::Null)),
                    field(e, "description"),
                ]
            })
            .collect();
        text.push_str(&table(&["NAME", "PAYLOAD", "DESCRIPTION"], &rows));
    }
    Ok(emit(&text)?)
}

/// A run record in one line: `trigger at … took 3 ms: success`.
fn run_line(run: &Value) -> String {
    if run.is_null() {
        return "-".to_owned();
    }
    let mut line = format!(
        "{} at {}, {} ms: {}",
        field(run, "reason"),
        output::time(run.get("started_at").unwrap_or(&Value::Null), 0),
        field(run, "duration_ms"),
        field(run, "outcome"),
    );
    for key in ["error", "message"] {
        if let Some(m) = run.get(key).and_then(Value::as_str) {
            line.push_str(&format!(" ({m})"));
        }
    }
    line
}

async fn status(client: &Client, name: &str, json: bool) -> anyhow::Result<()> {
    let body = client
        .get(
            &["api", "services", name, "status"],
            &[
                "name",
                "kind",
                "state",
                "enabled",
                "critical",
                "started_at",
                "runs",
                "failures",
                "consecutive_failures",
                "restarts",
                "queue_depth",
                "in_flight",
                "next_run",
                "last_run",
                "last_error",
            ],
        )
        .await?;
    if json {
        return Ok(emit_json(&body)?);
    }
    let mut enabled = field(&body, "enabled");
    if let Some(why) = body.get("disabled_reason").and_then(Value::as_str) {
        enabled.push_str(&format!(" ({why})"));
    }
    let t = |k: &str| output::time(body.get(k).unwrap_or(&Value::Null), 0);
    let text = fields(&[
        ("name", field(&body, "name")),
        ("kind", field(&body, "kind")),
        ("state", field(&body, "state")),
        ("enabled", enabled),
        ("critical", field(&body, "critical")),
        ("started at", t("started_at")),
        ("runs", field(&body, "runs")),
        ("failures", field(&body, "failures")),
        ("consecutive failures", field(&body, "consecutive_failures")),
        ("restarts", field(&body, "restarts")),
        ("queue", field(&body, "queue_depth")),
        ("in flight", field(&body, "in_flight")),
        ("next run", t("next_run")),
        (
            "last run",
            run_line(body.get("last_run").unwrap_or(&Value::Null)),
        ),
        ("last error", field(&body, "last_error")),
    ]);
    Ok(emit(&text)?)
}

/// `POST /api/services/{name}/restart`, and what it says.
async fn restart(client: &Client, name: &str, json: bool) -> anyhow::Result<()> {
    let url = client.url(&["api", "services", name, "restart"]);
    let req = client.request(Method::POST, url.clone());
    let (code, body) = client.send(&url, req).await?;
    if !code.is_success() {
        return Err(api_error(code, &body).into());
    }
    require(&body, &["service", "message"], &format!("POST {url}"))?;
    if json {
        return Ok(emit_json(&body)?);
    }
    Ok(emit(&field(&body, "message"))?)
}

async fn health(client: &Client, name: Option<&str>, json: bool) -> anyhow::Result<()> {
    let segments: Vec<&str> = match name {
        Some(n) => vec!["api", "services", n, "health"],
        None => vec!["health"],
    };
    let url = client.url(&segments);
    let req = client.request(Method::GET, url.clone());
    let (code, body) = client.send(&url, req).await?;
    // An unhealthy host answers 503 with a health document, not an error body.
    let is_health = body.get("status").and_then(Value::as_str).is_some();
    if !code.is_success() && !is_health {
        return Err(api_error(code, &body).into());
    }
    let promised: &[&str] = if name.is_some() {
        &["service", "status", "critical", "description", "error"]
    } else {
        &["status", "checks"]
    };
    require(&body, promised, &format!("GET {url}"))?;
    if json {
        emit_json(&body)?;
    } else if name.is_some() {
        let mut pairs = vec![
            ("service", field(&body, "service")),
            ("status", field(&body, "status")),
            ("critical", field(&body, "critical")),
            ("description", field(&body, "description")),
            ("error", field(&body, "error")),
        ];
        if body.get("data").is_some_and(|d| !d.is_null()) {
            pairs.push(("data", field(&body, "data")));
        }
        emit(&fields(&pairs))?;
    } else {
        let mut text = fields(&[("status", field(&body, "status"))]);
        let rows: Vec<Vec<String>> = body
            .get("checks")
            .and_then(Value::as_object)
            .map(|checks| {
                checks
                    .iter()
                    .map(|(key, list)| {
                        let c = list.get(0).unwrap_or(&Value::Null);
                        vec![
                            key.strip_suffix(":health").unwrap_or(key).to_owned(),
                            field(c, "status"),
                            field(c, "critical"),
                            field(c, "output"),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !rows.is_empty() {
            text.push('\n');
            text.push_str(&table(&["SERVICE", "STATUS", "CRITICAL", "OUTPUT"], &rows));
        }
        emit(&text)?;
    }
    if code.is_success() {
        Ok(())
    } else {
        let what = name.map_or_else(|| "the host".to_owned(), |n| format!("`{n}`"));
        Err(Failure::Api {
            kind: "unhealthy".into(),
            message: format!("{what} reports `{}`", field(&body, "status")),
            // The health document, printed above, is the answer.
            document: None,
            foreign: false,
            correlation: None,
        }
        .into())
    }
}
