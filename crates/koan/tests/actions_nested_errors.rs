//! An action whose handler passes on, with `?`, the error of a call it made is
//! answered as a failure of that handler, naming the call: its caller is not told
//! that its own parameters were wrong (`invalid_parameters`, HTTP 400), that the
//! action is unknown, or that the work never started and calling again is safe
//! (`Error::not_started`) — the handler had run, and may have done work. Before,
//! the inner call's error went out whole (found by a probe). A handler's own
//! refusal of its input stays the caller's mistake.

use std::sync::Arc;
use std::time::Duration;

use koan::error::{Error, ErrorKind};
use koan::testing::within;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{ServiceContext, ServiceOptions};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};

/// Calls `Inner` and passes its errors on with `?`.
struct Outer;

impl Service for Outer {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Outer").max_concurrency(4)
    }

    fn actions(a: &mut Actions<Self>) {
        // Calls `Inner.add` with the parameters it was given, as they are.
        a.action(
            "relay",
            |_svc: Arc<Self>, p: serde_json::Value, cx: ActionContext| async move {
                let host = cx.host().ok_or("no host")?;
                let out = host.service("Inner").action("add", p).execute().await?;
                Ok::<_, BoxError>(out.value::<u32>()?)
            },
        );
        // Calls an action `Inner` does not have.
        a.action(
            "misnamed",
            |_svc: Arc<Self>, (): (), cx: ActionContext| async move {
                let host = cx.host().ok_or("no host")?;
                host.service("Inner").action("ad", ()).execute().await?;
                Ok::<_, BoxError>(())
            },
        );
        // Calls `Inner.hold` with a short timeout, behind a held one.
        a.action(
            "hurried",
            |_svc: Arc<Self>, (): (), cx: ActionContext| async move {
                let host = cx.host().ok_or("no host")?;
                host.service("Inner")
                    .action("hold", ())
                    .timeout(Duration::from_millis(50))
                    .execute()
                    .await?;
                Ok::<_, BoxError>(())
            },
        );
        // Refuses its own input: the caller's mistake.
        a.action(
            "picky",
            |_svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                if n == 0 {
                    return Err(
                        Error::new(ErrorKind::InvalidParameters, "`n` must be at least 1").into(),
                    );
                }
                Ok::<_, BoxError>(n)
            },
        );
    }
}

impl BackgroundService for Outer {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Adds; one worker, and `hold` keeps it until let go.
struct Inner {
    gate: Arc<Semaphore>,
    held: Arc<Notify>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Add {
    a: u32,
    b: u32,
}

impl Service for Inner {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Inner").max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "add",
            |_svc: Arc<Self>, p: Add, _cx: ActionContext| async move { Ok::<_, BoxError>(p.a + p.b) },
        );
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.held.notify_one();
                svc.gate.acquire().await?.forget();
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Inner {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test]
async fn a_nested_call_s_error_is_the_handler_s_failure() -> anyhow::Result<()> {
    let (gate, held) = (Arc::new(Semaphore::new(0)), Arc::new(Notify::new()));
    let inner = Inner {
        gate: Arc::clone(&gate),
        held: Arc::clone(&held),
    };
    let host = koan::testing::host()
        .instance(Outer)
        .instance(inner)
        .build()?
        .start();
    host.started().await?;
    let outer = host.service("Outer");

    // Fine parameters of `relay`, which `Inner.add` refuses.
    let e = within("relay", outer.action("relay", json!({"a": 1})).execute())
        .await
        .expect_err("add refuses them");
    assert_eq!(e.kind(), ErrorKind::Handler, "{e}");
    assert!(
        e.message().contains("action `relay` of `Outer` failed") && e.message().contains("`b`"),
        "{e}"
    );
    let ok = within(
        "relay",
        outer.action("relay", json!({"a": 1, "b": 2})).execute(),
    )
    .await?;
    assert_eq!(ok.value::<u32>()?, 3);

    let e = within("misnamed", outer.action("misnamed", ()).execute())
        .await
        .expect_err("no action `ad`");
    assert_eq!(e.kind(), ErrorKind::Handler, "{e}");
    assert!(e.message().contains("`ad`"), "{e}");

    // `Inner`'s one worker held: `hurried`'s call times out unstarted; `hurried`
    // itself had run.
    let _held = host.service("Inner").action("hold", ()).spawn()?;
    within("the hold to run", held.notified()).await;
    let e = within("hurried", outer.action("hurried", ()).execute())
        .await
        .expect_err("its call timed out");
    assert_eq!(e.kind(), ErrorKind::Handler, "{e}");
    assert!(!e.not_started(), "`hurried` ran: {e}");
    assert!(
        e.message().contains("action `hurried` of `Outer` failed"),
        "{e}"
    );
    gate.add_permits(1);

    // A handler's own refusal of its input is still the caller's mistake.
    let e = within("picky", outer.action("picky", 0).execute())
        .await
        .expect_err("0 refused");
    assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{e}");
    host.shutdown();
    Ok(())
}
