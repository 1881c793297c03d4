//! `koanctl jobs …`: stored jobs through `/api/jobs`.

use reqwest::Method;
use serde_json::Value;

use crate::answers::{require, require_deleted, require_list};
use crate::cli::JobsCommand;
use crate::client::{Answer, Client, DEADLINE_HINT, Failure, check};
use crate::commands::{emit, emit_json};
use crate::output::{cell, field, fields, table, time};

/// Runs one `jobs` subcommand.
pub(crate) async fn run(client: &Client, cmd: JobsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::List {
            state,
            service,
            action,
            correlation_id,
            limit,
            cursor,
        } => {
            let mut url = client.url(&["api", "jobs"]);
            let filters = [
                ("state", state),
                ("service", service),
                ("action", action),
                ("correlation_id", correlation_id),
                ("limit", limit.map(|n| n.to_string())),
            ];
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in filters.iter().chain([&("cursor", cursor)]) {
                    if let Some(v) = v {
                        q.append_pair(k, v);
                    }
                }
            }
            if url.query() == Some("") {
                url.set_query(None);
            }
            let req = client.request(Method::GET, url.clone());
            let (status, body) = client.send(&url, req).await?;
            let body = check(status, body)?;
            let what = format!("GET {url}");
            require(&body, &["jobs"], &what)?;
            require_list(&body["jobs"], Some("jobs"), JOB_ROW, &what)?;
            if json {
                emit_json(&body)?;
            } else {
                emit(&list_text(&body, &filters))?;
            }
            stale(&body)
        }
        JobsCommand::Counts { service } => {
            let body = for_service(
                client,
                Method::GET,
                "counts",
                service.as_deref(),
                &["counts", "store", "durable"],
            )
            .await?;
            if json {
                emit_json(&body)?;
                return stale(&body);
            }
            let rows: Vec<Vec<String>> = body["counts"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect())
                .unwrap_or_default();
            let mut text = table(&["STATE", "JOBS"], &rows);
            text.push_str(&format!(
                "store: {}{}\n",
                field(&body, "store"),
                if body["durable"] == true {
                    ""
                } else {
                    " (not durable)"
                }
            ));
            if body["partial"] == true {
                text.push_str(PARTIAL);
            }
            emit(&text)?;
            stale(&body)
        }
        JobsCommand::Show { id } => {
            let segments = ["api", "jobs", &id];
            let body = client.get(&segments, JOB).await?;
            let what = client.what("GET", &segments);
            require_list(&body["history"], Some("history"), ATTEMPT, &what)?;
            if json {
                return Ok(emit_json(&body)?);
            }
            Ok(emit(&show_text(&body))?)
        }
        JobsCommand::Retry { id } => post(client, &["api", "jobs", &id, "retry"], json).await,
        JobsCommand::Cancel { id } => post(client, &["api", "jobs", &id, "cancel"], json).await,
        JobsCommand::RetryDead { service } => {
            let body = for_service(
                client,
                Method::POST,
                "retry-dead",
                service.as_deref(),
                &["retried"],
            )
            .await?;
            noted(&body);
            if json {
                return Ok(emit_json(&body)?);
            }
            Ok(emit(&format!(
                "retried {} dead jobs",
                field(&body, "retried")
            ))?)
        }
        JobsCommand::Delete { id } => {
            let url = client.url(&["api", "jobs", &id]);
            let req = client.request(Method::DELETE, url.clone());
            let answer = client
                .send_within(&url, req, client.deadline(), DEADLINE_HINT)
                .await?;
            let answer = Answer {
                body: check(answer.status, answer.body)?,
                ..answer
            };
            // A koan host answers `204 No Content` naming the job, nothing else: a
            // server that answers `200 {}`, or a bare 204, to everything was
            // reported as having deleted the job (found by a probe).
            require_deleted(&answer, &id, &format!("DELETE {url}"), client.shown())?;
            Ok(emit(&format!("deleted {id}"))?)
        }
    }
}

/// The fields of a job in a listing that `jobs list` shows.
const JOB_ROW: &[&str] = &[
    "id",
    "state",
    "service",
    "action",
    "attempts",
    "max_attempts",
    "created_at",
    "error",
];

/// The fields of a job that `jobs show` shows.
const JOB: &[&str] = &[
    "id",
    "state",
    "service",
    "action",
    "params",
    "priority",
    "correlation_id",
    "idempotency_key",
    "created_at",
    "run_at",
    "finished_at",
    "attempts",
    "max_attempts",
    "result",
    "error",
    "history",
];

/// The fields of an attempt of a job that `jobs show` shows.
const ATTEMPT: &[&str] = &["attempt", "started_at", "finished_at", "instance", "error"];

/// `METHOD /api/jobs/{route}[?service=…]` (counts and retry-dead), checked, with
/// `fields`.
async fn for_service(
    client: &Client,
    method: Method,
    route: &str,
    service: Option<&str>,
    fields: &[&str],
) -> anyhow::Result<Value> {
    let mut url = client.url(&["api", "jobs", route]);
    if let Some(s) = service {
        url.query_pairs_mut().append_pair("service", s);
    }
    let req = client.request(method.clone(), url.clone());
    let (status, body) = client.send(&url, req).await?;
    let body = check(status, body)?;
    require(&body, fields, &format!("{method} {url}"))?;
    Ok(body)
}

/// POSTs to a job route and prints the job it answers with.
async fn post(client: &Client, segments: &[&str], json: bool) -> anyhow::Result<()> {
    let url = client.url(segments);
    let req = client.request(Method::POST, url.clone());
    let (status, body) = client.send(&url, req).await?;
    let body = check(status, body)?;
    require(&body, &["id", "state"], &format!("POST {url}"))?;
    if json {
        return Ok(emit_json(&body)?);
    }
    Ok(emit(&format!(
        "{} is {}",
        field(&body, "id"),
        field(&body, "state")
    ))?)
}

/// A word as a POSIX shell reads it back: as it is when it is plain, else quoted.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@+=,".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The listing's page as a table, then the command for the next page (with the
/// same filters: without them it listed every job; found by a probe).
fn list_text(body: &Value, filters: &[(&str, Option<String>)]) -> String {
    let rows: Vec<Vec<String>> = body["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    vec![
                        field(j, "id"),
                        field(j, "state"),
                        field(j, "service"),
                        field(j, "action"),
                        format!("{}/{}", field(j, "attempts"), field(j, "max_attempts")),
                        time(&j["created_at"], 0),
                        j["error"]["message"]
                            .as_str()
                            .map_or_else(|| "-".to_owned(), |m| m.chars().take(60).collect()),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut text = table(
        &[
            "ID", "STATE", "SERVICE", "ACTION", "ATTEMPTS", "CREATED", "ERROR",
        ],
        &rows,
    );
    if let Some(next) = body["next_cursor"].as_str() {
        let mut command = "koanctl jobs list".to_owned();
        for (flag, value) in filters {
            if let Some(value) = value {
                let flag = flag.replace('_', "-");
                // `--flag=value`: a value that starts with `-` is not taken for
                // a flag.
                command.push_str(&format!(" --{flag}={}", shell_word(value)));
            }
        }
        text.push_str(&format!("next: {command} --cursor={}\n", shell_word(next)));
    }
    if body["partial"] == true {
        text.push_str(PARTIAL);
    }
    text
}

/// A listing or counts printed, then, when the host said they are `stale`, a
/// warning and exit 5: a script checking for dead jobs was told there were none,
/// exit 0, while the cluster's records could not be read (a probe).
///
/// The host's `note` (a service filter naming no service it knows) is warned of
/// on stderr first: a typo read as "no jobs" (a re-probe).
fn stale(body: &Value) -> anyhow::Result<()> {
    noted(body);
    if body["stale"] != true {
        return Ok(());
    }
    Err(Failure::Stale(
        "stale: the host could not read the cluster's current job records (its broker unreachable, or its view of them still catching up): what is printed is the last it knew, which may be nothing; try again".to_owned(),
    )
    .into())
}

/// Warns on stderr of the host's `note` on an answer, if any.
fn noted(body: &Value) {
    if let Some(note) = body["note"].as_str() {
        eprintln!("warning: {}", crate::output::printable(note));
    }
}

/// Said under a listing or counts that cover only part of the cluster's jobs.
const PARTIAL: &str = "partial: the instance holds only the most recently written of the \
                       cluster's jobs (koan.nats.view_max_records); show any job by its id\n";

fn show_text(j: &Value) -> String {
    let mut text = fields(&[
        ("id", field(j, "id")),
        ("state", field(j, "state")),
        ("service", field(j, "service")),
        ("action", field(j, "action")),
        ("params", cell(&j["params"])),
        ("priority", field(j, "priority")),
        ("correlation_id", field(j, "correlation_id")),
        ("idempotency_key", field(j, "idempotency_key")),
        ("created_at", time(&j["created_at"], 3)),
        ("run_at", time(&j["run_at"], 3)),
        ("finished_at", time(&j["finished_at"], 3)),
        (
            "attempts",
            format!("{} of {}", field(j, "attempts"), field(j, "max_attempts")),
        ),
        (
            "result",
            if j["result_truncated"] == true {
                format!("{} (cut)", cell(&j["result"]))
            } else {
                cell(&j["result"])
            },
        ),
        (
            "error",
            j["error"]["message"].as_str().unwrap_or("-").to_owned(),
        ),
    ]);
    let rows: Vec<Vec<String>> = j["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|a| {
                    vec![
                        field(a, "attempt"),
                        time(&a["started_at"], 3),
                        time(&a["finished_at"], 3),
                        field(a, "instance"),
                        a["error"]["message"].as_str().unwrap_or("-").to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !rows.is_empty() {
        text.push('\n');
        text.push_str(&table(
            &["ATTEMPT", "STARTED", "FINISHED", "INSTANCE", "ERROR"],
            &rows,
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_covering_part_of_the_cluster_s_jobs_says_so() {
        let partial = serde_json::json!({ "jobs": [], "next_cursor": null, "partial": true });
        assert!(list_text(&partial, &[]).contains("partial: the instance holds only"));
        let whole = serde_json::json!({ "jobs": [], "next_cursor": null });
        assert!(!list_text(&whole, &[]).contains("partial"));
    }

    #[test]
    fn the_next_page_command_keeps_the_filters() {
        let body = serde_json::json!({ "jobs": [], "next_cursor": "01a2-b" });
        let filters = [
            ("state", Some("dead".to_owned())),
            ("service", Some("Translation Service".to_owned())),
            ("action", None),
            ("correlation_id", Some("it's".to_owned())),
            ("limit", Some("2".to_owned())),
        ];
        let text = list_text(&body, &filters);
        assert!(
            text.contains("next: koanctl jobs list --state=dead --service='Translation Service' --correlation-id='it'\\''s' --limit=2 --cursor=01a2-b\n"),
            "{text}"
        );
    }
}
