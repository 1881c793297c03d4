//! A poke of a cluster singleton (`trigger`) runs where its scheduled ticks do: on
//! the holder of its lease, whichever host it is made on. Before, each host ran a
//! trigger made on it itself, and a call from another process went to the least
//! loaded instance: a run beside the holder's tick, which the lease is there to
//! prevent (seen in a probe).

use std::time::Duration;

use koan::HostHandle;
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::ticks::{Label, TickLog};
use koan_test_support::{within, within_for};

koan_test_support::recording_service!(
    /// Ticks once an hour: every run the test sees is a poke.
    Poked,
    singleton,
    every = "1h",
    name = "Poked"
);

async fn member(url: &str, label: &str, log: &TickLog) -> anyhow::Result<Member> {
    Member::join(test_options(url), |b| {
        b.resource(Label(label.to_owned()))
            .resource(log.clone())
            .service::<Poked>()
    })
    .await
}

/// The label of the host that ran the last tick.
fn last_host(log: &TickLog) -> anyhow::Result<String> {
    log.all()
        .last()
        .map(|t| t.host.clone())
        .ok_or_else(|| anyhow::anyhow!("no tick ran"))
}

async fn stop(mut m: Member) -> anyhow::Result<()> {
    if let Some(node) = m.node.take() {
        within("detach", node.detach()).await?;
    }
    stop_host(m.host).await
}

async fn stop_host(h: HostHandle) -> anyhow::Result<()> {
    h.shutdown();
    within("a host to stop", h.wait()).await?.into_result()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_of_a_singleton_runs_on_the_holder_of_its_lease_wherever_it_is_made()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let log = TickLog::default();
    let mut members = Vec::new();
    for label in ["h1", "h2", "h3"] {
        members.push(member(&server.url(), label, &log).await?);
    }
    // A host that runs no service of its own: its triggers travel over NATS.
    let caller = Member::join(test_options(&server.url()), |b| b).await?;

    // Until one host holds the lease, a trigger is refused ("no host holds …").
    within_for(Duration::from_secs(15), "a holder of the lease", async {
        while caller.host.service("Poked").trigger().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?;
    let holder = last_host(&log)?;

    // Made on every host, typed and by name, and from the caller: each runs on the
    // holder.
    for m in &members {
        m.host.services::<Poked>().trigger().await?;
        m.host.service("Poked").trigger().await?;
        m.host
            .service("Poked")
            .action("trigger", ())
            .execute()
            .await?;
    }
    for _ in 0..3 {
        caller.host.service("Poked").trigger().await?;
    }
    let ticks = log.all();
    assert_eq!(ticks.len(), 1 + 3 * 3 + 3, "{ticks:?}");
    assert!(
        ticks.iter().all(|t| t.host == holder),
        "every poke ran on the holder {holder}: {ticks:?}"
    );

    // A poke sent straight to an instance that does not hold the lease (a caller
    // whose view is behind, say) is refused there, not run nor sent on.
    let client = async_nats::connect(server.url()).await?;
    let mut refused = 0;
    for m in &members {
        let id = m.nats.host_id();
        let before = log.len();
        let reply = within(
            "a direct trigger",
            client.request(format!("koan.host.{id}.svc.poked.bare.trigger"), "".into()),
        )
        .await??;
        let text = String::from_utf8_lossy(&reply.payload).into_owned();
        let body: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        if log.len() > before {
            // The holder ran it.
            assert_eq!(last_host(&log)?, holder, "{text}");
            continue;
        }
        assert_eq!(body["error"], "service_unavailable", "{text}");
        assert!(text.contains("does not hold its lease"), "{text}");
        refused += 1;
    }
    assert_eq!(refused, 2, "the two that do not hold the lease refuse");
    assert_eq!(log.all().len(), ticks.len() + 1, "{:?}", log.all());

    stop(caller).await?;
    for m in members {
        stop(m).await?;
    }
    Ok(())
}
