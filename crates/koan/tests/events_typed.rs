//! Typed subscriptions: `services::<S>().on::<E>()` names an event by its payload
//! type; filters and handlers take that type.

use std::time::Duration;

use koan::{ActionContext, BackgroundService, BoxError, Host, ServiceContext};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, koan::Event)]
struct WorkCompleted {
    id: u32,
}

/// Declared under a name of the service's choosing, not the type's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct Failure {
    id: u32,
    reason: String,
}

#[koan::service(
    discover = false,
    event(WorkCompleted),
    event(name = "WorkFailed", payload = Failure)
)]
#[derive(Default)]
struct Worker;

#[koan::actions]
impl Worker {
    #[action("work")]
    async fn work(&self, id: u32, cx: &ActionContext) -> Result<(), BoxError> {
        if id.is_multiple_of(2) {
            cx.emit(WorkCompleted::NAME, WorkCompleted { id }).await;
        } else {
            let reason = format!("{id} is odd");
            cx.emit("WorkFailed", Failure { id, reason }).await;
        }
        Ok(())
    }
}

impl BackgroundService for Worker {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

use koan::Event as _;

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 10 s"))
        .unwrap_or_else(|| panic!("the {what} channel closed"))
}

#[tokio::test(start_paused = true)]
async fn a_typed_subscription_gets_the_payload_under_the_declared_name() -> anyhow::Result<()> {
    let host = Host::builder().instance(Worker).build()?.start();
    host.started().await?;
    let worker = host.services::<Worker>();

    let (done_tx, mut done) = mpsc::unbounded_channel();
    let (failed_tx, mut failed) = mpsc::unbounded_channel();
    let (big_tx, mut big) = mpsc::unbounded_channel();
    let _sub = worker
        .on::<WorkCompleted>()
        .handle(move |e: WorkCompleted| {
            let done_tx = done_tx.clone();
            async move {
                let _ = done_tx.send(e.id);
            }
        })
        // A second route for the same event, with its own filter and `once`.
        .filter(|e: &WorkCompleted| e.id >= 10)
        .once()
        .handle(move |e: WorkCompleted| {
            let big_tx = big_tx.clone();
            async move {
                let _ = big_tx.send(e.id);
            }
        })
        .on::<Failure>()
        .handle(move |e: Failure| {
            let failed_tx = failed_tx.clone();
            async move {
                let _ = failed_tx.send(e);
            }
        })
        .subscribe()
        .await?;

    for id in [2, 3, 12, 14] {
        worker.action("work", id).execute().await?;
    }
    assert_eq!(next(&mut done, "WorkCompleted").await, 2);
    assert_eq!(next(&mut done, "WorkCompleted").await, 12);
    assert_eq!(next(&mut done, "WorkCompleted").await, 14);
    assert_eq!(
        next(&mut failed, "WorkFailed").await,
        Failure {
            id: 3,
            reason: "3 is odd".into()
        }
    );
    // The filtered route took the first id ≥ 10 once, and no other.
    assert_eq!(next(&mut big, "the filtered WorkCompleted").await, 12);
    assert!(big.try_recv().is_err(), "`once` delivered twice");

    // The event is listed under the name the service declared.
    let info = worker.info().await?;
    let names: Vec<_> = info.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["WorkCompleted", "WorkFailed"]);

    // A builder shows its event's payload type and its settings.
    let debug = format!("{:?}", worker.on::<WorkCompleted>().buffer(9));
    for part in ["TypedSubscriptionBuilder", "WorkCompleted", "capacity: 9"] {
        assert!(debug.contains(part), "{part} in {debug}");
    }

    host.shutdown();
    host.wait().await.into_result()?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_typed_route_keeps_its_filter_and_once_in_either_order() -> anyhow::Result<()> {
    let host = Host::builder().instance(Worker).build()?.start();
    host.started().await?;
    let worker = host.services::<Worker>();
    let forward = |tx: &mpsc::UnboundedSender<u32>| {
        let tx = tx.clone();
        move |e: WorkCompleted| {
            let _ = tx.send(e.id);
            async {}
        }
    };
    let (first_tx, mut first) = mpsc::unbounded_channel();
    let (second_tx, mut second) = mpsc::unbounded_channel();
    let (all_tx, mut all) = mpsc::unbounded_channel();
    let _sub = worker
        .on::<WorkCompleted>()
        .filter(|e: &WorkCompleted| e.id >= 10)
        .once()
        .handle(forward(&first_tx))
        .once()
        .filter(|e: &WorkCompleted| e.id >= 10)
        .handle(forward(&second_tx))
        .handle(forward(&all_tx))
        .subscribe()
        .await?;
    for id in [2, 12, 14] {
        worker.action("work", id).execute().await?;
    }
    // The routes of one subscriber take each event in turn: once the last route has
    // 14, the others have had every event.
    for id in [2, 12, 14] {
        assert_eq!(next(&mut all, "WorkCompleted").await, id);
    }
    for rx in [&mut first, &mut second] {
        assert_eq!(next(rx, "the filtered WorkCompleted").await, 12);
        assert!(rx.try_recv().is_err(), "`once` delivered twice");
    }
    host.shutdown();
    host.wait().await.into_result()?;
    Ok(())
}

/// `.once()` or `.filter(…)` after the last handler, or an `.on(…)` without one,
/// applies to no handler: refused at `subscribe()`, where it was taken and the
/// handler ran at every event (found by a probe).
#[tokio::test(start_paused = true)]
async fn a_modifier_after_the_last_handler_is_refused() -> anyhow::Result<()> {
    let host = Host::builder().instance(Worker).build()?.start();
    host.started().await?;
    let worker = host.services::<Worker>();
    let typed = worker
        .on::<WorkCompleted>()
        .handle(|_: WorkCompleted| async {})
        .once()
        .subscribe()
        .await
        .expect_err("a trailing once");
    let by_name = host
        .service("Worker")
        .on("WorkFailed")
        .handle(|_: Failure| async {})
        .filter(|f: &Failure| f.id == 0)
        .subscribe()
        .await
        .expect_err("a trailing filter");
    let dangling = host
        .service("Worker")
        .on("WorkFailed")
        .handle(|_: Failure| async {})
        .on("WorkCompleted")
        .subscribe()
        .await
        .expect_err("an `on` without a handler");
    for (e, what) in [
        (typed, "`.once()`"),
        (by_name, "`.filter(…)`"),
        (dangling, "`.on(\"WorkCompleted\")`"),
    ] {
        assert_eq!(e.kind(), koan::error::ErrorKind::InvalidParameters, "{e}");
        assert!(
            e.message().starts_with(&format!(
                "{what} after the last `.handle(…)` applies to no handler"
            )),
            "{e}"
        );
    }
    host.shutdown();
    host.wait().await.into_result()?;
    Ok(())
}
