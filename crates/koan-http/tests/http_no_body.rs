//! The routes that take no body — `POST /api/jobs/{id}/retry`, `/cancel`,
//! `/api/jobs/retry-dead` and `POST /api/services/{name}/restart` — refuse one
//! (400 `invalid_parameters`, saying the route takes none and what was sent),
//! before they act: a caller's `{"reason": …}` or `{"force": true}` was dropped
//! without a word, and the job cancelled or retried as if it had not been sent.
//! Sent without a body (as koanctl and the dashboard send them), they act.

use koan::status::ServiceState;
use koan_test_support::http::{Api, call, error_message};
use koan_test_support::services::Greeter;
use reqwest::StatusCode;
use serde_json::Value;

async fn start() -> anyhow::Result<Api> {
    let host = koan::testing::host().service::<Greeter>().build()?.start();
    let api = Api::open(host).await?;
    api.wait_state("Greeter", ServiceState::Running).await?;
    Ok(api)
}

/// A job of Greeter, scheduled an hour ahead: its id.
async fn scheduled_job(api: &Api) -> anyhow::Result<String> {
    let (status, body) =
        call(api.post("/api/services/Greeter/actions/whoami?wait=false&delay=1h")).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no id in {body}"))
}

async fn state_of(api: &Api, id: &str) -> anyhow::Result<Value> {
    let (status, body) = call(api.get(&format!("/api/jobs/{id}"))).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(body["state"].clone())
}

/// `path` posted with `body` as JSON is refused as taking no body, naming it.
async fn refused(api: &Api, path: &str, body: &str) -> anyhow::Result<()> {
    let (status, answer) = call(
        api.post(path)
            .header("content-type", "application/json")
            .body(body.to_owned()),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
    let message = error_message(&answer, "invalid_parameters")?;
    assert!(
        message.contains("takes no request body") && message.contains(body),
        "{path}: {message}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_to_cancel_or_retry_is_refused_before_the_job_is_touched() -> anyhow::Result<()>
{
    let api = start().await?;
    let id = scheduled_job(&api).await?;

    refused(
        &api,
        &format!("/api/jobs/{id}/cancel"),
        r#"{"reason":"typo"}"#,
    )
    .await?;
    refused(&api, &format!("/api/jobs/{id}/cancel"), "{}").await?;
    assert_eq!(state_of(&api, &id).await?, "scheduled");

    // Whitespace alone is no body, as a call's parameters read it.
    let (status, body) = call(
        api.post(&format!("/api/jobs/{id}/cancel"))
            .header("content-type", "application/json")
            .body(" \r\n"),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(state_of(&api, &id).await?, "cancelled");

    refused(&api, &format!("/api/jobs/{id}/retry"), r#"{"force":true}"#).await?;
    assert_eq!(state_of(&api, &id).await?, "cancelled");
    refused(&api, "/api/jobs/retry-dead", r#"{"service":"Greeter"}"#).await?;

    let (status, body) = call(api.post(&format!("/api/jobs/{id}/retry"))).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(state_of(&api, &id).await?, "cancelled");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_to_restart_is_refused() -> anyhow::Result<()> {
    let api = start().await?;
    refused(&api, "/api/services/Greeter/restart", r#"{"force":true}"#).await?;
    // Without one, it is answered as before (running: not restarted).
    let (status, body) = call(api.post("/api/services/Greeter/restart")).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    api.stop().await
}
