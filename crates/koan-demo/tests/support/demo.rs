//! A `koan-demo` process for tests: started on a free port with its own database,
//! its log kept in a file (printed when a test fails), SIGTERM or SIGKILL on demand;
//! and the [`Site`] a cluster of them runs on.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use koan_test_support::nats::NatsServer;
use koan_test_support::{PATIENCE, TempDir, within};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The demo's services but `TranslationService`: what a process runs that calls the
/// translators of the cluster.
pub(crate) const ALL_BUT_TRANSLATION: &str = "DatabaseMigrationService,DataCleanupService,SystemHealthMonitor,OutboxProcessor,HealthProbeScheduler,FlowOrchestrator,MessagingLifecycle";

/// Rows of `translations` per file id in the database at `path`.
pub(crate) fn translations(path: &Path) -> anyhow::Result<BTreeMap<String, u32>> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut st = conn.prepare("SELECT file_id, COUNT(*) FROM translations GROUP BY file_id")?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    Ok(rows)
}

/// Rows of `translations` in the database at `path`, of job `job_id` or all; none
/// before the process's first translation (which makes the table).
pub(crate) fn translation_rows(path: &Path, job_id: Option<&str>) -> anyhow::Result<u32> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Not migrated yet (a process starting: the table, then its `job_id`): none.
    let migrated: u32 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('translations') WHERE name = 'job_id'",
        [],
        |r| r.get(0),
    )?;
    if migrated == 0 {
        return Ok(0);
    }
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM translations WHERE ?1 IS NULL OR job_id = ?1",
        [job_id],
        |r| r.get(0),
    )?)
}

/// Configuration of a `TranslationService` whose work takes `delay` and which runs
/// `concurrency` translations at a time.
pub(crate) fn translation_env(delay: Duration, concurrency: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "KOAN__BACKGROUND_SERVICES__SERVICES__TRANSLATION_SERVICE__SETTINGS__WORK_DELAY_MS",
            delay.as_millis().to_string(),
        ),
        (
            "KOAN__BACKGROUND_SERVICES__SERVICES__TRANSLATION_SERVICE__MAX_CONCURRENCY",
            concurrency.to_string(),
        ),
    ]
}

/// Sends `req`; its status and its body as JSON (a body that is not JSON as a string).
pub(crate) async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
    let resp = req.send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, body))
}

/// Where a cluster of `koan-demo` processes runs: a `nats-server`, a folder for their
/// databases and logs, and an HTTP client for their APIs.
pub(crate) struct Site {
    pub(crate) server: NatsServer,
    pub(crate) dir: TempDir,
    /// The server's URL.
    pub(crate) nats: String,
    /// Gives up on a request after [`PATIENCE`].
    pub(crate) client: reqwest::Client,
}

impl Site {
    /// A fresh server, folder (`name`) and client.
    pub(crate) fn start(name: &str) -> anyhow::Result<Site> {
        let server = NatsServer::start()?;
        let nats = server.url();
        Ok(Site {
            server,
            dir: TempDir::new(name),
            nats,
            client: reqwest::Client::builder().timeout(PATIENCE).build()?,
        })
    }

    /// A process `name` on this site's NATS running `services` (a comma-separated
    /// list; every service when `None`), configured by `env`.
    pub(crate) fn demo(
        &self,
        name: &str,
        services: Option<&str>,
        env: &[(&str, String)],
    ) -> anyhow::Result<Demo> {
        let mut args = vec!["--nats", self.nats.as_str()];
        if let Some(services) = services {
            args.extend(["--services", services]);
        }
        Demo::start(self.dir.path(), name, &args, env)
    }

    /// A process running `TranslationService` alone, each translation taking `delay`,
    /// `concurrency` at a time.
    pub(crate) fn translator(
        &self,
        name: &str,
        delay: Duration,
        concurrency: usize,
    ) -> anyhow::Result<Demo> {
        let env = translation_env(delay, concurrency);
        self.demo(name, Some("TranslationService"), &env)
    }

    /// A process running every service but `TranslationService`, which it calls
    /// across the cluster.
    pub(crate) fn front(&self, name: &str) -> anyhow::Result<Demo> {
        self.demo(name, Some(ALL_BUT_TRANSLATION), &[])
    }
}

/// A running `koan-demo` process; killed (SIGKILL) on drop.
pub(crate) struct Demo {
    name: String,
    child: Option<Child>,
    base: String,
    /// Its database file.
    pub(crate) db: PathBuf,
    log: PathBuf,
}

impl Demo {
    /// Starts `koan-demo` with `args` (besides `--http` and `--db`), its database
    /// `dir/<name>.db`, and waits until it serves HTTP.
    pub(crate) fn start(
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<Demo> {
        let db = dir.join(format!("{name}.db"));
        let log = dir.join(format!("{name}.log"));
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_koan-demo"));
        cmd.args(["--http", "127.0.0.1:0"])
            .args(args)
            .arg("--db")
            .arg(&db)
            // No `koan.toml` or `appsettings.json` of the developer's is picked up.
            .current_dir(dir)
            .env_remove("KOAN_CONFIG")
            .env("RUST_LOG", "info")
            // Redelivery after a crash comes quickly.
            .env("KOAN__NATS__ACK_WAIT_SECONDS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(out.try_clone()?));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut demo = Demo {
            name: name.to_owned(),
            child: Some(child),
            base: String::new(),
            db,
            log,
        };
        // Read stdout for the address, then keep draining it into the log.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
                let _ = writeln!(out, "{line}");
            }
        });
        match rx.recv_timeout(PATIENCE) {
            Ok(base) => demo.base = base,
            Err(_) => anyhow::bail!(
                "{name} never said where it listens; its log:\n{}",
                demo.log()
            ),
        }
        Ok(demo)
    }

    /// Has this process accept a translation of `file` into `to` with `wait=false`
    /// (202); the job's id.
    pub(crate) async fn enqueue_translation(
        &self,
        client: &reqwest::Client,
        file: &str,
        to: &str,
    ) -> anyhow::Result<String> {
        self.enqueue_translation_with(client, file, to, "").await
    }

    /// [`enqueue_translation`](Self::enqueue_translation) with more of the query
    /// (`&delay=1h`).
    pub(crate) async fn enqueue_translation_with(
        &self,
        client: &reqwest::Client,
        file: &str,
        to: &str,
        query: &str,
    ) -> anyhow::Result<String> {
        let path = format!("/api/services/TranslationService/actions/translate?wait=false{query}");
        let url = self.url(&path);
        let req = client
            .post(url)
            .json(&json!({"fileId": file, "from": "en", "to": to}));
        let (status, body) = send(req).await?;
        anyhow::ensure!(status == StatusCode::ACCEPTED, "{status}: {body}");
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no id in {body}"))
    }

    /// The record of job `id` from this process's `/api/jobs/{id}`.
    pub(crate) async fn job(&self, client: &reqwest::Client, id: &str) -> anyhow::Result<Value> {
        Ok(send(client.get(self.url(&format!("/api/jobs/{id}"))))
            .await?
            .1)
    }

    /// Waits (within [`PATIENCE`]) until this process runs `n` translations at once.
    pub(crate) async fn wait_in_flight(
        &self,
        client: &reqwest::Client,
        n: u64,
    ) -> anyhow::Result<()> {
        let url = self.url("/api/services/TranslationService/status");
        let what = format!("{} to run {n} translations", self.name);
        within(&what, async {
            loop {
                let (_, s) = send(client.get(&url)).await?;
                if s["in_flight"].as_u64() == Some(n) {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `sig` (e.g. `-STOP`, `-CONT`) to the process.
    pub(crate) fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} {} failed", self.name);
        Ok(())
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits (within `PATIENCE`) for the process to exit; its exit
    /// status.
    pub(crate) fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.stop_with("-TERM")
    }

    /// Sends `sig` (`-TERM`, `-HUP`, …) and waits for the process to exit.
    pub(crate) fn stop_with(&mut self, sig: &str) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} failed");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                anyhow::bail!("{} did not exit within {PATIENCE:?} of {sig}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.name, self.log());
        }
    }
}
