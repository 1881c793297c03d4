//! A worker frozen (SIGSTOP) past its claim on durable jobs: JetStream hands its jobs
//! to another instance, which completes them; when the frozen worker resumes, its
//! runs are fenced — cancelled, and no outcome or acknowledgement of theirs counts.

#[path = "support/demo.rs"]
mod demo;

use std::time::Duration;

use demo::{ALL_BUT_TRANSLATION, Demo, translation_env};
use koan_test_support::nats::NatsServer;
use koan_test_support::{TempDir, eventually, within};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn state(client: &reqwest::Client, p: &Demo, id: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(p.url(&format!("/api/jobs/{id}")))
        .send()
        .await?
        .json()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_workers_jobs_are_done_elsewhere_and_its_late_runs_are_fenced()
-> anyhow::Result<()> {
    const JOBS: usize = 4;
    let server = NatsServer::start()?;
    let dir = TempDir::new("koan-demo-freeze");
    let nats = server.url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // The accepting process, and a slow translator (2 at a time, 1.5 s each).
    let front = Demo::start(
        dir.path(),
        "front",
        &["--nats", &nats, "--services", ALL_BUT_TRANSLATION],
        &[],
    )?;
    let slow = Demo::start(
        dir.path(),
        "slow",
        &["--nats", &nats, "--services", "TranslationService"],
        &translation_env(Duration::from_millis(1500), 2),
    )?;
    eventually("the translator to be announced", || async {
        client
            .get(front.url("/api/services"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await?;
    let mut ids = Vec::new();
    for k in 0..JOBS {
        let resp = client
            .post(front.url("/api/services/TranslationService/actions/translate?wait=false"))
            .json(&json!({"fileId": format!("job-{k}"), "from": "en", "to": "fr"}))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["id"].as_str().unwrap_or_default().to_owned());
    }
    // The slow translator holds two jobs (it takes only what it can run) and is frozen
    // mid-run; a fast one joins.
    let running = within("two jobs to run", async {
        loop {
            let s: Value = client
                .get(slow.url("/api/services/TranslationService/status"))
                .send()
                .await?
                .json()
                .await?;
            if s["in_flight"].as_u64() == Some(2) {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    running.await??;
    slow.signal("-STOP")?;
    let _fast = Demo::start(
        dir.path(),
        "fast",
        &["--nats", &nats, "--services", "TranslationService"],
        &translation_env(Duration::from_millis(10), 4),
    )?;

    // Every job succeeds while the slow one is frozen: its two after its claim lapsed.
    eventually("every job to succeed", || async {
        let mut done = 0;
        for id in &ids {
            if state(&client, &front, id)
                .await
                .is_ok_and(|r| r["state"] == "succeeded")
            {
                done += 1;
            }
        }
        done == JOBS
    })
    .await?;

    // Resumed: both of its runs find their claim lapsed; they record nothing.
    slow.signal("-CONT")?;
    eventually("the resumed runs to be fenced", || async {
        slow.log().matches("claim lapsed").count() >= 2
    })
    .await?;
    for id in &ids {
        let r = state(&client, &front, id).await?;
        assert_eq!(r["state"], "succeeded", "{r}");
    }
    Ok(())
}
