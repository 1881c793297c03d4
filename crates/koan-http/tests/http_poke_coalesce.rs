//! Pokes handed over by the poke routes (`POST …/trigger` without `wait`) while one
//! waits to run join it, as pokes made during a run do: a burst of 200 triggers
//! of a service whose tick took 2 s was 200 stored jobs, ticked one after another
//! for 400 s, most of them dropped at the next stop (found by a probe).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::{BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions};
use koan_test_support::http::{Api, call, loopback};
use koan_test_support::wait_for;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Semaphore;

/// Every hour; each tick waits for a permit of the gate, and is counted.
struct Ticker {
    gate: Arc<Semaphore>,
    ticks: Arc<AtomicU32>,
}

impl Service for Ticker {
    type Kind = Periodic;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Ticker").every(Duration::from_secs(3600))
    }
}

impl PeriodicService for Ticker {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.ticks.fetch_add(1, Ordering::SeqCst);
        let _pass = self.gate.acquire().await?;
        Ok(())
    }
}

/// A poke of `Ticker` that hands over its work: its job's id, and whether it
/// was made for it.
async fn trigger(api: &Api) -> anyhow::Result<(String, bool)> {
    let (status, body) = call(api.post("/api/services/Ticker/trigger")).await?;
    anyhow::ensure!(status == StatusCode::ACCEPTED, "{status}: {body}");
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    Ok((id, body["created"] == Value::Bool(true)))
}

/// The state of job `id`, as the plane says it.
async fn state_of(api: &Api, id: &str) -> anyhow::Result<String> {
    let (_, job) = call(api.get(&format!("/api/jobs/{id}"))).await?;
    Ok(job["state"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_triggers_joins_the_one_waiting_to_run() -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(0));
    let ticks = Arc::new(AtomicU32::new(0));
    let ticker = Ticker {
        gate: Arc::clone(&gate),
        ticks: Arc::clone(&ticks),
    };
    let host = koan::Host::builder().instance(ticker).build()?.start();
    host.started().await?;
    let api = Api::serve(host, loopback()).await?;

    // A first poke's run holds the tick (its gate closed).
    let (first, created) = trigger(&api).await?;
    assert!(created);
    wait_for("the first poke to run", async || {
        Ok((state_of(&api, &first).await? == "running").then_some(()))
    })
    .await?;

    // Twenty more while it runs: one job waits for the next run, the others join it.
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(trigger(&api).await?);
    }
    let second = answers[0].0.clone();
    assert!(answers[0].1, "the first of the burst is stored");
    assert_ne!(second, first);
    for (id, created) in &answers[1..] {
        assert_eq!(*id, second, "joined the poke waiting to run");
        assert!(!created);
    }
    // One sent with `{}` (no parameters, as the route allows) joins it too: it
    // was stored with `{}` beside the one stored with none, and ran again.
    let (status, empty) = call(
        api.post("/api/services/Ticker/trigger")
            .json(&serde_json::json!({})),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{empty}");
    assert_eq!(empty["id"].as_str(), Some(second.as_str()), "{empty}");

    // A poke that names itself, or asks for a priority, is stored as its own:
    // its id must find it, its key stop a second run, its priority hold.
    let (status, own) = call(
        api.post("/api/services/Ticker/trigger")
            .header("X-Correlation-Id", "deploy-42"),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{own}");
    assert_eq!(own["created"], true, "{own}");
    assert_eq!(own["correlation_id"], "deploy-42", "{own}");
    let (status, urgent) = call(api.post("/api/services/Ticker/trigger?priority=5")).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{urgent}");
    assert_eq!(urgent["created"], true, "{urgent}");
    let (status, bad) = call(api.post("/api/services/Ticker/trigger?priority=x")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    gate.add_permits(4);
    for id in [&first, &second] {
        wait_for("a poke to succeed", async || {
            Ok((state_of(&api, id).await? == "succeeded").then_some(()))
        })
        .await?;
    }
    for body in [&own, &urgent] {
        let id = body["id"].as_str().unwrap_or_default();
        wait_for("a poke of its own to succeed", async || {
            Ok((state_of(&api, id).await? == "succeeded").then_some(()))
        })
        .await?;
    }
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        4,
        "two runs for 21 plain pokes, one each for the others"
    );
    api.stop().await
}
