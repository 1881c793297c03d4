//! Every error answer of the control plane over real HTTP, each with its status and
//! its JSON body `{ "error": kind, "message": … }`: bad JSON, bad parameters, bad query
//! values, unknown service/action/route/action id, disabled, body too large, busy,
//! shutting down, timeout, handler failure; and `serve` refusing an open bind.

use std::sync::Arc;
use std::time::Duration;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_http::{HttpOptions, ServeError};
use koan_test_support::http::{Api, call, error_message, loopback};
use koan_test_support::within;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_400() -> anyhow::Result<()> {
    let api = start().await?;
    let (status, body) = call(
        api.post("/api/services/greeter/actions/greet")
            .header("content-type", "application/json")
            .body("{\"name\": \"Ada\", "),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error_message(&body, "invalid_json")?;
    assert!(message.contains("not valid JSON"), "{message}");

    // The seed's process-batch route parses its body the same way.
    let (status, body) = call(
        api.post("/api/services/greeter/process-batch")
            .header("content-type", "application/json")
            .body("[1,"),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    error_message(&body, "invalid_json")?;
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_naming_the_field() -> anyhow::Result<()> {
    let api = start().await?;
    let (status, body) = call(
        api.post("/api/services/greeter/actions/greet")
            .json(&json!({ "name": "Ada", "times": "twice" })),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = error_message(&body, "invalid_parameters")?;
    assert!(message.contains("times"), "{message}");
    assert!(message.contains("greet"), "{message}");

    let (status, body) = call(
        api.post("/api/services/greeter/actions/greet")
            .json(&json!({ "times": 1 })),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = error_message(&body, "invalid_parameters")?;
    assert!(message.contains("name"), "{message}");

    // No body at all for an action that needs parameters.
    let (status, body) = call(api.post("/api/services/greeter/actions/greet")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    error_message(&body, "invalid_parameters")?;
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_are_400() -> anyhow::Result<()> {
    let api = start().await?;
    let body = json!({ "name": "Ada", "times": 1 });
    for (query, needle) in [
        ("priority=high", "priority"),
        ("priority=1.5", "priority"),
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
        let (status, answer) = call(
            api.post(&format!("/api/services/greeter/actions/greet?{query}"))
                .json(&body),
        )
        .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        let message = error_message(&answer, "invalid_parameters")?;
        assert!(message.contains(needle), "{query}: {message}");
    }
    // A bad correlation id header too.
    let long = "x".repeat(201);
    let (status, answer) = call(
        api.post("/api/services/greeter/actions/greet")
            .header("X-Correlation-Id", long)
            .json(&body),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = error_message(&answer, "invalid_parameters")?;
    assert!(message.contains("X-Correlation-Id"), "{message}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_are_404() -> anyhow::Result<()> {
    let api = start().await?;
    let (status, body) = call(api.post("/api/services/nope/actions/greet")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let message = error_message(&body, "unknown_service")?;
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
        let (status, body) = call(api.get(path)).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        error_message(&body, "unknown_service")?;
    }

    let (status, body) = call(api.post("/api/services/greeter/actions/shout")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let message = error_message(&body, "unknown_action")?;
    assert!(message.contains("shout"), "{message}");
    assert!(
        message.contains("greet") && message.contains("fail") && message.contains("never"),
        "{message}"
    );

    // The seed's routes exist for periodic services only.
    let (status, body) = call(api.post("/api/services/greeter/trigger")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    error_message(&body, "unknown_action")?;

    let (status, body) = call(api.get("/api/nothing/here")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let message = error_message(&body, "not_found")?;
    assert!(message.contains("/api/nothing/here"), "{message}");

    for route in ["/api/jobs/no-such-id", "/api/actions/no-such-id"] {
        let (status, body) = call(api.get(route)).await?;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let message = error_message(&body, "unknown_job")?;
        assert!(message.contains("no-such-id"), "{message}");
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_service_is_409() -> anyhow::Result<()> {
    let api = start().await?;
    let (status, body) = call(api.post("/api/services/dormant/actions/wake")).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = error_message(&body, "disabled")?;
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
    let (status, body) = call(api.post("/api/services/greeter/actions/greet").json(&big)).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    error_message(&body, "payload_too_large")?;

    let (status, body) = call(api.post("/api/services/greeter/process-batch").json(&big)).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    error_message(&body, "payload_too_large")?;

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
    within("the second call to be queued", async {
        loop {
            let (_, status) = call(api.get("/api/services/gate/status")).await?;
            if status["queue_depth"] == 1 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await??;
    // … and the next caller is refused at once.
    let (status, body) = call(api.post("/api/services/gate/actions/quick")).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    error_message(&body, "busy")?;
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
        let record = within("the job to succeed", async {
            loop {
                let (status, record) = call(api.get(url)).await?;
                assert_eq!(status, StatusCode::OK);
                if record["state"] == "succeeded" {
                    return anyhow::Ok(record);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await??;
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
    within("the request to be queued", async {
        loop {
            let (_, status) = call(api.get("/api/services/gate/status")).await?;
            if status["queue_depth"] == 1 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await??;

    api.host.shutdown();
    let (status, body) = within("the queued request's answer", queued).await???;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = error_message(&body, "shutting_down")?;
    assert!(message.contains("quick"), "{message}");

    // The host is still draining (the held action runs): new requests are refused.
    let (status, body) = call(api.post("/api/services/gate/actions/quick")).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    error_message(&body, "shutting_down")?;
    let (status, body) = call(api.post("/api/services/gate/actions/quick?wait=false")).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    error_message(&body, "shutting_down")?;
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
    let (status, body) = call(api.post("/api/services/greeter/actions/never?timeout=50ms")).await?;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let message = error_message(&body, "timeout")?;
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
    let mut record = Value::Null;
    for _ in 0..500 {
        record = call(api.get(&url)).await?.1;
        if !record["error"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(record["state"], "retrying", "{record}");
    assert_eq!(record["error"]["error"], "handler_error", "{record}");
    assert_eq!(record["attempts"], 1, "{record}");
    assert_eq!(record["result"], Value::Null);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_open_bind_without_token() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Greeter>().build()?.start();
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
