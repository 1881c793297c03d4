//! B8: koan over NATS (remote action round trip, durable enqueue-to-done) against raw
//! async-nats request/reply and raw JetStream (`durable/`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use koan::{Host, HostHandle};
use koan_nats::{NatsOptions, NatsTransport};
use serde_json::{Value, json};

use crate::actions::{AddReq, Calc, stop_host};
use crate::common::{Better, Opts, Row, median, micros, paired_ratio};

pub(crate) const SERVER: &str = "/usr/sbin/nats-server";

/// A nats-server of our own, killed (and its store removed) when dropped.
pub(crate) struct NatsServer {
    child: tokio::process::Child,
    dir: PathBuf,
    pub(crate) url: String,
    /// Its monitoring endpoint (`host:port`, for `/varz`).
    pub(crate) monitor: String,
}

impl NatsServer {
    /// The broker's counters now (see [`crate::broker`]).
    pub(crate) async fn work(&self) -> anyhow::Result<crate::broker::Work> {
        crate::broker::read(&self.monitor, self.child.id()).await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) async fn start_server() -> anyhow::Result<NatsServer> {
    let free = || -> std::io::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (port, monitor) = (free()?, free()?);
    let dir = std::env::temp_dir().join(format!("koan-bench-nats-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the broker's store {}", dir.display()))?;
    let child = tokio::process::Command::new(SERVER)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", &monitor.to_string(), "-sd"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {SERVER}"))?;
    let url = format!("nats://127.0.0.1:{port}");
    let server = NatsServer {
        child,
        dir,
        url,
        monitor: format!("127.0.0.1:{monitor}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // (No account query: nats-server 2.9 answers it in a shape the client cannot
        // read; koan-nats creates its streams directly for the same reason.)
        if let Ok(c) = async_nats::connect(&server.url).await
            && c.flush().await.is_ok()
        {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err(anyhow!("nats-server did not come up on {}", server.url));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn answer(payload: &[u8]) -> bytes::Bytes {
    let out = match serde_json::from_slice::<AddReq>(payload) {
        Ok(r) => json!(r.a + r.b),
        Err(e) => json!({ "error": e.to_string() }),
    };
    serde_json::to_vec(&out).unwrap_or_default().into()
}

pub(crate) async fn b8(opts: Opts) -> anyhow::Result<Vec<Row>> {
    if !std::path::Path::new(SERVER).exists() {
        return Ok(vec![
            Row {
                koan: None,
                ..Row::new("B8", "NATS", "", Better::Lower, 0.0)
            }
            .note(format!(
                "skipped: {SERVER} not installed (apt-get install nats-server)"
            )),
        ]);
    }
    let server = start_server().await?;
    let mut o = NatsOptions::new(server.url.clone());
    o.default_request_timeout = Duration::from_secs(10);
    let ta = NatsTransport::connect(o.clone()).await?;
    let tb = NatsTransport::connect(o.clone()).await?;
    // Host A runs the service and serves it to the cluster; host B only calls.
    let host_a = Host::builder()
        .instance(Calc)
        .instance(crate::durable::WideCalc)
        .transport(ta.clone().into_transport())
        .build()?
        .start();
    host_a.started().await?;
    let node = ta.attach(&host_a).await?;
    let host_b = Host::builder()
        .transport(tb.clone().into_transport())
        .build()?
        .start();
    host_b.started().await?;

    // Raw request/reply: a responder on its own connection.
    let raw_srv = async_nats::connect(&server.url).await?;
    let raw_cli = async_nats::connect(&server.url).await?;
    let mut sub = raw_srv
        .queue_subscribe("bench.add", "bench".to_owned())
        .await?;
    let responder = {
        let c = raw_srv.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(to) = msg.reply {
                    let _ = c.publish(to, answer(&msg.payload)).await;
                }
            }
        })
    };
    raw_srv.flush().await?;

    let mut rows = Vec::new();

    // ---- round trip
    let n = opts.pick(2_000, 100);
    let rounds = opts.rounds(5);
    let (mut ks, mut rs) = (Vec::new(), Vec::new());
    // `KOAN_BENCH_SOLO`: one side's round trips alone (0 koan, 1 raw), for a
    // profile; the durable rows are then skipped.
    let solo = crate::common::solo();
    // What each side asked of the broker, and of this process's CPU (both of
    // koan's hosts, or the raw client and responder), over the measured rounds.
    let (mut koan_spent, mut raw_spent) = (Spent::default(), Spent::default());
    for round in 0..=rounds {
        let before = Spent::now(&server).await;
        let k = match solo {
            Some(i) if i != 0 => f64::NAN,
            _ => koan_rtt(&host_b, n).await?,
        };
        let mid = Spent::now(&server).await;
        let r = match solo {
            Some(i) if i != 1 => f64::NAN,
            _ => raw_rtt(&raw_cli, n).await?,
        };
        let after = Spent::now(&server).await;
        if round > 0 {
            ks.push(k);
            rs.push(r);
            koan_spent = koan_spent.plus(before.until(mid));
            raw_spent = raw_spent.plus(mid.until(after));
        }
    }
    let calls = n * rounds as u64;
    let row = Row::new(
        "B8",
        "remote action round trip",
        "µs",
        Better::Lower,
        median(&ks),
    )
    .baseline_paired(
        "raw async-nats request/reply",
        median(&rs),
        paired_ratio(&ks, &rs),
    );
    let met = row.ratio("raw async-nats request/reply").map(|r| r <= 1.1);
    rows.push(row.goal("≤ 1.1× raw", met).note(format!(
        "{n} sequential calls/round, ratio: median of each round's; per call: koan {}, raw {}",
        koan_spent.per_call(calls),
        raw_spent.per_call(calls)
    )));

    // ---- durable throughput (with `KOAN_BENCH_SOLO`, only the goal row alone
    // runs, when asked for: koan's rounds without raw's)
    if solo.is_none() || crate::durable::goal_row_only().is_some() {
        rows.extend(crate::durable::rows(opts, &server, &host_b, &o, &raw_cli).await?);
    }

    responder.abort();
    node.detach().await;
    stop_host(host_b).await;
    stop_host(host_a).await;
    drop(server);
    Ok(rows)
}

/// The broker's counters and this process's CPU seconds: what a stretch of calls
/// spent, as the difference of two readings.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Spent {
    broker: crate::broker::Work,
    cpu_s: f64,
}

impl Spent {
    pub(crate) async fn now(server: &NatsServer) -> Spent {
        Spent {
            broker: server.work().await.unwrap_or_default(),
            cpu_s: crate::common::cpu_seconds(std::process::id()),
        }
    }

    pub(crate) fn until(self, later: Spent) -> Spent {
        Spent {
            broker: self.broker.per_job(later.broker, 1),
            cpu_s: later.cpu_s - self.cpu_s,
        }
    }

    pub(crate) fn plus(self, more: Spent) -> Spent {
        Spent {
            broker: self.broker.plus(more.broker),
            cpu_s: self.cpu_s + more.cpu_s,
        }
    }

    /// "this process N µs CPU; broker …" per call, of `calls`.
    pub(crate) fn per_call(self, calls: u64) -> String {
        let n = calls.max(1) as f64;
        format!(
            "{:.1} µs CPU here, broker {}",
            self.cpu_s * 1e6 / n,
            crate::broker::Work::default()
                .per_job(self.broker, calls)
                .describe()
        )
    }
}

async fn koan_rtt(host: &HostHandle, n: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    for i in 0..n {
        let v = host
            .service("Calc")
            .action("add", json!({ "a": i, "b": 1 }))
            .execute()
            .await?
            .json()?;
        if v != json!(i + 1) {
            return Err(anyhow!("koan remote: wrong answer {v}"));
        }
    }
    Ok(micros(t.elapsed()) / n as f64)
}

async fn raw_rtt(client: &async_nats::Client, n: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    for i in 0..n {
        let body = serde_json::to_vec(&json!({ "a": i, "b": 1 }))?;
        let msg = client.request("bench.add", body.into()).await?;
        let v: Value = serde_json::from_slice(&msg.payload)?;
        if v != json!(i + 1) {
            return Err(anyhow!("raw: wrong answer {v}"));
        }
    }
    Ok(micros(t.elapsed()) / n as f64)
}
