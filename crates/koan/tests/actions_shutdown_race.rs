//! Calls racing the host's shutdown on two threads, through the mailbox's lock-free
//! lane (priority 0) and under its lock: each one is answered, with its result or
//! `ShuttingDown`, none hangs, and every call answered with its result ran once.
//! The loom models check the protocol with a locked stand-in for the lane; this runs
//! the real queue on real threads.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::Queue;
use koan::error::ErrorKind;

type Q = Queue<64, 1>;

/// Callers that each call `record` until one is refused; `stop` is sent once
/// caller 0 has had `before_stop` answers. Returns every answered tag.
async fn race(priority: i32, callers: usize, before_stop: usize) -> anyhow::Result<()> {
    let (host, probe) = Q::start().await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    let mut tasks = Vec::new();
    for c in 0..callers {
        let q = host.services::<Q>();
        let mut signal = if c == 0 { stop_tx.take() } else { None };
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            for i in 0.. {
                let tag = format!("{c}-{i}");
                match q
                    .action("record", tag.clone())
                    .priority(priority)
                    .execute()
                    .await
                {
                    Ok(out) => answered.push(out.value::<String>()?),
                    Err(e) if e.kind() == ErrorKind::ShuttingDown => break,
                    Err(e) => return Err(anyhow::anyhow!("call {tag}: {e}")),
                }
                if answered.len() == before_stop
                    && let Some(tx) = signal.take()
                {
                    let _ = tx.send(());
                }
            }
            Ok::<_, anyhow::Error>(answered)
        }));
    }
    stop_rx.await?;
    host.shutdown();

    let mut answered = HashSet::new();
    for t in tasks {
        // A real-time runtime: a minute only tells a hang from slowness.
        let tags = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .map_err(|_| anyhow::anyhow!("a caller still waits a minute after the shutdown"))???;
        for tag in tags {
            assert!(answered.insert(tag.clone()), "{tag} answered twice");
        }
    }
    tokio::time::timeout(Duration::from_secs(60), host.wait())
        .await
        .map_err(|_| anyhow::anyhow!("the host did not stop within a minute"))?;
    let ran: Vec<String> = probe.log();
    let ran_set: HashSet<String> = ran.iter().cloned().collect();
    assert_eq!(ran.len(), ran_set.len(), "an action ran twice");
    assert_eq!(
        answered, ran_set,
        "the calls answered with a result are the actions that ran"
    );
    assert!(
        answered.len() >= before_stop,
        "the race began with work done"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_the_lane_racing_the_shutdown_are_each_answered() -> anyhow::Result<()> {
    for _ in 0..5 {
        race(0, 32, 50).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_under_the_lock_racing_the_shutdown_are_each_answered() -> anyhow::Result<()> {
    for _ in 0..5 {
        race(3, 32, 50).await?;
    }
    Ok(())
}
