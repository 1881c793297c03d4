//! The catch-up run after a singleton failover: the new holder runs the tick that
//! its last holder missed once, and never a tick that holder already started —
//! however old that holder's last heartbeat is.

use koan::transport::HostLink as _;
use std::time::Duration;

use koan::service::RunReason;
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::ticks::{Label, TickLog};

koan_test_support::recording_service!(
    /// A period long enough that a take-over (one lease, 1.5 s) comes before the next
    /// tick: nothing is missed in between.
    SlowTicker,
    singleton,
    every = "5s",
    name = "Slow"
);

/// A host running `SlowTicker` with heartbeats far apart (the holder's entry is the
/// one of its attach, unless something else announces it) and the given lease.
async fn join(url: &str, label: &str, runs: &TickLog, lease: Duration) -> anyhow::Result<Member> {
    let mut opts = test_options(url);
    opts.heartbeat = Duration::from_secs(60);
    opts.lease = lease;
    Member::join(opts, |b| {
        b.resource(Label(label.to_owned()))
            .resource(runs.clone())
            .service::<SlowTicker>()
    })
    .await
}

/// A server and two hosts running `SlowTicker` with `lease`: `h1`, which attaches
/// first and holds the lease, and `h2`, which waits; and the ticks they ran.
async fn two_hosts(lease: Duration) -> anyhow::Result<(NatsServer, TickLog, Member, Member)> {
    let server = NatsServer::start()?;
    let runs = TickLog::default();
    let h1 = join(&server.url(), "h1", &runs, lease).await?;
    let h2 = join(&server.url(), "h2", &runs, lease).await?;
    Ok((server, runs, h1, h2))
}

/// `member` dies: no heartbeat and no goodbye from now on.
fn die(member: Member) {
    drop(member.node);
    member.host.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_dies_right_after_its_tick_is_not_run_again() -> anyhow::Result<()> {
    let (_server, runs, h1, _h2) = two_hosts(Duration::from_millis(1500)).await?;

    // h1 runs its tick, then dies before its next heartbeat.
    runs.wait_for("h1's tick", |t| t.host == "h1").await?;
    die(h1);

    // h2 takes over before the next tick is due and runs that one on schedule.
    runs.wait_for("h2's scheduled tick", |t| {
        t.host == "h2" && t.reason == RunReason::Scheduled
    })
    .await?;
    let all = runs.all();
    assert!(
        !all.iter().any(|t| t.reason == RunReason::Trigger),
        "h1 ran its tick before it died: h2 must not run it again; runs: {all:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tick_a_dead_holder_missed_runs_once_on_the_new_holder() -> anyhow::Result<()> {
    // A lease longer than the period: a take-over always comes after a tick fell due.
    let (_server, runs, h1, h2) = two_hosts(Duration::from_secs(6)).await?;

    // h1 runs its tick; its entry then names its next tick (without waiting for a
    // heartbeat), and it dies before that tick is due.
    runs.wait_for("h1's tick", |t| t.host == "h1").await?;
    let names_next = || async {
        h2.host.instances().await.is_ok_and(|l| {
            l.iter().filter(|i| i.host_id == h1.id()).any(|i| {
                i.services
                    .iter()
                    .any(|s| s.next_run.is_some_and(|n| n > chrono::Utc::now()))
            })
        })
    };
    koan_test_support::eventually("h1's entry to name its next tick", names_next).await?;
    die(h1);

    // h2 takes over after that tick fell due: it runs it once, then on schedule.
    runs.wait_for("h2's catch-up run", |t| {
        t.host == "h2" && t.reason == RunReason::Trigger
    })
    .await?;
    runs.wait_for("h2's scheduled tick", |t| {
        t.host == "h2" && t.reason == RunReason::Scheduled
    })
    .await?;
    let all = runs.all();
    let caught_up = all
        .iter()
        .filter(|t| t.reason == RunReason::Trigger)
        .count();
    assert_eq!(caught_up, 1, "one catch-up run; runs: {all:?}");
    Ok(())
}
