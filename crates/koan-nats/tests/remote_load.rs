//! Where remote calls go under load: to the less loaded instance, a slow one
//! getting few of them — by the load the instances announce, and between their
//! announcements by this host's own calls in flight to each.

use std::sync::atomic::Ordering;
use std::time::Duration;

use koan_test_support::nats::{NatsServer, test_options};

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
