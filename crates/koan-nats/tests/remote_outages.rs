//! Remote calls while this host's link to the cluster is down: refused at once,
//! saying so, and never sent later behind the caller's back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use koan::error::ErrorKind;
use koan::health::HealthStatus;
use koan::transport::HostLink as _;
use koan_nats::ConnectionState;
use koan_test_support::nats::{NatsServer, test_options};
use koan_test_support::{eventually, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::routing::{Worker, client_with, join, sees_workers};

/// A host running `Worker`, and a client host attached with `opts` that sees it.
struct Joined {
    /// How many times `Worker` ran.
    calls: Arc<AtomicU32>,
    nats: koan_nats::NatsTransport,
    client: koan::HostHandle,
    /// The worker's host and node, and the client's node, kept for the test.
    _keep: (koan::HostHandle, koan_nats::Node, koan_nats::Node),
}

async fn worker_and_client(
    server: &NatsServer,
    opts: koan_nats::NatsOptions,
) -> anyhow::Result<Joined> {
    let (w, calls) = Worker::new(Duration::ZERO);
    let (worker, worker_node) = join(&server.url(), Some(w)).await?;
    let (nats, client) = client_with(opts).await?;
    let client_node = within("attach", nats.attach(&client)).await??;
    sees_workers(&client, 1).await?;
    Ok(Joined {
        calls,
        nats,
        client,
        _keep: (worker, worker_node, client_node),
    })
}

/// Before, such a call waited for its whole timeout (60 s by default), answered
/// "no answer within …", and the client sent it once the server was back: the
/// action ran after its caller had been told it got no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_disconnected_is_refused_at_once_and_never_sent() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.default_request_timeout = Duration::from_secs(3600);
    let Joined {
        calls,
        nats,
        client,
        _keep,
    } = worker_and_client(&server, opts).await?;

    server.kill();
    eventually("the client to see the link down", || async {
        nats.connection_state() != ConnectionState::Connected
    })
    .await?;
    let call = client.service("Worker").action("work", ()).execute();
    let e = within("the refusal", call)
        .await?
        .expect_err("not connected");
    assert_eq!(e.kind(), ErrorKind::ServiceUnavailable, "{e}");
    assert!(e.message().contains("not connected to NATS"), "{e}");
    assert!(e.message().contains("nothing ran"), "{e}");
    let query = client.service("Worker").status().await;
    assert!(query.is_err_and(|e| e.message().contains("not connected to NATS")));

    server.restart()?;
    eventually("the client to be back", || async {
        nats.connection_state() == ConnectionState::Connected
    })
    .await?;
    sees_workers(&client, 1).await?;
    // A call now runs; the refused one, had it been held, would have gone first.
    within(
        "a call after the outage",
        client.service("Worker").action("work", ()).execute(),
    )
    .await??;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the refused call ran");
    Ok(())
}

/// A durable enqueue, and a job's read, cancel or retry, made while disconnected:
/// refused at once, nothing sent. Before, the enqueue waited 15 s, answered
/// "outcome unknown", and the client published it once the broker was back: it
/// ran minutes later (found by a probe); the reads waited 10 s each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_or_read_while_disconnected_is_refused_at_once() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let Joined {
        calls,
        nats,
        client,
        _keep,
    } = worker_and_client(&server, test_options(&server.url())).await?;
    // A job this host accepted, not awaited here: it remembers it `queued`.
    let ran = within(
        "an enqueue",
        client.service("Worker").action("work", ()).enqueue(),
    )
    .await??
    .id()
    .to_owned();
    eventually("it ran", || async { calls.load(Ordering::SeqCst) == 1 }).await?;

    server.kill();
    eventually("the client to see the link down", || async {
        nats.connection_state() != ConnectionState::Connected
    })
    .await?;
    // What it remembers is not shown as the job's state (it had succeeded).
    let e = within("a read", client.jobs().get(&ran))
        .await?
        .expect_err("cannot be asked");
    assert!(e.message().contains("cannot tell its state now"), "{e}");
    let enqueue = client.service("Worker").action("work", ()).enqueue();
    let e = within("the refusal", enqueue)
        .await?
        .expect_err("not connected");
    assert_eq!(e.kind(), ErrorKind::ServiceUnavailable, "{e}");
    assert!(e.message().contains("nothing was sent"), "{e}");
    let id = koan::job::new_job_id();
    for e in [
        within("a read", client.jobs().get(&id)).await?.err(),
        within("a cancel", client.jobs().cancel(&id)).await?.err(),
        within("a retry", client.jobs().retry(&id)).await?.err(),
    ] {
        let e = e.expect("refused");
        assert!(e.message().contains("not connected to NATS"), "{e}");
    }

    server.restart()?;
    eventually("the client to be back", || async {
        nats.connection_state() == ConnectionState::Connected
    })
    .await?;
    sees_workers(&client, 1).await?;
    // Nothing was held for the reconnect: the work stream holds no job, and none ran.
    let js = async_nats::jetstream::new(nats.client().clone());
    let held = within("the work stream's count", async {
        loop {
            if let Ok(mut stream) = js.get_stream("KOAN_WORK").await
                && let Ok(info) = stream.info().await
            {
                return info.state.messages;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?;
    assert_eq!(held, 0, "the refused enqueue was sent after all");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the refused job ran");
    Ok(())
}

/// A TCP relay to `to` that can swallow everything both ways while keeping both
/// connections open: a link that drops packets without closing (a firewall, a
/// partition), which the client cannot tell from a quiet one for a while.
async fn relay(to: String) -> anyhow::Result<(String, Arc<AtomicBool>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("nats://{}", listener.local_addr()?);
    let cut = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cut);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&to).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pipe(ri, wo, Arc::clone(&flag)));
            tokio::spawn(pipe(ro, wi, Arc::clone(&flag)));
        }
    });
    Ok((url, cut))
}

/// Copies `from` to `to`, dropping what comes while `cut` is set.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        if !cut.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A host whose link drops everything while its connection stays up says so in
/// its health (degraded: the cluster sees it as gone) and marks its listing stale,
/// though the client still counts itself connected. Before, it said "connected to
/// NATS" and `pass` for as long as the link stayed up (over 50 s in a probe) while
/// every other instance had dropped it and its singleton lease had moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_heartbeats_do_not_come_back_says_so_in_its_health() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (url, cut) = relay(server.url().trim_start_matches("nats://").to_owned()).await?;
    let (host, _node) = join(&url, None).await?;
    eventually("the host to see itself in the registry", || async {
        host.instances()
            .await
            .is_ok_and(|list| list.iter().any(|i| !i.stale))
    })
    .await?;
    assert_eq!(host.health().await.status, HealthStatus::Healthy);

    cut.store(true, Ordering::SeqCst);
    eventually(
        "the host's health to say its heartbeats do not come back",
        || async {
            let h = host.health().await;
            h.status == HealthStatus::Degraded
                && h.transport
                    .as_ref()
                    .and_then(|t| t.description.as_deref())
                    .is_some_and(|d| d.contains("has not come back"))
        },
    )
    .await?;
    let list = host.instances().await?;
    assert!(list.iter().all(|i| i.stale), "{list:?}");
    Ok(())
}

/// A query (status, health, info) goes to an instance the registry says is live,
/// not to the service's queue group, where a member that takes queries and never
/// answers (as a frozen process does) got about half of them: each failed after
/// 5 s, for as long as it stayed so (seen by a probe with one of two instances
/// SIGSTOPped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_go_to_a_live_instance_not_to_a_silent_queue_member() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (w, _calls) = Worker::new(Duration::ZERO);
    let (_worker, _worker_node) = join(&server.url(), Some(w)).await?;
    let (client, _client_node) = join(&server.url(), None).await?;
    sees_workers(&client, 1).await?;
    // A member of the queue group that takes every query it is given and answers none.
    let silent = async_nats::connect(server.url()).await?;
    let _taken = silent
        .queue_subscribe("koan.svc.worker.query.*", "koan-worker".to_owned())
        .await?;
    silent.flush().await?;
    for _ in 0..12 {
        let status = within("a status query", client.service("Worker").status()).await??;
        assert_eq!(status.name, "Worker");
    }
    Ok(())
}

/// An event from NATS is delivered only when its body names the service and event
/// its subject does, of a service the cluster announced, that declares it: a publisher's made-up
/// names were delivered and counted as given (a probe made 15,000 metric series on
/// every host with 3,000 such events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_body_and_subject_disagree_or_of_no_service_is_refused() -> anyhow::Result<()>
{
    let server = NatsServer::start()?;
    let (w, _calls) = Worker::new(Duration::ZERO);
    let (_worker, _worker_node) = join(&server.url(), Some(w)).await?;
    let (client, _client_node) = join(&server.url(), None).await?;
    sees_workers(&client, 1).await?;
    let raw = async_nats::connect(server.url()).await?;
    let with_id = |service: &str, event: &str, id: Option<&str>| {
        serde_json::json!({
            "service": service, "event": event, "correlation_id": id,
            "time": "2026-12-07T00:00:00Z", "seq": 1, "payload": {"n": 1}
        })
        .to_string()
    };
    let event = |service: &str, event: &str| with_id(service, event, None);
    let escaped = "\u{1b}[2J".repeat(10);
    for (subject, body) in [
        // The body names another event than its subject.
        ("koan.evt.worker.done", event("Elsewhere", "Spoofed")),
        // A service no instance announced.
        ("koan.evt.nosuch.done", event("NoSuch", "Done")),
        // An event its service does not declare (50,000 such names grew every
        // host's metrics to 22 MB; found by a probe).
        ("koan.evt.worker.madeup", event("Worker", "MadeUp")),
        // A correlation id a call could not carry (terminal escapes, 60 KB).
        (
            "koan.evt.worker.done",
            with_id("Worker", "Done", Some(&escaped)),
        ),
        (
            "koan.evt.worker.done",
            with_id("Worker", "Done", Some(&"x".repeat(60_000))),
        ),
        // The one that passes, last: when it is in, the others were read before it.
        ("koan.evt.worker.done", event("Worker", "Done")),
    ] {
        raw.publish(subject, body.into()).await?;
    }
    raw.flush().await?;
    eventually("the event of Worker to be delivered", || async {
        client
            .recent_events()
            .iter()
            .any(|e| e.service() == "Worker")
    })
    .await?;
    let seen: Vec<String> = client
        .recent_events()
        .iter()
        .map(|e| format!("{}.{}", e.service(), e.name()))
        .collect();
    assert_eq!(seen, ["Worker.Done"]);
    Ok(())
}

/// A service that declares no events takes any name, in its process and in the
/// others: its events reach other hosts (a review found them dropped once hosts
/// announced their events), up to 256 names of it a host delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_service_that_declares_none_reach_other_hosts() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (client, _client_node) = join(&server.url(), None).await?;
    let sender = koan_test_support::nats::Member::join(
        koan_test_support::nats::test_options(&server.url()),
        |b| b.instance(Plain),
    )
    .await?;
    koan_test_support::nats::announced(&client, "Plain", 1).await?;
    sender.host.emit("Plain", "Pinged", 1u32).await?;
    eventually("the event of Plain to be delivered", || async {
        client.recent_events().iter().any(|e| e.name() == "Pinged")
    })
    .await?;
    sender.stop().await
}

/// Declares no events.
struct Plain;

impl koan::Service for Plain {
    type Kind = koan::Background;
    fn options() -> koan::ServiceOptions {
        koan::ServiceOptions::named("Plain")
    }
}

impl koan::BackgroundService for Plain {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A call when the registry names no live instance of its service is not sent to
/// the queue group, where a member that takes calls and answers none (a process
/// frozen by SIGSTOP keeps its subscription) took it: the caller waited its whole
/// timeout, and the frozen process ran the call once resumed (found by a probe).
/// It is refused at once, nothing sent; and one for a service no instance ever
/// announced is `unknown_service`, not "unavailable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_no_live_instance_is_refused_at_once_and_not_sent() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (w, _calls) = Worker::new(Duration::ZERO);
    let (worker, worker_node) = join(&server.url(), Some(w)).await?;
    let (client, _client_node) = join(&server.url(), None).await?;
    sees_workers(&client, 1).await?;
    let silent = async_nats::connect(server.url()).await?;
    let mut taken = silent
        .queue_subscribe("koan.svc.worker.act.*", "koan-worker".to_owned())
        .await?;
    silent.flush().await?;
    within("the worker to leave", worker_node.detach()).await?;
    worker.shutdown();
    sees_workers(&client, 0).await?;

    let call = client
        .service("Worker")
        .action("work", ())
        .timeout(Duration::from_secs(3600))
        .execute();
    let e = within("the call", call)
        .await?
        .expect_err("no live instance");
    assert_eq!(e.kind(), ErrorKind::ServiceUnavailable, "{e}");
    assert!(
        e.message()
            .contains("not sent, no instance of `Worker` was heard from")
            && e.message().contains("nothing ran"),
        "{e}"
    );
    silent.flush().await?;
    let sent = futures_util::FutureExt::now_or_never(futures_util::StreamExt::next(&mut taken));
    assert!(sent.is_none(), "nothing reached the queue group");

    let e = within(
        "a call",
        client.service("Wroker").action("work", ()).execute(),
    )
    .await?
    .expect_err("never announced");
    assert_eq!(e.kind(), ErrorKind::UnknownService, "{e}");
    assert!(
        e.message()
            .contains("no instance of the cluster has announced a service `Wroker`"),
        "{e}"
    );
    Ok(())
}

/// A broker back without its streams (its store wiped): each host makes them again
/// when it reconnects, and jobs are taken and run. Before, every enqueue answered
/// "no stream found" until every host restarted (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_back_without_its_streams_has_them_made_again() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let Joined {
        calls,
        nats,
        client,
        _keep,
    } = worker_and_client(&server, test_options(&server.url())).await?;

    server.restart_empty()?;
    eventually("the client to be back", || async {
        nats.connection_state() == ConnectionState::Connected
    })
    .await?;
    sees_workers(&client, 1).await?;
    let ticket = within("an enqueue on the new broker", async {
        loop {
            match client.service("Worker").action("work", ()).enqueue().await {
                Ok(t) => return t,
                // Until the streams are made again.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await?;
    within("its outcome", ticket.outcome()).await??;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    Ok(())
}
