//! Shared helpers of the NATS integration tests: a real `nats-server` on a free
//! loopback port in a fresh store directory (killed on drop), temporary directories,
//! and bounded waits.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use koan_nats::NatsOptions;

/// The safety net of every wait: a test that gets here has failed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing when it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> anyhow::Result<T> {
    within_for(PATIENCE, what, fut).await
}

/// Awaits `fut`, failing when it takes longer than `limit`.
pub async fn within_for<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `check` every 50 ms until it holds, failing after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A free loopback port: bound, then released.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `nats-server` binary: `$NATS_SERVER`, else on `PATH`, else Debian's place.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// A running `nats-server -js` on loopback; killed (and its store removed) on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    /// Where the current run's output starts in `server.log`.
    log_from: usize,
}

/// Why a start failed.
enum Failed {
    /// Another process took the port between our probe and the server's bind.
    PortTaken,
    Other(anyhow::Error),
}

impl NatsServer {
    /// Starts a server with JetStream on a free port and a fresh store directory, and
    /// waits until it accepts connections.
    pub fn start() -> anyhow::Result<NatsServer> {
        let mut server = NatsServer {
            child: None,
            port: 0,
            dir: TempDir::new("koan-nats-test"),
            log_from: 0,
        };
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(Failed::PortTaken) => server.kill(),
                Err(Failed::Other(e)) => return Err(e),
            }
        }
        anyhow::bail!("no free port for nats-server after 5 attempts")
    }

    fn spawn(&mut self) -> Result<(), Failed> {
        let store = self.dir.path().join("store");
        let path = self.dir.path().join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| Failed::Other(e.into()))?;
        self.log_from = std::fs::metadata(&path).map_or(0, |m| m.len() as usize);
        let bin = nats_server_bin();
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(log.0)
            .stderr(log.1)
            .spawn()
            .map_err(|e| {
                Failed::Other(anyhow::anyhow!(
                    "cannot start {} (install it with `bash scripts/ensure-tools.sh nats-server`): {e}",
                    bin.display()
                ))
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until this run says it is ready and the port accepts connections.
    fn wait_ready(&mut self) -> Result<(), Failed> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log();
            if log.contains("address already in use") {
                return Err(Failed::PortTaken);
            }
            if log.contains("Server is ready")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .map(|c| c.try_wait())
                .transpose()
                .map_err(|e| Failed::Other(e.into()))?
                .flatten();
            if let Some(status) = exited {
                return Err(Failed::Other(anyhow::anyhow!(
                    "nats-server exited early ({status}); its log:\n{log}"
                )));
            }
            if Instant::now() > deadline {
                return Err(Failed::Other(anyhow::anyhow!(
                    "nats-server is not ready on {addr}; its log:\n{log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server logged in its current run.
    pub fn log(&self) -> String {
        let all = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        all.get(self.log_from..).unwrap_or_default().to_owned()
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its store stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        match self.spawn() {
            Ok(()) => Ok(()),
            Err(Failed::PortTaken) => anyhow::bail!("port {} was taken meanwhile", self.port),
            Err(Failed::Other(e)) => Err(e),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options for tests: in-memory storage, fast heartbeats, short leases and retries.
pub fn test_options(url: &str) -> NatsOptions {
    let mut o = NatsOptions::new(url);
    o.memory_storage = true;
    o.heartbeat = Duration::from_millis(500);
    o.lease = Duration::from_millis(1500);
    o.max_deliver = 3;
    o.ack_wait = Duration::from_secs(5);
    o.default_request_timeout = Duration::from_secs(10);
    o
}
