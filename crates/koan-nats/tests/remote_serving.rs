//! How an instance serves remote calls: an action that ends at once is answered from
//! the subscription's own task, one that waits goes on in a task of its own — so a
//! call that waits never holds up the next call to the same service.

use std::sync::Arc;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::within;
use tokio::sync::{Notify, Semaphore};

/// `hold` waits for its gate; `ping` answers at once.
struct Gate {
    entered: Arc<Notify>,
    open: Arc<Semaphore>,
}

impl Service for Gate {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Gate").max_concurrency(4)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.entered.notify_one();
                let _pass = svc.open.acquire().await?;
                Ok::<_, BoxError>("released")
            },
        );
        a.action(
            "ping",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>("pong") },
        );
    }
}

impl BackgroundService for Gate {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_that_waits_does_not_hold_up_the_next() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (entered, open) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let gate = Gate {
        entered: Arc::clone(&entered),
        open: Arc::clone(&open),
    };
    let (worker, client) =
        Member::worker_and_client(test_options(&server.url()), "Gate", |b| b.instance(gate))
            .await?;

    let calls = client.host.clone();
    let held = tokio::spawn(async move {
        calls
            .service("Gate")
            .action("hold", ())
            .execute()
            .await?
            .value::<String>()
    });
    within("`hold` to start on the worker", entered.notified()).await?;
    // `hold` is waiting on the worker: the next call is served all the same.
    let pong = within(
        "`ping` while `hold` waits",
        client.host.service("Gate").action("ping", ()).execute(),
    )
    .await??;
    assert_eq!(pong.value::<String>()?, "pong");
    assert!(!held.is_finished(), "`hold` ended before its gate opened");

    open.add_permits(1);
    let released = within("`hold` to end once its gate opens", held).await???;
    assert_eq!(released, "released");

    client.stop().await?;
    worker.stop().await?;
    Ok(())
}
