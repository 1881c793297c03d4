//! Edges of `ActionRequest` that the wider suites leave open (found by mutation
//! testing, issue 22): the failing step and the refused action named in their
//! errors, an enqueued job's priority, the spawned ticket's correlation id, the
//! enqueue of a job for a service elsewhere, and `Debug` of a request, its future
//! and its output; and `trigger()` on a disabled periodic service or one that
//! declares its own `trigger` action.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::testing::within;
use koan::transport::{DurableJob, RemoteCall, Transport};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Periodic,
    PeriodicService, Service, ServiceContext, ServiceOptions, error::ErrorKind,
};
use serde_json::{Value, json};

#[derive(Default)]
struct Till {
    log: Arc<Mutex<Vec<u32>>>,
}

impl Service for Till {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Till")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "log",
            |svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                svc.log.lock().expect("log lock").push(n);
                Ok::<_, BoxError>(n)
            },
        );
        a.action(
            "refuse",
            |_svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                Err::<u32, BoxError>(format!("no {n}").into())
            },
        );
    }
}

impl BackgroundService for Till {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[derive(Default)]
struct Shut;

impl Service for Shut {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Shut").enabled(false)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "open",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>(()) },
        );
    }
}

impl BackgroundService for Shut {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn start() -> anyhow::Result<(HostHandle, Arc<Mutex<Vec<u32>>>)> {
    let till = Till::default();
    let log = Arc::clone(&till.log);
    let host = koan::testing::host()
        .instance(till)
        .service::<Shut>()
        .build()?
        .start();
    within("the host to start", host.started()).await?;
    Ok((host, log))
}

/// The chain's error names the failing step by its action, not only by its number
/// (the handler's own message need not name it).
#[tokio::test(start_paused = true)]
async fn a_failing_step_of_a_chain_is_named_by_its_action() -> anyhow::Result<()> {
    let (host, log) = start().await?;

    let e = within(
        "the chain",
        host.service("Till")
            .action("log", 1u32)
            .action("refuse", 2u32)
            .execute(),
    )
    .await
    .expect_err("step 2 fails");
    assert_eq!(e.kind(), ErrorKind::Handler);
    assert!(
        e.message().starts_with("step 2 of 2 (`refuse`) failed: "),
        "{e}"
    );
    assert_eq!(*log.lock().expect("log lock"), [1]);

    koan::testing::stop(&host).await?;
    Ok(())
}

/// A call to a disabled service is refused with the action's name, when run and
/// when enqueued.
#[tokio::test(start_paused = true)]
async fn a_disabled_service_names_the_refused_action() -> anyhow::Result<()> {
    let (host, _log) = start().await?;

    let e = within(
        "the call",
        host.service("Shut").action("open", ()).execute(),
    )
    .await
    .expect_err("disabled");
    assert_eq!(e.kind(), ErrorKind::Disabled);
    assert!(e.message().contains("action `open` was not run"), "{e}");

    let e = within(
        "the enqueue",
        host.service("Shut").action("open", ()).enqueue(),
    )
    .await
    .expect_err("disabled");
    assert_eq!(e.kind(), ErrorKind::Disabled);
    assert!(
        e.message().contains("action `open` was not enqueued"),
        "{e}"
    );

    koan::testing::stop(&host).await?;
    Ok(())
}

/// An enqueued job is stored with the priority given to its (first) action.
#[tokio::test(start_paused = true)]
async fn an_enqueued_job_keeps_its_priority() -> anyhow::Result<()> {
    let (host, _log) = start().await?;

    let ticket = within(
        "the enqueue",
        host.service("Till")
            .action("log", 5u32)
            .priority(7)
            .enqueue(),
    )
    .await?;
    let record = within("the record", host.jobs().get(ticket.id())).await?;
    assert_eq!(record.priority, 7, "{record:?}");
    within("the job's outcome", ticket.outcome()).await?;

    koan::testing::stop(&host).await?;
    Ok(())
}

/// `Debug` of a request shows its service, its actions and its correlation id; of
/// an output, its payload and correlation id.
#[tokio::test(start_paused = true)]
async fn debug_shows_the_request_and_the_output() -> anyhow::Result<()> {
    let (host, _log) = start().await?;

    let req = host
        .service("Till")
        .action("log", 1u32)
        .action("refuse", 2u32)
        .correlation_id("dbg-1");
    let text = format!("{req:?}");
    assert_eq!(
        text,
        r#"ActionRequest { service: "Till", actions: ["log", "refuse"], correlation_id: Some("dbg-1") }"#
    );
    drop(req);

    let out = within(
        "the call",
        host.service("Till")
            .action("log", serde_json::json!(3))
            .correlation_id("dbg-2")
            .execute(),
    )
    .await?;
    let text = format!("{out:?}");
    assert!(text.starts_with("ActionOutput { payload: "), "{text}");
    assert!(text.ends_with(r#"correlation_id: "dbg-2" }"#), "{text}");

    koan::testing::stop(&host).await?;
    Ok(())
}

/// A spawned action's ticket carries the correlation id the action runs under:
/// the one given, or the one generated.
#[tokio::test(start_paused = true)]
async fn a_spawned_ticket_carries_the_correlation_id() -> anyhow::Result<()> {
    let (host, _log) = start().await?;

    let ticket = host
        .service("Till")
        .action("log", 1u32)
        .correlation_id("sp-1")
        .spawn()?;
    assert_eq!(ticket.correlation_id(), "sp-1");
    let out = within("the spawned action", ticket.outcome()).await?;
    assert_eq!(out.correlation_id(), "sp-1");

    let ticket = host.service("Till").action("log", 2u32).spawn()?;
    let id = ticket.correlation_id().to_owned();
    assert!(!id.is_empty());
    let out = within("the spawned action", ticket.outcome()).await?;
    assert_eq!(out.correlation_id(), id, "the generated id");

    koan::testing::stop(&host).await?;
    Ok(())
}

/// `Debug` of the future of `execute()` says where it is.
#[tokio::test(start_paused = true)]
async fn debug_of_an_execute_says_it_has_not_started() -> anyhow::Result<()> {
    let (host, _log) = start().await?;

    let run = host.service("Till").action("log", 1u32).execute();
    assert_eq!(format!("{run:?}"), r#"Execute { state: "not started" }"#);
    within("the call", run).await?;

    koan::testing::stop(&host).await?;
    Ok(())
}

/// A cluster's durable queue that knows `Billing` (announced) and no other service.
#[derive(Default)]
struct Cluster {
    enqueued: Mutex<Vec<(RemoteCall, String)>>,
}

impl Transport for Cluster {
    fn call(
        &self,
        call: RemoteCall,
    ) -> Pin<Box<dyn Future<Output = koan::Result<Value>> + Send + '_>> {
        Box::pin(async move { Ok(json!({ "called": call.action })) })
    }

    fn enqueue(
        &self,
        call: RemoteCall,
        job: DurableJob,
    ) -> Pin<Box<dyn Future<Output = koan::Result<bool>> + Send + '_>> {
        self.enqueued
            .lock()
            .expect("enqueued lock")
            .push((call, job.id));
        Box::pin(async { Ok(true) })
    }

    fn outcome(
        &self,
        _id: &str,
    ) -> Pin<Box<dyn Future<Output = koan::Result<Value>> + Send + 'static>> {
        Box::pin(async { Ok(json!("charged")) })
    }

    fn knows(&self, service: &str) -> Option<bool> {
        Some(service == "Billing")
    }
}

/// A job for a service elsewhere goes to the transport's durable queue when the
/// cluster has announced the service, and is refused at once when it has not.
#[tokio::test(start_paused = true)]
async fn an_enqueue_for_a_service_elsewhere_needs_it_announced() -> anyhow::Result<()> {
    let cluster = Arc::new(Cluster::default());
    let host = koan::testing::host()
        .transport(Arc::clone(&cluster) as Arc<dyn Transport>)
        .instance(Till::default())
        .build()?
        .start();
    within("the host to start", host.started()).await?;

    let ticket = within(
        "the enqueue",
        host.service("Billing")
            .action("charge", json!({"amount": 3}))
            .enqueue(),
    )
    .await?;
    {
        let enqueued = cluster.enqueued.lock().expect("enqueued lock");
        assert_eq!(enqueued.len(), 1);
        assert_eq!(&*enqueued[0].0.service, "Billing");
        assert_eq!(enqueued[0].0.action, "charge");
        assert_eq!(enqueued[0].1, ticket.id());
    }
    let out = within("the remote job's outcome", ticket.outcome()).await?;
    assert_eq!(out.json()?, json!("charged"));

    let e = within(
        "the enqueue",
        host.service("Ghost").action("haunt", ()).enqueue(),
    )
    .await
    .expect_err("nobody announced `Ghost`");
    assert_eq!(e.kind(), ErrorKind::UnknownService);
    assert!(
        e.message()
            .contains("no instance of the cluster has announced it"),
        "{e}"
    );
    assert_eq!(cluster.enqueued.lock().expect("enqueued lock").len(), 1);

    koan::testing::stop(&host).await?;
    Ok(())
}

/// `spawn()` refuses a single local action at once (disabled service, unknown
/// action, bad parameters), and runs a chain on a task of its own, answering with
/// the last step's result.
#[tokio::test(start_paused = true)]
async fn spawn_refuses_at_once_and_runs_chains() -> anyhow::Result<()> {
    let (host, log) = start().await?;

    let e = host
        .service("Shut")
        .action("open", ())
        .spawn()
        .expect_err("disabled: refused by spawn itself");
    assert_eq!(e.kind(), ErrorKind::Disabled);
    let e = host
        .service("Till")
        .action("log", "not a number")
        .spawn()
        .expect_err("bad parameters: refused by spawn itself");
    assert_eq!(e.kind(), ErrorKind::InvalidParameters);

    let ticket = host
        .service("Till")
        .action("log", 1u32)
        .action("log", 2u32)
        .spawn()?;
    let out = within("the spawned chain", ticket.outcome()).await?;
    assert_eq!(out.value::<u32>()?, 2);
    assert_eq!(*log.lock().expect("log lock"), [1, 2]);

    koan::testing::stop(&host).await?;
    Ok(())
}

/// A periodic service, disabled.
#[derive(Default)]
struct Sweep;

impl Service for Sweep {
    type Kind = Periodic;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Sweep")
            .every(Duration::from_secs(3600))
            .enabled(false)
    }
}

impl PeriodicService for Sweep {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A periodic service that declares its own `trigger` action.
#[derive(Default)]
struct Custom;

impl Service for Custom {
    type Kind = Periodic;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Custom").every(Duration::from_secs(3600))
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "trigger",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                Err::<(), BoxError>("the declared trigger ran".into())
            },
        );
    }
}

impl PeriodicService for Custom {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// `trigger()` goes straight to a periodic service's driver only when the regular
/// path would too: a disabled service refuses it (no driver runs to answer), and a
/// service's own `trigger` action is called instead of the built-in.
#[tokio::test(start_paused = true)]
async fn trigger_respects_disabled_and_declared_trigger() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<Sweep>()
        .service::<Custom>()
        .service::<Mine>()
        .build()?
        .start();
    within("the host to start", host.started()).await?;

    let e = within("the typed trigger", host.services::<Sweep>().trigger())
        .await
        .expect_err("disabled");
    assert_eq!(e.kind(), ErrorKind::Disabled, "{e}");
    let e = within("the trigger by name", host.service("Sweep").trigger())
        .await
        .expect_err("disabled");
    assert_eq!(e.kind(), ErrorKind::Disabled, "{e}");

    for e in [
        within("the typed trigger", host.services::<Custom>().trigger()).await,
        within("the trigger by name", host.service("Custom").trigger()).await,
    ] {
        let e = e.expect_err("the declared action fails");
        assert!(e.message().contains("the declared trigger ran"), "{e}");
    }

    // Its result, read as the run's outcome it is not, is said to be so (before:
    // "action result: invalid parameters: invalid type …"; found by a probe).
    let e = within("the typed trigger", host.services::<Mine>().trigger())
        .await
        .expect_err("its own result");
    assert!(
        e.message().contains("ran (a service's own action")
            && e.message().contains(".action(\"trigger\", …)"),
        "{e}"
    );
    let e = host
        .service("Mine")
        .action("trigger", ())
        .execute()
        .await?
        .value::<u32>()
        .expect_err("a string");
    assert!(
        e.message()
            .contains("its result does not read as the type asked for"),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidResult, "{e}");

    koan::testing::stop(&host).await?;
    Ok(())
}

/// A periodic service whose own `trigger` action answers a string.
#[derive(Default)]
struct Mine;

impl Service for Mine {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Mine").every(Duration::from_secs(3600))
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "trigger",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                Ok::<_, BoxError>("mine".to_owned())
            },
        );
    }
}

impl PeriodicService for Mine {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}
