//! Helpers shared by the store's tests: a file that cleans up after itself, jobs,
//! claims and times on a fixed clock.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use koan::{job::ClaimRequest, job::Finish, job::JobStep, job::JobStore, job::NewJob};
use koan_sqlite::SqliteJobStore;
use serde_json::json;

/// A database file in the temp directory, removed (with its WAL) on drop.
#[derive(Debug)]
pub struct TempDb {
    path: PathBuf,
}

impl TempDb {
    /// A fresh, unique path for the test `name`.
    pub fn new(name: &str) -> TempDb {
        let path = std::env::temp_dir().join(format!(
            "koan-sqlite-{name}-{}-{}.db",
            std::process::id(),
            koan::job::new_job_id()
        ));
        TempDb { path }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A store on the file.
    pub fn open(&self) -> SqliteJobStore {
        SqliteJobStore::open(&self.path).expect("the store opens")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A fixed instant plus `ms` milliseconds.
pub fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("a time in range")
}

/// A job of `service` running `action`, accepted and due at `at(0)`.
pub fn job(service: &str, action: &str) -> NewJob {
    NewJob {
        id: koan::job::new_job_id(),
        service: service.to_owned(),
        steps: vec![JobStep {
            action: action.to_owned(),
            params: json!({ "n": 1 }),
            timeout_ms: None,
        }],
        priority: 0,
        correlation_id: "corr".to_owned(),
        idempotency_key: None,
        created_at: at(0),
        run_at: at(0),
        max_attempts: 3,
    }
}

/// `job` with an idempotency key.
pub fn keyed(service: &str, key: &str) -> NewJob {
    NewJob {
        idempotency_key: Some(key.to_owned()),
        ..job(service, "run")
    }
}

/// A claim of up to `limit` jobs of `service` at `at(now)`, leased for 30 s.
pub fn claim(service: &str, limit: usize, now: i64) -> ClaimRequest {
    ClaimRequest {
        service: service.to_owned(),
        limit,
        now: at(now),
        lease_until: at(now + 30_000),
        instance: "host-a".to_owned(),
    }
}

/// Claims the only due job of `service` at `at(now)` and ends it as `how`.
pub async fn run_to(store: &SqliteJobStore, service: &str, how: Finish, now: i64) -> String {
    let held = store
        .claim(claim(service, 1, now))
        .await
        .expect("claim")
        .remove(0);
    assert!(
        store
            .finish(&held.claim, how, at(now))
            .await
            .expect("finish")
    );
    held.claim.id
}

/// A run that failed for good.
pub fn dead() -> Finish {
    Finish::Dead {
        error: koan::action::ErrorBody {
            error: "handler_error".to_owned(),
            message: "boom".to_owned(),
        },
    }
}

/// A run that succeeded.
pub fn ok() -> Finish {
    Finish::Succeeded {
        result: json!({ "done": true }),
        truncated: false,
    }
}

/// `f`'s output, or a failed test when it takes over 30 s (a store that stopped
/// answering fails rather than hangs).
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"))
}
