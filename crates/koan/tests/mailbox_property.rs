//! A property of the mailbox: whatever the priorities submitted to a blocked service,
//! once released the handlers run sorted by priority, highest first, FIFO within a
//! priority — and every caller gets its own result.

mod common;

use common::Queue;
use koan::testing::within;
use proptest::prelude::*;

/// The shared gated service: room for every submission, one action at a time.
type Ordered = Queue<256, 1>;

/// Runs `priorities` (submission `i` has priority `priorities[i]`) against a blocked
/// service and returns the order the handlers ran in.
fn run_order(priorities: &[i32]) -> anyhow::Result<Vec<usize>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    rt.block_on(async {
        let (svc, mut probe) = Ordered::new();
        let host = koan::testing::host().instance(svc).build()?.start();
        host.started().await?;
        let q = host.services::<Ordered>();
        // Occupy the only worker: everything after waits in the mailbox.
        let blocker = q.action("block", ()).enqueue().await?;
        probe.wait_started("`block` to start").await;
        let mut tickets = Vec::new();
        for (i, p) in priorities.iter().enumerate() {
            tickets.push(
                q.action("record", i.to_string())
                    .priority(*p)
                    .enqueue()
                    .await?,
            );
        }
        probe.gate.add_permits(1);
        within("the blocker's outcome", blocker.outcome()).await?;
        for (i, t) in tickets.into_iter().enumerate() {
            let out = within("the outcome of a queued `record`", t.outcome()).await?;
            anyhow::ensure!(out.value::<String>()? == i.to_string(), "result mixed up");
        }
        koan::testing::stop(&host).await?;
        probe
            .log()
            .iter()
            .map(|tag| Ok(tag.parse::<usize>()?))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn released_jobs_run_by_priority_then_arrival(
        // A few distinct priorities, so that ties are common; extremes included.
        priorities in proptest::collection::vec(
            prop_oneof![-3i32..=3, Just(i32::MIN), Just(i32::MAX)],
            // Past the 64 slots of the lane of priority 0 (the rest queue under the
            // lock behind it).
            0..200,
        )
    ) {
        let order = run_order(&priorities).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut expected: Vec<usize> = (0..priorities.len()).collect();
        // Stable sort: FIFO within a priority.
        expected.sort_by_key(|&i| std::cmp::Reverse(priorities[i]));
        prop_assert_eq!(order, expected);
    }
}
