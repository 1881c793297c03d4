//! Query combinations a client may send on an action call that schedule a job:
//! `delay` and `at` together (the later holds), and `wait=true` on a scheduled job
//! (the stored job's outcome). Also: an action without parameters is described as
//! taking `null`, and a body that is not `null` is refused — the document and the
//! server agree.

use koan::{ActionContext, BackgroundService, BoxError, ServiceContext, status::ServiceState};
use koan_test_support::http::{Api, call};
use koan_test_support::within;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[koan::service]
#[derive(Default)]
struct Clock;

#[koan::actions]
impl Clock {
    #[action("stamp")]
    async fn stamp(&self, _p: (), cx: &ActionContext) -> Result<Value, BoxError> {
        Ok(json!({ "enqueued": cx.id().is_some() }))
    }

    /// How long its run has left (ms), if it has a deadline.
    #[action("limit")]
    async fn limit(&self, _p: (), cx: &ActionContext) -> Result<Option<u64>, BoxError> {
        Ok(cx
            .remaining()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    #[action("note")]
    async fn note(&self, text: String, _cx: &ActionContext) -> Result<String, BoxError> {
        Ok(text)
    }
}

impl BackgroundService for Clock {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn start() -> anyhow::Result<Api> {
    let host = koan::testing::host().service::<Clock>().build()?.start();
    let api = Api::open(host).await?;
    within(
        "Clock running",
        koan::testing::wait_state(&api.host, "Clock", ServiceState::Running),
    )
    .await?;
    Ok(api)
}

fn time(v: &Value) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let s = v
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("not a time: {v}"))?;
    Ok(chrono::DateTime::parse_from_rfc3339(s)?.with_timezone(&chrono::Utc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_true_on_a_delayed_call_answers_the_stored_jobs_outcome() -> anyhow::Result<()> {
    let api = start().await?;
    let (status, body) =
        call(api.post("/api/services/clock/actions/stamp?wait=true&delay=20ms")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // It ran as a job of the store, not as a direct call.
    assert_eq!(body["result"]["enqueued"], true, "{body}");
    let (status, list) = call(api.get("/api/jobs?service=Clock")).await?;
    assert_eq!(status, StatusCode::OK, "{list}");
    let jobs = list["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 1, "{list}");
    assert_eq!(jobs[0]["state"], "succeeded", "{list}");
    api.stop().await
}

/// With `delay` and `wait=true`, `timeout` bounds the wait, not the job's runs:
/// as their deadline too, each attempt of a job due in 1 s waited for 2 s was cut
/// at 2 s and the job died (found by a probe). With `wait=false` it stays each
/// run's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_of_a_scheduled_call_that_waits_bounds_the_wait_only() -> anyhow::Result<()> {
    let api = start().await?;
    let (status, body) =
        call(api.post("/api/services/clock/actions/limit?wait=true&delay=20ms&timeout=30s"))
            .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["result"],
        Value::Null,
        "no deadline on its run: {body}"
    );

    let (status, body) =
        call(api.post("/api/services/clock/actions/limit?wait=false&timeout=30s")).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let url = body["status_url"].as_str().unwrap_or_default().to_owned();
    let rec = koan_test_support::wait_for("the job to succeed", async || {
        let (_, rec) = call(api.get(&url)).await?;
        Ok((rec["state"] == "succeeded").then_some(rec))
    })
    .await?;
    let left = rec["result"].as_u64();
    assert!(
        left.is_some_and(|ms| ms <= 30_000),
        "each run's deadline: {rec}"
    );
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_and_at_together_run_no_sooner_than_the_later() -> anyhow::Result<()> {
    let api = start().await?;
    let before = chrono::Utc::now();
    let soon =
        (before + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let late =
        (before + chrono::Duration::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    // `at` later than `delay`: `at` holds.
    let (status, a) = call(api.post(&format!(
        "/api/services/clock/actions/stamp?wait=false&delay=2h&at={late}"
    )))
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{a}");
    let (_, rec) = call(api.get(&format!(
        "/api/jobs/{}",
        a["id"].as_str().unwrap_or_default()
    )))
    .await?;
    assert_eq!(time(&rec["run_at"])?, time(&json!(late))?, "{rec}");
    assert_eq!(rec["state"], "scheduled", "{rec}");

    // `delay` later than `at`: two hours from the call.
    let (status, b) = call(api.post(&format!(
        "/api/services/clock/actions/stamp?wait=false&delay=2h&at={soon}"
    )))
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{b}");
    let (_, rec) = call(api.get(&format!(
        "/api/jobs/{}",
        b["id"].as_str().unwrap_or_default()
    )))
    .await?;
    let run_at = time(&rec["run_at"])?;
    assert!(run_at >= before + chrono::Duration::hours(2), "{rec}");
    assert!(run_at < time(&json!(late))?, "{rec}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_true_on_a_job_not_due_within_the_wait_answers_202() -> anyhow::Result<()> {
    let api = start().await?;
    // Due in an hour, waited for 20 ms: the answer is the stored job, marked pending.
    let (status, body) =
        call(api.post("/api/services/clock/actions/stamp?wait=true&delay=1h&timeout=20ms")).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        body["outcome"]
            .as_str()
            .unwrap_or_default()
            .starts_with("pending"),
        "{body}"
    );
    let url = body["status_url"].as_str().unwrap_or_default().to_owned();
    let (status, rec) = call(api.get(&url)).await?;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["state"], "scheduled", "{rec}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_without_parameters_is_described_and_served_as_taking_null() -> anyhow::Result<()>
{
    let api = start().await?;
    let (_, doc) = call(api.get("/api/openapi.json")).await?;
    let schema = &doc["paths"]["/api/services/Clock/actions/stamp"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    assert_eq!(schema["type"], "null", "{schema}");
    let (status, body) = call(
        api.post("/api/services/clock/actions/stamp")
            .json(&json!([1, 2])),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_parameters", "{body}");
    let (status, body) = call(api.post("/api/services/clock/actions/stamp")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_call_without_wait_answers_202_once_stored() -> anyhow::Result<()> {
    let api = start().await?;
    let (status, body) = call(api.post("/api/services/clock/actions/stamp?delay=1h")).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["outcome"].is_null(), "{body}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_for_another_call_is_refused() -> anyhow::Result<()> {
    let api = start().await?;
    let enqueue = |action: &str, body: Value| {
        api.post(&format!(
            "/api/services/clock/actions/{action}?wait=false&delay=1h"
        ))
        .header("Idempotency-Key", "order-17")
        .json(&body)
    };
    let (status, first) = call(enqueue("note", json!("a"))).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // The same call again: the first job.
    let (status, again) = call(enqueue("note", json!("a"))).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["id"], first["id"], "{again}");
    assert_eq!(again["created"], false, "{again}");
    // Other parameters, or another action, under the same key: refused, naming the first job.
    for (action, body) in [("note", json!("b")), ("stamp", Value::Null)] {
        let (status, refused) = call(enqueue(action, body)).await?;
        assert_eq!(status, StatusCode::CONFLICT, "{refused}");
        let message = refused["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(first["id"].as_str().unwrap_or("?")),
            "{refused}"
        );
    }
    let (_, list) = call(api.get("/api/jobs?service=Clock")).await?;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1), "{list}");
    // A call that waits is not stored, so a key could not stop a second run: the
    // key is refused there rather than ignored (a probe saw the action run twice).
    for path in [
        "/api/services/clock/actions/note",
        "/api/services/clock/actions/note?wait=true",
    ] {
        let keyed = api.post(path).header("Idempotency-Key", "order-18");
        let (status, refused) = call(keyed.json(&json!("c"))).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        let message = refused["message"].as_str().unwrap_or_default();
        assert!(message.contains("add `wait=false`"), "{refused}");
    }
    api.stop().await
}

/// `at` has the bound `delay` has: a time more than 365 days from now is refused,
/// saying so, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_further_than_a_year_ahead_is_refused_as_a_delay_would_be() -> anyhow::Result<()> {
    let api = start().await?;
    for query in ["delay=366d", "at=9999-12-31T23:59:59Z"] {
        let path = format!("/api/services/clock/actions/stamp?wait=false&{query}");
        let (status, body) = call(api.post(&path)).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("365 days")),
            "{body}"
        );
    }
    let (status, body) = call(api.get("/api/jobs")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["jobs"].as_array().map(Vec::len), Some(0), "{body}");
    api.stop().await
}
