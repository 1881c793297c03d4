//! Every error answer of the control plane over real HTTP, each with its status and
//! its JSON body `{ "error": kind, "message": … }`: bad JSON, bad parameters, bad query
//! values, unknown service/action/route/action id, disabled, body too large, busy,
//! shutting down, timeout, handler failure. (`serve` refusing an open bind without
//! a token is in `http_auth.rs`.)

use std::sync::Arc;
use std::time::Duration;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_http::HttpOptions;
use koan_test_support::http::{Api, call, error_message, loopback};
use koan_test_support::{wait_for, within};
use reqwest::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct GreetParams {
    name: String,
    times: u32,
}

#[koan::service]
#[derive(Default)]
struct Greeter;

#[koan::actions]
impl Greeter {
    #[action("greet")]
    async fn greet(&self, p: GreetParams, _cx: &ActionContext) -> Result<String, BoxError> {
        Ok(vec![format!("Hello {}!", p.name); p.times as usize].join(" "))
    }

    #[action("fail")]
    async fn fail(&self, _p: (), _cx: &ActionContext) -> Result<(), BoxError> {
        Err("the disk is full".into())
    }

    #[action("never")]
    async fn never(&self, _p: (), _cx: &ActionContext) -> Result<(), BoxError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

impl BackgroundService for Greeter {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[koan::service(enabled = false)]
#[derive(Default)]
struct Dormant;

#[koan::actions]
impl Dormant {
    #[action("wake")]
    async fn wake(&self, _p: (), _cx: &ActionContext) -> Result<(), BoxError> {
        Ok(())
    }
}

impl BackgroundService for Dormant {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A service whose `hold` action runs until the test releases it, with a mailbox of
/// one (declared by hand, without the macros).
struct Gate {
    started: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl Gate {
    fn new() -> (Gate, Arc<Notify>, Arc<Semaphore>) {
        let started = Arc::new(Notify::new());
        let release = Arc::new(Semaphore::new(0));
        let gate = Gate {
            started: Arc::clone(&started),
            release: Arc::clone(&release),
        };
        (gate, started, release)
    }
}

impl Service for Gate {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Gate")
            .mailbox_capacity(1)
            .max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, _p: (), _cx: ActionContext| async move {
                svc.started.notify_one();
                let permit = svc
                    .release
                    .acquire()
                    .await
                    .map_err(|e| BoxError::from(e.to_string()))?;
                permit.forget();
                Ok::<_, BoxError>("released")
            },
        );
        a.action(
            "quick",
            |_svc: Arc<Self>, _p: (), _cx: ActionContext| async move { Ok::<_, BoxError>(1) },
        );
    }
}

impl BackgroundService for Gate {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn start() -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<Greeter>()
        .service::<Dormant>()
        .build()?
        .start();
    Api::open(host).await
}

/// The HTTP status of each error kind: the control plane's contract.
fn status_of(kind: &str) -> StatusCode {
    match kind {
        "invalid_json" | "invalid_parameters" => StatusCode::BAD_REQUEST,
        "unknown_service" | "unknown_action" | "unknown_job" | "not_found" => StatusCode::NOT_FOUND,
        "disabled" => StatusCode::CONFLICT,
        "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "busy" => StatusCode::TOO_MANY_REQUESTS,
        "shutting_down" => StatusCode::SERVICE_UNAVAILABLE,
        "timeout" => StatusCode::GATEWAY_TIMEOUT,
        "handler_error" => StatusCode::INTERNAL_SERVER_ERROR,
        other => panic!("no status for error kind `{other}`"),
    }
}

/// Sends `request`, asserts that the answer is the error `kind` with its status, and
/// returns its message.
async fn refused(request: reqwest::RequestBuilder, kind: &str) -> anyhow::Result<String> {
    let (status, body) = call(request).await?;
    assert_eq!(status, status_of(kind), "{body}");
    error_message(&body, kind)
}

/// Waits until a call waits in `Gate`'s mailbox (of one).
async fn one_queued_at_the_gate(api: &Api) -> anyhow::Result<()> {
    wait_for("a call queued at the gate", async || {
        let (_, status) = call(api.get("/api/services/gate/status")).await?;
        Ok((status["queue_depth"] == 1).then_some(()))
    })
    .await
}

/// Waits until the job record at `url` satisfies `done`, and returns it.
async fn job_when(api: &Api, url: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    wait_for(&format!("the job at {url}"), async || {
        let (status, record) = call(api.get(url)).await?;
        assert_eq!(status, StatusCode::OK, "{record}");
        Ok(done(&record).then_some(record))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_400() -> anyhow::Result<()> {
    let api = start().await?;
    let message = refused(
        api.post("/api/services/greeter/actions/greet")
            .header("content-type", "application/json")
            .body("{\"name\": \"Ada\", "),
        "invalid_json",
    )
    .await?;
    assert!(message.contains("not valid JSON"), "{message}");

    // The seed's process-batch route parses its body the same way.
    refused(
        api.post("/api/services/greeter/process-batch")
            .header("content-type", "application/json")
            .body("[1,"),
        "invalid_json",
    )
    .await?;
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_naming_the_field() -> anyhow::Result<()> {
    let api = start().await?;
    let message = refused(
        api.post("/api/services/greeter/actions/greet")
            .json(&json!({ "name": "Ada", "times": "twice" })),
        "invalid_parameters",
    )
    .await?;
    assert!(message.contains("times"), "{message}");
    assert!(message.contains("greet"), "{message}");

    let message = refused(
        api.post("/api/services/greeter/actions/greet")
            .json(&json!({ "times": 1 })),
        "invalid_parameters",
    )
    .await?;
    assert!(message.contains("name"), "{message}");

    // No body at all for an action that needs parameters.
    refused(
        api.post("/api/services/greeter/actions/greet"),
        "invalid_parameters",
    )
    .await?;
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_are_400() -> anyhow::Result<()> {
    let api = start().await?;
    let body = json!({ "name": "Ada", "times": 1 });
    for (query, needle) in [
        ("priority=high", "priority"),
        ("priority=1.5", "priority"),
        // The range named (found by a probe).
        ("priority=99999999999", "from -2147483648 to 2147483647"),
        ("timeout=soon", "timeout"),
        ("timeout=0s", "timeout"),
        ("wait=maybe", "wait"),
        (
            "colour=blue",
            "unknown query parameter `colour`; accepted: priority",
        ),
        ("priority=1&priority=2", "duplicate field `priority`"),
        ("token=s3cret", "Authorization: Bearer"),
    ] {
        let message = refused(
            api.post(&format!("/api/services/greeter/actions/greet?{query}"))
                .json(&body),
            "invalid_parameters",
        )
        .await?;
        assert!(message.contains(needle), "{query}: {message}");
    }
    // A bad correlation id header too.
    let long = "x".repeat(201);
    let message = refused(
        api.post("/api/services/greeter/actions/greet")
            .header("X-Correlation-Id", long)
            .json(&body),
        "invalid_parameters",
    )
    .await?;
    assert!(message.contains("X-Correlation-Id"), "{message}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_are_404() -> anyhow::Result<()> {
    let api = start().await?;
    let message = refused(
        api.post("/api/services/nope/actions/greet"),
        "unknown_service",
    )
    .await?;
    assert!(message.contains("nope"), "{message}");
    assert!(
        message.contains("Greeter") && message.contains("Dormant"),
        "{message}"
    );

    for path in [
        "/api/services/nope",
        "/api/services/nope/status",
        "/api/services/nope/health",
    ] {
        refused(api.get(path), "unknown_service").await?;
    }

    let message = refused(
        api.post("/api/services/greeter/actions/shout"),
        "unknown_action",
    )
    .await?;
    assert!(message.contains("shout"), "{message}");
    assert!(
        message.contains("greet") && message.contains("fail") && message.contains("never"),
        "{message}"
    );

    // The seed's routes exist for periodic services only.
    refused(api.post("/api/services/greeter/trigger"), "unknown_action").await?;

    let message = refused(api.get("/api/nothing/here"), "not_found").await?;
    assert!(message.contains("/api/nothing/here"), "{message}");

    for route in ["/api/jobs/no-such-id", "/api/actions/no-such-id"] {
        let message = refused(api.get(route), "unknown_job").await?;
        assert!(message.contains("no-such-id"), "{message}");
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_service_is_409() -> anyhow::Result<()> {
    let api = start().await?;
    let message = refused(api.post("/api/services/dormant/actions/wake"), "disabled").await?;
    assert!(
        message.contains("Dormant") && message.contains("wake"),
        "{message}"
    );

    let (_, row) = call(api.get("/api/services/dormant/status")).await?;
    assert_eq!(row["enabled"], false);
    assert_eq!(row["state"], "disabled");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Greeter>().build()?.start();
    let options = HttpOptions {
        body_limit: 64,
        ..loopback()
    };
    let api = Api::serve(host, options).await?;
    let big = json!({ "name": "A".repeat(200), "times": 1 });
    let message = refused(
        api.post("/api/services/greeter/actions/greet").json(&big),
        "payload_too_large",
    )
    .await?;
    assert!(message.contains("limit of 64 bytes"), "{message}");

    refused(
        api.post("/api/services/greeter/process-batch").json(&big),
        "payload_too_large",
    )
    .await?;

    // A body within the limit still works.
    let small = json!({ "name": "Al", "times": 1 });
    let (status, body) = call(api.post("/api/services/greeter/actions/greet").json(&small)).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "Hello Al!");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mailbox_is_429() -> anyhow::Result<()> {
    let (gate, started, release) = Gate::new();
    let host = koan::testing::host().instance(gate).build()?.start();
    let api = Api::open(host).await?;

    // One action runs as a job (held by the test) …
    let (status, first) = call(api.post("/api/services/gate/actions/hold?wait=false")).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    within("the first action to start", started.notified()).await?;
    // … one caller waits in the mailbox of one …
    let second = tokio::spawn(call(api.post("/api/services/gate/actions/hold")));
    one_queued_at_the_gate(&api).await?;
    // … and the next caller is refused at once.
    refused(api.post("/api/services/gate/actions/quick"), "busy").await?;
    // A job is not refused: it waits in the store, not in the mailbox.
    let (status, third) = call(api.post("/api/services/gate/actions/quick?wait=false")).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{third}");

    // Released, both held actions finish, the job runs and the service takes work again.
    release.add_permits(2);
    let (status, body) = within("the second caller's answer", second).await???;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "released");
    for (accepted, result) in [(&first, json!("released")), (&third, json!(1))] {
        let url = accepted["status_url"].as_str().unwrap_or_default();
        let record = job_when(&api, url, |r| r["state"] == "succeeded").await?;
        assert_eq!(record["result"], result, "{record}");
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_is_503() -> anyhow::Result<()> {
    let (gate, started, release) = Gate::new();
    let host = koan::testing::host()
        .instance(gate)
        .shutdown_grace(Duration::from_secs(300))
        .build()?
        .start();
    let mut api = Api::open(host).await?;

    let (status, _) = call(api.post("/api/services/gate/actions/hold?wait=false")).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    within("the first action to start", started.notified()).await?;

    // A waiting request queues behind the running action.
    let queued = tokio::spawn(call(api.post("/api/services/gate/actions/quick")));
    one_queued_at_the_gate(&api).await?;

    api.host.shutdown();
    let (status, body) = within("the queued request's answer", queued).await???;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = error_message(&body, "shutting_down")?;
    assert!(
        message.contains("quick") && message.contains("was not started"),
        "{message}"
    );

    // The host is still draining (the held action runs): new requests are refused.
    refused(
        api.post("/api/services/gate/actions/quick"),
        "shutting_down",
    )
    .await?;
    refused(
        api.post("/api/services/gate/actions/quick?wait=false"),
        "shutting_down",
    )
    .await?;
    let (status, body) = call(api.get("/health/ready")).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "fail");

    // Released, the host stops, and the server with it.
    release.add_permits(1);
    within("the host to stop", api.host.wait())
        .await?
        .into_result()?;
    if let Some(server) = api.server.take() {
        within("the server to end", server.wait()).await??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_is_504() -> anyhow::Result<()> {
    let api = start().await?;
    let message = refused(
        api.post("/api/services/greeter/actions/never?timeout=50ms"),
        "timeout",
    )
    .await?;
    assert!(
        message.contains("never") && message.contains("50ms"),
        "{message}"
    );

    // The service is not stuck: the abandoned handler was dropped.
    let (status, body) = call(
        api.post("/api/services/greeter/actions/greet")
            .json(&json!({ "name": "Ada", "times": 1 })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_error_is_500() -> anyhow::Result<()> {
    let api = start().await?;
    let (status, headers, body) =
        koan_test_support::http::send(api.post("/api/services/greeter/actions/fail")).await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        koan_test_support::http::header(&headers, "content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let message = error_message(&body, "handler_error")?;
    assert!(message.contains("the disk is full"), "{message}");
    assert!(message.contains("fail"), "{message}");

    // Enqueued, the failure lands in the job's record (and it waits for a retry).
    let (status, accepted) =
        call(api.post("/api/services/greeter/actions/fail?wait=false")).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let url = accepted["status_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let record = job_when(&api, &url, |r| !r["error"].is_null()).await?;
    assert_eq!(record["state"], "retrying", "{record}");
    assert_eq!(record["error"]["error"], "handler_error", "{record}");
    assert_eq!(record["attempts"], 1, "{record}");
    assert_eq!(record["result"], Value::Null);
    api.stop().await
}
