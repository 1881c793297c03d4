//! Accepted work is never lost, tested as a user meets it: the real `koan-demo`
//! binary with its SQLite file, 200 translations accepted with `?wait=false`, then
//! SIGTERM or SIGKILL one second later, and a restart on the same file. Every job
//! ends succeeded, and the translations table holds each file exactly once.

#[path = "support/demo.rs"]
mod demo;

use std::time::{Duration, Instant};

use demo::{Demo, translations};
use koan_test_support::{PATIENCE, TempDir};
use reqwest::StatusCode;
use serde_json::{Value, json};

const JOBS: usize = 200;

/// 300 ms a translation, 4 at a time, and a lease of 2 s so that a dead process's
/// claims lapse quickly.
fn env() -> Vec<(&'static str, String)> {
    vec![
        (
            "KOAN__BACKGROUND_SERVICES__SERVICES__TRANSLATION_SERVICE__SETTINGS__WORK_DELAY_MS",
            "300".to_owned(),
        ),
        (
            "KOAN__BACKGROUND_SERVICES__JOBS__LEASE_SECONDS",
            "2".to_owned(),
        ),
    ]
}

/// Translations that take ten minutes (each ends only when stopped), under a lease
/// of `lease_seconds`.
fn endless_translations(lease_seconds: u64) -> Vec<(&'static str, String)> {
    vec![
        (
            "KOAN__BACKGROUND_SERVICES__SERVICES__TRANSLATION_SERVICE__SETTINGS__WORK_DELAY_MS",
            "600000".to_owned(),
        ),
        (
            "KOAN__BACKGROUND_SERVICES__JOBS__LEASE_SECONDS",
            lease_seconds.to_string(),
        ),
    ]
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(PATIENCE).build()?)
}

/// Accepts `JOBS` translations through 16 concurrent clients; their job ids.
async fn accept_all(client: &reqwest::Client, demo: &Demo) -> anyhow::Result<Vec<String>> {
    let url = demo.url("/api/services/TranslationService/actions/translate?wait=false");
    let mut ids = Vec::with_capacity(JOBS);
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(16) {
        let mut calls = Vec::new();
        for &k in chunk {
            let req = client
                .post(&url)
                .json(&json!({"fileId": format!("file-{k:03}"), "from": "en", "to": "fr"}));
            calls.push(tokio::spawn(req.send()));
        }
        for call in calls {
            let resp = call.await??;
            let status = resp.status();
            let body: Value = resp.json().await?;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            assert_eq!(
                body["status_url"],
                format!("/api/jobs/{}", body["id"].as_str().unwrap_or_default())
            );
            ids.push(body["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(ids)
}

/// The job counts by state, from `/api/jobs/counts`.
async fn counts(client: &reqwest::Client, demo: &Demo) -> anyhow::Result<Value> {
    let body: Value = client
        .get(demo.url("/api/jobs/counts"))
        .send()
        .await?
        .json()
        .await?;
    Ok(body)
}

/// Waits until every job has succeeded.
async fn all_succeeded(client: &reqwest::Client, demo: &Demo) -> anyhow::Result<()> {
    let deadline = Instant::now() + 4 * PATIENCE;
    loop {
        let c = counts(client, demo).await?;
        if c["counts"]["succeeded"] == JOBS {
            return Ok(());
        }
        for bad in ["dead", "cancelled", "retrying"] {
            assert_eq!(c["counts"][bad], 0, "no job may fail: {c}");
        }
        anyhow::ensure!(Instant::now() < deadline, "jobs still not done: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every file translated exactly once; the attempts of every job.
async fn check_exactly_once(
    client: &reqwest::Client,
    demo: &Demo,
    ids: &[String],
) -> anyhow::Result<Vec<u64>> {
    let rows = translations(&demo.db)?;
    assert_eq!(
        rows.len(),
        JOBS,
        "every file translated: {} of {JOBS}",
        rows.len()
    );
    let twice: Vec<_> = rows.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let mut attempts = Vec::new();
    for id in ids {
        let record = demo.job(client, id).await?;
        assert_eq!(record["state"], "succeeded", "{record}");
        attempts.push(record["attempts"].as_u64().unwrap_or(0));
    }
    Ok(attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_jobs_survive_a_sigterm_and_each_runs_once() -> anyhow::Result<()> {
    let dir = TempDir::new("durable-sigterm");
    let client = client()?;
    let mut first = Demo::start(dir.path(), "demo", &[], &env())?;
    let ids = accept_all(&client, &first).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = counts(&client, &first).await?;
    let status = first.terminate()?;
    assert!(status.success(), "a clean stop: {status}");
    assert!(
        before["counts"]["succeeded"].as_u64().unwrap_or(0) < JOBS as u64,
        "the stop came while jobs were queued: {before}"
    );

    let second = Demo::start(dir.path(), "demo", &[], &env())?;
    all_succeeded(&client, &second).await?;
    let attempts = check_exactly_once(&client, &second, &ids).await?;
    // A SIGTERM lets running jobs finish within the grace: nothing ran twice.
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
    eprintln!(
        "SIGTERM: {} of {JOBS} done before the stop, {JOBS} done after the restart, each once",
        before["counts"]["succeeded"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_jobs_survive_a_sigkill_and_the_interrupted_ones_run_again() -> anyhow::Result<()>
{
    let dir = TempDir::new("durable-sigkill");
    let client = client()?;
    let mut first = Demo::start(dir.path(), "demo", &[], &env())?;
    let ids = accept_all(&client, &first).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.kill();

    let second = Demo::start(dir.path(), "demo", &[], &env())?;
    all_succeeded(&client, &second).await?;
    let attempts = check_exactly_once(&client, &second, &ids).await?;
    // Those running at the kill (at most 4 at a time) ran again once their claims
    // lapsed, as attempt 2; their translation is still stored once.
    let again = attempts.iter().filter(|a| **a == 2).count();
    assert!((1..=4).contains(&again), "{attempts:?}");
    assert!(attempts.iter().all(|a| *a == 1 || *a == 2), "{attempts:?}");
    eprintln!(
        "SIGKILL: {JOBS} of {JOBS} done after the restart, {again} ran again as attempt 2, each file stored once"
    );
    Ok(())
}

/// A delayed job outlives the process that accepted it: stored as `scheduled`, it
/// runs at its time in the next process on the same file, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_runs_at_its_time_after_a_restart() -> anyhow::Result<()> {
    let dir = TempDir::new("durable-delay");
    let client = client()?;
    let mut first = Demo::start(dir.path(), "demo", &[], &env())?;
    let resp = client
        .post(first.url("/api/services/TranslationService/actions/translate?wait=false&delay=3s"))
        .json(&json!({"fileId": "later", "from": "en", "to": "es"}))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let accepted: Value = resp.json().await?;
    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
    let record = first.job(&client, &id).await?;
    assert_eq!(record["state"], "scheduled", "{record}");
    let run_at = record["run_at"].as_str().unwrap_or_default().to_owned();
    assert!(first.terminate()?.success());

    let second = Demo::start(dir.path(), "demo", &[], &env())?;
    let deadline = Instant::now() + PATIENCE;
    let done = loop {
        let r = second.job(&client, &id).await?;
        if r["state"] == "succeeded" {
            break r;
        }
        anyhow::ensure!(Instant::now() < deadline, "the delayed job never ran: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let started = done["history"][0]["started_at"]
        .as_str()
        .unwrap_or_default();
    assert!(
        started >= run_at.as_str(),
        "ran at {started}, before its time {run_at}"
    );
    assert_eq!(translations(&second.db)?.get("later"), Some(&1));
    Ok(())
}

/// A running translation cancelled over HTTP stops at once and stores nothing,
/// not at its run's next heartbeat (a third of the lease: 40 s here, past this
/// test's patience), by when a shorter one had stored its work though it was
/// answered `cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_translation_cancelled_stops_at_once_and_stores_nothing() -> anyhow::Result<()> {
    let dir = TempDir::new("durable-cancel-run");
    let client = client()?;
    let env = endless_translations(120);
    let demo = Demo::start(dir.path(), "demo", &[], &env)?;
    let id = demo.enqueue_translation(&client, "cancelled", "fr").await?;
    demo.wait_in_flight(&client, 1).await?;
    let resp = client
        .post(demo.url(&format!("/api/jobs/{id}/cancel")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    demo.wait_in_flight(&client, 0).await?;
    assert_eq!(translations(&demo.db)?.get("cancelled"), None);
    let record = demo.job(&client, &id).await?;
    assert_eq!(record["state"], "cancelled", "{record}");
    Ok(())
}

/// A job that brings its process down in every run is not run after every
/// restart for ever: each run cut by a SIGKILL runs again (past the action's
/// `max_attempts` of 3: a crash is not the handler's verdict), and after five in a
/// row the next process finds it dead rather than running it, its history and its
/// error saying why. Before, a probe saw attempt 6 of 3 start after five kills,
/// and it would have gone on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_translation_whose_process_dies_in_five_runs_in_a_row_is_dead() -> anyhow::Result<()> {
    let dir = TempDir::new("durable-crash-loop");
    let client = client()?;
    let env = endless_translations(2);
    let mut demo = Demo::start(dir.path(), "demo", &[], &env)?;
    let id = demo.enqueue_translation(&client, "poison", "fr").await?;
    for attempt in 1..=5 {
        // Each process claims it once the last one's claim lapsed (2 s).
        demo.wait_in_flight(&client, 1).await?;
        let record = demo.job(&client, &id).await?;
        assert_eq!(record["attempts"], attempt, "{record}");
        demo.kill();
        demo = Demo::start(dir.path(), "demo", &[], &env)?;
    }
    let deadline = Instant::now() + PATIENCE;
    let record = loop {
        let r = demo.job(&client, &id).await?;
        if r["state"] != "queued" && r["state"] != "running" {
            break r;
        }
        anyhow::ensure!(Instant::now() < deadline, "never ended: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record["state"], "dead", "{record}");
    assert_eq!(record["attempts"], 5, "{record}");
    let why = record["error"]["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("attempt 5 of job") && why.contains("5 runs in a row"),
        "{record}"
    );
    let history = record["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len(), 5, "{record}");
    for run in &history {
        let lost = run["error"]["message"].as_str().unwrap_or_default();
        assert!(lost.contains("stopped renewing its claim"), "{record}");
    }
    demo.wait_in_flight(&client, 0).await?;
    assert_eq!(translations(&demo.db)?.get("poison"), None);
    // The runner reported it as a job that ended dead.
    let metrics = client
        .get(demo.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("koan_jobs_finished_total{")
                && l.contains("state=\"dead\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    Ok(())
}

/// SIGTERM while a translation runs, with an hour's grace: its handler is told to
/// stop at once and the process exits, where the job held the whole grace before
/// (its handler told only when the grace ran out, every service then aborted
/// unasked; found by a probe). Its run goes back to the queue, not an attempt,
/// and the next process runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_stops_a_running_translation_at_once_and_the_next_process_runs_it()
-> anyhow::Result<()> {
    let dir = TempDir::new("durable-sigterm-running");
    let client = client()?;
    let mut endless = endless_translations(120);
    endless.push((
        "KOAN__BACKGROUND_SERVICES__SHUTDOWN_GRACE_SECONDS",
        "3600".to_owned(),
    ));
    let mut first = Demo::start(dir.path(), "demo", &[], &endless)?;
    let id = first.enqueue_translation(&client, "stopped", "fr").await?;
    first.wait_in_flight(&client, 1).await?;
    // Within the test's patience, not the hour.
    let status = first.terminate()?;
    assert!(status.success(), "a clean stop: {status}");
    let log = first.log();
    assert!(!log.contains("aborted"), "no service aborted: {log}");

    let second = Demo::start(dir.path(), "demo", &[], &env())?;
    let deadline = Instant::now() + PATIENCE;
    let record = loop {
        let r = second.job(&client, &id).await?;
        if r["state"] == "succeeded" {
            break r;
        }
        anyhow::ensure!(Instant::now() < deadline, "never ran again: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        record["attempts"], 1,
        "the stopped run does not count: {record}"
    );
    assert_eq!(
        record["history"][0]["error"]["error"], "shutting_down",
        "{record}"
    );
    assert_eq!(translations(&second.db)?.get("stopped"), Some(&1));
    Ok(())
}

/// Two hosts on one store file: a translation running on the first, cancelled
/// and retried through the second, runs again only once the first run's claim has
/// lapsed (the first hears of the cancel at its next heartbeat). Before, attempt 2
/// started on the second host 3 ms after the retry and ran beside the first for
/// seconds (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_through_another_process_is_not_retried_beside_it() -> anyhow::Result<()> {
    let dir = TempDir::new("durable-two-hosts");
    let client = client()?;
    let env = endless_translations(6);
    let first = Demo::start(dir.path(), "shared", &[], &env)?;
    let id = first.enqueue_translation(&client, "both", "fr").await?;
    first.wait_in_flight(&client, 1).await?;
    let second = Demo::start(dir.path(), "shared", &[], &env)?;
    let post = |demo: &Demo, what: &str| {
        client
            .post(demo.url(&format!("/api/jobs/{id}/{what}")))
            .send()
    };
    let resp = post(&second, "cancel").await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let cancelled: Value = resp.json().await?;
    let lease_end = cancelled["lease_until"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the run's claim is kept: {cancelled}"))?
        .to_owned();
    let resp = post(&second, "retry").await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let retried: Value = resp.json().await?;
    let (run_at, lease_end) = (
        chrono::DateTime::parse_from_rfc3339(retried["run_at"].as_str().unwrap_or_default())?,
        chrono::DateTime::parse_from_rfc3339(&lease_end)?,
    );
    assert!(
        run_at >= lease_end,
        "the retry waits for the first run's claim to lapse: {retried}"
    );
    // The first run stops at its heartbeat, before its claim lapses.
    first.wait_in_flight(&client, 0).await?;
    Ok(())
}
