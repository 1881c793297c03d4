//! Cluster singletons: three hosts run the same `singleton` periodic service; its
//! ticks run on one host at a time, and another host takes over when the holder of
//! the lease dies.

use std::time::Duration;

use koan::HostHandle;
use koan_nats::{NatsTransport, Node};
use koan_test_support::nats::{NatsServer, test_options};
use koan_test_support::ticks::{Label, TickLog, TickRecord};
use koan_test_support::{within, within_for};

koan_test_support::recording_service!(
    Ticker,
    singleton,
    every = "1s",
    description = "Runs on one host of the cluster"
);

struct Member {
    label: String,
    host: HostHandle,
    node: Option<Node>,
}

async fn join(url: &str, label: &str, log: &TickLog) -> anyhow::Result<Member> {
    let m = koan_test_support::nats::Member::join(test_options(url), |b| {
        b.resource(Label(label.to_owned()))
            .resource(log.clone())
            .service::<Ticker>()
    })
    .await?;
    Ok(Member {
        label: label.to_owned(),
        host: m.host,
        node: m.node,
    })
}

/// No wall-clock second in which two hosts ran the tick.
fn assert_one_host_per_period(ticks: &[TickRecord]) {
    for t in ticks {
        let others: Vec<_> = ticks
            .iter()
            .filter(|o| o.second == t.second && o.host != t.host)
            .collect();
        assert!(
            others.is_empty(),
            "second {} was run by {} and by {others:?}; all ticks: {ticks:?}",
            t.second,
            t.host
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_runs_the_singleton_and_another_takes_over_when_it_dies() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let log = TickLog::default();
    let mut members = Vec::new();
    for label in ["h1", "h2", "h3"] {
        members.push(join(&server.url(), label, &log).await?);
    }
    let info = members[0].host.services::<Ticker>().info().await?;
    assert!(info.singleton);

    // About five periods: one host runs every tick.
    log.wait_len(5).await?;
    let ticks = log.all();
    assert_one_host_per_period(&ticks);
    let leader = ticks[0].host.clone();
    assert!(
        ticks.iter().all(|t| t.host == leader),
        "only the leader ticks: {ticks:?}"
    );

    // The leader dies: no detach, so its lease is not given up; it lapses.
    let idx = members
        .iter()
        .position(|m| m.label == leader)
        .expect("the leader is a member");
    let mut dead = members.remove(idx);
    drop(dead.node.take());
    dead.host.shutdown();
    within("the leader to stop", dead.host.wait())
        .await?
        .into_result()?;
    let at_death = log.len();

    // Another host takes over within a lease (1.5 s) and a period, plus slack.
    within_for(
        Duration::from_secs(15),
        "another host to take over",
        async {
            loop {
                if log.all()[at_death..].iter().any(|t| t.host != leader) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await?;
    // And keeps it: a few more periods, all on one surviving host.
    let first_new = log.all()[at_death..]
        .iter()
        .position(|t| t.host != leader)
        .map(|p| p + at_death)
        .expect("a tick of the new leader");
    log.wait_len(first_new + 3).await?;
    let ticks = log.all();
    assert_one_host_per_period(&ticks);
    let successor = ticks[first_new].host.clone();
    assert!(
        ticks[first_new..].iter().all(|t| t.host == successor),
        "one successor runs every tick after the takeover: {:?}",
        &ticks[first_new..]
    );
    assert!(
        ticks[at_death..].iter().all(|t| t.host != leader),
        "the dead leader ran nothing after it stopped: {:?}",
        &ticks[at_death..]
    );

    for mut m in members {
        if let Some(node) = m.node.take() {
            within("detach", node.detach()).await?;
        }
        m.host.shutdown();
        within("a host to stop", m.host.wait())
            .await?
            .into_result()?;
    }
    Ok(())
}

koan_test_support::recording_service!(
    /// A singleton that also runs at startup.
    EagerTicker,
    singleton,
    every = "1s",
    run_on_startup,
    name = "Eager"
);

/// A started host running `EagerTicker`, not yet attached.
async fn eager_host(
    url: &str,
    label: &str,
    log: &TickLog,
) -> anyhow::Result<(NatsTransport, HostHandle)> {
    let nats = within("connect", NatsTransport::connect(test_options(url))).await??;
    let host = koan::Host::builder()
        .shutdown_grace(Duration::from_secs(5))
        .resource(Label(label.to_owned()))
        .resource(log.clone())
        .service::<EagerTicker>()
        .transport(nats.clone().into_transport())
        .build()?
        .start();
    within("startup", host.started()).await??;
    Ok((nats, host))
}

fn ticks_of(log: &TickLog, host: &str) -> usize {
    log.all().iter().filter(|t| t.host == host).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_runs_only_under_a_lease_and_stops_when_its_node_is_dropped()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let log = TickLog::default();

    // h1 leads.
    let (n1, h1) = eager_host(&server.url(), "h1", &log).await?;
    let node1 = within("attach", n1.attach(&h1)).await??;
    log.wait_len(2).await?;
    assert_eq!(ticks_of(&log, "h1"), log.len());

    // h2 starts (its first tick is due at once) and runs nothing, attached or not,
    // while h1 holds the lease.
    let (n2, h2) = eager_host(&server.url(), "h2", &log).await?;
    let mark = log.len();
    log.wait_len(mark + 1).await?;
    let node2 = within("attach", n2.attach(&h2)).await??;
    let mark = log.len();
    log.wait_len(mark + 2).await?;
    assert_eq!(
        ticks_of(&log, "h2"),
        0,
        "h2 holds no lease, so runs no tick: {:?}",
        log.all()
    );

    // h1's node goes away while its host runs on: h1 stops ticking, h2 takes over.
    drop(node1);
    let at_drop = log.len();
    within_for(Duration::from_secs(15), "h2 to take over", async {
        while !log.all()[at_drop..].iter().any(|t| t.host == "h2") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    let first_h2 = log.all()[at_drop..]
        .iter()
        .position(|t| t.host == "h2")
        .map(|p| p + at_drop)
        .expect("a tick of h2");
    log.wait_len(first_h2 + 3).await?;
    let ticks = log.all();
    assert_one_host_per_period(&ticks);
    assert!(
        ticks[first_h2..].iter().all(|t| t.host == "h2"),
        "h1 runs no tick once h2 leads: {:?}",
        &ticks[first_h2..]
    );

    within("detach", node2.detach()).await?;
    for h in [h1, h2] {
        h.shutdown();
        within("a host to stop", h.wait()).await?.into_result()?;
    }
    Ok(())
}
