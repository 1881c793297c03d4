//! A full disk under the demo's SQLite database, simulated with
//! `PRAGMA max_page_count`: writers get a clear "database or disk is full" error, the
//! monitor turns degraded, nothing crashes, the HTTP API keeps answering, and once
//! space is back the writes succeed again.

use std::path::PathBuf;
use std::time::Duration;

use koan::{Host, HostHandle, config::Config, health::HealthStatus};
use koan_demo::db::Db;
use koan_demo::services::health_monitor::SystemHealthMonitor;
use koan_demo::services::migration::DatabaseMigrationService;
use koan_demo::services::translation::TranslationService;
use koan_test_support::{wait_for_within, within_for};
use serde_json::{Value, json};

/// The safety net of every wait: a test that gets here has failed.
const PATIENCE: Duration = Duration::from_secs(60);

struct TempDb(PathBuf);

impl TempDb {
    /// A fresh database path in the temporary folder, named after `prefix`; the file
    /// (and its WAL) is removed on drop.
    fn new(prefix: &str) -> anyhow::Result<TempDb> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let name = format!("{prefix}-{}-{nanos}.db", std::process::id());
        Ok(TempDb(std::env::temp_dir().join(name)))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A database filled up to its last page; returns that page count.
fn fill_database(path: &PathBuf) -> anyhow::Result<u64> {
    let conn = rusqlite::Connection::open(path)?;
    koan_demo::db::init(&conn)?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let cap = pages + 4;
    let set: i64 = conn.query_row(&format!("PRAGMA max_page_count = {cap}"), [], |r| r.get(0))?;
    assert_eq!(set, cap);
    let filler = "x".repeat(500);
    // Every table's pages, so that no insert anywhere finds room.
    let inserts = [
        "INSERT INTO log_entries (created_at, level, message) VALUES (0, 'filler', ?1)",
        "INSERT INTO translations (file_id, source_lang, target_lang, source_text, status, created_at) \
         VALUES (?1, 'en', 'fr', '', 'filler', 0)",
        "INSERT INTO outbox (topic, payload, created_at, processed_at) VALUES ('filler', ?1, 0, 0)",
    ];
    for sql in inserts {
        // Big rows first, then the smallest, so the last pages are really full.
        let (mut size, mut rows) = (500, 0u64);
        let err = loop {
            match conn.execute(sql, [&filler[..size]]) {
                Ok(_) => rows += 1,
                Err(_) if size > 1 => size = 1,
                Err(e) => break e,
            }
            anyhow::ensure!(rows < 100_000, "the database never filled up");
        };
        assert!(
            err.to_string().contains("database or disk is full"),
            "unexpected error: {err}"
        );
    }
    // Fold the WAL into the main file, so every connection sees the same size.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(u64::try_from(cap)?)
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let resp = within_for(PATIENCE, "an answer", client.post(url).json(&body).send()).await??;
    let status = resp.status().as_u16();
    let body = within_for(PATIENCE, "a body", resp.json::<Value>()).await??;
    Ok((status, body))
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<u16> {
    let resp = within_for(PATIENCE, "an answer", client.get(url).send()).await??;
    Ok(resp.status().as_u16())
}

/// The host `host` builds, started and served over HTTP on a loopback port.
struct Served {
    host: HostHandle,
    server: koan_http::Server,
    /// The server's base URL.
    base: String,
    client: reqwest::Client,
}

impl Served {
    async fn start(host: koan::host::HostBuilder) -> anyhow::Result<Served> {
        let host = host.build()?.start();
        within_for(PATIENCE, "startup", host.started()).await??;
        let options = koan_http::HttpOptions::default()
            .with_bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let server = koan_http::serve(host.clone(), options).await?;
        let base = format!("http://{}", server.local_addr());
        let client = reqwest::Client::new();
        Ok(Served {
            host,
            server,
            base,
            client,
        })
    }

    /// Stops the host, then waits for the server to end.
    async fn stop(self) -> anyhow::Result<()> {
        self.host.shutdown();
        within_for(PATIENCE, "the host to stop", self.host.wait()).await?;
        within_for(PATIENCE, "the server to end", self.server.wait()).await??;
        Ok(())
    }
}

fn log_entries(path: &PathBuf) -> anyhow::Result<i64> {
    let conn = rusqlite::Connection::open(path)?;
    Ok(conn.query_row("SELECT COUNT(*) FROM log_entries", [], |r| r.get(0))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_the_writers_and_the_api_keeps_answering() -> anyhow::Result<()> {
    let temp = TempDb::new("koan-full-disk")?;
    let path = temp.0.clone();
    let cap = fill_database(&path)?;

    let db = Db::new(&path);
    db.set_max_page_count(Some(cap));
    let config = Config::builder()
        .toml(
            "test",
            "[background_services.services.SystemHealthMonitor.settings]\ncheck_interval_seconds = 1\n",
        )?
        .build();
    let served = Served::start(
        Host::builder()
            .config(config)
            .resource(db.clone())
            .service::<DatabaseMigrationService>()
            .service::<SystemHealthMonitor>()
            .service::<TranslationService>(),
    )
    .await?;
    let (host, base, client) = (&served.host, &served.base, &served.client);
    let translate = format!("{base}/api/services/TranslationService/actions/translate");
    let params = json!({ "fileId": "f1", "from": "en", "to": "fr", "text": "hello world" });

    // An action writing to the full database fails with a clear error.
    let (status, body) = post(client, &translate, params.clone()).await?;
    assert_eq!(status, 500, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("database or disk is full"),
        "unclear error: {body}"
    );

    // The monitor's log writes fail: it counts consecutive failures and turns
    // degraded (or worse), with the cause in its status.
    let before = log_entries(&path)?;
    wait_for_within(
        PATIENCE,
        "the monitor to report the full disk",
        async || {
            let s = host.status("SystemHealthMonitor")?;
            Ok((s.consecutive_failures >= 1
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("database or disk is full")))
            .then_some(()))
        },
    )
    .await?;
    let health = within_for(
        PATIENCE,
        "health",
        host.service("SystemHealthMonitor").health(),
    )
    .await??;
    assert_ne!(health.report.status, HealthStatus::Healthy, "{health:?}");

    // Nothing crashed: the host runs, and the API answers.
    assert!(host.status("TranslationService")?.consecutive_failures == 0);
    assert_eq!(get(client, &format!("{base}/health/live")).await?, 200);
    assert_eq!(get(client, &format!("{base}/api/services")).await?, 200);
    assert_eq!(
        get(
            client,
            &format!("{base}/api/services/SystemHealthMonitor/status")
        )
        .await?,
        200
    );
    // Reads still work on a full disk.
    let (status, body) = post(
        client,
        &format!("{base}/api/services/TranslationService/actions/check-queue"),
        Value::Null,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(log_entries(&path)?, before, "a write got through");

    // Space comes back: the writes succeed again, with no restart of the host.
    db.set_max_page_count(None);
    let (status, body) = post(client, &translate, params).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text"], "bonjour monde");
    wait_for_within(PATIENCE, "the monitor to write again", async || {
        Ok((log_entries(&path)? > before).then_some(()))
    })
    .await?;

    served.stop().await
}

/// A job store that cannot write answers 503 with a clear message: nothing is
/// accepted, nothing half-written remains, earlier jobs are intact, and once space is
/// back jobs are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_job_store_refuses_enqueue_with_503_and_stays_intact() -> anyhow::Result<()> {
    let temp = TempDb::new("koan-full-jobs")?;
    let path = temp.0.clone();
    let store = std::sync::Arc::new(koan_sqlite::SqliteJobStore::open(&path)?);
    let served = Served::start(
        Host::builder()
            .resource(Db::new(&path))
            .job_store(store.clone())
            .service::<TranslationService>(),
    )
    .await?;
    let (base, client) = (&served.base, &served.client);
    // Delayed an hour: only the job store writes to the file during the test.
    let enqueue =
        format!("{base}/api/services/TranslationService/actions/translate?wait=false&delay=1h");
    let params = |k: usize| json!({ "fileId": format!("f{k}"), "from": "en", "to": "fr" });

    let (status, first) = post(client, &enqueue, params(0)).await?;
    assert_eq!(status, 202, "{first}");
    // The store's file may not grow any more; big parameters need new pages.
    // (SQLite never sets the cap below the file's size: 1 means "as it is now".)
    store.limit_pages_for_test(1).await?;
    let big = "x".repeat(32 * 1024);
    // Free pages inside the file still take a few; then the store is full.
    let mut accepted = vec![first["id"].as_str().unwrap_or_default().to_owned()];
    let (status, body) = loop {
        let (status, body) = post(
            client,
            &enqueue,
            json!({ "fileId": format!("huge-{}", accepted.len()), "from": "en", "to": "fr", "text": big }),
        )
        .await?;
        if status != 202 {
            break (status, body);
        }
        accepted.push(body["id"].as_str().unwrap_or_default().to_owned());
        anyhow::ensure!(accepted.len() < 200, "the job store never filled up");
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "store_unavailable", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("database or disk is full"), "{message}");

    // Nothing half-written: the refused job is nowhere; the first is intact.
    let list: Value = client
        .get(format!("{base}/api/jobs"))
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .map(|j| j.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [first["id"].as_str().unwrap_or_default()], "{list}");
    {
        let conn = rusqlite::Connection::open(&path)?;
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        assert_eq!(check, "ok");
    }

    // Space is back: accepted again.
    store.limit_pages_for_test(1 << 30).await?;
    let (status, body) = post(client, &enqueue, params(1)).await?;
    assert_eq!(status, 202, "{body}");

    served.stop().await
}
