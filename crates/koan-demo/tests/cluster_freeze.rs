//! A worker frozen (SIGSTOP) past its claim on durable jobs: JetStream hands its jobs
//! to another instance, which completes them; when the frozen worker resumes, its
//! runs are fenced — cancelled, and no outcome or acknowledgement of theirs counts.

#[path = "support/demo.rs"]
mod demo;

use std::time::Duration;

use demo::Site;
use koan_test_support::eventually;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_workers_jobs_are_done_elsewhere_and_its_late_runs_are_fenced()
-> anyhow::Result<()> {
    const JOBS: usize = 4;
    let site = Site::start("koan-demo-freeze")?;
    let client = &site.client;
    // The accepting process, and a slow translator (2 at a time, 1.5 s each).
    let front = site.front("front")?;
    let slow = site.translator("slow", Duration::from_millis(1500), 2)?;
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
        ids.push(
            front
                .enqueue_translation(client, &format!("job-{k}"), "fr")
                .await?,
        );
    }
    // The slow translator holds two jobs (it takes only what it can run) and is frozen
    // mid-run; a fast one joins.
    slow.wait_in_flight(client, 2).await?;
    slow.signal("-STOP")?;
    let _fast = site.translator("fast", Duration::from_millis(10), 4)?;

    // Every job succeeds while the slow one is frozen: its two after its claim lapsed.
    eventually("every job to succeed", || async {
        let mut done = 0;
        for id in &ids {
            if front
                .job(client, id)
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
        let r = front.job(client, id).await?;
        assert_eq!(r["state"], "succeeded", "{r}");
    }
    Ok(())
}

/// A caller paused (SIGSTOP) while its call runs on another process gets the call's
/// answer once it resumes. On waking, every instance looked gone to it — itself
/// too: it had read no heartbeat for the pause — and it answered `503` "instance …
/// left the cluster … outcome is unknown" for a translation that was done (a probe
/// saw it 3 times in 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_paused_mid_call_gets_its_answer_when_it_resumes() -> anyhow::Result<()> {
    let site = Site::start("koan-demo-paused-caller")?;
    let client = &site.client;
    let front = site.front("front")?;
    let translator = site.translator("translator", Duration::from_millis(1500), 1)?;
    eventually("the translator to be announced to the front", || async {
        client
            .get(front.url("/api/services/TranslationService/status"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await?;
    let call = client
        .post(front.url("/api/services/TranslationService/actions/translate"))
        .json(&serde_json::json!({"fileId": "paused.txt", "from": "en", "to": "fr"}))
        .send();
    let call = tokio::spawn(call);
    translator.wait_in_flight(client, 1).await?;
    front.signal("-STOP")?;
    // The pause is the scenario: past three heartbeats (2 s each), after which an
    // instance's entry is stale, and past the translation's end.
    tokio::time::sleep(Duration::from_secs(8)).await;
    front.signal("-CONT")?;
    let resp = call.await??;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["action"], "translate", "{body}");
    Ok(())
}
