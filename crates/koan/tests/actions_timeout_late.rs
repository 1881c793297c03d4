//! How an action that timed out then ended is said, under the call's correlation
//! id, which the caller's `timeout` answer names: that answer says the outcome is
//! unknown, and only the log can tell. A handler that did its work 200 ms past
//! its deadline left no trace (found by a probe).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::logs::Logs;
use koan::error::ErrorKind;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{ServiceContext, ServiceOptions};

/// `commit` takes its milliseconds, ignoring its token, then succeeds.
struct Committer;

impl Service for Committer {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Committer")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "commit",
            |_svc: Arc<Self>, ms: u64, _cx: ActionContext| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, BoxError>("committed")
            },
        );
    }
}

impl BackgroundService for Committer {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// The log of `commit` taking `ms`, called with a timeout of 300 ms under
/// correlation id `id` (answered `timeout`), two seconds on (its grace is 1 s).
async fn logged_after_a_timeout(ms: u64, id: &str) -> anyhow::Result<Logs> {
    let logs = Logs::default();
    let _captured = logs.capture();
    let host = koan::testing::host().instance(Committer).build()?.start();
    host.started().await?;
    let e = host
        .service("Committer")
        .action("commit", ms)
        .timeout(Duration::from_millis(300))
        .correlation_id(id)
        .execute()
        .await
        .expect_err("past its timeout");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    koan::testing::pass(Duration::from_secs(2)).await;
    Ok(logs)
}

#[tokio::test(start_paused = true)]
async fn an_action_that_finishes_after_its_timeout_is_said_under_its_id() -> anyhow::Result<()> {
    // 500 ms of work: done 200 ms past the deadline, within the grace.
    let logs = logged_after_a_timeout(500, "order-17").await?;
    logs.assert_lines("then ended with Ok", 1, "correlation_id=order-17");
    let line = &logs.lines_with("then ended with Ok")[0];
    assert!(line.contains("after_deadline=200ms"), "{line}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_action_dropped_past_its_grace_is_said_under_its_id() -> anyhow::Result<()> {
    let logs = logged_after_a_timeout(3_600_000, "order-18").await?;
    logs.assert_lines("its future was dropped", 1, "correlation_id=order-18");
    Ok(())
}
