//! The action mailbox: higher priority first, FIFO within a priority, `Busy` when
//! full (at once), and `max_concurrency` handlers at a time.

mod common;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::task::Poll;

use common::Queue;
use koan::testing::within;
use koan::{Services, action::ActionTicket, error::ErrorKind};

/// Polls `f` exactly once: `Some(output)` when it finished without waiting.
async fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        Poll::Ready(match f.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

async fn enqueue_records<const C: usize, const N: usize>(
    q: &Services<Queue<C, N>>,
    items: &[(&str, i32)],
) -> anyhow::Result<Vec<ActionTicket>> {
    let mut tickets = Vec::new();
    for (tag, priority) in items {
        tickets.push(
            q.action("record", (*tag).to_owned())
                .priority(*priority)
                .spawn()?,
        );
    }
    Ok(tickets)
}

#[tokio::test(start_paused = true)]
async fn higher_priority_runs_first_under_contention() -> anyhow::Result<()> {
    type Q = Queue<1024, 1>;
    let (host, mut probe) = Q::start().await?;
    let q = host.services::<Q>();

    // Occupy the only worker; everything after waits in the mailbox.
    let blocker = q.action("block", ()).spawn()?;
    probe.wait_started("block started").await;

    let tickets = enqueue_records(
        &q,
        &[
            ("low", 1),
            ("top", 10),
            ("mid", 5),
            ("neg", -3),
            ("high", 7),
            ("zero", 0),
        ],
    )
    .await?;
    assert!(
        probe.log().is_empty(),
        "nothing runs while the worker is busy"
    );

    probe.gate.add_permits(1);
    within("the blocker's outcome", blocker.outcome()).await?;
    for t in tickets {
        within("the outcome of a queued `record`", t.outcome()).await?;
    }
    assert_eq!(probe.log(), ["top", "high", "mid", "low", "zero", "neg"]);

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn same_priority_runs_in_arrival_order() -> anyhow::Result<()> {
    type Q = Queue<1024, 1>;
    let (host, mut probe) = Q::start().await?;
    let q = host.services::<Q>();

    let blocker = q.action("block", ()).spawn()?;
    probe.wait_started("block started").await;

    let tickets = enqueue_records(
        &q,
        &[
            ("a0", 0),
            ("b2", 2),
            ("c0", 0),
            ("d2", 2),
            ("e0", 0),
            ("f2", 2),
            ("g0", 0),
            ("h0", 0),
        ],
    )
    .await?;
    probe.gate.add_permits(1);
    within("the blocker's outcome", blocker.outcome()).await?;
    let mut results = Vec::new();
    for t in tickets {
        results.push(
            within("the outcome of a queued `record`", t.outcome())
                .await?
                .value::<String>()?,
        );
    }
    assert_eq!(
        probe.log(),
        ["b2", "d2", "f2", "a0", "c0", "e0", "g0", "h0"]
    );
    // Every caller got its own result back.
    assert_eq!(results, ["a0", "b2", "c0", "d2", "e0", "f2", "g0", "h0"]);

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_is_busy_at_once() -> anyhow::Result<()> {
    type Q = Queue<2, 1>;
    let (host, mut probe) = Q::start().await?;
    let q = host.services::<Q>();

    // The running action has left the mailbox; two more fill it.
    let blocker = q.action("block", ()).spawn()?;
    probe.wait_started("block started").await;
    let queued = enqueue_records(&q, &[("one", 0), ("two", 0)]).await?;

    // The third is refused without waiting, both by spawn and by execute, and
    // whatever its priority.
    let e = q
        .action("record", "three".to_owned())
        .spawn()
        .expect_err("mailbox is full");
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert!(e.message().contains("busy"), "{e}");
    assert!(e.message().contains('2'), "names the capacity: {e}");

    let refused = poll_once(
        q.action("record", "four".to_owned())
            .priority(100)
            .execute(),
    )
    .await
    .expect("execute answered without waiting");
    assert_eq!(
        refused.expect_err("mailbox is full").kind(),
        ErrorKind::Busy
    );

    let by_name = poll_once(
        host.service("Queue")
            .action("record", serde_json::json!("five"))
            .execute(),
    )
    .await
    .expect("by-name execute answered without waiting");
    assert_eq!(
        by_name.expect_err("mailbox is full").kind(),
        ErrorKind::Busy
    );

    // Accepted work is unaffected, refused work never ran.
    probe.gate.add_permits(1);
    within("the blocker's outcome", blocker.outcome()).await?;
    for t in queued {
        within("the outcome of a queued `record`", t.outcome()).await?;
    }
    assert_eq!(probe.log(), ["one", "two"]);

    // With room again, calls are accepted.
    let out = within(
        "a `record` call with room in the mailbox",
        q.action("record", "six".to_owned()).execute(),
    )
    .await?;
    assert_eq!(out.value::<String>()?, "six");

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_runs_that_many_at_once() -> anyhow::Result<()> {
    type Q = Queue<1024, 3>;
    let (host, mut probe) = Q::start().await?;
    let q = host.services::<Q>();

    let mut tickets = Vec::new();
    for _ in 0..7 {
        tickets.push(q.action("hold", ()).spawn()?);
    }
    for _ in 0..3 {
        probe.wait_started("a handler started").await;
    }
    koan::testing::settle().await;
    assert!(
        probe.started.try_recv().is_err(),
        "a fourth handler started while three were running"
    );
    assert_eq!(probe.peak.load(Ordering::SeqCst), 3);

    probe.gate.add_permits(7);
    let mut seen = Vec::new();
    for t in tickets {
        seen.push(
            within("the outcome of a `hold`", t.outcome())
                .await?
                .value::<usize>()?,
        );
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.iter().all(|n| (1..=3).contains(n)), "{seen:?}");
    assert_eq!(
        probe.peak.load(Ordering::SeqCst),
        3,
        "never more than three at once"
    );

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn concurrency_one_runs_one_at_a_time() -> anyhow::Result<()> {
    type Q = Queue<1024, 1>;
    let (host, mut probe) = Q::start().await?;
    let q = host.services::<Q>();

    let mut tickets = Vec::new();
    for _ in 0..4 {
        tickets.push(q.action("hold", ()).spawn()?);
    }
    for _ in 0..4 {
        probe.wait_started("a handler started").await;
        koan::testing::settle().await;
        assert!(
            probe.started.try_recv().is_err(),
            "a second handler started"
        );
        probe.gate.add_permits(1);
    }
    for t in tickets {
        let out = within("the outcome of a `hold`", t.outcome()).await?;
        assert_eq!(out.value::<usize>()?, 1);
    }
    assert_eq!(probe.peak.load(Ordering::SeqCst), 1);

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn many_priorities_at_once_lose_no_job() -> anyhow::Result<()> {
    type Q = Queue<1024, 1>;
    let (host, mut probe) = Q::start().await?;
    let q = host.services::<Q>();

    let blocker = q.action("block", ()).spawn()?;
    probe.wait_started("block started").await;

    // Twelve priorities with two jobs each: more priorities than the mailbox keeps
    // empty queues around for, so queues are dropped as they empty — never before.
    let tags: Vec<(String, i32)> = (0..12)
        .flat_map(|p| (0..2).map(move |k| (format!("p{p}-{k}"), p)))
        .collect();
    let items: Vec<(&str, i32)> = tags.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let tickets = enqueue_records(&q, &items).await?;

    probe.gate.add_permits(1);
    within("the blocker's outcome", blocker.outcome()).await?;
    for (t, (tag, _)) in tickets.into_iter().zip(&tags) {
        let out = within("the outcome of a queued `record`", t.outcome()).await?;
        assert_eq!(
            out.value::<String>()?,
            *tag,
            "every caller gets its own result"
        );
    }
    let expected: Vec<String> = (0..12)
        .rev()
        .flat_map(|p| (0..2).map(move |k| format!("p{p}-{k}")))
        .collect();
    assert_eq!(probe.log(), expected, "by priority, FIFO within one");

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_queued_calls_at_once_and_runs_queued_jobs() -> anyhow::Result<()> {
    type Q = Queue<1024, 1>;
    let (host, mut probe) = Q::start().await?;
    let q = host.services::<Q>();

    // `block` holds the only worker and ignores its token; behind it wait a caller's
    // call and a stored job's run.
    let blocker = q.action("block", ()).spawn()?;
    probe.wait_started("block started").await;
    let call = q.action("record", "call".to_owned()).spawn()?;
    let job = q.action("record", "job".to_owned()).enqueue().await?;
    koan::testing::settle().await;
    assert_eq!(
        host.status("Queue")?.queue_depth,
        2,
        "the call and the job wait"
    );

    let t0 = tokio::time::Instant::now();
    host.shutdown();
    // The caller is answered at once, not at the end of the grace.
    let e = within("the queued call's answer", call.outcome())
        .await
        .expect_err("a queued call is refused at shutdown");
    assert_eq!(e.kind(), ErrorKind::ShuttingDown);
    assert_eq!(t0.elapsed(), std::time::Duration::ZERO, "answered at once");
    // The stored job's run stays queued: it may still run within the grace.
    assert_eq!(host.status("Queue")?.queue_depth, 1);

    probe.gate.add_permits(1);
    within("the blocker's outcome", blocker.outcome()).await?;
    let out = within("the queued job's outcome", job.outcome()).await?;
    assert_eq!(out.value::<String>()?, "job");
    assert_eq!(probe.log(), ["job"], "the refused call never ran");

    // With nothing left, the host exits without waiting out its grace.
    within("the host to exit", host.wait())
        .await
        .into_result()?;
    assert_eq!(
        t0.elapsed(),
        std::time::Duration::ZERO,
        "no grace waited out"
    );
    Ok(())
}
