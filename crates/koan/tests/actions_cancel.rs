//! `ActionRequest::cancel_on`: a caller's token stops a run — the handler's own token
//! fires, whether the action runs on the caller's task or on a worker.

use std::time::Duration;

use koan::{ActionContext, BackgroundService, BoxError, ServiceContext};
use tokio_util::sync::CancellationToken;

#[koan::service]
#[derive(Default)]
struct Waiter;

#[koan::actions]
impl Waiter {
    /// Waits to be stopped, or an hour.
    #[action("wait")]
    async fn wait(&self, _p: (), cx: &ActionContext) -> Result<&'static str, BoxError> {
        tokio::select! {
            () = cx.cancelled() => Ok("stopped"),
            () = tokio::time::sleep(Duration::from_secs(3600)) => Ok("slept"),
        }
    }
}

impl BackgroundService for Waiter {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_callers_token_stops_the_run() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Waiter>().build()?.start();
    host.started().await?;
    let token = CancellationToken::new();
    let call = host
        .service("Waiter")
        .action("wait", ())
        .cancel_on(token.clone())
        .execute();
    let stop = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        token.cancel();
    };
    let (out, ()) = tokio::join!(call, stop);
    assert_eq!(out?.value::<String>()?, "stopped");

    // Without a cancel: the handler sleeps its hour (the paused clock moves on).
    let out = host.service("Waiter").action("wait", ()).execute().await?;
    assert_eq!(out.value::<String>()?, "slept");
    koan::testing::stop(&host).await?;
    Ok(())
}
