//! A call that times out names its correlation id, which the words around it tell
//! the operator to look for: the host's `504` ("look for its correlation id (in this
//! answer)") was shown without it, and so was koanctl's own "no answer within"
//! after `--correlation-id` (found by a probe).

mod common;

use std::sync::{Arc, Mutex};

use common::fake::{Fake, Reply};
use common::koanctl;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_test_support::http::Api;
use tokio::sync::Semaphore;

/// `hold` notes its correlation id, then waits for a permit (past any timeout).
struct Held {
    seen: Arc<Mutex<Vec<String>>>,
    release: Arc<Semaphore>,
}

impl Service for Held {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Held").max_concurrency(4)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                if let Ok(mut seen) = svc.seen.lock() {
                    seen.push(cx.correlation_id().to_owned());
                }
                svc.release.acquire().await?.forget();
                Ok::<_, BoxError>("released")
            },
        );
    }
}

impl BackgroundService for Held {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// The id on the line `correlation id: …` of `err`.
fn named_id(err: &str) -> Option<&str> {
    err.lines().find_map(|l| l.strip_prefix("correlation id: "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_host_timed_out_names_its_correlation_id() -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(Semaphore::new(0));
    let held = Held {
        seen: Arc::clone(&seen),
        release: Arc::clone(&release),
    };
    let api = Api::open(koan::testing::host().instance(held).build()?.start()).await?;
    let call = |extra: &'static [&'static str]| {
        let mut args = vec![
            "--url",
            api.base.as_str(),
            "act",
            "held",
            "hold",
            // Long enough that the handler starts within it on a loaded machine
            // (a call not started by then is answered `not_started`, which this
            // test is not about); each call waits it out.
            "--timeout",
            "3s",
        ];
        args.extend_from_slice(extra);
        koanctl_owned(args)
    };

    // Given: the one sent.
    let run = call(&["--correlation-id", "order-42"]).await?;
    let err = run.api_error("timeout");
    assert!(err.contains("Look for its correlation id"), "{err}");
    assert_eq!(named_id(err), Some("order-42"), "{err}");

    // Not given: the one the host made and answered with, the handler's.
    let run = call(&[]).await?;
    let err = run.api_error("timeout").to_owned();
    let named = named_id(&err).map(str::to_owned);
    let handled = seen.lock().map(|s| s.last().cloned()).unwrap_or_default();
    assert!(
        named.is_some() && named == handled,
        "{err}\nhandled: {handled:?}"
    );

    release.add_permits(8);
    api.stop().await
}

/// Runs `koanctl ARGS…` (owned words).
async fn koanctl_owned(args: Vec<&str>) -> anyhow::Result<common::Run> {
    koanctl(&args, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_koanctl_gave_up_on_names_the_correlation_id_sent() -> anyhow::Result<()> {
    let fake = Fake::always(|| Reply::Silent).await?;
    let run = koanctl(
        &[
            "--url",
            &fake.url,
            "--request-timeout",
            "1s",
            "act",
            "S",
            "a",
            "--correlation-id",
            "order-42",
        ],
        &[],
    )
    .await?;
    let err = run.failed(4);
    assert!(err.contains("no answer from"), "{err}");
    assert_eq!(named_id(err), Some("order-42"), "{err}");
    Ok(())
}
