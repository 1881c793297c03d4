//! `/metrics`: the action counters of the `metrics` facade (once the Prometheus
//! recorder is installed) and the per-service status gauges.

use koan::{ActionContext, BackgroundService, BoxError, PeriodicService, ServiceContext};
use koan_test_support::http::{Api, call, header};
use koan_test_support::within;
use reqwest::StatusCode;

#[koan::service(name = "Counter")]
#[derive(Default)]
struct CounterService;

#[koan::actions]
impl CounterService {
    #[action("bump")]
    async fn bump(&self, n: u32, _cx: &ActionContext) -> Result<u32, BoxError> {
        Ok(n + 1)
    }

    #[action("fail")]
    async fn fail(&self, _p: (), _cx: &ActionContext) -> Result<(), BoxError> {
        Err("no".into())
    }

    /// Refuses its input itself: counted as a refusal before the handler is.
    #[action("pick")]
    async fn pick(&self, _p: (), _cx: &ActionContext) -> Result<(), BoxError> {
        let e = koan::Error::new(koan::error::ErrorKind::InvalidParameters, "none to pick");
        Err(e.into())
    }
}

/// A startup service that did its work.
#[koan::service(startup, name = "Migrate")]
#[derive(Default)]
struct Migrate;

impl koan::StartupService for Migrate {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

impl BackgroundService for CounterService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[koan::service(every = "1h", name = "Sweeper")]
#[derive(Default)]
struct Sweeper;

impl PeriodicService for Sweeper {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn scrape(api: &Api) -> anyhow::Result<String> {
    let resp = within("/metrics", api.get("/metrics").send()).await??;
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = header(resp.headers(), "content-type")
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    Ok(resp.text().await?)
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

/// Asserts that the sample `name` with `labels` has `value` in the scraped `text`.
#[track_caller]
fn assert_sample(text: &str, name: &str, labels: &[(&str, &str)], value: f64) {
    assert_eq!(
        sample(text, name, labels),
        Some(value),
        "{name} {labels:?} in {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_actions_and_service_status() -> anyhow::Result<()> {
    assert!(
        koan_http::install_metrics(),
        "another recorder was installed first"
    );
    let host = koan::testing::host()
        .service::<Migrate>()
        .service::<CounterService>()
        .service::<Sweeper>()
        .build()?
        .start();
    let api = Api::open(host).await?;
    within(
        "Counter running",
        koan::testing::wait_state(&api.host, "Counter", koan::status::ServiceState::Running),
    )
    .await?;

    for n in [1, 2] {
        let (status, body) = call(api.post("/api/services/counter/actions/bump").json(&n)).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"], n + 1);
    }
    let (status, _) = call(api.post("/api/services/counter/actions/fail")).await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = call(api.post("/api/services/counter/actions/bump").json(&"x")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(api.post("/api/services/counter/actions/pick")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(api.post("/api/services/sweeper/trigger?wait=true")).await?;
    assert_eq!(status, StatusCode::OK);

    let counter = [("service", "Counter")];
    let sweeper = [("service", "Sweeper")];
    let text = scrape(&api).await?;
    assert!(text.contains("koan_actions_total"), "{text}");
    let ok = [
        ("service", "Counter"),
        ("action", "bump"),
        ("outcome", "ok"),
    ];
    assert_sample(&text, "koan_actions_total", &ok, 2.0);
    let failed = [
        ("service", "Counter"),
        ("action", "fail"),
        ("outcome", "handler_error"),
    ];
    assert_sample(&text, "koan_actions_total", &failed, 1.0);
    let rejected = [
        ("service", "Counter"),
        ("action", "bump"),
        ("outcome", "invalid_parameters"),
    ];
    assert_sample(&text, "koan_actions_total", &rejected, 1.0);
    let refused = [
        ("service", "Counter"),
        ("action", "pick"),
        ("outcome", "invalid_parameters"),
    ];
    assert_sample(&text, "koan_actions_total", &refused, 1.0);
    let refused_as_failed = [
        ("service", "Counter"),
        ("action", "pick"),
        ("outcome", "handler_error"),
    ];
    assert_sample(&text, "koan_actions_total", &refused_as_failed, 0.0);
    // Timings are histograms (they sum across instances): every run of `bump` is in
    // the last bucket and in the count, none of the refused call.
    assert!(
        text.contains("# TYPE koan_action_duration_seconds histogram"),
        "{text}"
    );
    let bump = [("service", "Counter"), ("action", "bump")];
    let inf = [("service", "Counter"), ("action", "bump"), ("le", "+Inf")];
    assert_sample(&text, "koan_action_duration_seconds_count", &bump, 2.0);
    assert_sample(&text, "koan_action_duration_seconds_bucket", &inf, 2.0);
    assert_sample(&text, "koan_action_queue_seconds_count", &bump, 2.0);

    assert!(
        text.contains("# TYPE koan_service_runs_total counter"),
        "{text}"
    );
    assert_sample(&text, "koan_service_runs_total", &sweeper, 1.0);
    assert_sample(&text, "koan_service_runs_total", &counter, 0.0);
    assert_sample(&text, "koan_service_up", &counter, 1.0);
    // A startup service done with its work is up, not down for good.
    assert_sample(&text, "koan_service_up", &[("service", "Migrate")], 1.0);
    assert_sample(&text, "koan_service_health", &sweeper, 0.0);
    assert_sample(&text, "koan_service_queue_depth", &counter, 0.0);

    // Jobs: enqueued and finished counters, the wait in the queue, counts by state.
    let (status, accepted) = call(
        api.post("/api/services/counter/actions/bump?wait=false")
            .json(&5),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
    within(
        "the job to succeed",
        koan::testing::wait_for_job(&api.host, &id, koan::job::JobState::Succeeded),
    )
    .await?;
    let text = scrape(&api).await?;
    assert_sample(&text, "koan_jobs_enqueued_total", &counter, 1.0);
    assert_sample(
        &text,
        "koan_jobs_finished_total",
        &[("service", "Counter"), ("state", "succeeded")],
        1.0,
    );
    assert!(
        text.contains("koan_job_queue_wait_seconds"),
        "the queue-wait histogram: {text}"
    );
    assert!(text.contains("koan_jobs{state=\"queued\"}"), "{text}");
    api.stop().await
}
