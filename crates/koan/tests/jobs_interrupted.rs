//! Stored jobs interrupted. One whose run its host's shutdown cuts short: back to
//! `queued`, the attempt not counted, and its history keeps that attempt, ended,
//! saying it was stopped by the shutdown. Before, the attempt vanished from the
//! history (a deploy's SIGTERM left no trace of the run it stopped). The next host
//! runs it. With a durable store, a shutdown tells the running jobs' handlers to
//! stop at its start: one job held the whole grace before, its handler told only
//! when the grace had run out, and every service was then aborted unasked (found
//! by a probe). And one cancelled while queued: its waiter hears it at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::ServiceContext;
use koan::job::{JobState, JobStore, MemoryJobStore};
use koan::testing::within;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};

/// `work` waits for its token on its first run (a shutdown cuts it short), and
/// succeeds on the next.
#[derive(Default)]
struct Work {
    runs: Arc<AtomicU32>,
}

impl Service for Work {
    type Kind = Background;
    fn options() -> koan::ServiceOptions {
        koan::ServiceOptions::named("Work")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "work",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                if svc.runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    cx.cancelled().await;
                    return Err::<u32, BoxError>("stopped".into());
                }
                Ok(7)
            },
        );
    }
}

impl BackgroundService for Work {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A started host on `store` (with `grace`, if given) whose one `work` job runs,
/// waiting at its token: the host and the job's id.
async fn running(
    store: Arc<dyn JobStore>,
    runs: &Arc<AtomicU32>,
    grace: Option<Duration>,
) -> anyhow::Result<(koan::HostHandle, String)> {
    let mut builder = koan::testing::host().job_store(store).instance(Work {
        runs: Arc::clone(runs),
    });
    if let Some(grace) = grace {
        builder = builder.shutdown_grace(grace);
    }
    let host = builder.build()?.start();
    host.started().await?;
    let id = host
        .service("Work")
        .action("work", ())
        .enqueue()
        .await?
        .id()
        .to_owned();
    within("the first run", async {
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    Ok((host, id))
}

#[tokio::test(start_paused = true)]
async fn a_run_stopped_by_the_shutdown_stays_in_the_history() -> anyhow::Result<()> {
    let store = Arc::new(MemoryJobStore::new());
    let runs = Arc::new(AtomicU32::new(0));
    let (first, id) = running(Arc::clone(&store) as Arc<dyn JobStore>, &runs, None).await?;
    koan::testing::stop(&first).await?;

    let r = store.get(&id).await?.expect("the job's record");
    assert_eq!((r.state, r.attempts), (JobState::Queued, 0), "{r:?}");
    assert_eq!(r.history.len(), 1, "{r:?}");
    let stopped = &r.history[0];
    assert!(stopped.finished_at.is_some(), "{r:?}");
    let error = stopped.error.as_ref().expect("why it ended");
    assert_eq!(error.error, "shutting_down");
    assert!(
        error.message.contains("stopped by its host's shutdown")
            && error.message.contains("does not count"),
        "{}",
        error.message
    );

    // The next host runs it: one counted attempt, both runs in the history.
    let second = koan::testing::host()
        .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
        .instance(Work {
            runs: Arc::clone(&runs),
        })
        .build()?
        .start();
    second.started().await?;
    koan::testing::wait_for_job(&second, &id, JobState::Succeeded).await;
    let r = store.get(&id).await?.expect("the job's record");
    assert_eq!((r.attempts, r.history.len()), (1, 2), "{r:?}");
    assert!(r.history[1].error.is_none(), "{r:?}");
    koan::testing::stop(&second).await?;
    Ok(())
}

/// A waiter of a queued job hears its cancel at once, not at its next look at the
/// store (a second later).
#[tokio::test(start_paused = true)]
async fn a_waiter_hears_a_cancel_at_once() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .instance(Work::default())
        .build()?
        .start();
    host.started().await?;
    let ticket = host
        .service("Work")
        .action("work", ())
        .delay(Duration::from_secs(3600))
        .enqueue()
        .await?;
    let id = ticket.id().to_owned();
    let waiting = tokio::spawn(ticket.outcome());
    tokio::task::yield_now().await;
    let t0 = tokio::time::Instant::now();
    host.jobs().cancel(&id).await?;
    let e = within("the waiter", waiting).await?.expect_err("cancelled");
    assert_eq!(e.kind(), koan::error::ErrorKind::JobState, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    koan::testing::stop(&host).await?;
    Ok(())
}

/// A store that says it survives the process.
struct Kept;

impl common::store::Twist for Kept {
    fn durable(&self) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_tells_a_durable_jobs_handler_to_stop_at_once() -> anyhow::Result<()> {
    let store = common::store::Twisted::new(Kept);
    let runs = Arc::new(AtomicU32::new(0));
    let grace = Some(Duration::from_secs(3600));
    let (host, id) = running(Arc::clone(&store) as Arc<dyn JobStore>, &runs, grace).await?;
    let t0 = tokio::time::Instant::now();
    host.shutdown();
    within("the host to exit", host.wait())
        .await
        .into_result()?;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "the handler stops at its token at once, not at the end of the hour's grace: {:?}",
        t0.elapsed()
    );
    let r = store.inner.get(&id).await?.expect("the job's record");
    assert_eq!((r.state, r.attempts), (JobState::Queued, 0), "{r:?}");
    let error = r.history[0].error.as_ref().expect("why it ended");
    assert_eq!(error.error, "shutting_down", "{r:?}");
    Ok(())
}

/// Its `deaf` job ignores its token: it never ends.
#[derive(Default)]
struct Deaf;

impl Service for Deaf {
    type Kind = Background;
    fn options() -> koan::ServiceOptions {
        koan::ServiceOptions::named("Deaf")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "deaf",
            |_s: Arc<Self>, (): (), _cx: ActionContext| async move {
                std::future::pending::<()>().await;
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Deaf {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A durable job whose handler outlives the shutdown's grace is put back in the
/// queue at the grace's end, not an attempt, as jobs.md says. Before, it was left
/// `running`: the next host waited for its claim to lapse and ran it as attempt 2,
/// its history blaming a crash (found by a probe).
#[tokio::test(start_paused = true)]
async fn a_durable_job_that_outlives_the_grace_is_put_back() -> anyhow::Result<()> {
    let store = common::store::Twisted::new(Kept);
    let host = koan::testing::host()
        .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
        .shutdown_grace(Duration::from_secs(2))
        .service::<Deaf>()
        .build()?
        .start();
    host.started().await?;
    let ticket = host.service("Deaf").action("deaf", ()).enqueue().await?;
    let id = ticket.id().to_owned();
    koan::testing::wait_for_job(&host, &id, JobState::Running).await;
    host.shutdown();
    let _ = within("the host to exit", host.wait()).await;
    let r = store.inner.get(&id).await?.expect("the job's record");
    assert_eq!((r.state, r.attempts), (JobState::Queued, 0), "{r:?}");
    let error = r.history[0].error.as_ref().expect("why it ended");
    assert_eq!(error.error, "shutting_down", "{r:?}");
    Ok(())
}

/// Jobs a store that does not survive the process still holds when the grace is
/// over are said lost, with their count: a probe's 172 queued pokes went without
/// a word (only the one running was said).
#[tokio::test(start_paused = true)]
async fn jobs_still_waiting_in_memory_at_the_grace_end_are_said_lost() -> anyhow::Result<()> {
    let logs = common::logs::Logs::default();
    let _captured = logs.capture();
    let host = koan::testing::host()
        .shutdown_grace(Duration::from_secs(2))
        .service::<Deaf>()
        .build()?
        .start();
    host.started().await?;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let ticket = host.service("Deaf").action("deaf", ()).enqueue().await?;
        ids.push(ticket.id().to_owned());
    }
    koan::testing::wait_for_job(&host, &ids[0], JobState::Running).await;
    host.shutdown();
    let _ = within("the host to exit", host.wait()).await;
    logs.assert_lines("jobs still waiting to run", 1, "waiting=3");
    logs.assert_lines("jobs still running at the end", 1, "running=1");
    Ok(())
}
