//! Where remote calls go when an instance leaves or does not answer: a call in
//! flight to an instance that dies fails as soon as the instance has left the
//! registry, instead of waiting for its timeout — or, for an action declared
//! idempotent, is sent again to an instance that remains (the load tests are in
//! `remote_load.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use koan::{HostHandle, error::ErrorKind};
use koan_nats::Node;
use koan_test_support::nats::{NatsServer, test_options};
use koan_test_support::{eventually, within};

mod common;

use common::routing::{Worker, client_with, join, sees_workers};

/// A host running a `Worker` whose `work` takes `delay`, and a client host that sees
/// it; each with its node.
struct OneWorker {
    worker: HostHandle,
    node: Node,
    calls: Arc<AtomicU32>,
    client: HostHandle,
    _client_node: Node,
}

impl OneWorker {
    async fn join(server: &NatsServer, delay: Duration) -> anyhow::Result<OneWorker> {
        let (w, calls) = Worker::new(delay);
        let (worker, node) = join(&server.url(), Some(w)).await?;
        let (client, _client_node) = join(&server.url(), None).await?;
        sees_workers(&client, 1).await?;
        Ok(OneWorker {
            worker,
            node,
            calls,
            client,
            _client_node,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_instance_that_dies_fails_once_it_leaves_the_registry() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let stuck = OneWorker::join(&server, Duration::from_secs(3600)).await?;
    let (worker, node, client) = (stuck.worker, stuck.node, stuck.client);

    let call = client
        .service("Worker")
        .action("work", ())
        .timeout(Duration::from_secs(3600))
        .execute();
    let crash = async {
        eventually("the call to be running", || async {
            worker.status("Worker").is_ok_and(|s| s.in_flight == 1)
        })
        .await?;
        // A crash as the cluster sees it: no more heartbeats, no answer, no goodbye.
        drop(node);
        worker.shutdown();
        anyhow::Ok(())
    };
    let (out, crashed) = within("the call to fail", async { tokio::join!(call, crash) }).await?;
    crashed?;
    let e = out.expect_err("its instance is gone");
    assert_eq!(e.kind(), ErrorKind::ServiceUnavailable, "{e}");
    assert!(e.message().contains("left the cluster"), "{e}");
    assert!(e.message().contains("outcome is unknown"), "{e}");
    Ok(())
}

/// A call to an instance that stays in the cluster but does not answer ends at the
/// caller's deadline as a timeout, not as the instance's departure: the one timer
/// a routed call keeps checks the instance at each heartbeat (two here) and still
/// ends the call when its time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_gets_no_answer_times_out_at_the_callers_deadline() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (w, _calls) = Worker::new(Duration::from_secs(3600));
    let (worker, _node) = join(&server.url(), Some(w)).await?;
    // The caller's own default: no timeout is sent with the call, so the instance
    // runs it without one and never answers.
    let mut opts = test_options(&server.url());
    opts.default_request_timeout = opts.heartbeat * 5 / 2;
    let timeout = opts.default_request_timeout;
    let (_nats, client) = client_with(opts).await?;
    sees_workers(&client, 1).await?;

    let out = within(
        "the call to time out",
        client.service("Worker").action("work", ()).execute(),
    )
    .await?;
    let e = out.expect_err("no answer within the deadline");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.message().contains("no answer over NATS by then"), "{e}");
    // The timeout as the caller set it, not what was left of it when sent.
    let said = format!("within its timeout of {timeout:?} (");
    assert!(e.message().contains(&said), "{e}");
    // The instance never left: its run is still going.
    assert_eq!(worker.status("Worker")?.in_flight, 1);
    Ok(())
}

/// An instance the registry still lists but that no longer (or not yet) listens on
/// its own subject — a process killed a moment ago, whose entry lives on for three
/// heartbeats — answers "no responders": nobody received the call, so it goes to
/// the service's queue group instead of failing while a healthy instance is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_routed_to_an_instance_that_does_not_listen_goes_to_the_others() -> anyhow::Result<()>
{
    const CALLS: u32 = 20;
    let server = NatsServer::start()?;
    let healthy = OneWorker::join(&server, Duration::from_millis(1)).await?;
    let (worker, calls, client) = (healthy.worker, healthy.calls, healthy.client);

    // A ghost: the healthy worker's entry under another id, kept fresh, with no
    // subscription behind it. Both look idle, so each call picks either.
    let raw = async_nats::connect(server.url()).await?;
    let registry = async_nats::jetstream::new(raw)
        .get_key_value("koan_registry")
        .await?;
    let statuses = worker.statuses();
    let announce = tokio::spawn(async move {
        loop {
            let ghost = koan::transport::Instance::new("ghost-00000000", statuses.clone());
            let body = serde_json::to_vec(&ghost).unwrap_or_default();
            let _ = registry.put("ghost-00000000", body.into()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    sees_workers(&client, 2).await?;

    for n in 0..CALLS {
        let out = within(
            "a call",
            client.service("Worker").action("work", ()).execute(),
        )
        .await?;
        out.map_err(|e| anyhow::anyhow!("call {n} failed: {e}"))?;
    }
    announce.abort();
    assert_eq!(calls.load(Ordering::SeqCst), CALLS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_idempotent_action_is_sent_again_when_its_instance_dies() -> anyhow::Result<()>
{
    let server = NatsServer::start()?;
    let OneWorker {
        worker,
        node,
        calls: stuck_calls,
        client,
        ..
    } = OneWorker::join(&server, Duration::from_secs(3600)).await?;
    let (healthy, healthy_calls) = Worker::new(Duration::from_millis(1));

    // Boxed: with a host started inside, the joined futures are too large for a
    // test thread's stack in a debug build.
    let call = Box::pin(
        client
            .service("Worker")
            .action("Fetch", ())
            .timeout(Duration::from_secs(3600))
            .execute(),
    );
    let crash = Box::pin(async {
        eventually("the call to be running on the first instance", || async {
            worker.status("Worker").is_ok_and(|s| s.in_flight == 1)
        })
        .await?;
        // A second instance joins; then the first crashes as the cluster sees it.
        let (second, second_node) = join(&server.url(), Some(healthy)).await?;
        sees_workers(&client, 2).await?;
        drop(node);
        worker.shutdown();
        anyhow::Ok((second, second_node))
    });
    let (out, crashed) = within("the call to be answered", async {
        tokio::join!(call, crash)
    })
    .await?;
    let _second = crashed?;
    out.map_err(|e| {
        anyhow::anyhow!("the call failed instead of going to the other instance: {e}")
    })?;
    assert_eq!(
        healthy_calls.load(Ordering::SeqCst),
        1,
        "run once on the instance that remains"
    );
    assert_eq!(stuck_calls.load(Ordering::SeqCst), 0);
    let info = client.service("Worker").info().await?;
    assert!(info.action("fetch").is_some_and(|a| a.idempotent));
    assert!(info.action("work").is_some_and(|a| !a.idempotent));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_chosen_instance_gets_a_bare_reply() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let one = OneWorker::join(&server, Duration::ZERO).await?;
    // A client without koan watching the call and its reply go by.
    let spy = within("a spy", async_nats::connect(server.url())).await??;
    let mut calls = spy.subscribe("koan.host.*.svc.worker.>").await?;
    let mut replies = spy.subscribe("_INBOX.>").await?;
    spy.flush().await?;

    // A call the client sends before it can choose the worker (no serving instance
    // in its view) goes to the queue group, which the spy does not watch: calls
    // until the spy sees one.
    let call = within("a call sent to the chosen instance", async {
        loop {
            let out = one
                .client
                .service("Worker")
                .action("work", ())
                .correlation_id("c-bare")
                .execute()
                .await?;
            assert_eq!(out.correlation_id(), "c-bare");
            if let Ok(seen) = tokio::time::timeout(Duration::from_millis(50), calls.next()).await {
                return seen.ok_or_else(|| anyhow::anyhow!("the spy's subscription ended"));
            }
        }
    })
    .await??;
    // The call's id, one token, leads its body: the call has no header, and its
    // subject is every such call's.
    assert!(
        call.subject.ends_with(".svc.worker.lead.work"),
        "sent to {}",
        call.subject
    );
    assert_eq!(&call.payload[..], b"c-bare\nnull");
    assert!(call.headers.is_none(), "headers: {:?}", call.headers);
    // Other requests (the registry's JetStream calls) are answered on inboxes too.
    let inbox = call
        .reply
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a call without a reply subject"))?;
    let reply = within("the reply", async {
        while let Some(m) = replies.next().await {
            if m.subject == inbox {
                return Some(m);
            }
        }
        None
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("no reply seen"))?;
    assert!(
        reply
            .headers
            .as_ref()
            .is_none_or(async_nats::HeaderMap::is_empty),
        "a bare reply: {:?}",
        reply.headers
    );
    assert_eq!(&reply.payload[..], br#"{"ok":null}"#);

    // An id that is not one token goes in its header, and comes back all the same.
    let odd = "c bare/2.0";
    let out = within(
        "a call with an odd id",
        one.client
            .service("Worker")
            .action("work", ())
            .correlation_id(odd)
            .execute(),
    )
    .await??;
    assert_eq!(out.correlation_id(), odd);
    let call = within("the call seen", calls.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the spy's subscription ended"))?;
    assert!(
        call.subject.ends_with(".svc.worker.bare.work"),
        "sent to {}",
        call.subject
    );
    let id = call
        .headers
        .as_ref()
        .and_then(|h| h.get("Koan-Correlation-Id"))
        .map(|v| v.as_str().to_owned());
    assert_eq!(id.as_deref(), Some(odd), "the call gives its id");
    assert!(one.calls.load(Ordering::SeqCst) >= 2);
    Ok(())
}

/// A rolling upgrade: an instance of the previous koan listens on the queue group
/// and on its `bare` subject, not on `lead`. Chosen, it answers "no responders" on
/// `lead`, and the call goes to the queue group: every call is answered, under its
/// own correlation id, whichever instance serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_of_the_previous_koan_serves_calls_through_the_queue_group()
-> anyhow::Result<()> {
    const CALLS: u32 = 20;
    let server = NatsServer::start()?;
    let new = OneWorker::join(&server, Duration::ZERO).await?;
    let previous = "prev-00000000";

    // The previous koan's instance: its registry entry, kept fresh, and its two
    // subscriptions, answering as it did (a bare reply on `bare`, a full one with
    // the caller's id through the queue group), counting what each received.
    let raw = within("connect", async_nats::connect(server.url())).await??;
    let mut bare = raw
        .subscribe(format!("koan.host.{previous}.svc.worker.bare.>"))
        .await?;
    let mut queued = raw
        .queue_subscribe("koan.svc.worker.act.*", "koan-worker".to_owned())
        .await?;
    raw.flush().await?;
    let (on_bare, on_queue) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (nb, nq, answerer) = (Arc::clone(&on_bare), Arc::clone(&on_queue), raw.clone());
    let serve = tokio::spawn(async move {
        loop {
            let (msg, full) = tokio::select! {
                Some(m) = bare.next() => { nb.fetch_add(1, Ordering::SeqCst); (m, false) }
                Some(m) = queued.next() => { nq.fetch_add(1, Ordering::SeqCst); (m, true) }
                else => return,
            };
            let Some(to) = msg.reply else { continue };
            let body = bytes::Bytes::from_static(br#"{"ok":null}"#);
            let id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Koan-Correlation-Id"));
            let _ = match (full, id) {
                (true, Some(id)) => {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Koan-Wire", "1");
                    h.insert("Koan-Correlation-Id", id.as_str());
                    answerer.publish_with_headers(to, h, body).await
                }
                _ => answerer.publish(to, body).await,
            };
        }
    });
    let registry = async_nats::jetstream::new(raw)
        .get_key_value("koan_registry")
        .await?;
    let statuses = new.worker.statuses();
    let announce = tokio::spawn(async move {
        loop {
            let entry = koan::transport::Instance::new(previous, statuses.clone());
            let body = serde_json::to_vec(&entry).unwrap_or_default();
            let _ = registry.put(previous, body.into()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    sees_workers(&new.client, 2).await?;

    for n in 0..CALLS {
        let id = format!("up-{n}");
        let out = within(
            "a call",
            new.client
                .service("Worker")
                .action("work", ())
                .correlation_id(&id)
                .execute(),
        )
        .await?
        .map_err(|e| anyhow::anyhow!("call {n} failed: {e}"))?;
        assert_eq!(out.correlation_id(), id);
    }
    announce.abort();
    serve.abort();
    let (served_new, served_previous) = (
        new.calls.load(Ordering::SeqCst),
        on_queue.load(Ordering::SeqCst),
    );
    assert_eq!(served_new + served_previous, CALLS, "each call served once");
    // The new client sends a plain id on `lead`, never on the old `bare` subject.
    assert_eq!(on_bare.load(Ordering::SeqCst), 0);
    Ok(())
}
