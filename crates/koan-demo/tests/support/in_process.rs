//! What the in-process tests of the demo's services share: a host running all eight
//! services on a temporary SQLite file, its events as channels, and reads of its
//! tables.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use koan::{Host, HostHandle, config::Config, event::Subscription, host::HostBuilder};
use koan_demo::db::Db;
use koan_demo::services::cleanup::DataCleanupService;
use koan_demo::services::flow::FlowOrchestrator;
use koan_demo::services::health_monitor::SystemHealthMonitor;
use koan_demo::services::messaging::MessagingLifecycle;
use koan_demo::services::migration::DatabaseMigrationService;
use koan_demo::services::outbox::OutboxProcessor;
use koan_demo::services::probe::HealthProbeScheduler;
use koan_demo::services::translation::TranslationService;
use koan_test_support::{TempDir, within};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

/// The next event of `rx` that satisfies `pred`, within the tests' patience.
pub(crate) async fn next_matching<E>(
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
pub(crate) async fn subscribe<E: DeserializeOwned + Clone + Send + 'static>(
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
pub(crate) fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("demo.db")
}

/// A temporary folder (`name`) holding the demo's database, its path, and a started
/// host running all eight services on it with `toml` settings.
pub(crate) async fn started(
    name: &str,
    toml: &str,
) -> anyhow::Result<(TempDir, PathBuf, HostHandle)> {
    let dir = TempDir::new(name);
    let path = db_path(&dir);
    let host = demo_host(&path, toml)?.build()?.start();
    within("startup", host.started()).await??;
    Ok((dir, path, host))
}

/// All eight services of the demo on the database at `path`, with `toml` settings.
pub(crate) fn demo_host(path: &Path, toml: &str) -> anyhow::Result<HostBuilder> {
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

pub(crate) async fn stop(host: HostHandle) -> anyhow::Result<()> {
    host.shutdown();
    within("the host to stop", host.wait())
        .await?
        .into_result()?;
    Ok(())
}

pub(crate) fn query<T: rusqlite::types::FromSql>(
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
pub(crate) fn entity(path: &Path, id: &str) -> anyhow::Result<(String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn.query_row(
        "SELECT stage, state, parked_stage FROM flow_entities WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}

pub(crate) async fn act(
    host: &HostHandle,
    service: &str,
    action: &str,
    params: Value,
) -> koan::Result<Value> {
    host.service(service)
        .action(action, params)
        .execute()
        .await?
        .json()
}

/// A loopback URL on which nothing listens.
pub(crate) fn closed_url() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    drop(l);
    Ok(format!("http://{addr}/health/live"))
}
