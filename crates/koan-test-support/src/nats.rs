//! A real `nats-server` with JetStream on a free loopback port, in a fresh store
//! directory (killed on drop), the NATS options of the tests, and a host that is a
//! member of the cluster.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use koan::HostHandle;
use koan::host::HostBuilder;
use koan::transport::HostLink as _;
use koan_nats::{NatsOptions, NatsTransport, Node};

use crate::{TempDir, eventually, free_port, within};

mod cluster;
pub use cluster::NatsCluster;

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
    /// Arguments beyond JetStream, the address, the port and the store (a
    /// cluster member's name and routes).
    args: Vec<String>,
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
            args: Vec::new(),
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
            .args(&self.args)
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

    /// Stops the server's process where it is (SIGSTOP): its connections stay open
    /// and nothing is read from them, a stalled broker. [`resume`](Self::resume)
    /// lets it go on; dropping it kills it all the same.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Lets a [paused](Self::pause) server go on (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| anyhow::anyhow!("nats-server is not running"))?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {pid}: {status}");
        Ok(())
    }

    /// Kills the server (its store stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server, removes its JetStream store, and starts it again on the
    /// same port: a broker back without its streams.
    pub fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.kill();
        let store = self.dir.path().join("store");
        if store.exists() {
            std::fs::remove_dir_all(&store)?;
        }
        self.restart()
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

/// One member of the cluster: a host, its connection, its node.
#[derive(Debug)]
pub struct Member {
    /// The started host.
    pub host: HostHandle,
    /// Its connection to NATS.
    pub nats: NatsTransport,
    /// Its node, until [`Member::stop`] detaches it (or the test drops it to
    /// simulate a crash).
    pub node: Option<Node>,
}

impl Member {
    /// Connects with `opts`, builds the host with `build` (from a builder with that
    /// transport and a shutdown grace of 5 s), starts it and attaches it.
    pub async fn join(
        opts: NatsOptions,
        build: impl FnOnce(HostBuilder) -> HostBuilder,
    ) -> anyhow::Result<Member> {
        let nats = within("connect", NatsTransport::connect(opts)).await??;
        let builder = koan::Host::builder()
            .shutdown_grace(Duration::from_secs(5))
            .transport(nats.clone().into_transport());
        let host = build(builder).build()?.start();
        within("startup", host.started()).await??;
        let node = within("attach", nats.attach(&host)).await??;
        Ok(Member {
            host,
            nats,
            node: Some(node),
        })
    }

    /// A member built with `build` (the worker) and a bare member (the client that
    /// calls it), both joined with `opts`, once the client sees `service` announced.
    pub async fn worker_and_client(
        opts: NatsOptions,
        service: &str,
        build: impl FnOnce(HostBuilder) -> HostBuilder,
    ) -> anyhow::Result<(Member, Member)> {
        let worker = Member::join(opts.clone(), build).await?;
        let client = Member::join(opts, |b| b).await?;
        announced(&client.host, service, 1).await?;
        Ok((worker, client))
    }

    /// The host's id on the cluster.
    pub fn id(&self) -> String {
        self.nats.host_id().to_owned()
    }

    /// Detaches the node (if it is still there) and stops the host.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(node) = self.node.take() {
            within("detach", node.detach()).await?;
        }
        self.host.shutdown();
        within("the host to stop", self.host.wait())
            .await?
            .into_result()?;
        Ok(())
    }
}

/// Waits until `host` sees exactly `n` instances of the cluster announce `service`.
pub async fn announced(host: &HostHandle, service: &str, n: usize) -> anyhow::Result<()> {
    let what = format!("{n} instance(s) of `{service}` to be announced");
    eventually(&what, || async {
        host.instances().await.is_ok_and(|l| {
            let hosting = l
                .iter()
                .filter(|i| i.services.iter().any(|s| s.name == service));
            hosting.count() == n
        })
    })
    .await
}

/// Asks the work consumer `consumer` (`koan-work-<service>`) of the server at
/// `url` for a job until the server announces one out of deliveries, as a
/// restarting worker's first pull does once a lapsed claim was the last
/// delivery; fails if a job is delivered instead. Whoever listens to the
/// advisories then, hears it; the test's own subscription aside, no one else
/// need be attached.
pub async fn pull_until_out_of_deliveries(url: &str, consumer: &str) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let nats = async_nats::connect(url).await?;
    let mut advisories = nats
        .subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.KOAN_WORK.*")
        .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let stream = js
        .get_stream("KOAN_WORK")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(consumer)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    within("the max-deliveries advisory", async {
        loop {
            let mut pulled = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(msg) = pulled.next().await {
                msg.map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::bail!("a job was delivered again");
            }
            let heard = tokio::time::timeout(Duration::from_millis(100), advisories.next());
            if let Ok(Some(_)) = heard.await {
                return Ok(());
            }
        }
    })
    .await?
}

/// How many messages the work stream (`KOAN_WORK`) holds now.
pub async fn work_messages(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    Ok(js
        .get_stream("KOAN_WORK")
        .await?
        .info()
        .await?
        .state
        .messages)
}

/// What `host`'s `/health` says of its transport (empty when nothing).
pub async fn transport_said(host: &HostHandle) -> String {
    host.health()
        .await
        .transport
        .and_then(|t| t.description)
        .unwrap_or_default()
}
