//! Where remote calls go under load: to the less loaded instance, a slow one
//! getting few of them — by the load the instances announce (also the load other
//! hosts put on them), and between their announcements by this host's own calls
//! in flight to each.

use std::sync::atomic::Ordering;
use std::time::Duration;

use koan::transport::HostLink;
use koan_test_support::nats::{NatsServer, test_options};
use koan_test_support::wait_for;

mod common;

use common::routing::{Worker, join_with, sees_workers};

/// 60 calls, eight callers at a time, to a slow and a fast instance announcing
/// every `heartbeat`: the slow one, 50 times slower, must take under a quarter
/// of them (spread evenly, it would get half).
async fn few_go_to_the_slow_instance(heartbeat: Duration) -> anyhow::Result<()> {
    const CALLS: u32 = 60;
    let server = NatsServer::start()?;
    let opts = || {
        let mut o = test_options(&server.url());
        o.heartbeat = heartbeat;
        o
    };
    let (slow, slow_calls) = Worker::new(Duration::from_millis(100));
    let (fast, fast_calls) = Worker::new(Duration::from_millis(2));
    let (_a, _na) = join_with(opts(), Some(slow)).await?;
    let (_b, _nb) = join_with(opts(), Some(fast)).await?;
    let (client, _nc) = join_with(opts(), None).await?;
    sees_workers(&client, 2).await?;

    // Eight callers at a time.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let c = client.clone();
        calls.spawn(async move {
            for _ in 0..CALLS / 8 {
                c.service("Worker").action("work", ()).execute().await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = calls.join_next().await {
        r??;
    }
    let (s, f) = (
        slow_calls.load(Ordering::SeqCst),
        fast_calls.load(Ordering::SeqCst),
    );
    assert_eq!(s + f, CALLS / 8 * 8);
    assert!(
        s * 4 < s + f,
        "announcing every {heartbeat:?}, the slow instance took {s} of {} calls",
        s + f
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_prefer_the_less_loaded_instance() -> anyhow::Result<()> {
    few_go_to_the_slow_instance(Duration::from_millis(500)).await
}

/// Between heartbeats the instances' announced load does not move: what steers
/// the calls then is this host's own count of its calls in flight to each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_heartbeats_the_calls_in_flight_steer_calls_off_a_slow_instance()
-> anyhow::Result<()> {
    few_go_to_the_slow_instance(Duration::from_secs(60)).await
}

/// An instance kept busy by another host's calls: this host, with nothing in
/// flight to either instance, sees it only in the load the instance announces, and
/// sends its calls to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_busy_with_another_host_s_calls_is_avoided_by_its_announced_load()
-> anyhow::Result<()> {
    const LOAD: u32 = 50;
    const CALLS: u32 = 20;
    let server = NatsServer::start()?;
    let opts = || {
        let mut o = test_options(&server.url());
        o.heartbeat = Duration::from_millis(200);
        o
    };
    let (busy, busy_calls) = Worker::new(Duration::from_millis(100));
    let (idle, idle_calls) = Worker::new(Duration::from_millis(1));
    let (a, _na) = join_with(opts(), Some(busy)).await?;
    let (_b, _nb) = join_with(opts(), Some(idle)).await?;
    let (client, _nc) = join_with(opts(), None).await?;
    sees_workers(&client, 2).await?;

    // Host A's own callers queue 5 s of work on its instance (one call at a time).
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..LOAD {
        let a = a.clone();
        load.spawn(async move { a.service("Worker").action("work", ()).execute().await });
    }
    wait_for("A's load to be announced", async || {
        let seen = client.instances().await?;
        let loaded = seen
            .iter()
            .flat_map(|i| &i.services)
            .any(|s| s.name == "Worker" && s.queue_depth + s.in_flight >= 20);
        Ok(loaded.then_some(()))
    })
    .await?;
    // One call at a time: this host's count in flight is 0 to both at each choice.
    for _ in 0..CALLS {
        client
            .service("Worker")
            .action("work", ())
            .execute()
            .await?;
    }
    while let Some(r) = load.join_next().await {
        r??;
    }
    let (b, i) = (
        busy_calls.load(Ordering::SeqCst),
        idle_calls.load(Ordering::SeqCst),
    );
    assert_eq!(b + i, LOAD + CALLS);
    assert!(b >= LOAD, "A's own calls ran on A: {b} of {}", LOAD + CALLS);
    assert!(
        b - LOAD <= 2,
        "the busy instance took {} of this host's {CALLS} calls",
        b - LOAD
    );
    Ok(())
}
