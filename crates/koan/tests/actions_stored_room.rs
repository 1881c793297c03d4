//! A stored job's run (`as_job`, as a transport delivers one) waits in a full
//! mailbox, past its capacity, by at most the service's `max_concurrency` such
//! runs: a cluster job was refused `busy` at each delivery and died unrun (a
//! probe), and an unbounded room would let any caller grow the mailbox through
//! the public `as_job` (a review).

use std::sync::Arc;

use koan::error::ErrorKind;
use koan::job::JobInfo;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{ServiceContext, ServiceOptions};
use tokio::sync::{Notify, Semaphore};

/// One slot, one call queued at most; `gate` waits for a permit.
struct Narrow {
    gate: Arc<Semaphore>,
    started: Arc<Notify>,
}

impl Service for Narrow {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Narrow")
            .max_concurrency(1)
            .mailbox_capacity(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "gate",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.started.notify_one();
                let _pass = svc.gate.acquire().await?;
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Narrow {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn stored_runs_wait_past_the_capacity_by_at_most_the_slots() -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(Notify::new());
    let narrow = Narrow {
        gate: Arc::clone(&gate),
        started: Arc::clone(&started),
    };
    let host = koan::testing::host().instance(narrow).build()?.start();
    host.started().await?;
    let svc = host.service("Narrow");
    let call = || svc.action("gate", ()).spawn();
    // As a transport runs a delivered job: awaited, its deadline its worker's.
    let stored = |n: u32| {
        svc.action("gate", ())
            .as_job(JobInfo::new(format!("job-{n}"), 1))
            .execute()
    };

    let _running = call()?;
    koan::testing::within("the first call to run", started.notified()).await;
    let _queued = call()?;
    let e = call().expect_err("the mailbox is full");
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");

    // One stored run past the capacity (the service's one slot), not two.
    let past = tokio::spawn(stored(1));
    for _ in 0..100 {
        if host.status("Narrow")?.queue_depth == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        host.status("Narrow")?.queue_depth,
        2,
        "the stored run waits"
    );
    let e = koan::testing::within("a second stored run", stored(2))
        .await
        .expect_err("the room past the capacity is taken");
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");

    gate.add_permits(3);
    koan::testing::within("the stored run", past).await??;
    koan::testing::stop(&host).await?;
    Ok(())
}
