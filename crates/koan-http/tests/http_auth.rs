//! The bearer token: mutating routes, `/api` reads and event streams need it when one
//! is configured (`Authorization: Bearer …`, or `?token=` for streams); the page,
//! health (without its details) and metrics stay open; and without one, `serve`
//! refuses to bind beyond loopback.

use koan::{BoxError, ServiceContext};
use koan_http::{HttpOptions, ServeError};
use koan_test_support::http::{Api, SseReader, call, error_message, loopback};
use koan_test_support::services::Echo;
use koan_test_support::within;
use reqwest::StatusCode;

const TOKEN: &str = "s3cret-t0ken";

#[koan::service(every = "1h", name = "Ticker")]
#[derive(Default)]
struct Ticker;

impl koan::PeriodicService for Ticker {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// What a run's error and a health check carried in a probe: a password.
const SECRET: &str = "postgres://billing:hunter2@10.0.0.5/billing";

/// Fails its one run, and reports itself degraded, each with [`SECRET`] in the text.
#[koan::service(name = "Leaky", restart = "never", health = Self::check)]
#[derive(Default)]
struct Leaky;

impl Leaky {
    async fn check(&self) -> koan::health::HealthReport {
        koan::health::HealthReport::degraded(format!("cannot connect to {SECRET}"))
    }
}

impl koan::BackgroundService for Leaky {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Err(format!("cannot connect to {SECRET}").into())
    }
}

async fn start() -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<Echo>()
        .service::<Ticker>()
        .service::<Leaky>()
        .build()?
        .start();
    Api::serve(host, loopback().with_token(TOKEN)).await
}

/// Posts `text` to Echo's `echo` with `query` after its route, and
/// `token` as the bearer when one is given; the answer's status and body.
async fn echo(
    api: &Api,
    query: &str,
    token: Option<&str>,
    text: &str,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let mut req = api.post(&format!("/api/services/echo/actions/echo{query}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    call(req.json(text)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_token() -> anyhow::Result<()> {
    let api = start().await?;

    // A 401 names the scheme it wants (RFC 9110).
    let resp = api
        .post("/api/services/Echo/actions/echo")
        .json("hi")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        koan_test_support::http::header(resp.headers(), "www-authenticate"),
        Some("Bearer realm=\"koan\"")
    );

    let (status, body) = echo(&api, "", None, "hi").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let message = error_message(&body, "unauthorized")?;
    assert!(message.contains("Bearer"), "{message}");
    assert!(!message.contains(TOKEN), "the token leaked: {message}");

    let (status, body) = echo(&api, "", Some("wrong-token!"), "hi").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let message = error_message(&body, "unauthorized")?;
    assert!(message.contains("wrong"), "{message}");
    assert!(!message.contains(TOKEN), "the token leaked: {message}");

    // A token of the right length but a different value.
    let same_length: String = TOKEN.chars().rev().collect();
    let (status, _) = echo(&api, "", Some(&same_length), "hi").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Action routes do not take the token from the query.
    let (status, _) = echo(&api, &format!("?token={TOKEN}"), None, "hi").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = echo(&api, "", Some(TOKEN), "hi").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "hi");

    // wait=false too.
    let (status, _) = echo(&api, "?wait=false", None, "x").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = echo(&api, "?wait=false", Some(TOKEN), "x").await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_routes_need_the_token() -> anyhow::Result<()> {
    let api = start().await?;
    for route in ["trigger", "check-queue", "process-batch"] {
        let path = format!("/api/services/ticker/{route}");
        let (status, body) = call(api.post(&path)).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{route}: {body}");
        error_message(&body, "unauthorized")?;
        let (status, body) = call(api.post(&path).bearer_auth("nope")).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{route}: {body}");
    }
    let (_, status_body) = call(api.get("/api/services/ticker/status").bearer_auth(TOKEN)).await?;
    assert_eq!(status_body["runs"], 0, "a refused call ran: {status_body}");

    for route in ["trigger", "check-queue", "process-batch"] {
        let path = format!("/api/services/ticker/{route}?wait=true");
        let (status, body) = call(api.post(&path).bearer_auth(TOKEN)).await?;
        assert_eq!(status, StatusCode::OK, "{route}: {body}");
    }
    let (_, status_body) = call(api.get("/api/services/ticker/status").bearer_auth(TOKEN)).await?;
    assert_eq!(status_body["runs"], 3, "{status_body}");
    api.stop().await
}

/// Every `/api` read needs the token: a service's status, history and health carry
/// its runs' errors (a probe read a database password from a token-protected host's
/// history without one). The page, health for probes (its details only with the
/// token), metrics and the API's description stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reads_need_the_token_and_health_metrics_stay_open() -> anyhow::Result<()> {
    let api = start().await?;
    within(
        "Echo running",
        koan::testing::wait_state(&api.host, "Echo", koan::status::ServiceState::Running),
    )
    .await?;
    within(
        "Leaky failed",
        koan::testing::wait_state(&api.host, "Leaky", koan::status::ServiceState::Failed),
    )
    .await?;
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/api/openapi.json",
        "/",
    ] {
        let resp = within(path, api.get(path).send()).await??;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let text = resp.text().await?;
        assert!(
            !text.contains("hunter2"),
            "{path} without the token: {text}"
        );
    }
    for path in [
        "/api/services",
        "/api/services/leaky",
        "/api/services/leaky/status",
        "/api/services/leaky/health",
        "/api/services/leaky/history",
        "/api/stats/throughput",
        "/api/instances",
    ] {
        let (status, body) = call(api.get(path)).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert!(!body.to_string().contains("hunter2"), "{path}: {body}");
        let (status, body) = call(api.get(&format!("{path}?token={TOKEN}"))).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let said = error_message(&body, "unauthorized")?;
        assert!(
            said.contains("`?token=` is read by event streams alone"),
            "{said}"
        );
        let (status, body) = call(api.get(path).bearer_auth(TOKEN)).await?;
        // A failed service's health answers 503, with its body.
        assert!(
            status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {status} {body}"
        );
        assert!(
            body.get("error").is_none_or(|e| e != "unauthorized"),
            "{path}: {body}"
        );
    }
    let (_, history) = call(api.get("/api/services/leaky/history").bearer_auth(TOKEN)).await?;
    assert!(history.to_string().contains("hunter2"), "{history}");
    let (_, health) = call(api.get("/health").bearer_auth(TOKEN)).await?;
    assert_eq!(
        health["checks"]["Leaky:health"][0]["output"], "the service has failed",
        "details with the token: {health}"
    );
    assert!(
        health["checks"]["Leaky:health"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("hunter2")),
        "its error with the token: {health}"
    );
    let (_, health) = call(api.get("/health")).await?;
    let leaky = &health["checks"]["Leaky:health"][0];
    assert_eq!(leaky["status"], "fail", "{health}");
    assert!(
        leaky["output"].is_null() && leaky.get("error").is_none(),
        "no details without the token: {health}"
    );
    assert!(!health.to_string().contains("hunter2"), "{health}");
    assert_eq!(
        health["notes"][0], "each check's output and error are given with the token",
        "{health}"
    );
    let text = within("metrics", api.get("/metrics").send())
        .await??
        .text()
        .await?;
    assert!(
        text.contains("koan_service_up{service=\"Echo\"} 1"),
        "{text}"
    );
    api.stop().await
}

/// Never ready: its host is not ready.
#[koan::service(name = "Vital", ready = Self::never)]
#[derive(Default)]
struct Vital;

impl Vital {
    async fn never(&self) -> bool {
        false
    }
}

impl koan::BackgroundService for Vital {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// `/health/ready` gives its reasons only with the token, as `/health` its outputs:
/// a failing job store's reason carries the store's error (a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_gives_its_reasons_only_with_the_token() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Vital>().build()?.start();
    let api = Api::serve(host, loopback().with_token(TOKEN)).await?;
    within(
        "Vital running",
        koan::testing::wait_state(&api.host, "Vital", koan::status::ServiceState::Running),
    )
    .await?;
    let (status, body) = call(api.get("/health/ready")).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["output"], "not ready: 1 reason(s), given with the token",
        "{body}"
    );
    let (status, body) = call(api.get("/health/ready").bearer_auth(TOKEN)).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["output"]
            .as_str()
            .is_some_and(|o| o.contains("service `Vital` is not ready")),
        "{body}"
    );
    api.stop().await
}

/// `/health` and `/health/ready` answer without a token, with fewer details; a
/// wrong token is refused there as on every route that reads it. Before, it got the
/// anonymous answer: the operator who mistyped the token saw no details and no hint
/// (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_by_health_too() -> anyhow::Result<()> {
    let api = start().await?;
    for path in ["/health", "/health/ready", "/api/services"] {
        let (status, body) = call(api.get(path).bearer_auth("wr0ng-t0ken")).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let said = error_message(&body, "unauthorized")?;
        assert!(
            said.contains("not the one configured on this host")
                && said.contains("Authorization: Bearer <token>")
                && said.contains("--token"),
            "{path}: {said}"
        );
        assert!(!said.contains(TOKEN), "{path}: the token leaked: {said}");
        let (status, body) =
            call(api.get(path).header("Authorization", "Bearer p\u{e4}ss")).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    // Without a token, health's anonymous answer as before.
    let (status, body) = call(api.get("/health")).await?;
    assert!(
        status == StatusCode::OK
            && body["notes"][0] == "each check's output and error are given with the token",
        "{status}: {body}"
    );
    let (status, body) = call(api.get("/health").bearer_auth(TOKEN)).await?;
    assert!(
        status == StatusCode::OK && body.get("notes").is_none(),
        "{body}"
    );
    api.stop().await
}

/// The routes open to anyone — liveness, metrics, the page, its assets, the API's
/// description — refuse a wrong token as `/health` does: they answered it as if none
/// had been sent, and the operator who mistyped it had no hint until an `/api` read
/// (found by a probe). Without a token, and with the right one, they answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_by_every_open_route() -> anyhow::Result<()> {
    let api = start().await?;
    for path in [
        "/health/live",
        "/metrics",
        "/",
        "/assets/core.js",
        "/api/openapi.json",
    ] {
        let (status, body) = call(api.get(path).bearer_auth("wr0ng-t0ken")).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let said = error_message(&body, "unauthorized")?;
        assert!(
            said.contains("not the one configured on this host"),
            "{path}: {said}"
        );
        for token in [None, Some(TOKEN)] {
            let mut req = api.get(path);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let status = within("an answer", req.send()).await??.status();
            assert_eq!(status, StatusCode::OK, "{path} with {token:?}");
        }
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_need_the_token() -> anyhow::Result<()> {
    let api = start().await?;
    for path in ["/api/events", "/api/services/echo/events"] {
        let (status, body) = call(api.get(path)).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        error_message(&body, "unauthorized")?;
        let (status, _) = call(api.get(&format!("{path}?token=wrong"))).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // As a query parameter (what a browser's EventSource can send) …
    let resp = within(
        "the stream",
        api.get(&format!("/api/services/echo/events?token={TOKEN}"))
            .send(),
    )
    .await??;
    let mut by_query = SseReader::new(resp)?;
    // … and as a header.
    let resp = within(
        "the stream",
        api.get("/api/events").bearer_auth(TOKEN).send(),
    )
    .await??;
    let mut by_header = SseReader::new(resp)?;

    let (status, _) = echo(&api, "", Some(TOKEN), "over the wire").await?;
    assert_eq!(status, StatusCode::OK);
    for reader in [&mut by_query, &mut by_header] {
        let seen = reader.until_event("Echoed").await?;
        let last = seen.last().cloned().unwrap_or_default();
        assert_eq!(last["service"], "Echo");
        assert_eq!(last["payload"], "over the wire");
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_open_bind_without_token() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Echo>().build()?.start();
    within("startup", host.started()).await??;
    let open = HttpOptions::default().with_bind("0.0.0.0:0".parse()?);
    match koan_http::serve(host.clone(), open).await {
        Err(ServeError::OpenToNetwork(addr)) => {
            assert_eq!(addr, "0.0.0.0:0".parse()?);
            let text = ServeError::OpenToNetwork(addr).to_string();
            assert!(text.contains("token"), "{text}");
        }
        Err(other) => anyhow::bail!("unexpected error: {other}"),
        Ok(server) => anyhow::bail!("served on {}", server.local_addr()),
    }
    host.shutdown();
    within("the host to stop", host.wait())
        .await?
        .into_result()?;
    Ok(())
}

/// A token no client could send (spaces around it, a control or a non-ASCII
/// character) is refused at start, naming the fix: before, the host started and
/// refused every client, one that sent the exact value too. The scheme's name is
/// case-insensitive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_no_client_could_send_is_refused_and_the_scheme_is_any_case() -> anyhow::Result<()>
{
    let host = koan::testing::host().service::<Echo>().build()?.start();
    within("startup", host.started()).await??;
    for (token, said) in [
        (" padded ", "a space at byte 0"),
        ("pässwörd", "a non-ASCII character at byte 1"),
        ("tab\there", "a space at byte 3"),
        ("crlf\r", "a carriage return"),
        ("", "is empty"),
        ("@/etc/koan/token", "reads it as text"),
    ] {
        match koan_http::serve(host.clone(), loopback().with_token(token)).await {
            Err(e) => assert!(e.to_string().contains(said), "{token:?}: {e}"),
            Ok(server) => anyhow::bail!("served on {} with {token:?}", server.local_addr()),
        }
    }
    host.shutdown();
    within("the host to stop", host.wait())
        .await?
        .into_result()?;

    let api = start().await?;
    for scheme in ["BEARER", "bearer", "Bearer", "bEaReR"] {
        let req = api
            .post("/api/services/echo/actions/echo")
            .header("Authorization", format!("{scheme} {TOKEN}"));
        let (status, body) = call(req.json("hi")).await?;
        assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
    }
    let req = api
        .post("/api/services/echo/actions/echo")
        .header("Authorization", format!("Basic {TOKEN}"));
    assert_eq!(call(req.json("hi")).await?.0, StatusCode::UNAUTHORIZED);
    api.stop().await
}
