//! A stored job's action stopped by its deadline: a handler that ends at its
//! cancelled token with an error is recorded as a timeout (with its own words),
//! as a caller that waits hears it, not as a failure of the handler. Before, each
//! attempt said `handler_error` "translation stopped before it was stored", and
//! `koan_actions_total{outcome="handler_error"}` counted it (found by a probe).
//! And a job's deadline counts from its run's start, not from its wait behind
//! other calls (one died of `timeout` at each attempt, never run; a probe).

use std::sync::Arc;
use std::time::Duration;

use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{ServiceContext, error::ErrorKind};

#[derive(Default)]
struct Work {
    go: Arc<tokio::sync::Notify>,
}

impl Service for Work {
    type Kind = Background;
    fn actions(a: &mut Actions<Self>) {
        // Holds the service's one worker until let go.
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _: ActionContext| async move {
                svc.go.notified().await;
                Ok::<(), BoxError>(())
            },
        );
        a.action("quick", |_: Arc<Self>, (): (), _: ActionContext| async {
            Ok::<u32, BoxError>(7)
        });
        a.action(
            "slow",
            |_svc: Arc<Self>, (): (), cx: ActionContext| async move {
                cx.cancelled().await;
                Err::<(), BoxError>("stopped before it was stored".into())
            },
        )
        .max_attempts(1);
    }
}

impl BackgroundService for Work {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_stopped_by_its_deadline_is_a_timeout() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .instance(Work::default())
        .build()?
        .start();
    host.started().await?;
    let ticket = host
        .service("Work")
        .action("slow", ())
        .timeout(Duration::from_millis(500))
        .enqueue()
        .await?;
    let id = ticket.id().to_owned();
    let e = ticket.outcome().await.expect_err("stopped by its deadline");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.message().contains("stopped before it was stored"), "{e}");
    let job = host.jobs().get(&id).await?;
    let error = job.history[0].error.as_ref().map(|b| b.error.as_str());
    assert_eq!(error, Some("timeout"), "{job:?}");
    // Waited on, the same call says the same.
    let e = host
        .service("Work")
        .action("slow", ())
        .timeout(Duration::from_millis(500))
        .execute()
        .await
        .expect_err("stopped by its deadline");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_jobs_deadline_counts_from_its_start_not_its_wait_behind_calls() -> anyhow::Result<()> {
    let work = Work::default();
    let go = Arc::clone(&work.go);
    let host = koan::testing::host().instance(work).build()?.start();
    host.started().await?;
    let holding = tokio::spawn({
        let host = host.clone();
        async move { host.service("Work").action("hold", ()).execute().await }
    });
    koan::testing::settle().await;
    let ticket = host
        .service("Work")
        .action("quick", ())
        .timeout(Duration::from_secs(1))
        .enqueue()
        .await?;
    let id = ticket.id().to_owned();
    koan::testing::wait_for_job(&host, &id, koan::job::JobState::Running).await;
    // Waiting in the mailbox well past its timeout.
    tokio::time::sleep(Duration::from_secs(5)).await;
    go.notify_one();
    koan::testing::within("`hold`", holding).await??;
    let out = koan::testing::within("the job", ticket.outcome()).await?;
    assert_eq!(out.value::<u32>()?, 7);
    let job = host.jobs().get(&id).await?;
    assert_eq!(job.attempts, 1, "{job:?}");
    Ok(koan::testing::stop(&host).await?)
}

/// A timeout under a millisecond is kept rounded up, never as none at all.
#[tokio::test(start_paused = true)]
async fn a_sub_millisecond_timeout_is_stored_rounded_up() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .instance(Work::default())
        .build()?
        .start();
    host.started().await?;
    let mut ids = Vec::new();
    for t in [Duration::from_nanos(1), Duration::from_micros(1500)] {
        let ticket = host.service("Work").action("quick", ()).timeout(t);
        ids.push(ticket.enqueue().await?.id().to_owned());
    }
    assert_eq!(host.jobs().get(&ids[0]).await?.timeout_ms, Some(1));
    assert_eq!(host.jobs().get(&ids[1]).await?.timeout_ms, Some(2));
    Ok(koan::testing::stop(&host).await?)
}
