//! The demo as a cluster of separate processes over a real `nats-server`: one process
//! hosts `TranslationService`, another the rest and calls it over NATS through HTTP;
//! then durable translations survive a SIGKILL of a `TranslationService` process,
//! each completed exactly once.

#[path = "support/demo.rs"]
mod demo;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use demo::{Demo, Site, send, translations};
use koan_test_support::{PATIENCE, within};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long one translation takes in the process that is killed.
const SLOW: Duration = Duration::from_millis(1000);

/// Forwards the `TranslationStarted` events of `demo` (their file id, and when they
/// arrived) until the stream ends.
async fn started_events(
    client: &reqwest::Client,
    demo: &Demo,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>> {
    let mut resp = client
        .get(demo.url("/api/services/TranslationService/events"))
        .timeout(Duration::from_secs(3600))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == StatusCode::OK, "events: {}", resp.status());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let at = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = buf.find('\n') {
                let line: String = buf.drain(..=i).collect();
                let Some(data) = line.trim().strip_prefix("data:") else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                if v["event"] == "TranslationStarted"
                    && let Some(file) = v["payload"]["fileId"].as_str()
                {
                    let _ = tx.send((file.to_owned(), at));
                }
            }
        }
    });
    Ok(rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_demo_processes_translates_exactly_once_through_a_sigkill()
-> anyhow::Result<()> {
    const JOBS: usize = 30;
    let site = Site::start("koan-demo-cluster")?;
    let client = &site.client;

    // P1 translates, one at a time and slowly; P2 runs the rest.
    let mut p1 = site.translator("p1", SLOW, 1)?;
    let p2 = site.front("p2")?;

    // A translation through P2's HTTP API runs in P1.
    let (status, body) = send(
        client
            .post(p2.url("/api/services/TranslationService/actions/translate"))
            .json(&json!({"fileId": "first", "from": "en", "to": "es"})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["fileId"], "first", "{body}");
    assert_eq!(
        body["result"]["text"], "hola mundo el archivo es listo",
        "{body}"
    );
    assert_eq!(translations(&p1.db)?.get("first"), Some(&1), "stored by P1");
    assert!(
        translations(&p2.db).map(|t| t.is_empty()).unwrap_or(true),
        "P2 translated nothing itself"
    );

    // Durable translations, accepted by P2 and queued in JetStream.
    let mut started = started_events(client, &p1).await?;
    let mut ids = Vec::new();
    for k in 0..JOBS {
        let file = format!("job-{k}");
        let id = p2.enqueue_translation(client, &file, "fr").await?;
        ids.push((file, id));
    }

    // P1 works alone, one job at a time (it takes only what it can run, so the rest
    // wait in the stream). Its events are its own until P3 joins.
    let first = within("P1 to start a job", started.recv()).await?;
    anyhow::ensure!(first.is_some(), "P1's event stream ended");

    // Kill P1 in the middle of a job: half-way through its slow part, far from the
    // moment it stores a row, after it has finished at least one job.
    let mut seen = 1;
    let at = within("P1 to start a fresh job", async {
        loop {
            let (_, at) = started.recv().await?;
            seen += 1;
            if seen >= 3 && at.elapsed() < SLOW / 4 {
                return Some(at);
            }
        }
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("P1's event stream ended"))?;
    // A second TranslationService process joins (fast, 4 at a time) and takes the
    // jobs still in the stream.
    let mut p3 = site.translator("p3", Duration::from_millis(20), 4)?;
    tokio::time::sleep_until((at + SLOW / 2).into()).await;
    p1.kill();

    // Every job succeeds: the ones P1 held are redelivered to P3.
    let mut pending: Vec<&(String, String)> = ids.iter().collect();
    let deadline = Instant::now() + 2 * PATIENCE;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for job in pending {
            let (status, body) =
                send(client.get(p2.url(&format!("/api/actions/{}", job.1)))).await?;
            assert_eq!(status, StatusCode::OK, "{body}");
            match body["state"].as_str() {
                Some("succeeded") => {
                    assert_eq!(body["result"]["fileId"], job.0.as_str(), "{body}");
                }
                Some("queued" | "running") => still.push(job),
                _ => panic!("{} did not succeed: {body}", job.0),
            }
        }
        pending = still;
        assert!(Instant::now() < deadline, "jobs still pending: {pending:?}");
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Exactly once: every file id in exactly one row across both databases.
    let (by_p1, by_p3) = (translations(&p1.db)?, translations(&p3.db)?);
    for (file, _) in &ids {
        let n = by_p1.get(file).copied().unwrap_or(0) + by_p3.get(file).copied().unwrap_or(0);
        assert_eq!(
            n, 1,
            "{file} stored {n} times (P1: {by_p1:?}, P3: {by_p3:?})"
        );
    }
    let jobs_of = |t: &BTreeMap<String, u32>| t.keys().filter(|f| f.starts_with("job-")).count();
    assert!(
        jobs_of(&by_p1) >= 1,
        "P1 finished some before it died: {by_p1:?}"
    );
    assert!(jobs_of(&by_p3) >= 1, "P3 took over the rest: {by_p3:?}");
    assert_eq!(jobs_of(&by_p1) + jobs_of(&by_p3), JOBS);

    p3.kill();
    drop(p2);
    drop(site);
    Ok(())
}
