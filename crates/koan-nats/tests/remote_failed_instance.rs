//! A host whose own instance of a service failed for good sends the calls made on
//! it to an instance of the cluster that serves them, rather than refusing them: a
//! load balancer in front of two hosts saw half its calls answered 503 while the
//! other host could take them all. With no other instance, the call is refused as
//! before, naming the failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions, error::ErrorKind, service::RestartPolicy, status::ServiceState,
};
use koan_nats::{NatsTransport, Node};
use koan_test_support::nats::{NatsServer, announced, test_options};
use koan_test_support::{eventually, within};

/// `Half`: its `run` fails at once when `broken` (and is never restarted); `work`
/// counts its runs on this instance.
struct Half {
    broken: bool,
    runs: Arc<AtomicU32>,
}

impl Service for Half {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Half").restart(RestartPolicy::Never)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "work",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Half {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        if self.broken {
            return Err("its database is gone".into());
        }
        cx.cancelled().await;
        Ok(())
    }
}

/// A host running `Half` (broken or not) on `server`, its node, and its count.
async fn join(
    server: &NatsServer,
    broken: bool,
) -> anyhow::Result<(HostHandle, Node, Arc<AtomicU32>)> {
    let runs = Arc::new(AtomicU32::new(0));
    let half = Half {
        broken,
        runs: Arc::clone(&runs),
    };
    let nats = within(
        "connect",
        NatsTransport::connect(test_options(&server.url())),
    )
    .await??;
    let host = koan::Host::builder()
        .transport(nats.clone().into_transport())
        .instance(half)
        .build()?
        .start();
    within("startup", host.started()).await??;
    let node = within("attach", nats.attach(&host)).await??;
    if broken {
        eventually("`Half` to fail for good", || async {
            host.status("Half")
                .is_ok_and(|s| s.state == ServiceState::Failed)
        })
        .await?;
    }
    Ok((host, node, runs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_host_whose_instance_failed_is_served_by_another() -> anyhow::Result<()> {
    const CALLS: u32 = 10;
    let server = NatsServer::start()?;
    let (broken, _broken_node, broken_runs) = join(&server, true).await?;
    let (_healthy, _healthy_node, healthy_runs) = join(&server, false).await?;
    // Both announce it; the broken one as failed.
    announced(&broken, "Half", 2).await?;
    eventually("the healthy instance to take calls", || async {
        broken
            .service("Half")
            .action("work", ())
            .execute()
            .await
            .is_ok()
    })
    .await?;
    let before = healthy_runs.load(Ordering::SeqCst);

    for n in 0..CALLS {
        let out = within(
            "a call",
            broken.service("Half").action("work", ()).execute(),
        )
        .await?;
        out.map_err(|e| anyhow::anyhow!("call {n} made on the broken host failed: {e}"))?;
    }
    assert_eq!(healthy_runs.load(Ordering::SeqCst) - before, CALLS);
    assert_eq!(
        broken_runs.load(Ordering::SeqCst),
        0,
        "the failed instance ran none"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_other_instance_the_call_is_refused_naming_the_failure() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (broken, _node, runs) = join(&server, true).await?;
    announced(&broken, "Half", 1).await?;

    let out = within(
        "a call",
        broken.service("Half").action("work", ()).execute(),
    )
    .await?;
    let e = out.expect_err("no instance serves it");
    assert_eq!(e.kind(), ErrorKind::ServiceUnavailable, "{e}");
    assert!(e.message().contains("failed for good on this host"), "{e}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    Ok(())
}
