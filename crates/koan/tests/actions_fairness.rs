//! A worker draining a long mailbox lets the other tasks of its thread run: it
//! yields when its cooperative budget is spent, as a tokio channel's receiver would,
//! instead of running every queued job in one poll.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use koan::testing::within;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use tokio::sync::{Semaphore, mpsc};

/// Queued calls behind the held worker: more than tokio's budget of 128 a poll.
const QUEUED: usize = 300;

/// `block` holds the only slot until the gate opens; `count` never awaits.
struct Tally {
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedSender<()>,
    counted: AtomicUsize,
    /// Set by a task the first `count` spawns.
    other_ran: Arc<AtomicBool>,
    /// The `count` that first saw the other task's mark (0: none did).
    seen_at: Arc<AtomicUsize>,
}

impl Service for Tally {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Tally")
            .mailbox_capacity(1024)
            .max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "block",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                let _ = svc.started.send(());
                svc.gate.acquire().await?.forget();
                Ok::<_, BoxError>(())
            },
        );
        a.action(
            "count",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                let n = svc.counted.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1 {
                    let mark = Arc::clone(&svc.other_ran);
                    tokio::spawn(async move { mark.store(true, Ordering::SeqCst) });
                } else if svc.other_ran.load(Ordering::SeqCst) {
                    let _ = svc
                        .seen_at
                        .compare_exchange(0, n, Ordering::SeqCst, Ordering::SeqCst);
                }
                Ok::<_, BoxError>(n)
            },
        );
    }
}

impl BackgroundService for Tally {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_draining_its_mailbox_lets_other_tasks_run() -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut started) = mpsc::unbounded_channel();
    let seen_at = Arc::new(AtomicUsize::new(0));
    let host = common::started(Tally {
        gate: Arc::clone(&gate),
        started: tx,
        counted: AtomicUsize::new(0),
        other_ran: Arc::new(AtomicBool::new(false)),
        seen_at: Arc::clone(&seen_at),
    })
    .await?;
    let tally = host.services::<Tally>();
    let blocker = tally.action("block", ()).spawn()?;
    within("block to start", started.recv()).await;
    let tickets = (0..QUEUED)
        .map(|_| tally.action("count", ()).spawn())
        .collect::<Result<Vec<_>, _>>()?;

    gate.add_permits(1);
    within("the blocker's outcome", blocker.outcome()).await?;
    for t in tickets {
        within("a queued count", t.outcome()).await?;
    }
    let seen_at = seen_at.load(Ordering::SeqCst);
    assert!(
        (2..QUEUED).contains(&seen_at),
        "a task spawned by the first queued job ran while the worker drained the other {} (first seen by count {seen_at}; 0: only after the last)",
        QUEUED - 1
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
