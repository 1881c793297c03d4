//! Errors axum makes itself (a wrong method, a path that does not decode) are JSON
//! too, and a timeout longer than allowed is a 400, not a panic.

use koan::{BackgroundService, BoxError, ServiceContext};
use koan_test_support::http::{Api, call, error_message};
use reqwest::StatusCode;

#[koan::service(every = "1h")]
#[derive(Default)]
struct Sweeper;

impl koan::PeriodicService for Sweeper {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[koan::service]
#[derive(Default)]
struct Idle;

impl BackgroundService for Idle {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test]
async fn every_error_is_json() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<Sweeper>()
        .service::<Idle>()
        .build()?
        .start();
    host.started().await?;
    let api = Api::open(host.clone()).await?;

    // A wrong method on a known route.
    let resp = api.get("/api/services/Sweeper/trigger").send().await?;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = resp
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(allow.contains("POST"), "allow: {allow}");
    let body: serde_json::Value = resp.json().await?;
    assert!(!error_message(&body, "method_not_allowed")?.is_empty());

    // A path segment that is not UTF-8.
    let (status, body) = call(api.get("/api/services/%FF/status")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!error_message(&body, "bad_request")?.is_empty());

    // A timeout beyond the 7 days allowed.
    let (status, body) =
        call(api.post("/api/services/Sweeper/trigger?timeout=10000000000000000000")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body, "invalid_parameters")?.contains("7 days"));
    let (status, _) = call(api.post("/api/services/Sweeper/trigger?timeout=30s&wait=true")).await?;
    assert_eq!(status, StatusCode::OK);

    api.stop().await?;
    Ok(())
}

/// An array for parameters that are named fields is refused, waiting or not: serde
/// would read its items as the fields in order (`["Ada", 1]` ran as a greeting).
#[tokio::test]
async fn an_array_for_named_fields_is_400() -> anyhow::Result<()> {
    let api = greeter_api().await?;
    for query in ["", "?wait=false"] {
        let path = format!("/api/services/greeter/actions/greet{query}");
        let (status, body) = call(api.post(&path).json(&serde_json::json!(["Ada", 1]))).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = error_message(&body, "invalid_parameters")?;
        assert!(message.contains("expected a JSON object"), "{message}");
    }
    let named = serde_json::json!({ "name": "Ada", "times": 1 });
    let (status, body) = call(api.post("/api/services/greeter/actions/greet").json(&named)).await?;
    assert_eq!(
        (status, &body["result"]),
        (StatusCode::OK, &serde_json::json!("Hello Ada!"))
    );
    api.stop().await
}

/// The service routes take no query, and say so, as the other routes do for a
/// parameter they do not take (before, `?x=1` was silently ignored there alone).
#[tokio::test]
async fn a_query_parameter_a_service_route_does_not_take_is_400() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Idle>().build()?.start();
    host.started().await?;
    let api = Api::open(host.clone()).await?;
    for route in ["", "/Idle", "/Idle/status", "/Idle/health"] {
        let (status, body) = call(api.get(&format!("/api/services{route}?x=1"))).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{route}: {body}");
        let message = error_message(&body, "invalid_parameters")?;
        assert!(message.contains("unknown query parameter `x`"), "{message}");
        let (status, body) = call(api.get(&format!("/api/services{route}"))).await?;
        assert_eq!(status, StatusCode::OK, "{route}: {body}");
    }
    api.stop().await
}

/// A body naming one key twice is `invalid_json`, waiting or not: the last key won
/// (`{"times": 1, "times": 1000}` ran a thousand times), while a proxy or a log
/// that reads the first saw another call (found by a probe).
#[tokio::test]
async fn a_key_given_twice_is_400() -> anyhow::Result<()> {
    let api = greeter_api().await?;
    for query in ["", "?wait=false"] {
        let path = format!("/api/services/greeter/actions/greet{query}");
        let body = r#"{"name": "Ada", "times": 1, "times": 1000}"#;
        let request = api.post(&path).header("content-type", "application/json");
        let (status, answer) = call(request.body(body)).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let message = error_message(&answer, "invalid_json")?;
        assert!(
            message.contains("key `times` appears twice in one object at line 1 column 35"),
            "{message}"
        );
    }
    api.stop().await
}

/// An error answering a call names its correlation id, in `X-Correlation-Id` and
/// the body, as a success does: a timeout said to look for the id in the events
/// and logs, and gave none (found by a probe).
#[tokio::test]
async fn an_error_answering_a_call_names_its_correlation_id() -> anyhow::Result<()> {
    let api = greeter_api().await?;
    let bad = serde_json::json!({ "name": "Ada", "times": "twice" });
    let calls = [
        (Some("order-7"), ""),
        (None, ""),
        // A job refused at its enqueue too.
        (Some("job-7"), "?wait=false"),
        (None, "?wait=false"),
    ];
    for (given, query) in calls {
        let path = format!("/api/services/greeter/actions/greet{query}");
        let mut request = api.post(&path).json(&bad);
        if let Some(id) = given {
            request = request.header("x-correlation-id", id);
        }
        let resp = request.send().await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let header = resp
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: serde_json::Value = resp.json().await?;
        assert_eq!(body["error"], "invalid_parameters", "{body}");
        let id = header.unwrap_or_default();
        assert!(!id.is_empty(), "{body}");
        assert_eq!(body["correlation_id"], id.as_str(), "{body}");
        if let Some(given) = given {
            assert_eq!(id, given);
        }
    }
    api.stop().await
}

/// The API of a started host running `Greeter`.
async fn greeter_api() -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<koan_test_support::services::Greeter>()
        .build()?
        .start();
    host.started().await?;
    Api::open(host).await
}
