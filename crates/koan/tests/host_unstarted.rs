//! A host built and never started: calls are refused at once, saying so, where
//! they ran on the caller's task before the service had started, or waited for
//! ever once one was queued; a host dropped unstarted ends, so its handles'
//! `wait()` returns and `started()` fails (both waited for ever; found by a probe).
//! An event emitted from the handle of a host not started, or stopped, is refused
//! too: `Ok` claimed a delivery nothing would make.

use std::time::Duration;

use koan::error::ErrorKind;
use koan::testing::within;

#[koan::service(discover = false)]
#[derive(Default)]
struct Slow;

#[koan::actions]
impl Slow {
    #[action("nap")]
    async fn nap(&self, ms: u64, _cx: &koan::ActionContext) -> Result<u64, koan::BoxError> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

impl koan::BackgroundService for Slow {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

fn assert_not_started(e: &koan::Error, why: &str) {
    assert_eq!(e.kind(), ErrorKind::ServiceUnavailable, "{e}");
    assert!(e.message().contains(why), "{e}");
}

#[tokio::test]
async fn calls_before_start_are_refused_and_run_once_it_started() -> anyhow::Result<()> {
    let host = koan::Host::builder().service::<Slow>().build()?;
    let h = host.handle();
    for _ in 0..2 {
        let e = within("a call", h.service("Slow").action("nap", 1).execute())
            .await
            .expect_err("not started");
        assert_not_started(&e, "call `Host::start()`");
    }
    let e = h
        .service("Slow")
        .action("nap", 1)
        .spawn()
        .expect_err("not started");
    assert_not_started(&e, "not started");
    let e = within("an enqueue", h.service("Slow").action("nap", 1).enqueue())
        .await
        .expect_err("not started");
    assert_not_started(&e, "not started");
    let ready = h.ready().await;
    assert!(
        ready.reasons.iter().any(|r| r == "the host is not started"),
        "{ready:?}"
    );

    let e = within("an emit", h.emit("Slow", "Tick", 1))
        .await
        .expect_err("not started");
    assert_not_started(&e, "not started");

    let started = host.start();
    within("startup", started.started()).await?;
    let out = within("a call", h.service("Slow").action("nap", 1).execute()).await?;
    assert_eq!(out.value::<u64>()?, 1);
    within("an emit", h.emit("Slow", "Tick", 1)).await?;
    started.shutdown();
    within("stop", started.wait()).await.into_result()?;
    // Stopped: nothing runs to deliver it, and `Ok` would claim it was.
    let e = within("an emit", h.emit("Slow", "Tick", 1))
        .await
        .expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::ShuttingDown, "{e}");
    assert!(e.message().contains("the host has stopped"), "{e}");
    Ok(())
}

#[tokio::test]
async fn a_host_dropped_unstarted_ends_for_its_handles() -> anyhow::Result<()> {
    let host = koan::Host::builder().service::<Slow>().build()?;
    let h = host.handle();
    drop(host);
    within("wait", h.wait()).await;
    let e = within("started", h.started())
        .await
        .expect_err("never started");
    assert_eq!(e.kind(), ErrorKind::ShuttingDown, "{e}");
    let e = within("a call", h.service("Slow").action("nap", 1).execute())
        .await
        .expect_err("dropped");
    assert_not_started(&e, "dropped without being started");
    h.shutdown();
    within("wait again", h.wait()).await;
    Ok(())
}
