//! Accepted work is never lost in a cluster: 50 translations accepted with
//! `wait=false` (202) by an instance that hosts `TranslationService` itself, which is
//! SIGKILLed while it runs some of them and before most have run. The design puts
//! every enqueue in cluster mode through JetStream, so the surviving instances run
//! every job — none waits for the dead host to come back — and each job has one
//! outcome and one stored translation. And a job whose only process was killed
//! at its last delivery ends dead once the process is back, not `running` for ever;
//! one whose process was stopped (SIGTERM) there is not lost either.

#[path = "support/demo.rs"]
mod demo;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use demo::{Demo, Site, translation_env};
use koan_test_support::nats::pull_until_out_of_deliveries;
use koan_test_support::{PATIENCE, within};
use serde_json::Value;

const JOBS: usize = 50;

/// Rows of `translations` per job id in the database at `path`.
fn rows_by_job(path: &Path) -> anyhow::Result<BTreeMap<String, u32>> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut st = conn.prepare(
        "SELECT job_id, COUNT(*) FROM translations WHERE job_id IS NOT NULL GROUP BY job_id",
    )?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    Ok(rows)
}

/// The outcome stored in the cluster for each of `ids` that has one.
async fn outcomes(
    kv: &async_nats::jetstream::kv::Store,
    ids: &[(String, String)],
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut found = BTreeMap::new();
    for (_, id) in ids {
        if let Some(bytes) = kv.get(id.as_str()).await? {
            found.insert(id.clone(), serde_json::from_slice(&bytes)?);
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_accepted_by_a_hosting_instance_that_is_killed_all_complete_elsewhere()
-> anyhow::Result<()> {
    let site = Site::start("koan-demo-lost")?;
    let client = &site.client;

    // Two survivors translate, 2 at a time, 300 ms each: 50 jobs take them seconds,
    // so most are still waiting when the accepting instance dies.
    let a = site.translator("a", Duration::from_millis(300), 2)?;
    let b = site.translator("b", Duration::from_millis(300), 2)?;
    // The accepting instance hosts every service, `TranslationService` too; its own
    // runs never finish before it dies (10 minutes each), so it holds jobs mid-run
    // when killed.
    let mut k = site.demo("k", None, &translation_env(Duration::from_secs(600), 2))?;

    let mut ids = Vec::with_capacity(JOBS);
    for n in 0..JOBS {
        let file = format!("lost-{n:02}");
        let id = k.enqueue_translation(client, &file, "fr").await?;
        ids.push((file, id));
    }
    // Killed about a second later, once it is running jobs of its own (2).
    let accepted = Instant::now();
    k.wait_in_flight(client, 2).await?;
    tokio::time::sleep_until((accepted + Duration::from_secs(1)).into()).await;
    k.kill();

    // Every accepted job gets an outcome, from the survivors.
    let js = async_nats::jetstream::new(async_nats::connect(site.nats.as_str()).await?);
    let kv = js.get_key_value("koan_outcomes").await?;
    let limit = 4 * PATIENCE;
    let deadline = Instant::now() + limit;
    let done = loop {
        let done = outcomes(&kv, &ids).await?;
        if done.len() == JOBS {
            break done;
        }
        if Instant::now() >= deadline {
            let missing: Vec<&str> = ids
                .iter()
                .filter(|(_, id)| !done.contains_key(id))
                .map(|(f, _)| f.as_str())
                .collect();
            anyhow::bail!(
                "after {limit:?}, {} of {JOBS} accepted jobs have no outcome (lost, or stranded with the dead host): {missing:?}",
                missing.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (file, id) in &ids {
        let o = &done[id];
        assert_eq!(o["ok"]["fileId"], file.as_str(), "job {id} of {file}: {o}");
    }

    // One translation per job across the three databases (the killed one's too):
    // a job runs again only when its claim lapsed, which its worker logs.
    let logs = format!("{}{}", a.log(), b.log());
    let mut stored: BTreeMap<String, u32> = BTreeMap::new();
    for demo in [&a, &b, &k] {
        for (id, n) in rows_by_job(&demo.db)? {
            *stored.entry(id).or_default() += n;
        }
    }
    for (file, id) in &ids {
        let n = stored.remove(id).unwrap_or(0);
        let fenced = logs
            .lines()
            .any(|l| l.contains("claim lapsed") && l.contains(id.as_str()));
        assert!(
            n == 1 || (n > 1 && fenced),
            "job {id} of {file} stored {n} times (fenced run logged: {fenced})"
        );
    }
    assert!(
        stored.is_empty(),
        "translations of jobs nobody accepted: {stored:?}"
    );
    let by = |d: &Demo| rows_by_job(&d.db).map(|r| r.len()).unwrap_or(0);
    eprintln!(
        "lost: {JOBS} accepted, all completed; by a: {}, by b: {}, by the killed instance: {}",
        by(&a),
        by(&b),
        by(&k)
    );
    Ok(())
}

/// A process `name` running every service, each translation taking `work` and
/// delivered once only (`max_deliver` 1), with one translation in flight at its
/// last delivery: its environment, the process and the job's id.
async fn at_its_last_delivery(
    site: &Site,
    name: &str,
    work: Duration,
) -> anyhow::Result<(Vec<(&'static str, String)>, Demo, String)> {
    let mut env = translation_env(work, 1);
    env.push(("KOAN__NATS__MAX_DELIVER", "1".to_owned()));
    let demo = site.demo(name, None, &env)?;
    let id = demo.enqueue_translation(&site.client, name, "fr").await?;
    demo.wait_in_flight(&site.client, 1).await?;
    Ok((env, demo, id))
}

/// A translation whose only process is SIGKILLed mid-run at its last delivery
/// (`max_deliver` 1), the server's word that it will not be delivered again heard
/// by no process, ends dead once the process is started again, saying why: not
/// `running` for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_only_process_was_killed_at_its_last_delivery_is_dead_after_a_restart()
-> anyhow::Result<()> {
    let site = Site::start("koan-demo-crash")?;
    let client = &site.client;
    let (env, mut k, id) = at_its_last_delivery(&site, "k", Duration::from_secs(600)).await?;
    k.kill();
    // Its claim lapses; the next ask for a job makes the server say so, here the
    // test's (a restarting process's first, which may come before it listens).
    pull_until_out_of_deliveries(&site.nats, "koan-work-translationservice").await?;

    let again = site.demo("k-again", None, &env)?;
    let job = within("the job to be dead", async {
        loop {
            let job = again.job(client, &id).await?;
            if job["state"] == "dead" {
                return anyhow::Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    let why = job["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("max_deliver"), "{job}");
    Ok(())
}

/// A rolling restart loses no translation: its process stopped by SIGTERM at its
/// last delivery (`max_deliver` 1), the translation, which ends at its token
/// without storing its work, is handed back and runs on the next process, once.
/// Not an attempt used up: not dead-lettered, its record not left `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_translation_whose_process_is_stopped_runs_on_the_next_one() -> anyhow::Result<()> {
    let site = Site::start("koan-demo-rolling")?;
    let client = &site.client;
    let (env, mut first, id) = at_its_last_delivery(&site, "first", Duration::from_secs(3)).await?;
    first.terminate()?;

    let next = site.demo("next", None, &env)?;
    let job = within("the translation to succeed", async {
        loop {
            let job = next.job(client, &id).await?;
            if job["state"] != "running" && job["state"] != "queued" {
                return anyhow::Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "a stop is not an attempt: {job}");
    assert_eq!(demo::translation_rows(&next.db, Some(&id))?, 1);
    assert_eq!(demo::translation_rows(&first.db, Some(&id))?, 0);
    Ok(())
}
