//! The seed's real-world services doing real work in an in-process host on a
//! temporary SQLite file, on a real clock with bounded waits:
//! - FlowOrchestrator moves entities through their stages, parks a failing one with
//!   `Flow.EntityParked` and resumes it on `resume`;
//! - HealthProbeScheduler probes a local HTTP server (OK) and a closed port (failed,
//!   `Health.ProbeFailed`, degraded health), recording both in `probe_results`.
//!
//! The outbox and messaging are in `real_world_outbox.rs`.

#[path = "support/in_process.rs"]
mod in_process;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use in_process::*;
use koan::health::HealthStatus;
use koan::well_known::events::flow;
use koan_demo::services::flow::{FlowEntityParked, FlowEntityProcessed};
use koan_demo::services::probe::{DATABASE_TARGET, PROBE_FAILED, ProbeBroadcast, ProbeResult};
use koan_test_support::{TempDir, within};
use serde_json::{Value, json};

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
