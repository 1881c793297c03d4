//! Actions that their callers run themselves (an idle service, `execute()`): the
//! same guarantees as the mailbox path — `max_concurrency` holds, queued work is not
//! overtaken and keeps its priority order, a caller that goes away does not cancel a
//! running action (but its own runtime's end stops it, and is said), and shutdown
//! waits for it.

mod common;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use common::{Probe, Queue};
use koan::testing::within;

/// The shared gated service, with the default mailbox and `N` slots.
type Gated<const N: usize> = Queue<1024, N>;

/// Polls `f` once and drops it: `true` when it finished in that poll.
async fn poll_once_then_drop<F: Future>(f: F) -> bool {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_ready())).await
}

/// Calls `hold` on a task of its own, the caller running it itself on the idle
/// service; returns that task once `hold` started.
async fn spawn_hold<const N: usize>(
    g: &koan::Services<Gated<N>>,
    probe: &mut Probe,
) -> tokio::task::JoinHandle<koan::Result<koan::action::ActionOutput>> {
    let call = tokio::spawn({
        let g = g.clone();
        async move { g.action("hold", ()).execute().await }
    });
    probe.wait_started("hold started").await;
    call
}

#[tokio::test(start_paused = true)]
async fn a_running_action_survives_its_caller_going_away() -> anyhow::Result<()> {
    type G = Gated<1>;
    let (host, mut probe) = G::start().await?;
    let g = host.services::<G>();

    // The caller starts the action (the service is idle, so it runs it itself) and
    // then stops waiting for it.
    let finished_at_once = poll_once_then_drop(g.action("hold", ()).execute()).await;
    assert!(!finished_at_once, "`hold` waits for the gate");
    probe.wait_started("hold started").await;

    // The action goes on without its caller and, once done, gives its slot back.
    probe.gate.add_permits(1);
    probe.gate.add_permits(1);
    let second = within("a second `hold` call", g.action("hold", ()).execute())
        .await?
        .value::<usize>()?;
    assert_eq!(second, 1, "one action at a time");
    assert_eq!(
        probe.finished.load(Ordering::SeqCst),
        2,
        "both ran to the end"
    );
    assert_eq!(host.services::<G>().status().await?.in_flight, 0);

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn queued_work_waits_for_the_caller_run_and_keeps_priority_order() -> anyhow::Result<()> {
    type G = Gated<1>;
    let (host, mut probe) = G::start().await?;
    let g = host.services::<G>();

    // The only slot is taken by a caller running `hold` itself.
    let blocker = spawn_hold(&g, &mut probe).await;

    let mut tickets = Vec::new();
    for (tag, priority) in [("low", 1), ("top", 10), ("mid", 5)] {
        tickets.push(
            g.action("record", tag.to_owned())
                .priority(priority)
                .spawn()?,
        );
    }
    // A later `execute()` does not overtake the queue: it waits in it.
    let late = tokio::spawn({
        let g = g.clone();
        async move { g.action("record", "late".to_owned()).execute().await }
    });
    tokio::task::yield_now().await;
    assert!(
        probe.log().is_empty(),
        "nothing runs while the slot is taken"
    );

    probe.gate.add_permits(1);
    within("the caller running `hold`", blocker).await??;
    for t in tickets {
        within("the outcome of a queued `record`", t.outcome()).await?;
    }
    within("the late `record` call", late).await??;
    assert_eq!(probe.log(), ["top", "mid", "low", "late"]);

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_and_workers_share_max_concurrency() -> anyhow::Result<()> {
    type G = Gated<2>;
    let (host, probe) = G::start().await?;
    let g = host.services::<G>();

    let calls: Vec<_> = (0..200)
        .map(|i| {
            let g = g.clone();
            tokio::spawn(async move {
                if i % 3 == 0 {
                    g.action("record", format!("{i}"))
                        .spawn()?
                        .outcome()
                        .await?;
                } else {
                    g.action("record", format!("{i}")).execute().await?;
                }
                Ok::<_, koan::Error>(())
            })
        })
        .collect();
    // A real-time runtime, where `WAIT_LIMIT` is 25 hours: 200 short actions take
    // milliseconds, so a minute only tells a hang from slowness.
    for c in calls {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("gave up after 60 s waiting for the 200 calls to finish")??;
    }
    assert_eq!(probe.log().len(), 200, "every action ran once");
    let peak = probe.peak.load(Ordering::SeqCst);
    assert!(
        peak <= 2,
        "{peak} actions ran at once; max_concurrency is 2"
    );

    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_an_action_its_caller_runs() -> anyhow::Result<()> {
    type G = Gated<1>;
    let (svc, mut probe) = G::new();
    let host = koan::testing::host()
        .instance(svc)
        .shutdown_grace(std::time::Duration::from_secs(30))
        .build()?
        .start();
    host.started().await?;
    let g = host.services::<G>();

    let call = spawn_hold(&g, &mut probe).await;

    host.shutdown();
    let stopped = tokio::spawn({
        let host = host.clone();
        async move { koan::testing::within("the host to exit", host.wait()).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !stopped.is_finished(),
        "the host waits for the running action"
    );

    probe.gate.add_permits(1);
    let out = within("the `hold` call to finish", call).await??;
    assert_eq!(out.value::<usize>()?, 1);
    let _ = stopped.await?;
    assert_eq!(probe.finished.load(Ordering::SeqCst), 1);
    Ok(())
}

/// A caller on a runtime of its own (a thread's, not the host's) that gives up and
/// drops its runtime stops the action it ran itself: its timers were that
/// runtime's. Said in the log, where it went without a word (a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_stopped_with_its_callers_own_runtime_is_said() -> anyhow::Result<()> {
    type G = Gated<1>;
    let (host, mut probe) = G::start().await?;
    let g = host.services::<G>();
    let logs = common::logs::Logs::default();
    let caller = std::thread::spawn({
        let logs = logs.clone();
        move || -> anyhow::Result<bool> {
            let _captured = logs.capture();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let finished = runtime.block_on(poll_once_then_drop(g.action("hold", ()).execute()));
            drop(runtime);
            Ok(finished)
        }
    });
    probe.wait_started("hold started").await;
    let finished = caller
        .join()
        .map_err(|_| anyhow::anyhow!("the caller's thread panicked"))??;
    assert!(!finished, "`hold` waits for the gate");
    logs.assert_lines("stopped unfinished", 1, "service=");
    assert_eq!(probe.finished.load(Ordering::SeqCst), 0);
    assert_eq!(host.services::<G>().status().await?.in_flight, 0);
    koan::testing::stop(&host).await?;
    Ok(())
}
