//! A cluster singleton across real processes: two demo processes run
//! `DataCleanupService` every second, made a singleton by configuration, with a 2 s
//! lease. A holder frozen (SIGSTOP) past its lease does not run again on resume
//! (each tick is confirmed with a compare-and-set on the lease); a holder killed
//! (SIGKILL) is replaced, and the tick it missed is run by the new holder.

#[path = "support/demo.rs"]
mod demo;

use std::time::Instant;

use demo::{Demo, Site};
use koan_test_support::eventually;
use serde_json::Value;

const LEASE_MS: u64 = 2_000;

fn env() -> Vec<(&'static str, String)> {
    vec![
        (
            "KOAN__BACKGROUND_SERVICES__SERVICES__DATACLEANUPSERVICE__SINGLETON",
            "true".into(),
        ),
        (
            "KOAN__BACKGROUND_SERVICES__SERVICES__DATACLEANUPSERVICE__INTERVAL_SECONDS",
            "1".into(),
        ),
        ("KOAN__NATS__LEASE_MS", LEASE_MS.to_string()),
        ("KOAN__NATS__HEARTBEAT_MS", "250".into()),
    ]
}

/// Scheduled and catch-up runs of `DataCleanupService` in `demo`.
async fn runs(client: &reqwest::Client, demo: &Demo) -> anyhow::Result<u64> {
    let status: Value = client
        .get(demo.url("/api/services/DataCleanupService/status"))
        .send()
        .await?
        .json()
        .await?;
    status["runs"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no runs in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_holder_stays_quiet_and_a_killed_one_is_replaced() -> anyhow::Result<()> {
    let site = Site::start("koan-demo-singleton")?;
    let client = site.client.clone();
    let mut a = site.demo("a", None, &env())?;
    let mut b = site.demo("b", None, &env())?;

    // One of them holds the lease and ticks; the other does not.
    eventually("a holder to tick twice", || async {
        let (ra, rb) = (runs(&client, &a).await, runs(&client, &b).await);
        matches!((ra, rb), (Ok(x), Ok(y)) if x.max(y) >= 2)
    })
    .await?;
    let a_holds = runs(&client, &a).await? > runs(&client, &b).await?;
    let (holder, other) = if a_holds {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    // Frozen past its lease: the other takes over and ticks.
    let before = runs(&client, holder).await?;
    let other_before = runs(&client, other).await?;
    holder.signal("-STOP")?;
    eventually("the other to take over and tick twice", || async {
        runs(&client, other)
            .await
            .is_ok_and(|r| r >= other_before + 2)
    })
    .await?;
    // Resumed: its overdue tick is refused by the lease, whatever its timers say.
    holder.signal("-CONT")?;
    let resumed_at = runs(&client, other).await?;
    eventually(
        "the new holder to tick twice more after the resume",
        || async {
            runs(&client, other)
                .await
                .is_ok_and(|r| r >= resumed_at + 2)
        },
    )
    .await?;
    let after = runs(&client, holder).await?;
    assert_eq!(
        after,
        before,
        "the resumed holder ran {} tick(s) while another held the lease",
        after - before
    );

    // The new holder is killed: the resumed one takes over and runs the missed tick.
    let old = runs(&client, holder).await?;
    let killed = Instant::now();
    other.kill();
    eventually("the survivor to tick again", || async {
        runs(&client, holder).await.is_ok_and(|r| r > old)
    })
    .await?;
    let failover = killed.elapsed();
    println!(
        "singleton failover: {:.2} s after SIGKILL with a {:.1} s lease ({:.2} x lease)",
        failover.as_secs_f64(),
        LEASE_MS as f64 / 1000.0,
        failover.as_secs_f64() * 1000.0 / LEASE_MS as f64
    );
    Ok(())
}
