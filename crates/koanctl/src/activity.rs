//! `koanctl history SERVICE` and `koanctl instances`: what ran lately, and the hosts of
//! the cluster.

use serde_json::Value;

use crate::answers::require_list;
use crate::client::Client;
use crate::commands::{emit, emit_json};
use crate::output::{field, table, time};

/// `koanctl history SERVICE [--limit N]`: the service's last runs, newest first.
pub(crate) async fn history(
    client: &Client,
    name: &str,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let segments = ["api", "services", name, "history"];
    let mut body = client
        .get(
            &segments,
            &[
                "service",
                "capacity",
                "runs",
                "actions_succeeded",
                "actions_failed",
            ],
        )
        .await?;
    require_list(
        &body["runs"],
        Some("runs"),
        &["started_at", "reason", "duration_ms", "outcome"],
        &client.what("GET", &segments),
    )?;
    if let (Some(n), Some(runs)) = (limit, body["runs"].as_array_mut()) {
        runs.truncate(n);
    }
    if json {
        return Ok(emit_json(&body)?);
    }
    Ok(emit(&history_text(&body))?)
}

fn history_text(h: &Value) -> String {
    let rows: Vec<Vec<String>> = h["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|r| {
                    let why = r["error"]
                        .as_str()
                        .or_else(|| r["message"].as_str())
                        .map_or_else(|| "-".to_owned(), |m| m.chars().take(60).collect());
                    vec![
                        time(&r["started_at"], 3),
                        field(r, "reason"),
                        format!("{} ms", field(r, "duration_ms")),
                        field(r, "outcome"),
                        why,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut text = if rows.is_empty() {
        "no finished runs\n".to_owned()
    } else {
        table(
            &["STARTED", "REASON", "DURATION", "OUTCOME", "ERROR"],
            &rows,
        )
    };
    text.push_str(&format!(
        "{}: {} run(s) shown (keeps {}); actions: {} succeeded, {} failed\n",
        field(h, "service"),
        rows.len(),
        field(h, "capacity"),
        field(h, "actions_succeeded"),
        field(h, "actions_failed"),
    ));
    text
}

/// `koanctl instances`: each host with its heartbeat age, load and services.
pub(crate) async fn instances(client: &Client, json: bool) -> anyhow::Result<()> {
    let segments = ["api", "instances"];
    let body = client.get(&segments, &["instances"]).await?;
    require_list(
        &body["instances"],
        Some("instances"),
        &[
            "name",
            "local",
            "stale",
            "heartbeat_age_ms",
            "load",
            "services",
        ],
        &client.what("GET", &segments),
    )?;
    if json {
        return Ok(emit_json(&body)?);
    }
    let rows: Vec<Vec<String>> = body["instances"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| {
                    let services: Vec<String> = i["services"]
                        .as_array()
                        .map(|s| s.iter().map(|x| field(x, "name")).collect())
                        .unwrap_or_default();
                    let mut name = field(i, "name");
                    if i["local"] == true {
                        name.push_str(" (this host)");
                    }
                    vec![
                        name,
                        if i["stale"] == true { "stale" } else { "live" }.to_owned(),
                        format!("{} ms", field(i, "heartbeat_age_ms")),
                        format!(
                            "{} running, {} queued",
                            field(&i["load"], "in_flight"),
                            field(&i["load"], "queue_depth")
                        ),
                        services.join(", "),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut text = table(
        &["INSTANCE", "STATUS", "HEARTBEAT", "LOAD", "SERVICES"],
        &rows,
    );
    if let Some(e) = body["registry_error"].as_str() {
        text.push_str(&format!("the cluster registry could not be read: {e}\n"));
    }
    Ok(emit(&text)?)
}
