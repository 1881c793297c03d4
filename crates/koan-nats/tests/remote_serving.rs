//! How an instance serves remote calls: an action that ends at once is answered from
//! the subscription's own task, one that waits goes on in a task of its own — so a
//! call that waits never holds up the next call to the same service. And a call
//! reaches the action it names, whether or not the subject's tokens can spell it.
//! A result larger than the broker takes is answered with an error saying so (it
//! was dropped unsaid, its caller waiting out its whole timeout).

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
        // A result of `n` bytes.
        a.action(
            "big",
            |_svc: Arc<Self>, n: usize, _cx: ActionContext| async move {
                Ok::<_, BoxError>("x".repeat(n))
            },
        );
        a.action(
            "ping",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>("pong") },
        );
        // Its subject token, `add_one`, does not name it (`:` is part of a name):
        // only the name as written reaches it.
        a.action(
            "Add:One",
            |_svc: Arc<Self>, n: i64, _cx: ActionContext| async move { Ok::<_, BoxError>(n + 1) },
        );
    }
}

impl BackgroundService for Gate {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

impl Gate {
    /// A gate no test opens.
    fn closed() -> Gate {
        Gate {
            entered: Arc::new(Notify::new()),
            open: Arc::new(Semaphore::new(0)),
        }
    }
}

/// A worker running `gate` and a client, on `server`.
async fn gate_pair(server: &NatsServer, gate: Gate) -> anyhow::Result<(Member, Member)> {
    Member::worker_and_client(test_options(&server.url()), "Gate", |b| b.instance(gate)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_that_waits_does_not_hold_up_the_next() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (entered, open) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let gate = Gate {
        entered: Arc::clone(&entered),
        open: Arc::clone(&open),
    };
    let (worker, client) = gate_pair(&server, gate).await?;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_reaches_an_action_its_subject_cannot_spell() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client) = gate_pair(&server, Gate::closed()).await?;

    // `Add:One` is not its subject token: the call carries the name as written.
    let got = within(
        "a remote call of `Add:One`",
        client.host.service("Gate").action("Add:One", 41).execute(),
    )
    .await??;
    assert_eq!(got.value::<i64>()?, 42);
    // `PING` and `gate` are their tokens but for case: the subject alone names them.
    let got = within(
        "a remote call of `PING`",
        client.host.service("gate").action("PING", ()).execute(),
    )
    .await??;
    assert_eq!(got.value::<String>()?, "pong");

    client.stop().await?;
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_larger_than_the_broker_takes_is_answered_with_an_error() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client) = gate_pair(&server, Gate::closed()).await?;
    // Well within the test's wait: the answer must not be the call's timeout.
    let call = client
        .host
        .service("Gate")
        .action("big", 2 * 1024 * 1024usize)
        .timeout(std::time::Duration::from_secs(600));
    let e = within("a call of `big`", call.execute())
        .await?
        .expect_err("too large to send");
    assert!(
        e.to_string().contains("larger than the broker takes"),
        "{e}"
    );
    // A result that fits is sent as ever, one within a few hundred bytes of the
    // limit too (one within 1 KiB was refused though it fit; found by a probe).
    let max = client.nats.client().server_info().max_payload;
    for n in [40_000, max - 400] {
        let got = within(
            "a call of `big` that fits",
            client.host.service("Gate").action("big", n).execute(),
        )
        .await??;
        assert_eq!(got.value::<String>()?.len(), n);
    }
    client.stop().await?;
    worker.stop().await?;
    Ok(())
}

/// A service's history is asked of the instance that runs it: a host that does
/// not run it answered "no service named" (its dashboard page showed only that;
/// found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_history_is_read_through_it() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client) = gate_pair(&server, Gate::closed()).await?;
    for _ in 0..3 {
        within(
            "ping",
            client.host.service("Gate").action("ping", ()).execute(),
        )
        .await??;
    }
    assert!(
        client.host.history("Gate").is_err(),
        "not a service of this host"
    );
    let history = within("history", client.host.service("Gate").history()).await??;
    assert_eq!(history.service, "Gate");
    assert_eq!(history.actions_succeeded, 3);
    client.stop().await?;
    worker.stop().await?;
    Ok(())
}
