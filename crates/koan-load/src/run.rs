//! One load run: its counts, its callers' loop and what each call answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use koan::{HostHandle, error::ErrorKind};

use crate::histogram::Histogram;

/// Outcome counts of one run.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) sent: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) shutting_down: AtomicU64,
    pub(crate) other: AtomicU64,
    /// A success whose result was not the caller's own number.
    pub(crate) mixed_up: AtomicU64,
}

pub(crate) struct Run {
    pub(crate) host: HostHandle,
    pub(crate) counts: Counts,
    pub(crate) total: Histogram,
    pub(crate) window: Histogram,
    pub(crate) next: AtomicU64,
    pub(crate) requests: u64,
    pub(crate) stop: AtomicBool,
    pub(crate) peak_depth: AtomicUsize,
    pub(crate) peak_in_flight: AtomicUsize,
    pub(crate) first_errors: std::sync::Mutex<Vec<String>>,
    pub(crate) http: Option<(reqwest::Client, String)>,
    pub(crate) backoff: Duration,
}

pub(crate) enum Outcome {
    Ok(u64),
    Busy,
    ShuttingDown,
    Other(String),
}

#[derive(Clone, Copy)]
pub(crate) enum Path {
    Execute,
    Enqueue,
    Http,
}

impl Run {
    /// The next request number, or `None` when the run is over.
    pub(crate) fn next(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.requests).then_some(n)
    }

    pub(crate) async fn one(&self, path: Path, n: u64) -> Outcome {
        let from_koan = |r: koan::Result<u64>| match r {
            Ok(v) => Outcome::Ok(v),
            Err(e) if e.kind() == ErrorKind::Busy => Outcome::Busy,
            Err(e) if e.kind() == ErrorKind::ShuttingDown => Outcome::ShuttingDown,
            Err(e) => Outcome::Other(format!("{:?}: {e}", e.kind())),
        };
        match path {
            Path::Execute => {
                let r = self.host.service("Sink").action("work", n).execute().await;
                from_koan(r.and_then(|o| o.value::<u64>()))
            }
            Path::Enqueue => {
                let r = match self.host.service("Sink").action("work", n).enqueue().await {
                    Ok(ticket) => ticket.outcome().await.and_then(|o| o.value::<u64>()),
                    Err(e) => Err(e),
                };
                from_koan(r)
            }
            Path::Http => {
                let Some((client, url)) = &self.http else {
                    return Outcome::Other("no HTTP server".into());
                };
                let resp = match client.post(url).json(&n).send().await {
                    Ok(r) => r,
                    Err(e) => return Outcome::Other(format!("transport: {e}")),
                };
                let status = resp.status().as_u16();
                let body: serde_json::Value = match resp.json().await {
                    Ok(b) => b,
                    Err(e) => return Outcome::Other(format!("{status} with a bad body: {e}")),
                };
                match (status, body["error"].as_str()) {
                    (200, _) => match body["result"].as_u64() {
                        Some(v) => Outcome::Ok(v),
                        None => Outcome::Other(format!("200 without a result: {body}")),
                    },
                    (429, Some("busy")) => Outcome::Busy,
                    (503, Some("shutting_down")) => Outcome::ShuttingDown,
                    _ => Outcome::Other(format!("{status}: {body}")),
                }
            }
        }
    }

    pub(crate) async fn caller(self: Arc<Self>, path: Path) {
        while let Some(n) = self.next() {
            self.counts.sent.fetch_add(1, Ordering::Relaxed);
            let t0 = Instant::now();
            let outcome = self.one(path, n).await;
            let took = t0.elapsed();
            self.total.record(took);
            self.window.record(took);
            self.counts.answered.fetch_add(1, Ordering::Relaxed);
            let c = &self.counts;
            match outcome {
                Outcome::Ok(v) => {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                    if v != n {
                        c.mixed_up.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Outcome::Busy => {
                    c.busy.fetch_add(1, Ordering::Relaxed);
                    // A refused caller backs off a little, as a client would.
                    if self.backoff.is_zero() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(self.backoff).await;
                    }
                }
                Outcome::ShuttingDown => {
                    c.shutting_down.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Other(e) => {
                    c.other.fetch_add(1, Ordering::Relaxed);
                    let mut first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
                    if first.len() < 5 {
                        first.push(e);
                    }
                }
            }
        }
    }

    /// Samples the queue depth and the handlers in flight until the run stops.
    pub(crate) async fn sampler(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Ok(s) = self.host.status("Sink") {
                self.peak_depth.fetch_max(s.queue_depth, Ordering::Relaxed);
                self.peak_in_flight
                    .fetch_max(s.in_flight, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
