//! The success paths of the control plane over real HTTP: listing and describing
//! services, status and health, running actions (waiting or not, with priority,
//! timeout and correlation id), the seed's periodic routes, OpenAPI and the dashboard.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use koan::{BackgroundService, BoxError, ServiceContext, service::BatchRequest};
use koan_test_support::http::{Api, call, header, loopback, send, serve_greeter_and_cleanup};
use koan_test_support::services::Seen;
use koan_test_support::within;
use reqwest::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

async fn start() -> anyhow::Result<(Api, Arc<Seen>)> {
    serve_greeter_and_cleanup(loopback()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_services_with_kind_state_and_health() -> anyhow::Result<()> {
    let (api, _) = start().await?;
    let (status, body) = call(api.get("/api/services")).await?;
    assert_eq!(status, StatusCode::OK);
    let rows = body
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("not an array: {body}"))?;
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["Greeter", "Cleanup"]);

    let greeter = &rows[0];
    assert_eq!(greeter["kind"], "background");
    assert_eq!(greeter["state"], "running");
    assert_eq!(greeter["health"], "healthy");
    assert_eq!(greeter["enabled"], true);
    assert_eq!(greeter["critical"], false);
    assert_eq!(greeter["description"], "Says hello");
    assert_eq!(greeter["actions"], json!(["greet", "whoami"]));

    let cleanup = &rows[1];
    assert_eq!(cleanup["kind"], "periodic");
    assert_eq!(cleanup["state"], "idle");
    assert_eq!(cleanup["health"], "healthy");
    assert_eq!(cleanup["schedule"], "every 1h");
    assert_eq!(cleanup["runs"], 0);
    assert!(cleanup["next_run"].is_string(), "next_run in {cleanup}");
    assert_eq!(
        cleanup["actions"],
        json!(["trigger", "check-queue", "process-batch"])
    );
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describes_a_service_by_case_insensitive_name() -> anyhow::Result<()> {
    let (api, _) = start().await?;
    for path in [
        "/api/services/Greeter",
        "/api/services/greeter",
        "/api/services/GREETER",
    ] {
        let (status, info) = call(api.get(path)).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {info}");
        assert_eq!(info["name"], "Greeter");
        assert_eq!(info["kind"], "background");
        assert_eq!(info["description"], "Says hello");
        let greet = &info["actions"][0];
        assert_eq!(greet["name"], "greet");
        assert_eq!(greet["description"], "Greets someone");
        assert_eq!(greet["builtin"], false);
        let schema = &greet["params_schema"];
        assert!(schema["properties"]["name"].is_object(), "schema {schema}");
        assert!(schema["properties"]["times"].is_object(), "schema {schema}");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(
            required.contains(&"name") && required.contains(&"times"),
            "schema {schema}"
        );
        assert_eq!(info["actions"][1]["name"], "whoami");
        assert_eq!(info["actions"][1]["params_schema"], Value::Null);
    }

    let (status, info) = call(api.get("/api/services/cleanup")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["schedule"], "every 1h");
    let batch = info["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "process-batch"))
        .ok_or_else(|| anyhow::anyhow!("no process-batch in {info}"))?;
    assert_eq!(batch["builtin"], true);
    assert!(
        batch["params_schema"]["properties"]["batchSize"].is_object(),
        "{batch}"
    );
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_health_of_one_service() -> anyhow::Result<()> {
    let (api, _) = start().await?;
    let (status, body) = call(api.get("/api/services/greeter/status")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "Greeter");
    assert_eq!(body["kind"], "background");
    assert_eq!(body["state"], "running");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["queue_depth"], 0);
    assert_eq!(body["in_flight"], 0);

    let (status, headers, body) = send(api.get("/api/services/GREETER/health")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/health+json")
    );
    assert_eq!(body["status"], "pass");
    assert_eq!(body["service"], "Greeter");
    assert_eq!(body["critical"], false);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_an_action_and_returns_its_result() -> anyhow::Result<()> {
    let (api, _) = start().await?;
    let (status, headers, body) = send(
        api.post("/api/services/greeter/actions/greet")
            .json(&json!({ "name": "Ada", "times": 2 })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "Hello Ada! Hello Ada!");
    assert_eq!(body["service"], "Greeter");
    assert_eq!(body["action"], "greet");
    let cid = body["correlation_id"].as_str().unwrap_or_default();
    assert!(!cid.is_empty(), "{body}");
    assert_eq!(header(&headers, "x-correlation-id"), Some(cid));
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_id_priority_and_timeout_reach_the_handler() -> anyhow::Result<()> {
    let (api, _) = start().await?;
    let (status, headers, body) = send(
        api.post("/api/services/greeter/actions/whoami?priority=7&timeout=30s")
            .header("X-Correlation-Id", "order-42"),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["correlation_id"], "order-42");
    assert_eq!(header(&headers, "x-correlation-id"), Some("order-42"));
    let seen = &body["result"];
    assert_eq!(seen["service"], "Greeter");
    assert_eq!(seen["action"], "whoami");
    assert_eq!(seen["correlation_id"], "order-42");
    assert_eq!(seen["priority"], 7);
    assert_eq!(seen["has_deadline"], true);
    assert_eq!(seen["enqueued"], false);

    // Without them: priority 0, no deadline, a generated correlation id.
    let (status, _, body) = send(api.post("/api/services/greeter/actions/whoami")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["priority"], 0);
    assert_eq!(body["result"]["has_deadline"], false);
    assert_eq!(body["result"]["correlation_id"], body["correlation_id"]);
    assert_ne!(body["correlation_id"], "order-42");

    // Negative priorities are accepted too.
    let (status, body) = call(api.post("/api/services/greeter/actions/whoami?priority=-3")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["priority"], -3);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_false_answers_202_and_the_record_shows_success() -> anyhow::Result<()> {
    let (api, _) = start().await?;
    let (status, headers, accepted) = send(
        api.post("/api/services/greeter/actions/greet?wait=false")
            .header("X-Correlation-Id", "batch-7")
            .json(&json!({ "name": "Bob", "times": 1 })),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
    assert!(!id.is_empty(), "{accepted}");
    assert_eq!(accepted["status_url"], format!("/api/jobs/{id}"));
    assert_eq!(accepted["created"], true);
    assert_eq!(accepted["correlation_id"], "batch-7");
    assert_eq!(header(&headers, "x-correlation-id"), Some("batch-7"));

    let url = accepted["status_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let record = within("the job to succeed", async {
        loop {
            let (status, record) = call(api.get(&url)).await?;
            assert_eq!(status, StatusCode::OK, "{record}");
            if record["state"] == "succeeded" {
                return anyhow::Ok(record);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await??;
    assert_eq!(record["id"], id);
    assert_eq!(record["state"], "succeeded");
    assert_eq!(record["result"], "Hello Bob!");
    assert_eq!(record["action"], "greet");
    assert_eq!(record["correlation_id"], "batch-7");
    assert!(record["finished_at"].is_string(), "{record}");
    assert_eq!(record["error"], Value::Null);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_routes_with_wait_reach_the_periodic_service() -> anyhow::Result<()> {
    let (api, seen) = start().await?;

    let (status, body) = call(api.post("/api/services/cleanup/trigger?wait=true")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["action"], "trigger");
    assert!(body["result"].is_object(), "{body}");
    assert_eq!(seen.ticks.load(Ordering::SeqCst), 1);

    let (status, body) = call(api.post("/api/services/cleanup/check-queue?wait=true")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen.queue_checks.load(Ordering::SeqCst), 1);
    assert_eq!(seen.ticks.load(Ordering::SeqCst), 1);

    let (status, body) = call(
        api.post("/api/services/cleanup/process-batch?wait=true")
            .json(&json!({ "batchSize": 50, "filter": "high-priority" })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let batches = seen.batches();
    assert_eq!(
        batches,
        [BatchRequest::new(
            Some(50),
            Some("high-priority".to_owned())
        )]
    );

    // Without a body, the default batch.
    let (status, body) = call(api.post("/api/services/cleanup/process-batch?wait=true")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let batches = seen.batches();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1], BatchRequest::default());

    // Unknown fields are refused, naming the field.
    let (status, body) = call(
        api.post("/api/services/cleanup/process-batch")
            .json(&json!({ "batchSize": 5, "colour": "red" })),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = koan_test_support::http::error_message(&body, "invalid_parameters")?;
    assert!(message.contains("colour"), "{message}");

    // The status counts the four runs.
    let (_, status_body) = call(api.get("/api/services/cleanup/status")).await?;
    assert_eq!(status_body["runs"], 4, "{status_body}");
    assert_eq!(status_body["failures"], 0);

    // The same built-ins through the generic action route.
    let (status, body) = call(
        api.post("/api/services/cleanup/actions/process-batch")
            .json(&json!({ "batchSize": 5 })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let batches = seen.batches();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2], BatchRequest::new(Some(5), None));
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_each_declared_action() -> anyhow::Result<()> {
    let (api, _) = start().await?;
    let (status, headers, doc) = send(api.get("/api/openapi.json")).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        header(&headers, "content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no paths"))?;
    for generic in [
        "/api/services",
        "/api/services/{name}",
        "/api/services/{name}/actions/{action}",
        "/api/services/{name}/process-batch",
        "/api/events",
        "/api/events/recent",
        "/api/services/{name}/history",
        "/api/stats/throughput",
        "/api/instances",
        "/api/jobs",
        "/health",
        "/metrics",
    ] {
        assert!(paths.contains_key(generic), "{generic} missing");
    }
    let greet = &doc["paths"]["/api/services/Greeter/actions/greet"]["post"];
    assert_eq!(greet["summary"], "Greets someone");
    assert_eq!(greet["requestBody"]["required"], true);
    let schema = &greet["requestBody"]["content"]["application/json"]["schema"];
    assert!(schema["properties"]["name"].is_object(), "{schema}");
    assert!(greet["responses"]["200"].is_object());
    assert!(greet["responses"]["504"].is_object());
    let whoami = &doc["paths"]["/api/services/Greeter/actions/whoami"]["post"];
    assert_eq!(whoami["requestBody"]["required"], false);
    assert!(paths.contains_key("/api/services/Cleanup/actions/process-batch"));
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_dashboard() -> anyhow::Result<()> {
    let (api, _) = start().await?;
    let resp = koan_test_support::within("the dashboard", api.get("/").send()).await??;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        header(resp.headers(), "content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let text = resp.text().await?;
    assert!(text.to_ascii_lowercase().contains("<html"), "not a page");
    api.stop().await
}

/// A background service shaped like the seed's OutboxProcessor: its own
/// `ProcessBatch(int? batchSize)` and an `OnTriggerNow` hook.
#[koan::service]
#[derive(Default)]
struct Outbox {
    batches: Arc<Mutex<Vec<Option<u32>>>>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct OutboxBatch {
    batch_size: Option<u32>,
}

#[koan::actions]
impl Outbox {
    #[action(koan::well_known::actions::outbox::PROCESS_BATCH)]
    async fn process_batch(&self, p: OutboxBatch) -> Result<u32, BoxError> {
        self.batches
            .lock()
            .map_err(|_| "poisoned")?
            .push(p.batch_size);
        Ok(p.batch_size.unwrap_or(100))
    }

    #[action("TriggerNow")]
    async fn trigger_now(&self) -> Result<&'static str, BoxError> {
        Ok("triggered")
    }
}

impl BackgroundService for Outbox {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A background service with no trigger hook.
#[koan::service]
#[derive(Default)]
struct Plain;

impl BackgroundService for Plain {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_routes_answer_at_once_with_the_seeds_message_and_reach_declared_actions()
-> anyhow::Result<()> {
    let outbox = Outbox::default();
    let batches = Arc::clone(&outbox.batches);
    let host = koan::testing::host()
        .instance(outbox)
        .service::<Plain>()
        .build()?
        .start();
    let api = Api::open(host).await?;

    // `/process-batch` reaches the declared `ProcessBatch`, with the seed's body; it
    // answers once the work is handed over (a stored job), as the seed's command bus.
    let (status, body) = call(
        api.post("/api/services/Outbox/process-batch")
            .json(&json!({ "batchSize": 5 })),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["message"],
        "Service 'Outbox' batch processing triggered"
    );
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    let record = within(
        "the batch job",
        koan::testing::wait_for_job(&api.host, &id, koan::job::JobState::Succeeded),
    )
    .await?;
    assert_eq!(record.action, "ProcessBatch");
    assert_eq!(record.result, Some(json!(5)));
    assert_eq!(
        *batches.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
        [Some(5)]
    );

    // With `wait=true`, the outcome; any spelling of the name reaches the action.
    let (status, body) = call(
        api.post("/api/services/Outbox/actions/process_batch?wait=true")
            .json(&json!({ "batchSize": 7 })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], 7);

    // `/trigger` on a background service reaches its trigger hook.
    let (status, body) = call(api.post("/api/services/Outbox/trigger?wait=true")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "triggered");
    let (status, body) = call(api.post("/api/services/Outbox/trigger")).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["message"], "Service 'Outbox' triggered successfully");

    // … and says what to do when there is none.
    let (status, body) = call(api.post("/api/services/Plain/trigger")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let message = koan_test_support::http::error_message(&body, "unknown_action")?;
    assert!(message.contains("declare an action `trigger`"), "{message}");
    api.stop().await
}
