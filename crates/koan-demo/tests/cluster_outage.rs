//! Two demo processes on a real `nats-server`, then the server goes away and comes
//! back: listings answer from the last registry view marked stale (the jobs'
//! listing from the last view of a host whose jobs were being listed), `/health` warns
//! about the connection (and passes again after), and a job for a service no
//! instance announces is refused with 404 instead of waiting forever.

#[path = "support/demo.rs"]
mod demo;

use demo::{Demo, Site, send};
use koan_test_support::eventually;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn get(client: &reqwest::Client, url: String) -> anyhow::Result<(StatusCode, Value)> {
    send(client.get(url)).await
}

/// The row of `TranslationService` (hosted by the other process) in P2's listing.
async fn remote_row(client: &reqwest::Client, p2: &Demo) -> anyhow::Result<Option<Value>> {
    let (status, list) = get(client, p2.url("/api/services")).await?;
    anyhow::ensure!(status == StatusCode::OK, "{list}");
    Ok(list.as_array().and_then(|rows| {
        rows.iter()
            .find(|r| r["name"] == "TranslationService" && r["remote"] == true)
            .cloned()
    }))
}

async fn connection_check(client: &reqwest::Client, p2: &Demo) -> anyhow::Result<(Value, Value)> {
    let (_, health) = get(client, p2.url("/health")).await?;
    let check = health["checks"]["transport:connection"][0]["status"].clone();
    Ok((health["status"].clone(), check))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_reported_and_listings_answer_from_the_last_view() -> anyhow::Result<()>
{
    let mut site = Site::start("koan-demo-outage")?;
    let client = site.client.clone();
    let p1 = site.demo("p1", Some("TranslationService"), &[])?;
    let p2 = site.front("p2")?;

    eventually("P2 to list P1's TranslationService", || async {
        remote_row(&client, &p2)
            .await
            .is_ok_and(|r| r.is_some_and(|r| r["stale"] != true))
    })
    .await?;
    let (status, check) = connection_check(&client, &p2).await?;
    assert_eq!(check, "pass", "connected: {status}");
    // The listing's ages are the transport's: a heartbeat every 2 s, late after
    // one missed, gone after three (it said 10 s, while rows left after 6).
    let (_, list) = get(&client, p2.url("/api/instances")).await?;
    assert_eq!(
        (&list["stale_after_ms"], &list["gone_after_ms"]),
        (&json!(4000), &json!(6000)),
        "{list}"
    );

    // A job for a service no instance announces: refused, nothing stored to wait forever.
    let resp = client
        .post(p2.url("/api/services/NoSuchService/actions/run?wait=false"))
        .json(&json!({}))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "unknown_service", "{body}");
    // A service that one instance announces is accepted (JetStream stores it).
    p2.enqueue_translation(&client, "before-outage", "es")
        .await?;
    // P2's jobs are listed (an operator has its dashboard open): P2 follows the
    // cluster's job records from then on. P1's never are.
    eventually("P2 to list the job", || async {
        get(&client, p2.url("/api/jobs")).await.is_ok_and(|(_, j)| {
            j.get("stale").is_none() && j["jobs"].as_array().is_some_and(|l| !l.is_empty())
        })
    })
    .await?;

    // The broker goes away.
    site.server.kill();
    eventually("P2's /health to warn about the connection", || async {
        connection_check(&client, &p2)
            .await
            .is_ok_and(|(status, check)| check == "warn" && status == "warn")
    })
    .await?;
    // The listing still answers, from the last view, marked stale.
    let row = remote_row(&client, &p2)
        .await?
        .ok_or_else(|| anyhow::anyhow!("TranslationService left P2's listing during the outage"))?;
    assert_eq!(row["stale"], true, "{row}");
    let (status, list) = get(&client, p2.url("/api/instances")).await?;
    assert_eq!(status, StatusCode::OK, "{list}");
    let remote: Vec<&Value> = list["instances"]
        .as_array()
        .map(|l| l.iter().filter(|i| i["local"] == false).collect())
        .unwrap_or_default();
    assert_eq!(remote.len(), 1, "{list}");
    assert_eq!(remote[0]["stale"], true, "{list}");
    // So does the jobs listing: the job accepted before the outage, marked stale.
    let (status, jobs) = get(&client, p2.url("/api/jobs")).await?;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    assert_eq!(jobs["stale"], true, "{jobs}");
    assert!(
        jobs["jobs"].as_array().is_some_and(|l| !l.is_empty()),
        "the cluster's jobs as last seen: {jobs}"
    );
    // P1, whose jobs were never listed, has no view to answer from: it says so at
    // once (stale, empty) rather than waiting for the broker.
    let (status, none) = get(&client, p1.url("/api/jobs")).await?;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none["stale"], true, "{none}");
    assert_eq!(none["jobs"], json!([]), "{none}");
    // Its counts say so too: all zeros, but stale (they read as "no dead jobs";
    // a probe).
    let (status, counts) = get(&client, p1.url("/api/jobs/counts")).await?;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(counts["stale"], true, "{counts}");

    // The broker is back: the connection passes and the view is fresh again.
    site.server.restart()?;
    eventually("P2 to reconnect and refresh its view", || async {
        let passes = connection_check(&client, &p2)
            .await
            .is_ok_and(|(_, check)| check == "pass");
        let fresh = remote_row(&client, &p2)
            .await
            .is_ok_and(|r| r.is_some_and(|r| r["stale"] != true));
        let jobs_fresh = get(&client, p2.url("/api/jobs"))
            .await
            .is_ok_and(|(_, j)| j.get("stale").is_none());
        let counts_fresh = get(&client, p2.url("/api/jobs/counts"))
            .await
            .is_ok_and(|(_, c)| c.get("stale").is_none());
        passes && fresh && jobs_fresh && counts_fresh
    })
    .await?;
    Ok(())
}
