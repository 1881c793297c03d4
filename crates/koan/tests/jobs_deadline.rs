//! A stored job's action stopped by its deadline: a handler that ends at its
//! cancelled token with an error is recorded as a timeout (with its own words),
//! as a caller that waits hears it, not as a failure of the handler. Before, each
//! attempt said `handler_error` "translation stopped before it was stored", and
//! `koan_actions_total{outcome="handler_error"}` counted it (found by a probe).

use std::sync::Arc;
use std::time::Duration;

use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{ServiceContext, error::ErrorKind};

#[derive(Default)]
struct Work;

impl Service for Work {
    type Kind = Background;
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "slow",
            |_svc: Arc<Self>, (): (), cx: ActionContext| async move {
                cx.cancelled().await;
                Err::<(), BoxError>("stopped before it was stored".into())
            },
        )
        .max_attempts(1);
    }
}

impl BackgroundService for Work {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_stopped_by_its_deadline_is_a_timeout() -> anyhow::Result<()> {
    let host = koan::testing::host().instance(Work).build()?.start();
    host.started().await?;
    let ticket = host
        .service("Work")
        .action("slow", ())
        .timeout(Duration::from_millis(500))
        .enqueue()
        .await?;
    let id = ticket.id().to_owned();
    let e = ticket.outcome().await.expect_err("stopped by its deadline");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.message().contains("stopped before it was stored"), "{e}");
    let job = host.jobs().get(&id).await?;
    let error = job.history[0].error.as_ref().map(|b| b.error.as_str());
    assert_eq!(error, Some("timeout"), "{job:?}");
    // Waited on, the same call says the same.
    let e = host
        .service("Work")
        .action("slow", ())
        .timeout(Duration::from_millis(500))
        .execute()
        .await
        .expect_err("stopped by its deadline");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    koan::testing::stop(&host).await?;
    Ok(())
}
