//! The seed's real-world services doing real work in an in-process host on a
//! temporary SQLite file, on a real clock with bounded waits:
//! - FlowOrchestrator moves entities through their stages, parks a failing one with
//!   `Flow.EntityParked` and resumes it on `resume`;
//! - HealthProbeScheduler probes a local HTTP server (OK) and a closed port (failed,
//!   `Health.ProbeFailed`, degraded health), recording both in `probe_results`;
//! - OutboxProcessor delivers to the `delivered_messages` table, and a refusing
//!   webhook leaves messages pending with `Outbox.Failed`;
//! - over a real `nats-server`: the outbox publishes to `demo.outbox.<topic>`, and
//!   MessagingLifecycle turns not-ready when the server dies and ready again when it
//!   comes back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use koan::well_known::events::{flow, messaging, outbox};
use koan::{
    Host, HostHandle, config::Config, event::Subscription, health::HealthStatus, host::HostBuilder,
};
use koan_demo::db::Db;
use koan_demo::services::cleanup::DataCleanupService;
use koan_demo::services::flow::{FlowEntityParked, FlowEntityProcessed, FlowOrchestrator};
use koan_demo::services::health_monitor::SystemHealthMonitor;
use koan_demo::services::messaging::{MessagingFailed, MessagingLifecycle, MessagingReady};
use koan_demo::services::migration::DatabaseMigrationService;
use koan_demo::services::outbox::{OutboxFailed, OutboxMessage, OutboxProcessed, OutboxProcessor};
use koan_demo::services::probe::{
    DATABASE_TARGET, HealthProbeScheduler, PROBE_FAILED, ProbeBroadcast, ProbeResult,
};
use koan_demo::services::translation::TranslationService;
use koan_test_support::nats::{NatsServer, test_options};
use koan_test_support::{TempDir, wait_for, within};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The next event of `rx` that satisfies `pred`, within the tests' patience.
async fn next_matching<E>(
    what: &str,
    rx: &mut mpsc::UnboundedReceiver<E>,
    pred: impl Fn(&E) -> bool,
) -> anyhow::Result<E> {
    within(what, async {
        while let Some(e) = rx.recv().await {
            if pred(&e) {
                return Ok(e);
            }
        }
        anyhow::bail!("the subscription ended before {what}")
    })
    .await?
}

/// Every `event` of `service`, in a channel (through koan's subscription API).
async fn subscribe<E: DeserializeOwned + Clone + Send + 'static>(
    host: &HostHandle,
    service: &str,
    event: &str,
) -> anyhow::Result<(Subscription, mpsc::UnboundedReceiver<E>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let sub = host
        .service(service)
        .on(event)
        .handle(move |e: E| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e);
            }
        })
        .subscribe()
        .await?;
    Ok((sub, rx))
}

/// A database file in `dir`.
fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("demo.db")
}

/// A temporary folder (`name`) holding the demo's database, its path, and a started
/// host running all eight services on it with `toml` settings.
async fn started(name: &str, toml: &str) -> anyhow::Result<(TempDir, PathBuf, HostHandle)> {
    let dir = TempDir::new(name);
    let path = db_path(&dir);
    let host = demo_host(&path, toml)?.build()?.start();
    within("startup", host.started()).await??;
    Ok((dir, path, host))
}

/// All eight services of the demo on the database at `path`, with `toml` settings.
fn demo_host(path: &Path, toml: &str) -> anyhow::Result<HostBuilder> {
    let config = Config::builder().toml("test", toml)?.build();
    Ok(Host::builder()
        .config(config)
        .resource(Db::new(path))
        .service::<DatabaseMigrationService>()
        .service::<DataCleanupService>()
        .service::<SystemHealthMonitor>()
        .service::<TranslationService>()
        .service::<FlowOrchestrator>()
        .service::<MessagingLifecycle>()
        .service::<HealthProbeScheduler>()
        .service::<OutboxProcessor>())
}

async fn stop(host: HostHandle) -> anyhow::Result<()> {
    host.shutdown();
    within("the host to stop", host.wait())
        .await?
        .into_result()?;
    Ok(())
}

fn query<T: rusqlite::types::FromSql>(
    path: &Path,
    sql: &str,
    params: impl rusqlite::Params,
) -> anyhow::Result<Option<T>> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut st = conn.prepare(sql)?;
    let mut rows = st.query(params)?;
    Ok(match rows.next()? {
        Some(r) => Some(r.get(0)?),
        None => None,
    })
}

/// `(stage, state, parked_stage)` of a flow entity.
fn entity(path: &Path, id: &str) -> anyhow::Result<(String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn.query_row(
        "SELECT stage, state, parked_stage FROM flow_entities WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}

async fn act(host: &HostHandle, service: &str, action: &str, params: Value) -> koan::Result<Value> {
    host.service(service)
        .action(action, params)
        .execute()
        .await?
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_entities_pass_stages_and_a_failing_one_is_parked_then_resumed() -> anyhow::Result<()>
{
    // A long poll: only `submit` and `resume` wake the orchestrator.
    let (_dir, path, host) = started(
        "koan-demo-flow",
        "[background_services.services.FlowOrchestrator.settings]\npoll_interval_ms = 60000\n",
    )
    .await?;
    let (_p, mut processed) =
        subscribe::<FlowEntityProcessed>(&host, "FlowOrchestrator", flow::ENTITY_PROCESSED).await?;
    let (_k, mut parked) =
        subscribe::<FlowEntityParked>(&host, "FlowOrchestrator", flow::ENTITY_PARKED).await?;

    // A good entity goes through every stage.
    let r = act(
        &host,
        "FlowOrchestrator",
        "submit",
        json!({ "id": "ok-1", "payload": { "sku": 7 } }),
    )
    .await?;
    assert_eq!(r["entityId"], "ok-1");
    next_matching("ok-1 to be processed", &mut processed, |e| {
        e.entity_id == "ok-1"
    })
    .await?;
    assert_eq!(entity(&path, "ok-1")?, ("done".into(), "done".into(), None));
    let enriched: Option<String> = query(
        &path,
        "SELECT payload FROM flow_entities WHERE id = 'ok-1'",
        [],
    )?;
    let enriched: Value = serde_json::from_str(&enriched.unwrap_or_default())?;
    assert!(enriched["enrichedAt"].is_i64(), "not enriched: {enriched}");
    let announced: Option<String> = query(
        &path,
        "SELECT payload FROM outbox WHERE topic = 'flow.entity.processed' AND payload LIKE '%\"ok-1\"%'",
        [],
    )?;
    assert!(announced.is_some(), "no outbox message for ok-1");

    // One that fails at `validated` is parked there, with the reason, and the event.
    act(
        &host,
        "FlowOrchestrator",
        "submit",
        json!({ "id": "bad-1", "payload": { "failAt": "validated" } }),
    )
    .await?;
    let e = next_matching("bad-1 to be parked", &mut parked, |e| {
        e.entity_id == "bad-1"
    })
    .await?;
    assert_eq!(e.stage, "validated");
    assert!(e.reason.contains("failAt"), "unclear reason: {}", e.reason);
    assert_eq!(
        entity(&path, "bad-1")?,
        ("received".into(), "parked".into(), Some("validated".into()))
    );

    // Resumed unchanged, it fails at the same stage again.
    act(
        &host,
        "FlowOrchestrator",
        "resume",
        json!({ "entityId": "bad-1" }),
    )
    .await?;
    let again = next_matching("bad-1 to be parked again", &mut parked, |e| {
        e.entity_id == "bad-1"
    })
    .await?;
    assert_eq!(again.stage, "validated");

    // Resumed with a corrected payload, it goes through to the end.
    let r = act(
        &host,
        "FlowOrchestrator",
        "resume",
        json!({ "entityId": "bad-1", "payload": { "fixed": true } }),
    )
    .await?;
    assert_eq!(r["state"], "active", "{r}");
    next_matching("bad-1 to be processed", &mut processed, |e| {
        e.entity_id == "bad-1"
    })
    .await?;
    assert_eq!(
        entity(&path, "bad-1")?,
        ("done".into(), "done".into(), None)
    );

    // Only a parked entity can be resumed; the error says why.
    let on = &host;
    let resume_refused = |entity: &'static str| async move {
        act(
            on,
            "FlowOrchestrator",
            "resume",
            json!({ "entityId": entity }),
        )
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("resuming {entity} succeeded"))
    };
    let err = resume_refused("bad-1").await?;
    assert_eq!(
        err.kind(),
        koan::error::ErrorKind::InvalidParameters,
        "{err}"
    );
    assert!(err.to_string().contains("not parked"), "{err}");
    let err = resume_refused("nobody").await?;
    assert!(err.to_string().contains("no entity `nobody`"), "{err}");
    stop(host).await
}

/// An HTTP server on loopback answering 200 to every request; counts them.
async fn http_ok_server() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/health/live", listener.local_addr()?);
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                // Read the request head, then answer and close.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    Ok((url, hits))
}

/// A loopback URL on which nothing listens.
fn closed_url() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    drop(l);
    Ok(format!("http://{addr}/health/live"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_scheduler_records_an_ok_and_a_failed_probe() -> anyhow::Result<()> {
    let dir = TempDir::new("koan-demo-probe");
    let path = db_path(&dir);
    let (ok, hits) = http_ok_server().await?;
    let closed = closed_url()?;
    let settings = format!(
        "[background_services.services.HealthProbeScheduler.settings]\n\
         targets = [\"{ok}\", \"{closed}\"]\ntimeout_ms = 2000\nquantization_window_ms = 1000\n"
    );
    let host = demo_host(&path, &settings)?.build()?.start();
    let (_f, mut failed) =
        subscribe::<ProbeResult>(&host, "HealthProbeScheduler", PROBE_FAILED).await?;
    within("startup", host.started()).await??;

    // Scheduled rounds: the closed port fails, with the event.
    let e = next_matching("a failed probe of the closed port", &mut failed, |e| {
        e.target == closed
    })
    .await?;
    assert!(!e.ok);
    assert!(
        e.error.as_deref().is_some_and(|m| m.contains("onnect")),
        "unclear error: {e:?}"
    );

    // A forced round answers with every result.
    let b: ProbeBroadcast = host
        .service("HealthProbeScheduler")
        .action(koan::well_known::actions::health::FORCE_PROBE, Value::Null)
        .execute()
        .await?
        .value()?;
    let by = |t: &str| b.results.iter().find(|r| r.target == t).cloned();
    assert!(by(&ok).is_some_and(|r| r.ok), "{b:?}");
    assert!(by(&closed).is_some_and(|r| !r.ok), "{b:?}");
    assert!(by(DATABASE_TARGET).is_some_and(|r| r.ok), "{b:?}");
    assert!(hits.load(Ordering::SeqCst) >= 1, "the OK server saw no GET");

    // Recorded in `probe_results`.
    let oks: Option<i64> = query(
        &path,
        "SELECT COUNT(*) FROM probe_results WHERE target = ?1 AND ok = 1 AND error IS NULL",
        [&ok],
    )?;
    assert!(oks.unwrap_or(0) >= 1, "no OK row for {ok}");
    let error: Option<String> = query(
        &path,
        "SELECT error FROM probe_results WHERE target = ?1 AND ok = 0 ORDER BY id DESC",
        [&closed],
    )?;
    assert!(
        error.is_some_and(|e| !e.is_empty()),
        "no failed row for {closed}"
    );
    let db_ok: Option<i64> = query(
        &path,
        "SELECT COUNT(*) FROM probe_results WHERE target = 'database' AND ok = 1",
        [],
    )?;
    assert!(db_ok.unwrap_or(0) >= 1, "no database probe recorded");

    // Degraded while a target fails, naming it.
    let health = within("health", host.service("HealthProbeScheduler").health()).await??;
    assert_eq!(health.report.status, HealthStatus::Degraded, "{health:?}");
    assert!(
        health
            .report
            .description
            .as_deref()
            .is_some_and(|d| d.contains(&closed)),
        "{health:?}"
    );
    stop(host).await
}

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
