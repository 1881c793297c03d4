//! `koan-load attack <scenario>`: the hostile clients of issue 15, against an
//! in-process control plane on 127.0.0.1:0, each bounded in count and time.
//!
//! - `slow-body`: many connections POST a 1,000-byte body one byte every 2 s, while a
//!   probe asks `/health/live` every 200 ms; once with a token (the slow clients have
//!   none), once without (the body read deadline applies).
//! - `cardinality`: POSTs to made-up action names of 60 KB each; RSS and `/metrics`
//!   size before and after.
//! - `burst`: connections opened at once against the connection cap, each asking
//!   `/health/live`.
//!
//! Prints answered / refused / unanswered and RSS before and after.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use koan::Host;
use koan_http::HttpOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::{Sink, rss_kib};

/// Which attack.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Scenario {
    SlowBody,
    Cardinality,
    Burst,
}

/// Options of `attack`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AttackArgs {
    /// The attack.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Connections (slow-body, burst) or requests (cardinality).
    #[arg(long)]
    count: Option<usize>,
    /// How long the slow-body run lasts.
    #[arg(long, default_value = "30s")]
    duration: String,
}

pub(crate) async fn run(a: AttackArgs) -> anyhow::Result<()> {
    match a.scenario {
        Scenario::SlowBody => {
            let d = crate::duration("duration", &a.duration)?;
            let n = a.count.unwrap_or(1100);
            slow_body(n, d, Some("load-token")).await?;
            slow_body(n, d, None).await
        }
        Scenario::Cardinality => cardinality(a.count.unwrap_or(2000)).await,
        Scenario::Burst => burst(a.count.unwrap_or(1500)).await,
    }
}

async fn serve(options: HttpOptions) -> anyhow::Result<(koan::HostHandle, SocketAddr)> {
    let host = Host::builder().instance(Sink).build()?.start();
    host.started().await?;
    let server = koan_http::serve(host.clone(), options).await?;
    Ok((host, server.local_addr()))
}

fn loopback() -> HttpOptions {
    HttpOptions {
        from_configuration: true,
        ..HttpOptions::default()
    }
    .with_bind(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// The status of the one answer on `stream`, if one comes within `limit`.
async fn status(stream: &mut TcpStream, limit: Duration) -> Option<u16> {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(limit, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Tallies of one kind of client.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    unanswered: AtomicU64,
    codes: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl Tally {
    fn add(&self, status: Option<u16>) {
        if let (Some(c), Ok(mut m)) = (status, self.codes.lock()) {
            *m.entry(c).or_default() += 1;
        }
        let slot = match status {
            Some(200..=299) => &self.ok,
            Some(_) => &self.refused,
            None => &self.unanswered,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    fn show(&self) -> String {
        format!(
            "answered={} refused={} unanswered={} (statuses {:?})",
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.unanswered.load(Ordering::Relaxed),
            self.codes.lock().map(|m| m.clone()).unwrap_or_default()
        )
    }
}

/// `GET /health/live` on a new connection: its status, or `None` without an answer
/// within `wait`.
async fn live(addr: std::net::SocketAddr, wait: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let _ = s.write_all(req).await;
    status(&mut s, wait).await
}

/// Resident memory at the start and end of a run and its peak, for the report.
fn memory(rss0: u64, rss1: u64, hwm: u64) -> String {
    format!(
        "rss start={:.1}MiB end={:.1}MiB peak={:.1}MiB",
        mib(rss0),
        mib(rss1),
        mib(hwm)
    )
}

async fn stop(host: koan::HostHandle) -> anyhow::Result<()> {
    host.shutdown();
    let _ = host.wait().await;
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn slow_body(n: usize, run_for: Duration, token: Option<&str>) -> anyhow::Result<()> {
    let mut options = loopback();
    options.token = token.map(str::to_owned);
    let (host, addr) = serve(options).await?;
    let (rss0, _) = rss_kib();
    let slow = Arc::new(Tally::default());
    let end = Instant::now() + run_for;
    let mut clients = JoinSet::new();
    for _ in 0..n {
        let slow = Arc::clone(&slow);
        clients.spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                slow.add(None);
                return;
            };
            let head = "POST /api/services/Sink/actions/work HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let (mut rd, mut wr) = s.into_split();
            let trickle = tokio::spawn(async move {
                while wr.write_all(b" ").await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            });
            let mut buf = [0u8; 512];
            let left = end.saturating_duration_since(Instant::now());
            let got = match tokio::time::timeout(left, rd.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(|t| t.split(' ').nth(1))
                    .and_then(|c| c.parse().ok()),
                _ => None,
            };
            trickle.abort();
            slow.add(got);
        });
    }
    // The probe: `/health/live` every 200 ms, each given 1 s.
    let probes = Tally::default();
    while Instant::now() < end {
        probes.add(live(addr, Duration::from_secs(1)).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (rss1, hwm) = rss_kib();
    while clients.join_next().await.is_some() {}
    println!(
        "slow-body {}: {n} clients × 1,000 B at 1 B / 2 s for {run_for:?}\n  slow clients: {}\n  /health/live probes (1 s each): {}\n  {}",
        if token.is_some() {
            "with a token (clients have none)"
        } else {
            "without a token (body deadline 10 s)"
        },
        slow.show(),
        probes.show(),
        memory(rss0, rss1, hwm)
    );
    stop(host).await
}

async fn cardinality(n: usize) -> anyhow::Result<()> {
    koan_http::install_metrics();
    let (host, addr) = serve(loopback()).await?;
    let client = reqwest::Client::new();
    let metrics_url = format!("http://{addr}/metrics");
    let size0 = client.get(&metrics_url).send().await?.bytes().await?.len();
    let (rss0, _) = rss_kib();
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let mut callers = JoinSet::new();
    for _ in 0..16 {
        let (client, tally, next) = (client.clone(), Arc::clone(&tally), Arc::clone(&next));
        callers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return;
                }
                let name = format!("{i}-{}", "x".repeat(60 * 1024));
                let url = format!("http://{addr}/api/services/Sink/actions/{name}");
                let r =
                    tokio::time::timeout(Duration::from_secs(10), client.post(url).json(&0).send())
                        .await;
                tally.add(r.ok().and_then(|r| r.ok()).map(|r| r.status().as_u16()));
            }
        });
    }
    while callers.join_next().await.is_some() {}
    let size1 = client.get(&metrics_url).send().await?.bytes().await?.len();
    let (rss1, hwm) = rss_kib();
    println!(
        "cardinality: {n} POSTs to made-up 60 KB action names\n  {}\n  /metrics {size0} B → {size1} B\n  {}",
        tally.show(),
        memory(rss0, rss1, hwm)
    );
    stop(host).await
}

async fn burst(n: usize) -> anyhow::Result<()> {
    let (host, addr) = serve(loopback()).await?;
    let (rss0, _) = rss_kib();
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let mut clients = JoinSet::new();
    for _ in 0..n {
        let (tally, gate) = (Arc::clone(&tally), Arc::clone(&gate));
        clients.spawn(async move {
            gate.wait().await;
            tally.add(live(addr, Duration::from_secs(5)).await);
        });
    }
    while clients.join_next().await.is_some() {}
    let (rss1, hwm) = rss_kib();
    println!(
        "burst: {n} connections at once, cap 1024\n  {}\n  {}",
        tally.show(),
        memory(rss0, rss1, hwm)
    );
    stop(host).await
}
