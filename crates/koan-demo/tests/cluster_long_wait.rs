//! Jobs that wait longer than the cluster keeps a record nobody writes to
//! (`koan.nats.outcome_ttl_seconds`, 6 s here), across real processes and over
//! HTTP: a translation due in an hour is read and cancelled on another process
//! after its first record would have been forgotten, and one due in 10 s and
//! cancelled at once never runs, though its cancel's record and marker would have
//! been forgotten before it was due; nor does one queued and cancelled while no
//! process translates, for longer than that, once a translator is back, nor a
//! delayed one cancelled before every process of the cluster was down for longer
//! than that.

#[path = "support/demo.rs"]
mod demo;

use std::time::Duration;

use demo::{ALL_BUT_TRANSLATION, Demo, Site, send, translation_env};
use koan_test_support::wait_for;
use reqwest::StatusCode;

/// A site whose cluster keeps a record nobody writes to for 6 s: the setting, and
/// a translator's environment with it (each translation 10 ms, one at a time).
fn short_ttl(name: &str) -> anyhow::Result<(Site, Setting, Vec<Setting>)> {
    let ttl = ("KOAN__NATS__OUTCOME_TTL_SECONDS", "6".to_owned());
    let mut env = translation_env(Duration::from_millis(10), 1);
    env.push(ttl.clone());
    Ok((Site::start(name)?, ttl, env))
}

/// An environment variable of a process.
type Setting = (&'static str, String);

/// Has `demo` accept a translation of `file` due after `delay` (as the query
/// writes it, `1h`); the job's id.
async fn delayed(
    client: &reqwest::Client,
    demo: &Demo,
    file: &str,
    delay: &str,
) -> anyhow::Result<String> {
    let query = format!("&delay={delay}");
    demo.enqueue_translation_with(client, file, "fr", &query)
        .await
}

/// Cancels job `id` on `demo`; its record's state after.
async fn cancel(client: &reqwest::Client, demo: &Demo, id: &str) -> anyhow::Result<String> {
    let (status, body) = send(client.post(demo.url(&format!("/api/jobs/{id}/cancel")))).await?;
    anyhow::ensure!(status == StatusCode::OK, "cancel {id}: {status}: {body}");
    Ok(body["state"].as_str().unwrap_or_default().to_owned())
}

/// Returns once an entry written to the records' bucket now has been forgotten:
/// every record written before and not since is forgotten too.
async fn records_written_until_now_forgotten(nats: &str) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await?);
    let bucket = js.get_key_value("koan_jobs").await?;
    bucket.put("probe", "{}".into()).await?;
    wait_for("the probe to be forgotten", async || {
        Ok(bucket.get("probe").await?.is_none().then_some(()))
    })
    .await
}

/// How many messages JetStream stream `name` holds.
async fn messages(nats: &str, name: &str) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await?);
    Ok(js.get_stream(name).await?.info().await?.state.messages)
}

/// Waits until `streams` hold no message, the cancelled jobs dropped; none of them
/// was translated by `translator`.
async fn dropped_unrun(site: &Site, streams: &[&str], translator: &Demo) -> anyhow::Result<()> {
    wait_for("the cancelled jobs to be dropped", async || {
        let mut left = 0;
        for name in streams {
            left += messages(&site.nats, name).await?;
        }
        Ok((left == 0).then_some(()))
    })
    .await?;
    let rows = demo::translation_rows(&translator.db, None)?;
    assert_eq!(rows, 0, "a cancelled job ran");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_are_read_and_cancelled_past_outcome_ttl_and_never_run() -> anyhow::Result<()>
{
    let (site, ttl, env) = short_ttl("koan-demo-long-wait")?;
    let client = &site.client;
    let t1 = site.demo("t1", Some("TranslationService"), &env)?;
    let a = site.demo("a", Some(ALL_BUT_TRANSLATION), &[ttl])?;

    // Accepted on A (once A has heard of the translator), cancelled on T1.
    let later = wait_for("A to accept a translation due in an hour", async || {
        Ok(delayed(client, &a, "later", "1h").await.ok())
    })
    .await?;
    let soon = delayed(client, &a, "soon", "10s").await?;
    assert_eq!(cancel(client, &t1, &soon).await?, "cancelled");
    records_written_until_now_forgotten(&site.nats).await?;

    // Past its records' age, the job due in an hour is still read and cancelled.
    let job = t1.job(client, &later).await?;
    assert_eq!(job["state"], "scheduled", "{job}");
    assert_eq!(cancel(client, &t1, &later).await?, "cancelled");

    // Both are dropped unrun, the one cancelled at once too.
    dropped_unrun(&site, &["KOAN_DELAYED", "KOAN_WORK"], &t1).await
}

/// With no process translating for longer than that, a translation queued and
/// cancelled meanwhile stays cancelled, and it and a delayed one are read by id
/// on any process, until a translator is back, which drops the cancelled one
/// unrun: the processes that remain keep the records of the jobs of a service
/// none runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_no_process_translates_never_runs_when_one_is_back()
-> anyhow::Result<()> {
    let (site, ttl, env) = short_ttl("koan-demo-orphans")?;
    let client = &site.client;
    let mut t1 = site.demo("t1", Some("TranslationService"), &env)?;
    let a = site.demo("a", Some(ALL_BUT_TRANSLATION), std::slice::from_ref(&ttl))?;
    let b = site.demo("b", Some(ALL_BUT_TRANSLATION), &[ttl])?;
    let later = wait_for("A to accept a translation due in an hour", async || {
        Ok(delayed(client, &a, "later", "1h").await.ok())
    })
    .await?;
    t1.kill();
    let queued = a.enqueue_translation(client, "queued", "fr").await?;
    assert_eq!(cancel(client, &a, &queued).await?, "cancelled");
    records_written_until_now_forgotten(&site.nats).await?;

    // Read on B, which did not accept them.
    for (id, state) in [(&queued, "cancelled"), (&later, "scheduled")] {
        let job = b.job(client, id).await?;
        assert_eq!(job["state"], state, "{job}");
    }
    let t2 = site.demo("t2", Some("TranslationService"), &env)?;
    dropped_unrun(&site, &["KOAN_WORK"], &t2).await?;
    let job = b.job(client, &later).await?;
    assert_eq!(job["state"], "scheduled", "{job}");
    Ok(())
}

/// With every process of the cluster down for longer than that after a delayed
/// translation was cancelled, its record and its cancel's marker are forgotten;
/// the translation still never runs once a translator is back: the cancel took
/// the job out of the stream where it waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_before_the_whole_cluster_was_down_never_runs_when_it_is_back()
-> anyhow::Result<()> {
    let (site, ttl, env) = short_ttl("koan-demo-all-down")?;
    let client = &site.client;
    let mut t1 = site.demo("t1", Some("TranslationService"), &env)?;
    let mut a = site.demo("a", Some(ALL_BUT_TRANSLATION), &[ttl])?;
    let cancelled = wait_for("A to accept a translation due in 12 s", async || {
        Ok(delayed(client, &a, "cancelled", "12s").await.ok())
    })
    .await?;
    assert_eq!(cancel(client, &a, &cancelled).await?, "cancelled");
    t1.kill();
    a.kill();
    records_written_until_now_forgotten(&site.nats).await?;

    // Back: a translation due well after the cancelled one runs, and it alone.
    let t2 = site.demo("t2", Some("TranslationService"), &env)?;
    let after = wait_for("T2 to accept a translation due in 10 s", async || {
        Ok(delayed(client, &t2, "after", "10s").await.ok())
    })
    .await?;
    wait_for("the later translation to run", async || {
        Ok((demo::translation_rows(&t2.db, Some(&after))? == 1).then_some(()))
    })
    .await?;
    let rows = demo::translation_rows(&t2.db, Some(&cancelled))?;
    assert_eq!(rows, 0, "the cancelled translation ran");
    Ok(())
}

/// The process that accepted a translation answers for it as the cluster does:
/// once the cluster has forgotten it (past `outcome_ttl`) or it was deleted on
/// another process, `404 unknown_job`, not the `queued` it remembered from the
/// moment it accepted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_forgotten_or_deleted_by_the_cluster_is_unknown_where_it_was_accepted()
-> anyhow::Result<()> {
    let (site, ttl, env) = short_ttl("koan-demo-forgotten")?;
    let client = &site.client;
    let _t1 = site.demo("t1", Some("TranslationService"), &env)?;
    let a = site.demo("a", Some(ALL_BUT_TRANSLATION), std::slice::from_ref(&ttl))?;
    let b = site.demo("b", Some(ALL_BUT_TRANSLATION), &[ttl])?;
    let mut ids = Vec::new();
    for file in ["forgotten", "deleted"] {
        let id = wait_for("A to accept a translation", async || {
            Ok(a.enqueue_translation(client, file, "fr").await.ok())
        })
        .await?;
        wait_for("the translation to succeed", async || {
            Ok((a.job(client, &id).await?["state"] == "succeeded").then_some(()))
        })
        .await?;
        ids.push(id);
    }
    let (status, body) = send(client.delete(b.url(&format!("/api/jobs/{}", ids[1])))).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    records_written_until_now_forgotten(&site.nats).await?;
    for id in &ids {
        let (status, body) = send(client.get(a.url(&format!("/api/jobs/{id}")))).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
        assert_eq!(body["error"], "unknown_job", "{body}");
    }
    Ok(())
}
