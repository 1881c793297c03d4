//! A stored job whose run its host's shutdown cuts short: back to `queued`, the
//! attempt not counted, and its history keeps that attempt, ended, saying it was
//! stopped by the shutdown. Before, the attempt vanished from the history (a
//! deploy's SIGTERM left no trace of the run it stopped). The next host runs it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

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

#[tokio::test(start_paused = true)]
async fn a_run_stopped_by_the_shutdown_stays_in_the_history() -> anyhow::Result<()> {
    let store = Arc::new(MemoryJobStore::new());
    let runs = Arc::new(AtomicU32::new(0));
    let first = koan::testing::host()
        .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
        .instance(Work {
            runs: Arc::clone(&runs),
        })
        .build()?
        .start();
    first.started().await?;
    let id = first
        .service("Work")
        .action("work", ())
        .enqueue()
        .await?
        .id()
        .to_owned();
    within("the first run", async {
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
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
