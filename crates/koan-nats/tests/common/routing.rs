//! The worker service and the cluster members the routing tests share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions,
};
use koan_nats::{NatsTransport, Node};
use koan_test_support::nats::{announced, test_options};
use koan_test_support::within;

/// `work` takes `delay` and counts its calls; one at a time.
pub(crate) struct Worker {
    delay: Duration,
    calls: Arc<AtomicU32>,
}

impl Service for Worker {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Worker").max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        let work = |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
            tokio::time::sleep(svc.delay).await;
            svc.calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, BoxError>(())
        };
        a.action("work", work);
        // The same work, declared safe to run twice.
        a.action("fetch", work).idempotent();
        a.event::<u32>("Done");
    }
}

impl Worker {
    /// A worker whose `work` takes `delay`, and the count of its calls.
    pub(crate) fn new(delay: Duration) -> (Worker, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let worker = Worker {
            delay,
            calls: Arc::clone(&calls),
        };
        (worker, calls)
    }
}

impl BackgroundService for Worker {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

pub(crate) async fn join(url: &str, worker: Option<Worker>) -> anyhow::Result<(HostHandle, Node)> {
    join_with(test_options(url), worker).await
}

pub(crate) async fn join_with(
    opts: koan_nats::NatsOptions,
    worker: Option<Worker>,
) -> anyhow::Result<(HostHandle, Node)> {
    let nats = within("connect", NatsTransport::connect(opts)).await??;
    let mut b = koan::Host::builder().transport(nats.clone().into_transport());
    if let Some(w) = worker {
        b = b.instance(w);
    }
    let host = b.build()?.start();
    within("startup", host.started()).await??;
    let node = within("attach", nats.attach(&host)).await??;
    Ok((host, node))
}

/// A client host on a transport of its own with `opts` (not attached: it serves
/// nothing), and the transport, to watch its connection or attach it.
pub(crate) async fn client_with(
    opts: koan_nats::NatsOptions,
) -> anyhow::Result<(NatsTransport, HostHandle)> {
    let nats = within("connect", NatsTransport::connect(opts)).await??;
    let client = koan::Host::builder()
        .transport(nats.clone().into_transport())
        .build()?
        .start();
    within("startup", client.started()).await??;
    Ok((nats, client))
}

/// Waits until `client` sees `n` instances hosting `Worker`.
pub(crate) async fn sees_workers(client: &HostHandle, n: usize) -> anyhow::Result<()> {
    announced(client, "Worker", n).await
}
