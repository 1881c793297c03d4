//! One job view across the cluster: a job accepted by one demo process is seen —
//! its record, in the listing and the counts — on another that neither accepted nor
//! ran it, and cancelled and deleted from there. A cancelled job waiting in JetStream
//! is never run by the instance that takes it later. An instance that holds fewer
//! of the cluster's records than there are says its listing is partial.

#[path = "support/demo.rs"]
mod demo;

use std::time::Duration;

use demo::{Demo, Site, send};
use koan_test_support::{eventually, wait_for};
use reqwest::StatusCode;

/// Accepts a translation of `file` on `demo` with `wait=false`; its job id.
async fn enqueue(client: &reqwest::Client, demo: &Demo, file: &str) -> anyhow::Result<String> {
    demo.enqueue_translation(client, file, "fr").await
}

/// Whether `job_id` has a translation row in the database at `path`.
fn translated(path: &std::path::Path, job_id: &str) -> anyhow::Result<bool> {
    Ok(demo::translation_rows(path, Some(job_id))? > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_accepted_on_one_instance_is_seen_and_cancelled_on_another() -> anyhow::Result<()> {
    let site = Site::start("koan-demo-jobs")?;
    let client = &site.client;

    // A translator, the accepting process, and a reader that runs neither.
    let mut t1 = site.translator("t1", Duration::from_millis(200), 1)?;
    let a = site.front("a")?;
    let r = site.demo("r", Some("DataCleanupService"), &[])?;

    // Accepted on A (once A has heard of the translator), run by T1, seen on R.
    let j1 = wait_for("A to accept a translation", async || {
        Ok(enqueue(client, &a, "seen-1").await.ok())
    })
    .await?;
    let done = wait_for("the job's record on R to say succeeded", async || {
        let (status, body) = send(client.get(r.url(&format!("/api/jobs/{j1}")))).await?;
        anyhow::ensure!(status == StatusCode::OK, "R: {status}: {body}");
        Ok((body["state"] == "succeeded").then_some(body))
    })
    .await?;
    assert_eq!(done["result"]["fileId"], "seen-1", "{done}");
    assert_eq!(done["service"], "TranslationService", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    assert!(done["history"][0]["instance"].is_string(), "{done}");
    assert!(translated(&t1.db, &j1)?, "T1 ran it");

    // R lists and counts it (its view follows the cluster's records).
    eventually("R to list the job", || async {
        let q = "/api/jobs?service=TranslationService&state=succeeded";
        send(client.get(r.url(q))).await.is_ok_and(|(s, page)| {
            s == StatusCode::OK
                && page["jobs"]
                    .as_array()
                    .is_some_and(|jobs| jobs.iter().any(|j| j["id"] == j1.as_str()))
        })
    })
    .await?;
    let (status, counts) = send(client.get(r.url("/api/jobs/counts"))).await?;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert!(
        counts["counts"]["succeeded"].as_u64() >= Some(1),
        "{counts}"
    );
    // The counts are the file's and the cluster's, and say so.
    assert!(
        counts["store"]
            .as_str()
            .is_some_and(|s| s.starts_with("sqlite:") && s.ends_with("and the cluster's queue")),
        "{counts}"
    );

    // No translator now: a job accepted on A waits in JetStream, queued — and R sees
    // it at once (A writes the record before it answers 202).
    t1.kill();
    let j2 = enqueue(client, &a, "cancelled-1").await?;
    let (status, queued) = send(client.get(r.url(&format!("/api/jobs/{j2}")))).await?;
    assert_eq!(status, StatusCode::OK, "{queued}");
    assert_eq!(queued["state"], "queued", "{queued}");

    // Cancelled from R; a second cancel, a retry and a delete (its message still
    // waits) are refused, each saying why.
    let (status, c) = send(client.post(r.url(&format!("/api/jobs/{j2}/cancel")))).await?;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "cancelled", "{c}");
    let (status, again) = send(client.post(r.url(&format!("/api/jobs/{j2}/cancel")))).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["error"], "job_state", "{again}");
    let (status, retry) = send(client.post(r.url(&format!("/api/jobs/{j2}/retry")))).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{retry}");
    assert!(
        retry["message"]
            .as_str()
            .is_some_and(|m| m.contains("still waits")),
        "{retry}"
    );
    let (status, del) = send(client.delete(r.url(&format!("/api/jobs/{j2}")))).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{del}");
    assert!(
        del["message"]
            .as_str()
            .is_some_and(|m| m.contains("still waits")),
        "{del}"
    );

    // A translator joins and takes the job: it drops it unrun.
    let t2 = site.translator("t2", Duration::from_millis(200), 1)?;
    eventually("T2 to drop the cancelled job", || async {
        t2.log()
            .lines()
            .any(|l| l.contains("durable job cancelled") && l.contains(j2.as_str()))
    })
    .await?;
    assert!(!translated(&t2.db, &j2)?, "the cancelled job never ran");
    let (_, after) = send(client.get(a.url(&format!("/api/jobs/{j2}")))).await?;
    assert_eq!(after["state"], "cancelled", "on A: {after}");
    assert_eq!(after["attempts"], 0, "on A: {after}");

    // Now its message is gone: R retries it by hand, and T2 runs it once.
    let (status, retried) = send(client.post(r.url(&format!("/api/jobs/{j2}/retry")))).await?;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["state"], "queued", "{retried}");
    let done = wait_for("the retried job to succeed, seen on A", async || {
        let (_, j) = send(client.get(a.url(&format!("/api/jobs/{j2}")))).await?;
        Ok((j["state"] == "succeeded").then_some(j))
    })
    .await?;
    assert_eq!(done["attempts"], 1, "its first run: {done}");
    assert!(translated(&t2.db, &j2)?, "the retried job ran on T2");

    // An instance that holds at most one of the cluster's records lists and
    // counts part of them, and says so; each job still opens by its id.
    let cap = [("KOAN__NATS__VIEW_MAX_RECORDS", "1".to_owned())];
    let small = site.demo("s", Some("DataCleanupService"), &cap)?;
    let page = wait_for("S's listing to say it is partial", async || {
        let (status, page) = send(client.get(small.url("/api/jobs"))).await?;
        anyhow::ensure!(status == StatusCode::OK, "S: {status}: {page}");
        Ok((page["partial"] == true).then_some(page))
    })
    .await?;
    let listed = page["jobs"].as_array().map_or(0, Vec::len);
    assert!(listed < 2, "one of the two held: {page}");
    let (status, counts) = send(client.get(small.url("/api/jobs/counts"))).await?;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(counts["partial"], true, "{counts}");
    for id in [&j1, &j2] {
        let (status, job) = send(client.get(small.url(&format!("/api/jobs/{id}")))).await?;
        assert_eq!(status, StatusCode::OK, "{job}");
        assert_eq!(job["state"], "succeeded", "{job}");
    }

    // R deletes the record, and nobody knows the job.
    let (status, del) = send(client.delete(r.url(&format!("/api/jobs/{j2}")))).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{del}");
    let (status, gone) = send(client.get(r.url(&format!("/api/jobs/{j2}")))).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    Ok(())
}

/// A running translation cancelled on another process stops when its translator
/// hears of the cancel, not at its next progress check (`ack_wait` 120 s here:
/// 40 s in, past this test's patience), and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_translation_cancelled_elsewhere_stops_at_once() -> anyhow::Result<()> {
    let site = Site::start("koan-demo-cancel-run")?;
    let client = &site.client;
    let mut env = demo::translation_env(Duration::from_secs(600), 1);
    env.push(("KOAN__NATS__ACK_WAIT_SECONDS", "120".to_owned()));
    let t1 = site.demo("t1", Some("TranslationService"), &env)?;
    let a = site.front("a")?;
    // A translation first: the translator follows the cluster's cancels then.
    let first = wait_for("A to accept a translation", async || {
        Ok(enqueue(client, &a, "first").await.ok())
    })
    .await?;
    let (status, body) = send(client.post(t1.url(&format!("/api/jobs/{first}/cancel")))).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    t1.wait_in_flight(client, 0).await?;

    let id = enqueue(client, &a, "cancelled-while-running").await?;
    t1.wait_in_flight(client, 1).await?;
    let (status, body) = send(client.post(a.url(&format!("/api/jobs/{id}/cancel")))).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "cancelled", "{body}");
    t1.wait_in_flight(client, 0).await?;
    assert!(
        !translated(&t1.db, &id)?,
        "a cancelled translation stored its work"
    );
    Ok(())
}
