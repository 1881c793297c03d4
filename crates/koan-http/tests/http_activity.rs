//! What happened lately, over real HTTP: a service's history, the host's recent events,
//! throughput per second and per hour, the instances of the cluster, and jobs found
//! by the correlation id of their events.

use koan::{BoxError, PeriodicService, ServiceContext};
use koan_test_support::http::{Api, call, error_message, loopback};
use koan_test_support::services::Echo;
use koan_test_support::within;
use reqwest::StatusCode;
use serde_json::Value;

#[koan::service(every = "1h", name = "Cleanup")]
#[derive(Default)]
struct Cleanup;

impl PeriodicService for Cleanup {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn start(options: koan_http::HttpOptions) -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<Echo>()
        .service::<Cleanup>()
        .build()?
        .start();
    Api::serve(host, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_history_lists_its_runs_newest_first() -> anyhow::Result<()> {
    let api = start(loopback()).await?;
    for _ in 0..3 {
        let (status, body) = call(api.post("/api/services/Cleanup/trigger?wait=true")).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, h) = call(api.get("/api/services/cleanup/history")).await?;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["service"], "Cleanup");
    assert_eq!(h["capacity"], 50);
    let runs = h["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 3, "{h}");
    for r in &runs {
        assert_eq!(r["reason"], "trigger", "{r}");
        assert_eq!(r["outcome"], "success", "{r}");
        assert!(
            r["duration_ms"].is_u64() && r["started_at"].is_string(),
            "{r}"
        );
    }
    let starts: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["started_at"].as_str())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(starts, sorted, "newest first");

    let (status, body) = call(api.get("/api/services/Nope/history")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    error_message(&body, "unknown_service")?;
    let (status, body) = call(api.get("/api/services/Cleanup/history?limit=2")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body, "invalid_parameters")?.contains("`limit`"));
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_service_counts_its_actions_and_throughput_counts_all_work()
-> anyhow::Result<()> {
    let api = start(loopback()).await?;
    call(api.post("/api/services/Echo/actions/echo").json(&"hi")).await?;
    let (status, _) = call(api.post("/api/services/Echo/actions/fail").json(&())).await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    call(api.post("/api/services/Cleanup/trigger?wait=true")).await?;

    let (_, list) = call(api.get("/api/services")).await?;
    let echo = list
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "Echo"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(echo["runs"], 0, "its run lasts as long as the host: {echo}");
    assert_eq!(
        (
            echo["actions_succeeded"].as_u64(),
            echo["actions_failed"].as_u64()
        ),
        (Some(1), Some(1))
    );

    let (status, t) = call(api.get("/api/stats/throughput")).await?;
    assert_eq!(status, StatusCode::OK, "{t}");
    let sum = |key: &str, field: &str| -> u64 {
        t[key]
            .as_array()
            .map(|b| b.iter().filter_map(|x| x[field].as_u64()).sum())
            .unwrap_or(0)
    };
    // Two successes (the echo and the run) and one failure, in both rings.
    assert_eq!(
        (sum("per_hour", "succeeded"), sum("per_hour", "failed")),
        (2, 1),
        "{t}"
    );
    assert_eq!(
        (sum("per_second", "succeeded"), sum("per_second", "failed")),
        (2, 1)
    );
    assert_eq!(t["per_second"].as_array().map(Vec::len), Some(120));
    assert_eq!(t["per_hour"].as_array().map(Vec::len), Some(24));
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_events_are_kept_and_filtered_and_lead_to_their_job() -> anyhow::Result<()> {
    let api = start(loopback()).await?;
    let (status, accepted) = call(
        api.post("/api/services/Echo/actions/echo?wait=false")
            .header("X-Correlation-Id", "corr-42")
            .json(&"from a job"),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    within(
        "the job to succeed",
        koan::testing::wait_for_job(
            &api.host,
            accepted["id"].as_str().unwrap_or_default(),
            koan::job::JobState::Succeeded,
        ),
    )
    .await?;
    call(api.post("/api/services/Echo/actions/echo").json(&"direct")).await?;

    let (status, events) = call(api.get("/api/events/recent")).await?;
    assert_eq!(status, StatusCode::OK, "{events}");
    let payloads: Vec<&Value> = events
        .as_array()
        .map(|e| e.iter().map(|x| &x["payload"]).collect())
        .unwrap_or_default();
    assert_eq!(
        payloads,
        [&Value::from("direct"), &Value::from("from a job")]
    );

    let (_, mine) = call(api.get("/api/events/recent?correlation_id=corr-42&limit=5")).await?;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(mine[0]["event"], "Echoed");
    let (_, none) = call(api.get("/api/events/recent?service=Cleanup")).await?;
    assert_eq!(none, Value::Array(vec![]));

    // The event's correlation id finds its job.
    let (status, page) = call(api.get("/api/jobs?correlation_id=corr-42")).await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["jobs"][0]["id"], accepted["id"]);

    for bad in ["limit=0", "limit=257", "limit=x", "since=1"] {
        let (status, body) = call(api.get(&format!("/api/events/recent?{bad}"))).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        error_message(&body, "invalid_parameters")?;
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_events_need_the_token_when_one_is_set() -> anyhow::Result<()> {
    let api = start(loopback().with_token("s3cret")).await?;
    let (status, body) = call(api.get("/api/events/recent")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    error_message(&body, "unauthorized")?;
    let (status, _) = call(api.get("/api/events/recent").bearer_auth("s3cret")).await?;
    assert_eq!(status, StatusCode::OK);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_list_this_host_with_its_services_and_load() -> anyhow::Result<()> {
    let api = start(loopback()).await?;
    let (status, body) = call(api.get("/api/instances")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = body["instances"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "without a cluster, only this host: {body}");
    let me = &list[0];
    assert_eq!(me["local"], true);
    assert_eq!(me["stale"], false);
    assert_eq!(me["heartbeat_age_ms"], 0);
    assert_eq!(me["name"], api.host.instance_name());
    assert!(me["load"]["in_flight"].is_u64() && me["load"]["queue_depth"].is_u64());
    let names: Vec<&str> = me["services"]
        .as_array()
        .map(|s| s.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["Echo", "Cleanup"]);
    assert!(body["registry_error"].is_null());
    // No cluster: no ages to tell a live instance from a silent one.
    assert!(
        body["stale_after_ms"].is_null() && body["gone_after_ms"].is_null(),
        "{body}"
    );

    let (status, body) = call(api.get("/api/instances?all=1")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    error_message(&body, "invalid_parameters")?;
    api.stop().await
}
