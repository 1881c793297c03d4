//! Durable work and a stopping host: jobs that arrive while the only instance of a
//! service stops are not dead-lettered nor answered `ShuttingDown` — they wait in the
//! stream and the next instance does them.

use std::sync::Arc;
use std::time::Duration;

use koan::host::HostBuilder;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::within;

#[derive(Default)]
struct Worker;

impl Service for Worker {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Worker")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "work",
            |_s: Arc<Self>, n: u32, _cx: ActionContext| async move { Ok::<_, BoxError>(n * 10) },
        );
    }
}

impl BackgroundService for Worker {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Takes a while to stop, so its host is "stopping" for that long.
#[derive(Default)]
struct SlowStop;

impl Service for SlowStop {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("SlowStop")
    }
}

impl BackgroundService for SlowStop {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_arriving_while_the_only_instance_stops_wait_for_the_next() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let join =
        |build: fn(HostBuilder) -> HostBuilder| Member::join(test_options(&server.url()), build);
    let mut a = join(|b| b.service::<Worker>().service::<SlowStop>()).await?;
    let b = join(|b| b).await?;
    let first = b
        .host
        .service("Worker")
        .action("work", 1u32)
        .enqueue()
        .await?;
    assert_eq!(
        within("outcome", first.outcome()).await??.value::<u32>()?,
        10
    );

    // A is asked to stop; its node stays attached while SlowStop takes its time.
    a.host.shutdown();
    let mut tickets = Vec::new();
    for n in 2..=6u32 {
        tickets.push(b.host.service("Worker").action("work", n).enqueue().await?);
    }
    a.host.wait().await;
    a.node.take().expect("attached").detach().await;

    // Nothing was dead-lettered for the shutdown.
    let js = async_nats::jetstream::new(b.nats.client().clone());
    let mut dlq = js.get_stream("KOAN_DLQ").await?;
    assert_eq!(
        dlq.info().await?.state.messages,
        0,
        "no dead letters for a stopping host"
    );

    // The next instance does them all.
    let c = join(|b| b.service::<Worker>()).await?;
    for (t, n) in tickets.into_iter().zip(2..=6u32) {
        let out = within("outcome after restart", t.outcome()).await??;
        assert_eq!(out.value::<u32>()?, n * 10);
    }
    c.stop().await?;
    b.stop().await
}
