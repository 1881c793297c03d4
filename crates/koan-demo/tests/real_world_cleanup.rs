//! DataCleanupService deletes, besides old log entries, the rows of the other
//! tables done before the retention period — delivered outbox messages, their
//! delivery log, completed translations and probe results — and keeps everything
//! newer, every outbox message not yet delivered or set aside, and each table's
//! newest row (its id is not given again). A probe's 30
//! minutes of load grew the demo's file by 17 MB that nothing ever deleted.

#[path = "support/in_process.rs"]
mod in_process;

use in_process::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_deletes_every_tables_old_done_rows() -> anyhow::Result<()> {
    // No outbox processor: the undelivered row below stays so.
    let (_dir, path, host) = started(
        "koan-demo-cleanup",
        "[background_services.services.OutboxProcessor]\nenabled = false\n",
    )
    .await?;
    let conn = rusqlite::Connection::open(&path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    for at in [0, now] {
        conn.execute(
            "INSERT INTO outbox (topic, payload, created_at, processed_at) VALUES ('t', '{}', ?1, ?1)",
            [at],
        )?;
        let id = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO delivered_messages (outbox_id, topic, payload, delivered_at) VALUES (?1, 't', '{}', ?2)",
            (id, at),
        )?;
        // Set aside: its outbox row marked processed, as the outbox does.
        conn.execute(
            "INSERT INTO outbox (topic, payload, created_at, processed_at) VALUES ('t', '{}', ?1, ?1)",
            [at],
        )?;
        conn.execute(
            "INSERT INTO outbox_set_aside (outbox_id, topic, payload, error, set_aside_at) VALUES (?1, 't', '{}', 'e', ?2)",
            (conn.last_insert_rowid(), at),
        )?;
        conn.execute(
            "INSERT INTO translations (file_id, source_lang, target_lang, source_text, status, created_at) VALUES ('f', 'en', 'fr', '', 'completed', ?1)",
            [at],
        )?;
        conn.execute(
            "INSERT INTO probe_results (target, ok, latency_ms, probed_at) VALUES ('x', 1, 1, ?1)",
            [at],
        )?;
    }
    // Old but not delivered: kept.
    conn.execute(
        "INSERT INTO outbox (topic, payload, created_at, processed_at) VALUES ('t', '{}', 0, NULL)",
        [],
    )?;
    let count =
        |sql: &str| -> anyhow::Result<i64> { Ok(query::<i64>(&path, sql, [])?.unwrap_or(-1)) };
    host.service("DataCleanupService").trigger().await?;
    for (table, done_at) in [
        ("delivered_messages", "delivered_at"),
        ("translations", "created_at"),
        ("probe_results", "probed_at"),
    ] {
        let old = count(&format!("SELECT COUNT(*) FROM {table} WHERE {done_at} = 0"))?;
        assert_eq!(old, 0, "{table}: its old done rows are deleted");
        let new = count(&format!(
            "SELECT COUNT(*) FROM {table} WHERE {done_at} >= {now}"
        ))?;
        assert!(new >= 1, "{table}: its new rows are kept");
    }
    let pending =
        count("SELECT COUNT(*) FROM outbox WHERE processed_at IS NULL AND created_at = 0")?;
    assert_eq!(pending, 1, "an undelivered message is kept, however old");
    // The delivered old one is gone; the one set aside stays, with its outbox row.
    let outbox_old = count("SELECT COUNT(*) FROM outbox WHERE processed_at = 0")?;
    assert_eq!(outbox_old, 1, "only the old row set aside is kept");
    let aside = count("SELECT COUNT(*) FROM outbox_set_aside")?;
    assert_eq!(aside, 2, "set-aside messages are never deleted");
    // Every row old: the newest stays, so that its id is not given again (a
    // receiver dropping repeats by id dropped a new message; a re-probe).
    conn.execute("UPDATE translations SET created_at = 0", [])?;
    host.service("DataCleanupService").trigger().await?;
    assert_eq!(count("SELECT COUNT(*) FROM translations")?, 1);
    stop(host).await
}
