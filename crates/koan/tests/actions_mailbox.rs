//! The action mailbox: higher priority first, FIFO within a priority, `Busy` when
//! full (at once), and `max_concurrency` handlers at a time.

mod common;

use std::future::Future;
use std::sync::atomic::Ordering;

use common::{Probe, Queue, poll_once};
use koan::testing::within;
use koan::{HostHandle, Services, action::ActionTicket, error::ErrorKind};

/// Asserts that the call `f` is answered `Busy` without waiting.
async fn busy_at_once<T: std::fmt::Debug>(what: &str, f: impl Future<Output = koan::Result<T>>) {
    let refused = poll_once(f)
        .await
        .unwrap_or_else(|| panic!("{what} answered without waiting"));
    assert_eq!(
        refused.expect_err("mailbox is full").kind(),
        ErrorKind::Busy,
        "{what}"
    );
}

/// A started `Queue<C, 1>` whose only worker `block` holds: every call after it waits
/// in the mailbox until [`Held::release`].
struct Held<const C: usize> {
    host: HostHandle,
    probe: Probe,
    blocker: Option<ActionTicket>,
}

impl<const C: usize> Held<C> {
    async fn start() -> anyhow::Result<Self> {
        let (host, mut probe) = Queue::<C, 1>::start().await?;
        let blocker = host.services::<Queue<C, 1>>().action("block", ()).spawn()?;
        probe.wait_started("block started").await;
        Ok(Self {
            host,
            probe,
            blocker: Some(blocker),
        })
    }

    fn q(&self) -> Services<Queue<C, 1>> {
        self.host.services()
    }

    /// Queues one `record` call per `(tag, priority)`, in order.
    fn enqueue_records(&self, items: &[(&str, i32)]) -> anyhow::Result<Vec<ActionTicket>> {
        let q = self.q();
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

    /// Lets `block` finish, waits for its outcome, then for the results of the
    /// `record` calls queued behind it, in the order of `tickets`.
    async fn release(&mut self, tickets: Vec<ActionTicket>) -> anyhow::Result<Vec<String>> {
        self.probe.gate.add_permits(1);
        let blocker = self.blocker.take().expect("released once");
        within("the blocker's outcome", blocker.outcome()).await?;
        let mut results = Vec::new();
        for t in tickets {
            results.push(
                within("the outcome of a queued `record`", t.outcome())
                    .await?
                    .value::<String>()?,
            );
        }
        Ok(results)
    }

    async fn stop(self) -> anyhow::Result<()> {
        Ok(koan::testing::stop(&self.host).await?)
    }
}

/// Queues one `record` call per `(tag, priority)` behind a held worker, checks that
/// none runs before the worker is free, then frees it. Returns the tags in the order
/// the handlers ran, and each caller's result in the order of `items`.
async fn run_queued(items: &[(&str, i32)]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut held = Held::<1024>::start().await?;
    let tickets = held.enqueue_records(items)?;
    assert!(
        held.probe.log().is_empty(),
        "nothing runs while the worker is busy"
    );
    let results = held.release(tickets).await?;
    let log = held.probe.log();
    held.stop().await?;
    Ok((log, results))
}

/// `"tag:priority tag:priority …"` as `(tag, priority)` pairs.
fn items(spec: &str) -> Vec<(&str, i32)> {
    spec.split_whitespace()
        .map(|it| {
            let (tag, priority) = it.split_once(':').expect("tag:priority");
            (tag, priority.parse().expect("a priority"))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn higher_priority_runs_first_under_contention() -> anyhow::Result<()> {
    let (log, _) = run_queued(&items("low:1 top:10 mid:5 neg:-3 high:7 zero:0")).await?;
    assert_eq!(log, ["top", "high", "mid", "low", "zero", "neg"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn same_priority_runs_in_arrival_order() -> anyhow::Result<()> {
    let (log, results) = run_queued(&items("a0:0 b2:2 c0:0 d2:2 e0:0 f2:2 g0:0 h0:0")).await?;
    assert_eq!(log, ["b2", "d2", "f2", "a0", "c0", "e0", "g0", "h0"]);
    // Every caller got its own result back.
    assert_eq!(results, ["a0", "b2", "c0", "d2", "e0", "f2", "g0", "h0"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn arrival_order_holds_past_the_lanes_64_slots() -> anyhow::Result<()> {
    // 150 calls of priority 0 fill the lane (64 slots) and queue under the lock
    // behind it; every tenth one is of priority 3, under the lock from the start.
    let tags: Vec<(String, i32)> = (0..150)
        .map(|i| (format!("c{i}"), if i % 10 == 5 { 3 } else { 0 }))
        .collect();
    let items: Vec<(&str, i32)> = tags.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let (log, results) = run_queued(&items).await?;
    let sent: Vec<&str> = items.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(results, sent, "every caller gets its own result");
    let mut expected = items.clone();
    // Stable: FIFO within a priority.
    expected.sort_by_key(|(_, p)| std::cmp::Reverse(*p));
    let expected: Vec<&str> = expected.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(log, expected, "by priority, FIFO within one");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_is_busy_at_once() -> anyhow::Result<()> {
    // The running action has left the mailbox; two more fill it.
    let mut held = Held::<2>::start().await?;
    let q = held.q();
    let queued = held.enqueue_records(&[("one", 0), ("two", 0)])?;

    // The third is refused without waiting, both by spawn and by execute, and
    // whatever its priority.
    let e = q
        .action("record", "three".to_owned())
        .spawn()
        .expect_err("mailbox is full");
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert!(e.message().contains("busy"), "{e}");
    assert!(e.message().contains('2'), "names the capacity: {e}");
    busy_at_once(
        "execute",
        q.action("record", "four".to_owned())
            .priority(100)
            .execute(),
    )
    .await;
    busy_at_once(
        "by-name execute",
        held.host
            .service("Queue")
            .action("record", serde_json::json!("five"))
            .execute(),
    )
    .await;

    // Accepted work is unaffected, refused work never ran.
    held.release(queued).await?;
    assert_eq!(held.probe.log(), ["one", "two"]);

    // With room again, calls are accepted.
    let out = within(
        "a `record` call with room in the mailbox",
        q.action("record", "six".to_owned()).execute(),
    )
    .await?;
    assert_eq!(out.value::<String>()?, "six");
    held.stop().await
}

/// Spawns `calls` `hold` calls on a started `Queue<1024, N>` and waits until `N` of
/// them started.
async fn hold_calls<const N: usize>(
    calls: usize,
) -> anyhow::Result<(HostHandle, Probe, Vec<ActionTicket>)> {
    let (host, mut probe) = Queue::<1024, N>::start().await?;
    let q = host.services::<Queue<1024, N>>();
    let mut tickets = Vec::new();
    for _ in 0..calls {
        tickets.push(q.action("hold", ()).spawn()?);
    }
    for _ in 0..N {
        probe.wait_started("a handler started").await;
    }
    Ok((host, probe, tickets))
}

/// Asserts that no further handler starts once the runtime has nothing else to do.
async fn no_more_started(probe: &mut Probe, what: &str) {
    koan::testing::settle().await;
    assert!(probe.started.try_recv().is_err(), "{what}");
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_runs_that_many_at_once() -> anyhow::Result<()> {
    let (host, mut probe, tickets) = hold_calls::<3>(7).await?;
    no_more_started(
        &mut probe,
        "a fourth handler started while three were running",
    )
    .await;
    assert_eq!(probe.peak.load(Ordering::SeqCst), 3);

    probe.gate.add_permits(7);
    let mut seen = Vec::new();
    for t in tickets {
        let out = within("the outcome of a `hold`", t.outcome()).await?;
        seen.push(out.value::<usize>()?);
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.iter().all(|n| (1..=3).contains(n)), "{seen:?}");
    let peak = probe.peak.load(Ordering::SeqCst);
    assert_eq!(peak, 3, "never more than three at once");
    Ok(koan::testing::stop(&host).await?)
}

#[tokio::test(start_paused = true)]
async fn concurrency_one_runs_one_at_a_time() -> anyhow::Result<()> {
    let (host, mut probe, tickets) = hold_calls::<1>(4).await?;
    for started in 1..=4 {
        if started > 1 {
            probe.wait_started("a handler started").await;
        }
        no_more_started(&mut probe, "a second handler started").await;
        probe.gate.add_permits(1);
    }
    for t in tickets {
        let out = within("the outcome of a `hold`", t.outcome()).await?;
        assert_eq!(out.value::<usize>()?, 1);
    }
    assert_eq!(probe.peak.load(Ordering::SeqCst), 1);
    Ok(koan::testing::stop(&host).await?)
}

#[tokio::test(start_paused = true)]
async fn many_priorities_at_once_lose_no_job() -> anyhow::Result<()> {
    // Twelve priorities with two jobs each: more priorities than the mailbox keeps
    // empty queues around for, so queues are dropped as they empty — never before.
    let tags: Vec<(String, i32)> = (0..12)
        .flat_map(|p| (0..2).map(move |k| (format!("p{p}-{k}"), p)))
        .collect();
    let items: Vec<(&str, i32)> = tags.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let (log, results) = run_queued(&items).await?;

    let sent: Vec<&str> = items.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(results, sent, "every caller gets its own result");
    let expected: Vec<String> = (0..12)
        .rev()
        .flat_map(|p| (0..2).map(move |k| format!("p{p}-{k}")))
        .collect();
    assert_eq!(log, expected, "by priority, FIFO within one");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_queued_calls_at_once_and_runs_queued_jobs() -> anyhow::Result<()> {
    // `block` holds the only worker and ignores its token; behind it wait a caller's
    // call and a stored job's run.
    let mut held = Held::<1024>::start().await?;
    let host = held.host.clone();
    let call = held.q().action("record", "call".to_owned()).spawn()?;
    let job = held
        .q()
        .action("record", "job".to_owned())
        .enqueue()
        .await?;
    koan::testing::settle().await;
    let depth = host.status("Queue")?.queue_depth;
    assert_eq!(depth, 2, "the call and the job wait");

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

    held.release(Vec::new()).await?;
    let out = within("the queued job's outcome", job.outcome()).await?;
    assert_eq!(out.value::<String>()?, "job");
    assert_eq!(held.probe.log(), ["job"], "the refused call never ran");

    // With nothing left, the host exits without waiting out its grace.
    within("the host to exit", host.wait())
        .await
        .into_result()?;
    let waited = t0.elapsed();
    assert_eq!(waited, std::time::Duration::ZERO, "no grace waited out");
    Ok(())
}
