//! `POST /api/services/{name}/restart` starts again a background service its
//! supervisor gave up on: before it, nothing but a restart of the host brought
//! one back, its calls refused and its status `failed` for good (found by a
//! probe). A service in any other state is refused `service_state` (409).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use koan::service::RestartPolicy;
use koan::status::ServiceState;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{ServiceContext, ServiceOptions};
use koan_test_support::http::{Api, call, loopback};
use koan_test_support::wait_for;
use reqwest::StatusCode;

/// Fails at once while its database is `down` (never restarted by its policy);
/// `ping` answers while it runs.
struct Feeder {
    down: Arc<AtomicBool>,
    runs: Arc<AtomicU32>,
}

impl Service for Feeder {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Feeder").restart(RestartPolicy::Never)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "ping",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>("pong") },
        );
    }
}

impl BackgroundService for Feeder {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err("its database is down".into());
        }
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_service_is_restarted_by_hand() -> anyhow::Result<()> {
    let down = Arc::new(AtomicBool::new(true));
    let runs = Arc::new(AtomicU32::new(0));
    let feeder = Feeder {
        down: Arc::clone(&down),
        runs: Arc::clone(&runs),
    };
    let host = koan::Host::builder().instance(feeder).build()?.start();
    host.started().await?;
    let api = Api::serve(host, loopback()).await?;
    api.wait_state("Feeder", ServiceState::Failed).await?;
    let (status, body) = call(api.post("/api/services/Feeder/actions/ping")).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // Its database back, an operator restarts it: it runs, and takes calls.
    down.store(false, Ordering::SeqCst);
    let (status, body) = call(api.post("/api/services/feeder/restart")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["service"], "Feeder");
    api.wait_state("Feeder", ServiceState::Running).await?;
    wait_for("its run to start again", async || {
        Ok((runs.load(Ordering::SeqCst) == 2).then_some(()))
    })
    .await?;
    let (status, body) = call(api.post("/api/services/Feeder/actions/ping")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, health) = call(api.get("/api/services/Feeder/health")).await?;
    assert_eq!(health["status"], "pass", "{health}");

    // Running, it is not restarted again.
    let (status, body) = call(api.post("/api/services/Feeder/restart")).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "service_state", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`Feeder` is `running`"),
        "{body}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let (status, body) = call(api.post("/api/services/Nope/restart")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    api.stop().await
}
