//! A property of the mailbox: whatever the priorities submitted to a blocked service,
//! once released the handlers run sorted by priority, highest first, FIFO within a
//! priority — and every caller gets its own result.

use std::sync::{Arc, Mutex};

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use proptest::prelude::*;
use tokio::sync::{Semaphore, mpsc};

struct Ordered {
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedSender<()>,
    log: Arc<Mutex<Vec<usize>>>,
}

impl Service for Ordered {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Ordered")
            .mailbox_capacity(256)
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
            "record",
            |svc: Arc<Self>, n: usize, _cx: ActionContext| async move {
                svc.log.lock().map_err(|e| e.to_string())?.push(n);
                Ok::<_, BoxError>(n)
            },
        );
    }
}

impl BackgroundService for Ordered {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Runs `priorities` (submission `i` has priority `priorities[i]`) against a blocked
/// service and returns the order the handlers ran in.
fn run_order(priorities: &[i32]) -> anyhow::Result<Vec<usize>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    rt.block_on(async {
        let gate = Arc::new(Semaphore::new(0));
        let (tx, mut started) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let svc = Ordered {
            gate: Arc::clone(&gate),
            started: tx,
            log: Arc::clone(&log),
        };
        let host = koan::testing::host().instance(svc).build()?.start();
        host.started().await?;
        let q = host.services::<Ordered>();
        // Occupy the only worker: everything after waits in the mailbox.
        let blocker = q.action("block", ()).enqueue().await?;
        started
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("block never started"))?;
        let mut tickets = Vec::new();
        for (i, p) in priorities.iter().enumerate() {
            tickets.push(q.action("record", i).priority(*p).enqueue().await?);
        }
        gate.add_permits(1);
        blocker.outcome().await?;
        for (i, t) in tickets.into_iter().enumerate() {
            anyhow::ensure!(t.outcome().await?.value::<usize>()? == i, "result mixed up");
        }
        koan::testing::stop(&host).await?;
        let order = log.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
        Ok(order)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn released_jobs_run_by_priority_then_arrival(
        // A few distinct priorities, so that ties are common; extremes included.
        priorities in proptest::collection::vec(
            prop_oneof![-3i32..=3, Just(i32::MIN), Just(i32::MAX)],
            0..64,
        )
    ) {
        let order = run_order(&priorities).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut expected: Vec<usize> = (0..priorities.len()).collect();
        // Stable sort: FIFO within a priority.
        expected.sort_by_key(|&i| std::cmp::Reverse(priorities[i]));
        prop_assert_eq!(order, expected);
    }
}
