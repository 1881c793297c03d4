//! `/health`, `/health/live`, `/health/ready` and `/api/services/{name}/health` in the
//! `application/health+json` format: pass → 200, warn (degraded) → 200, fail (a
//! critical service unhealthy) → 503.

use koan::{BackgroundService, BoxError, ServiceContext, health::HealthReport};
use koan_test_support::http::{Api, header, send};
use reqwest::StatusCode;
use serde_json::Value;

macro_rules! background {
    ($ty:ident) => {
        impl BackgroundService for $ty {
            async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
                cx.cancelled().await;
                Ok(())
            }
        }
    };
}

#[koan::service(critical)]
#[derive(Default)]
struct Fine;
background!(Fine);

#[koan::service(critical, health = Self::check)]
#[derive(Default)]
struct Database;
background!(Database);

impl Database {
    async fn check(&self) -> HealthReport {
        HealthReport::unhealthy("cannot reach the database").with_error("connection refused")
    }
}

#[koan::service(critical, health = Self::check)]
#[derive(Default)]
struct Backlog;
background!(Backlog);

impl Backlog {
    async fn check(&self) -> HealthReport {
        HealthReport::degraded("translation backlog").with_data("queued", 1200)
    }
}

/// Unhealthy but not critical: counts as degraded overall.
#[koan::service(health = Self::check)]
#[derive(Default)]
struct Optional;
background!(Optional);

impl Optional {
    async fn check(&self) -> HealthReport {
        HealthReport::unhealthy("optional cache is down")
    }
}

async fn health(api: &Api, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let (status, headers, body) = send(api.get(path)).await?;
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/health+json"),
        "{path}"
    );
    Ok((status, body))
}

/// GETs `path`, asserts its HTTP status and its health `status`, and returns the body.
async fn expect_health(
    api: &Api,
    path: &str,
    code: StatusCode,
    status: &str,
) -> anyhow::Result<Value> {
    let (got, body) = health(api, path).await?;
    assert_eq!(got, code, "{path}: {body}");
    assert_eq!(body["status"], status, "{path}: {body}");
    Ok(body)
}

/// Serves a host running `Fine` beside `S`.
async fn serve_fine_and<S: koan::Service + koan::service::FromContext>() -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<Fine>()
        .service::<S>()
        .build()?
        .start();
    Api::open(host).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_healthy_passes() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Fine>().build()?.start();
    let api = Api::open(host).await?;
    let body = expect_health(&api, "/health", StatusCode::OK, "pass").await?;
    let check = &body["checks"]["Fine:health"][0];
    assert_eq!(check["status"], "pass");
    assert_eq!(check["critical"], true);
    assert_eq!(check["componentType"], "service");

    for path in ["/health/live", "/health/ready", "/api/services/fine/health"] {
        expect_health(&api, path, StatusCode::OK, "pass").await?;
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_unhealthy_fails_with_503() -> anyhow::Result<()> {
    let api = serve_fine_and::<Database>().await?;

    let body = expect_health(&api, "/health", StatusCode::SERVICE_UNAVAILABLE, "fail").await?;
    let check = &body["checks"]["Database:health"][0];
    assert_eq!(check["status"], "fail");
    assert_eq!(check["critical"], true);
    assert_eq!(check["output"], "cannot reach the database");
    // The report's error too, as the service's own health gives it (it was left
    // out; a probe).
    assert_eq!(check["error"], "connection refused", "{body}");
    assert_eq!(body["checks"]["Fine:health"][0]["status"], "pass");
    // A report without one has no `error`.
    assert!(
        body["checks"]["Fine:health"][0].get("error").is_none(),
        "{body}"
    );

    let body = expect_health(
        &api,
        "/health/ready",
        StatusCode::SERVICE_UNAVAILABLE,
        "fail",
    )
    .await?;
    assert!(
        body["output"]
            .as_str()
            .unwrap_or_default()
            .contains("Database"),
        "{body}"
    );

    // Alive all the same: the service runs, it just reports a problem.
    let (status, body) = health(&api, "/health/live").await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    let path = "/api/services/database/health";
    let body = expect_health(&api, path, StatusCode::SERVICE_UNAVAILABLE, "fail").await?;
    assert_eq!(body["service"], "Database");
    assert_eq!(body["critical"], true);
    assert_eq!(body["description"], "cannot reach the database");
    assert_eq!(body["error"], "connection refused");

    let (status, body) = koan_test_support::http::call(api.get("/api/services")).await?;
    assert_eq!(status, StatusCode::OK);
    let row = body
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == "Database"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["health"], "unhealthy", "{body}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_warns_with_200() -> anyhow::Result<()> {
    let api = serve_fine_and::<Backlog>().await?;
    let body = expect_health(&api, "/health", StatusCode::OK, "warn").await?;
    assert_eq!(body["checks"]["Backlog:health"][0]["status"], "warn");
    assert_eq!(
        body["checks"]["Backlog:health"][0]["output"],
        "translation backlog"
    );

    let (status, body) = health(&api, "/health/ready").await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    let body = expect_health(&api, "/api/services/backlog/health", StatusCode::OK, "warn").await?;
    assert_eq!(body["data"]["queued"], 1200);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_critical_unhealthy_only_warns() -> anyhow::Result<()> {
    let api = serve_fine_and::<Optional>().await?;
    let body = expect_health(&api, "/health", StatusCode::OK, "warn").await?;
    let check = &body["checks"]["Optional:health"][0];
    assert_eq!(check["status"], "fail");
    assert_eq!(check["critical"], false);

    let (status, body) = health(&api, "/health/ready").await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The service's own health still says it fails.
    let path = "/api/services/optional/health";
    expect_health(&api, path, StatusCode::SERVICE_UNAVAILABLE, "fail").await?;
    api.stop().await
}
