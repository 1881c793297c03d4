//! What the broker did for a stretch of B8: the messages `nats-server` took in and
//! sent out (its monitoring endpoint's `/varz`) and the CPU time it used
//! (`/proc/<pid>/stat`), so that B8 durable's rows say how much work per job each
//! side asks of a broker that shares the machine's cores.

use anyhow::{Context, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counters of the broker at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Work {
    pub(crate) msgs_in: f64,
    pub(crate) msgs_out: f64,
    /// User + system CPU seconds of the `nats-server` process.
    pub(crate) cpu_s: f64,
}

impl Work {
    /// What happened between `self` (before) and `after`, per job.
    pub(crate) fn per_job(self, after: Work, jobs: u64) -> Work {
        let n = jobs.max(1) as f64;
        Work {
            msgs_in: (after.msgs_in - self.msgs_in) / n,
            msgs_out: (after.msgs_out - self.msgs_out) / n,
            cpu_s: (after.cpu_s - self.cpu_s) / n,
        }
    }

    /// `self` and `more` together (the stretches of several rounds).
    pub(crate) fn plus(self, more: Work) -> Work {
        Work {
            msgs_in: self.msgs_in + more.msgs_in,
            msgs_out: self.msgs_out + more.msgs_out,
            cpu_s: self.cpu_s + more.cpu_s,
        }
    }

    /// "in/out msgs, CPU µs" per job.
    pub(crate) fn describe(self) -> String {
        format!(
            "{:.1} in + {:.1} out msgs, {:.0} µs broker CPU",
            self.msgs_in,
            self.msgs_out,
            self.cpu_s * 1e6
        )
    }
}

/// Reads the broker's counters: `monitor` is its monitoring `host:port`, `pid` its
/// process id.
pub(crate) async fn read(monitor: &str, pid: Option<u32>) -> anyhow::Result<Work> {
    let mut s = tokio::net::TcpStream::connect(monitor)
        .await
        .with_context(|| format!("nats-server monitoring on {monitor}"))?;
    s.write_all(b"GET /varz HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &raw[i + 4..])
        .ok_or_else(|| anyhow!("/varz: no HTTP body"))?;
    let v: serde_json::Value = serde_json::from_slice(body).context("/varz: not JSON")?;
    let count = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    Ok(Work {
        msgs_in: count("in_msgs"),
        msgs_out: count("out_msgs"),
        cpu_s: pid.map_or(0.0, crate::common::cpu_seconds),
    })
}
