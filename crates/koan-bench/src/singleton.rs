//! B10: cluster singleton failover. Koan hosts in this process, each with its own NATS
//! connection and attached [`Node`], run one periodic singleton on a real
//! `nats-server -js`. The holder of its lease is killed the way a SIGKILL would: its
//! node dropped without `detach()` (its tasks aborted, its lease abandoned, the KV key
//! left to lapse), its host stopped and its connection closed. The figure is the time
//! from the kill to the first tick on another host, against the lease TTL.
//!
//! A raw client watches the lease key (each renewal and take-over as it is stored)
//! and, after the kill, reads it every 5 ms to see when it lapses, so each failover
//! splits into the lease left at the kill, the wait for a polling host to take it, and
//! the wait for that host's first tick.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use koan::{
    BoxError, Host, HostHandle, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions,
    service::RunReason,
};
use koan_nats::{NatsOptions, NatsTransport, Node};

use crate::actions::stop_host;
use crate::common::{Better, Opts, Row, median};
use crate::nats::{SERVER, start_server};

/// The singleton's period.
const PERIOD: Duration = Duration::from_millis(100);
/// The registry heartbeat of every host.
const HEARTBEAT: Duration = Duration::from_millis(200);
const SERVICE: &str = "Beacon";
/// Where koan-nats keeps `Beacon`'s lease: its bucket, and the service's token as key.
const LEASES_BUCKET: &str = "koan_leases";
const LEASE_KEY: &str = "beacon";
/// The safety net of every wait: reaching it is an error, never a figure.
const PATIENCE: Duration = Duration::from_secs(30);

/// Every tick of every host: (host number, when), and which of them were triggered
/// (the new holder running the tick the dead one missed) rather than scheduled.
#[derive(Default)]
struct Ticks(Mutex<Vec<(usize, Instant)>>, Mutex<Vec<Instant>>);

impl Ticks {
    fn push(&self, host: usize, triggered: bool) {
        let now = Instant::now();
        if let Ok(mut v) = self.0.lock() {
            v.push((host, now));
        }
        if triggered && let Ok(mut v) = self.1.lock() {
            v.push(now);
        }
    }

    fn all(&self) -> Vec<(usize, Instant)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn triggered(&self, at: Instant) -> bool {
        self.1.lock().is_ok_and(|v| v.contains(&at))
    }
}

/// The periodic singleton: records which host ran each tick.
struct Beacon {
    host: usize,
    ticks: Arc<Ticks>,
}

impl Service for Beacon {
    type Kind = Periodic;

    fn options() -> ServiceOptions {
        ServiceOptions::named(SERVICE).every(PERIOD).singleton(true)
    }
}

impl PeriodicService for Beacon {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.ticks
            .push(self.host, cx.reason() == RunReason::Trigger);
        Ok(())
    }
}

/// Every value stored under the lease key, as the watch delivered it: (when, holder's
/// host id; `None` for a delete).
#[derive(Default)]
struct LeaseLog(Mutex<Vec<(Instant, Option<String>)>>);

impl LeaseLog {
    fn all(&self) -> Vec<(Instant, Option<String>)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// One koan host of the cluster.
struct Member {
    /// Its number (a replacement gets a new one).
    n: usize,
    /// Its NATS host id (the lease's value while it holds it).
    id: String,
    transport: NatsTransport,
    host: HostHandle,
    node: Option<Node>,
}

async fn join(o: &NatsOptions, n: usize, ticks: &Arc<Ticks>) -> anyhow::Result<Member> {
    let transport = NatsTransport::connect(o.clone()).await?;
    let host = Host::builder()
        .instance(Beacon {
            host: n,
            ticks: Arc::clone(ticks),
        })
        .transport(transport.clone().into_transport())
        .build()?
        .start();
    host.started().await?;
    let node = transport.attach(&host).await?;
    Ok(Member {
        n,
        id: transport.host_id().to_owned(),
        transport,
        host,
        node: Some(node),
    })
}

/// What one kill measured (each part from the kill, where it could be seen).
struct Sample {
    /// Kill → first tick on another host.
    failover: Duration,
    /// How long before the kill the holder last renewed the lease.
    renewed_before: Option<Duration>,
    /// Kill → the lease key read as gone.
    lapsed: Option<Duration>,
    /// Kill → another host's lease stored.
    taken: Option<Duration>,
    /// Ticks the killed host ran after the kill (must be 0).
    dead_ticks: usize,
    /// Whether the first tick elsewhere was the missed tick, triggered on take-over.
    triggered: bool,
}

pub(crate) async fn b10(opts: Opts) -> anyhow::Result<Vec<Row>> {
    if !std::path::Path::new(SERVER).exists() {
        return Ok(vec![
            Row {
                koan: None,
                ..Row::new("B10", "singleton failover", "ms", Better::Lower, 0.0)
            }
            .note(format!(
                "skipped: {SERVER} not installed (apt-get install nats-server)"
            )),
        ]);
    }
    let lease = opts.pick(Duration::from_secs(1), Duration::from_millis(500));
    let hosts = opts.pick(3, 2);
    let rounds = opts.pick(7, 1);

    let server = start_server().await?;
    let mut o = NatsOptions::new(server.url.clone());
    o.lease = lease;
    o.heartbeat = HEARTBEAT;
    o.default_request_timeout = Duration::from_secs(10);

    let ticks = Arc::new(Ticks::default());
    let mut members = Vec::new();
    for n in 0..hosts {
        members.push(within("a host to join", join(&o, n, &ticks)).await??);
    }
    let mut next = hosts;

    // The lease as stored: a watch for renewals and take-overs, reads for its lapse.
    let raw = async_nats::connect(&server.url).await?;
    let kv = jetstream::new(raw.clone())
        .get_key_value(LEASES_BUCKET)
        .await
        .map_err(|e| anyhow!("cannot open `{LEASES_BUCKET}`: {e}"))?;
    let log = Arc::new(LeaseLog::default());
    let mut watch = kv
        .watch(LEASE_KEY)
        .await
        .map_err(|e| anyhow!("cannot watch the lease: {e}"))?;
    let watcher = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            while let Some(Ok(e)) = watch.next().await {
                let holder = (e.operation == kv::Operation::Put)
                    .then(|| String::from_utf8_lossy(&e.value).into_owned());
                if let Ok(mut v) = log.0.lock() {
                    v.push((Instant::now(), holder));
                }
            }
        })
    };

    let mut samples = Vec::new();
    let mut since = Instant::now();
    for round in 0..rounds {
        let idx = holder(&ticks, &members, since).await?;
        // Kills at different points of the period (and of the renewals).
        tokio::time::sleep(Duration::from_millis((round as u64 * 37) % 100)).await;
        let dead = members.remove(idx);
        let s = kill_and_wait(dead, &ticks, &log, &kv, lease).await?;
        since = Instant::now();
        samples.push(s);
        if round + 1 < rounds {
            members.push(within("a replacement host to join", join(&o, next, &ticks)).await??);
            next += 1;
        }
    }

    watcher.abort();
    for mut m in members {
        if let Some(node) = m.node.take() {
            let _ = tokio::time::timeout(PATIENCE, node.detach()).await;
        }
        let _ = tokio::time::timeout(PATIENCE, stop_host(m.host)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), m.transport.client().drain()).await;
    }
    drop(server);
    Ok(rows(&samples, lease, hosts))
}

/// The member whose ticks count up: the last three ticks since `since` are its own.
async fn holder(ticks: &Ticks, members: &[Member], since: Instant) -> anyhow::Result<usize> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let recent: Vec<usize> = ticks
            .all()
            .into_iter()
            .filter(|(_, t)| *t >= since)
            .map(|(n, _)| n)
            .collect();
        if let [.., a, b, c] = recent[..]
            && a == c
            && b == c
            && let Some(i) = members.iter().position(|m| m.n == c)
        {
            return Ok(i);
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "B10: no host ran three ticks in a row within {PATIENCE:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills the holder `dead` as a SIGKILL would and waits for another host's first tick.
async fn kill_and_wait(
    mut dead: Member,
    ticks: &Ticks,
    log: &LeaseLog,
    kv: &kv::Store,
    lease: Duration,
) -> anyhow::Result<Sample> {
    let client = dead.transport.client().clone();
    let host = dead.host.clone();
    let t0 = Instant::now();
    // No detach: the node's tasks are aborted and its lease abandoned (its driver asks
    // and is told no from now on), and the key stays until it lapses on the server.
    drop(dead.node.take());
    // The rest of the process going away: its host stops, its connection closes.
    let cleanup = tokio::spawn(async move {
        stop_host(host).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), client.drain()).await;
    });
    let deadline = t0 + PATIENCE;
    let lapse = {
        let (kv, id) = (kv.clone(), dead.id.clone());
        tokio::spawn(async move { lapsed_at(&kv, &id, deadline).await })
    };

    let first = loop {
        if let Some((_, t)) = ticks
            .all()
            .into_iter()
            .find(|(n, t)| *t > t0 && *n != dead.n)
        {
            break t;
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "B10: no other host ticked within {PATIENCE:?} of killing the holder (lease {lease:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let lapsed = lapse.await.context("the lease reader")?;
    // The take-over was stored before the first tick; its watch entry follows shortly.
    let mut taken = None;
    let look_until = Instant::now() + Duration::from_secs(2);
    while taken.is_none() && Instant::now() < look_until {
        taken = log
            .all()
            .into_iter()
            .find(|(t, h)| *t > t0 && h.as_deref().is_some_and(|h| h != dead.id))
            .map(|(t, _)| t);
        if taken.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let renewed = log
        .all()
        .into_iter()
        .filter(|(t, h)| *t <= t0 && h.as_deref() == Some(dead.id.as_str()))
        .map(|(t, _)| t)
        .next_back();
    let _ = tokio::time::timeout(PATIENCE, cleanup).await;
    let dead_ticks = ticks
        .all()
        .iter()
        .filter(|(n, t)| *n == dead.n && *t > t0)
        .count();
    Ok(Sample {
        failover: first - t0,
        renewed_before: renewed.map(|r| t0 - r),
        lapsed: lapsed.map(|l| l - t0),
        taken: taken.map(|t| t - t0),
        dead_ticks,
        triggered: ticks.triggered(first),
    })
}

/// When the dead holder's lease key was first read as gone; `None` when another host's
/// lease was read first (the gap fell between two reads) or at the deadline.
async fn lapsed_at(kv: &kv::Store, dead: &str, deadline: Instant) -> Option<Instant> {
    while Instant::now() < deadline {
        match kv.get(LEASE_KEY).await {
            Ok(None) => return Some(Instant::now()),
            Ok(Some(v)) if v.as_ref() != dead.as_bytes() => return None,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median in ms of the parts that were seen, or `n/a`.
fn part(v: impl Iterator<Item = Option<f64>>) -> String {
    let seen: Vec<f64> = v.flatten().collect();
    if seen.is_empty() {
        "n/a".to_owned()
    } else {
        format!("{:.0} ms", median(&seen))
    }
}

fn rows(samples: &[Sample], lease: Duration, hosts: usize) -> Vec<Row> {
    let l = ms(lease);
    let fail: Vec<f64> = samples.iter().map(|s| ms(s.failover)).collect();
    let max = fail.iter().copied().fold(0.0, f64::max);
    let per_kill = fail
        .iter()
        .map(|f| format!("{:.2}", f / l))
        .collect::<Vec<_>>()
        .join(", ");
    let renewed = part(samples.iter().map(|s| s.renewed_before.map(ms)));
    let left = part(samples.iter().map(|s| s.lapsed.map(ms)));
    // The server's lag past the TTL, from the holder's last renewal as watched.
    let lag = part(samples.iter().map(|s| {
        let (r, x) = (s.renewed_before?, s.lapsed?);
        Some(ms(x + r) - l)
    }));
    // (Clamped at 0: the watch may deliver a take-over a fraction of a millisecond
    // after the first tick it led to ran.)
    let poll = part(
        samples
            .iter()
            .map(|s| Some((ms(s.taken?) - ms(s.lapsed?)).max(0.0))),
    );
    let tick = part(
        samples
            .iter()
            .map(|s| Some((ms(s.failover) - ms(s.taken?)).max(0.0))),
    );
    let dead: usize = samples.iter().map(|s| s.dead_ticks).sum();
    let triggered = samples.iter().filter(|s| s.triggered).count();

    let goal = |row: Row| {
        let met = row.ratio("lease TTL").map(|r| r <= 1.2);
        row.goal("≤ 1.2× lease", met)
    };
    let median_row = Row::new(
        "B10",
        "singleton failover: holder killed → first tick on another host, median",
        "ms",
        Better::Lower,
        median(&fail),
    )
    .baseline("lease TTL", Some(l))
    .note(format!(
        "{} kill{}, {hosts} hosts, tick every {} ms, heartbeat {} ms; per kill ÷ lease: {per_kill}",
        samples.len(),
        if samples.len() == 1 { "" } else { "s" },
        PERIOD.as_millis(),
        HEARTBEAT.as_millis()
    ));
    let max_row = Row::new(
        "B10",
        "singleton failover, max",
        "ms",
        Better::Lower,
        max,
    )
    .baseline("lease TTL", Some(l))
    .note(format!(
        "medians: lease left at the kill {left} (last renewal {renewed} before it, expiry {lag} past the TTL) + take-over {poll} + first tick {tick} (the missed tick, triggered on take-over, in {triggered} of {}); ticks of the killed host after the kill: {dead}",
        samples.len()
    ));
    vec![goal(median_row), goal(max_row)]
}

/// Awaits `fut`, failing after [`PATIENCE`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .map_err(|_| anyhow!("B10: timed out after {PATIENCE:?} waiting for {what}"))
}
