//! A waiting call whose timeout passes while it is still queued behind other work
//! is answered 504 saying it was not run and will not be (calling again is safe),
//! not that its outcome is unknown; one that timed out while it ran still says the
//! outcome is unknown. Over real HTTP.

use std::sync::Arc;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_test_support::http::{Api, call, error_message};
use koan_test_support::{wait_for, within};
use reqwest::StatusCode;
use tokio::sync::{Notify, Semaphore};

/// One worker; `hold` waits for a permit.
struct Held {
    started: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl Service for Held {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Held").max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.started.notify_one();
                svc.release.acquire().await?.forget();
                Ok::<_, BoxError>("released")
            },
        );
        a.action(
            "quick",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>(1) },
        );
    }
}

impl BackgroundService for Held {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_timed_out_in_the_queue_is_said_not_run() -> anyhow::Result<()> {
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let held = Held {
        started: Arc::clone(&started),
        release: Arc::clone(&release),
    };
    let api = Api::open(koan::testing::host().instance(held).build()?.start()).await?;
    let (status, _) = call(api.post("/api/services/held/actions/hold?wait=false")).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    within("the held call to start", started.notified()).await?;

    let (status, body) = call(api.post("/api/services/held/actions/quick?timeout=100ms")).await?;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let message = error_message(&body, "timeout")?;
    assert!(
        message.contains("did not start within its timeout of 100ms")
            && message.contains("calling again is safe")
            && !message.contains("unknown"),
        "{message}"
    );
    // Its place was freed as it was answered.
    let (_, status) = call(api.get("/api/services/held/status")).await?;
    assert_eq!(status["queue_depth"], 0, "{status}");

    // Timed out while it ran, the outcome is unknown.
    release.add_permits(1);
    wait_for("the held job to end", async || {
        let (_, status) = call(api.get("/api/services/held/status")).await?;
        Ok((status["in_flight"] == 0).then_some(()))
    })
    .await?;
    let (status, body) = call(api.post("/api/services/held/actions/hold?timeout=100ms")).await?;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let message = error_message(&body, "timeout")?;
    assert!(message.contains("the outcome is unknown"), "{message}");
    api.stop().await
}
