//! The demo's OutboxProcessor in an in-process host on a temporary SQLite file, on a
//! real clock with bounded waits: it delivers to the `delivered_messages` table, and a
//! refusing webhook leaves messages pending with `Outbox.Failed`; over a real
//! `nats-server`, it publishes to `demo.outbox.<topic>`, and MessagingLifecycle turns
//! not-ready when the server dies and ready again when it comes back.

#[path = "support/in_process.rs"]
mod in_process;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use in_process::*;
use koan::well_known::events::{messaging, outbox};
use koan::{HostHandle, health::HealthStatus};
use koan_demo::services::messaging::{MessagingFailed, MessagingReady};
use koan_demo::services::outbox::{OutboxFailed, OutboxMessage, OutboxProcessed};
use koan_test_support::nats::{NatsServer, test_options};
use koan_test_support::{TempDir, wait_for, within};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Pending outbox rows.
fn pending(path: &Path) -> anyhow::Result<i64> {
    Ok(query(
        path,
        "SELECT COUNT(*) FROM outbox WHERE processed_at IS NULL",
        [],
    )?
    .unwrap_or(0))
}

fn put_outbox(path: &Path, topic: &str, payload: Value) -> anyhow::Result<i64> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute(
        "INSERT INTO outbox (topic, payload, created_at) VALUES (?1, ?2, 0)",
        (topic, payload.to_string()),
    )?;
    Ok(conn.last_insert_rowid())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_delivers_to_the_table_locally() -> anyhow::Result<()> {
    let (_dir, path, host) = started(
        "koan-demo-outbox",
        "[background_services.services.OutboxProcessor.settings]\npoll_interval_ms = 50\n",
    )
    .await?;
    let (_s, mut processed) =
        subscribe::<OutboxProcessed>(&host, "OutboxProcessor", outbox::PROCESSED).await?;
    let a = put_outbox(&path, "test.a", json!({ "n": 1 }))?;
    let b = put_outbox(&path, "test.b", json!({ "n": 2 }))?;
    next_matching("a processed batch", &mut processed, |e| {
        e.processed_count >= 1
    })
    .await?;
    wait_for("both messages in delivered_messages", async || {
        let n: Option<i64> = query(
            &path,
            "SELECT COUNT(*) FROM delivered_messages WHERE outbox_id IN (?1, ?2)",
            [a, b],
        )?;
        Ok((n == Some(2)).then_some(()))
    })
    .await?;
    let payload: Option<String> = query(
        &path,
        "SELECT payload FROM delivered_messages WHERE outbox_id = ?1 AND topic = 'test.b'",
        [b],
    )?;
    assert_eq!(payload.as_deref(), Some(r#"{"n":2}"#));
    let marked: Option<i64> = query(
        &path,
        "SELECT COUNT(*) FROM outbox WHERE id IN (?1, ?2) AND processed_at IS NOT NULL",
        [a, b],
    )?;
    assert_eq!(marked, Some(2));
    stop(host).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_webhook_leaves_the_message_pending() -> anyhow::Result<()> {
    let closed = closed_url()?;
    let settings = format!(
        "[background_services.services.OutboxProcessor.settings]\n\
         webhook_url = \"{closed}\"\npoll_interval_ms = 50\nretry_delay_ms = 100\ntimeout_ms = 2000\n"
    );
    let (_dir, path, host) = started("koan-demo-webhook", &settings).await?;
    let (_s, mut failed) =
        subscribe::<OutboxFailed>(&host, "OutboxProcessor", outbox::FAILED).await?;
    let id = put_outbox(&path, "test.refused", json!({ "n": 1 }))?;
    let e = next_matching("the outbox to report the refusal", &mut failed, |e| {
        e.message_id == Some(id)
    })
    .await?;
    assert!(e.error.contains(&closed), "unclear error: {}", e.error);
    assert!(
        pending(&path)? >= 1,
        "the refused message was marked processed"
    );
    let delivered: Option<i64> = query(&path, "SELECT COUNT(*) FROM delivered_messages", [])?;
    assert_eq!(delivered, Some(0));
    let health = within("health", host.service("OutboxProcessor").health()).await??;
    assert_eq!(health.report.status, HealthStatus::Degraded, "{health:?}");
    stop(host).await
}

/// A webhook on a local port that answers 413 to a body over `max` bytes and 200
/// to others (one request a connection): its URL.
async fn webhook_taking_up_to(max: usize) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 64 * 1024];
                // The head, then as much body as it announces.
                let (head_end, length) = loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while got.len() < head_end + length {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let status = if length > max {
                    "413 Payload Too Large"
                } else {
                    "200 OK"
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok(url)
}

/// A message the webhook refuses as too large (413) is set aside, and the ones
/// after it go on: it was sent again for ever, holding up every message after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_webhook_finds_too_large_is_set_aside() -> anyhow::Result<()> {
    let url = webhook_taking_up_to(10_000).await?;
    let settings = format!(
        "[background_services.services.OutboxProcessor.settings]\n\
         webhook_url = \"{url}\"\npoll_interval_ms = 50\nretry_delay_ms = 100\ntimeout_ms = 5000\n"
    );
    let (_dir, path, host) = started("koan-demo-webhook-413", &settings).await?;
    let big = put_outbox(&path, "test.big", json!({ "text": "x".repeat(20_000) }))?;
    put_outbox(&path, "test.after", json!({ "n": 1 }))?;
    wait_for("both rows to be processed", async || {
        Ok((pending(&path)? == 0).then_some(()))
    })
    .await?;
    let error: Option<String> = query(
        &path,
        "SELECT error FROM outbox_set_aside WHERE outbox_id = ?1",
        [big],
    )?;
    let error = error.ok_or_else(|| anyhow::anyhow!("the big message was not set aside"))?;
    assert!(error.contains("413"), "{error}");
    let aside: Option<i64> = query(&path, "SELECT COUNT(*) FROM outbox_set_aside", [])?;
    assert_eq!(aside, Some(1), "only the big one");
    stop(host).await
}

/// Whether the host answers ready (`/health/ready`).
/// Waits for Messaging.Ready (`when`), then for the host to say it is ready.
async fn messaging_ready(
    when: &str,
    host: &HostHandle,
    events: &mut mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<()> {
    next_matching(&format!("Messaging.Ready {when}"), events, |e| e == "ready").await?;
    wait_for(&format!("the host to be ready {when}"), async || {
        Ok(ready(host).await.then_some(()))
    })
    .await?;
    Ok(())
}

async fn ready(host: &HostHandle) -> bool {
    host.ready().await.ready
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_the_outbox_publishes_and_readiness_follows_the_connection() -> anyhow::Result<()>
{
    let mut server = NatsServer::start()?;
    let dir = TempDir::new("koan-demo-nats");
    let path = db_path(&dir);
    let nats = within(
        "a connection",
        koan_nats::NatsTransport::connect(test_options(&server.url())),
    )
    .await??;
    let host = demo_host(
        &path,
        "[background_services.services.OutboxProcessor.settings]\n\
         poll_interval_ms = 50\nretry_delay_ms = 200\ntimeout_ms = 1000\n",
    )?
    .transport(nats.clone().into_transport())
    .resource(nats.clone())
    .build()?;
    // Messaging.Ready as "ready", Messaging.Failed as "failed: <error>", in order.
    let (tx, mut msg_events) = mpsc::unbounded_channel::<String>();
    let (tx2, tx3) = (tx.clone(), tx);
    let _lifecycle = host
        .handle()
        .service("MessagingLifecycle")
        .on(messaging::READY)
        .handle(move |_: MessagingReady| {
            let _ = tx2.send("ready".into());
            std::future::ready(())
        })
        .on(messaging::FAILED)
        .handle(move |e: MessagingFailed| {
            let _ = tx3.send(format!("failed: {}", e.error));
            std::future::ready(())
        })
        .subscribe()
        .await?;
    let host = host.start();
    within("startup", host.started()).await??;
    messaging_ready("at start", &host, &mut msg_events).await?;

    // The outbox publishes to `demo.outbox.<topic>`; the row is then processed.
    let mut sub = nats.client().subscribe("demo.outbox.>").await?;
    nats.client().flush().await?;
    let id = put_outbox(&path, "test.nats", json!({ "hello": "nats" }))?;
    let msg = within("the message on demo.outbox.test.nats", sub.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the subscription ended"))?;
    assert_eq!(msg.subject.as_str(), "demo.outbox.test.nats");
    let body: OutboxMessage = serde_json::from_slice(&msg.payload)?;
    assert_eq!((body.id, body.payload), (id, json!({ "hello": "nats" })));
    wait_for("the published row to be processed", async || {
        Ok((pending(&path)? == 0).then_some(()))
    })
    .await?;

    // A message larger than the server takes is set aside, and the ones after it
    // go on (it held up every message after it, for good; found by a probe).
    let big = put_outbox(&path, "test.big", json!({ "text": "x".repeat(1_100_000) }))?;
    let after = put_outbox(&path, "test.after", json!({ "n": 3 }))?;
    let msg = within("the message after the big one", sub.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the subscription ended"))?;
    let body: OutboxMessage = serde_json::from_slice(&msg.payload)?;
    assert_eq!(body.id, after);
    wait_for("both rows to be processed", async || {
        Ok((pending(&path)? == 0).then_some(()))
    })
    .await?;
    let conn = rusqlite::Connection::open(&path)?;
    let error: String = conn.query_row(
        "SELECT error FROM outbox_set_aside WHERE outbox_id = ?1",
        [big],
        |r| r.get(0),
    )?;
    assert!(error.contains("max_payload"), "{error}");

    // The server dies: Messaging.Failed, not ready, degraded, and the outbox keeps
    // a message it cannot publish.
    server.kill();
    next_matching("Messaging.Failed after the kill", &mut msg_events, |e| {
        e.starts_with("failed")
    })
    .await?;
    wait_for("the host to be not ready", async || {
        let r = host.ready().await;
        Ok((!r.ready).then_some(r.reasons))
    })
    .await?;
    let health = within("health", host.service("MessagingLifecycle").health()).await??;
    assert_eq!(health.report.status, HealthStatus::Degraded, "{health:?}");
    let (_o, mut outbox_failed) =
        subscribe::<OutboxFailed>(&host, "OutboxProcessor", outbox::FAILED).await?;
    let stuck = put_outbox(&path, "test.during-outage", json!({}))?;
    next_matching("Outbox.Failed during the outage", &mut outbox_failed, |e| {
        e.message_id == Some(stuck)
    })
    .await?;
    assert_eq!(
        pending(&path)?,
        1,
        "a message was marked processed while NATS was down"
    );

    // It comes back: Messaging.Ready, ready again, and the message goes out.
    server.restart()?;
    messaging_ready("after the restart", &host, &mut msg_events).await?;
    wait_for("the held message to be delivered", async || {
        Ok((pending(&path)? == 0).then_some(()))
    })
    .await?;
    stop(host).await
}
