//! What a heartbeat says of each service's health: the report of the host's last
//! health check, cut to what every heartbeat can carry. Without it, another host
//! judged a remote service's health from its run counts alone, and a service its
//! own check called degraded or unhealthy read healthy there (found by a probe).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use koan::HostHandle;
use koan::health::HealthReport;

/// The most bytes of a report's description, and of its error, a heartbeat
/// carries: the entry is written every heartbeat, for every service of the host.
pub(crate) const MAX_TEXT: usize = 512;

/// The most bytes of a report's figures (`data`, as JSON) a heartbeat carries:
/// more are left out, and the description says so.
pub(crate) const MAX_DATA: usize = 1024;

/// Where a cut report is whole.
const WHOLE: &str =
    "the service's own health (`GET /api/services/{name}/health` on its host) has it whole";

/// `report` within [`MAX_TEXT`] and [`MAX_DATA`], each cut saying so.
pub(crate) fn bounded(mut report: HealthReport) -> HealthReport {
    report.description = report.description.map(cut);
    report.error = report.error.map(cut);
    let data = serde_json::to_vec(&report.data).map_or(0, |d| d.len());
    if data > MAX_DATA {
        report.data.clear();
        let note = format!("(its figures, {data} bytes, left out of the registry: {WHOLE})");
        report.description = Some(match report.description.take() {
            Some(d) => format!("{d} {note}"),
            None => note,
        });
    }
    report
}

/// `text` cut to [`MAX_TEXT`] bytes (at a character's edge) when longer, saying so.
fn cut(mut text: String) -> String {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let total = text.len();
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!(
        "… ({total} bytes; the registry keeps the first {MAX_TEXT}: {WHOLE})"
    ));
    text
}

/// The reports of every service of the host, bounded, by service name.
pub(crate) type Reports = BTreeMap<String, HealthReport>;

type Check = Pin<Box<dyn Future<Output = Reports> + Send>>;

/// The host's health checks as its heartbeats run them: at most one round at a
/// time, each service's check bounded by the host (5 s), never awaited by a
/// heartbeat — a slow check delays the next report, not the heartbeat, which
/// carries the last reports known.
pub(crate) struct HealthChecks {
    host: HostHandle,
    running: Option<Check>,
    /// When the running round began.
    since: Option<tokio::time::Instant>,
    last: Reports,
}

/// A round still running after this long is said in every report announced
/// meanwhile ([`HealthChecks::reports`]): each check is bounded at 5 s by the host,
/// so only a check that blocks its thread (no `.await` for the bound to fire at)
/// holds a round longer. Without a word, the reports before it were announced as
/// current for as long as it held (a review). No second round is started
/// meanwhile: each would leave another thread blocked.
pub(crate) const OVERDUE: std::time::Duration = std::time::Duration::from_secs(10);

impl HealthChecks {
    pub(crate) fn new(host: HostHandle) -> HealthChecks {
        HealthChecks {
            host,
            running: None,
            since: None,
            last: Reports::new(),
        }
    }

    /// Starts a round of checks, unless one runs.
    pub(crate) fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let host = self.host.clone();
        self.since = Some(tokio::time::Instant::now());
        self.running = Some(Box::pin(async move {
            host.health()
                .await
                .services
                .into_iter()
                .map(|s| (s.service, bounded(s.report)))
                .collect()
        }));
    }

    /// Resolves when the running round ends (never while none runs): whether
    /// a verdict or a sentence changed since the last round. Cancel-safe: the
    /// round goes on in `self` when this future is dropped.
    pub(crate) async fn ended(&mut self) -> bool {
        let Some(round) = &mut self.running else {
            return std::future::pending().await;
        };
        let reports = round.await;
        self.running = None;
        self.since = None;
        let said = |r: &Reports| {
            r.iter()
                .map(|(name, r)| {
                    (
                        name.clone(),
                        r.status,
                        r.description.clone(),
                        r.error.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let changed = said(&reports) != said(&self.last);
        self.last = reports;
        changed
    }

    /// The last reports known; each degraded, saying why, while a round has run
    /// past [`OVERDUE`].
    pub(crate) fn reports(&self) -> std::borrow::Cow<'_, Reports> {
        let Some(for_long) = self.since.map(|s| s.elapsed()).filter(|d| *d >= OVERDUE) else {
            return std::borrow::Cow::Borrowed(&self.last);
        };
        let overdue = |name: &String, was: &HealthReport| {
            let before = match &was.description {
                Some(d) => format!("{:?}: {d}", was.status),
                None => format!("{:?}", was.status),
            };
            let said = format!(
                "this host's round of health checks has not ended for {} s (a check that blocks its thread?); the last report before it: {before}",
                for_long.as_secs()
            );
            (name.clone(), bounded(HealthReport::degraded(said)))
        };
        std::borrow::Cow::Owned(self.last.iter().map(|(n, r)| overdue(n, r)).collect())
    }
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecks")
            .field("running", &self.running.is_some())
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koan::health::HealthStatus;

    /// A round held past [`OVERDUE`] by a check that blocks its thread: every
    /// report announced meanwhile is degraded, saying so; once it ends, its
    /// reports are announced as they are.
    #[tokio::test(start_paused = true)]
    async fn a_round_held_past_its_bound_is_said_in_every_report() {
        let host = koan::Host::builder().build().expect("a host").start();
        let mut checks = HealthChecks::new(host.clone());
        checks.last = Reports::from([("Svc".to_owned(), HealthReport::healthy("fine"))]);
        // A round that never ends, as one held by a blocked thread.
        checks.running = Some(Box::pin(std::future::pending()));
        checks.since = Some(tokio::time::Instant::now());
        assert_eq!(checks.reports()["Svc"].status, HealthStatus::Healthy);
        tokio::time::advance(OVERDUE).await;
        let said = checks.reports()["Svc"].clone();
        assert_eq!(said.status, HealthStatus::Degraded);
        let text = said.description.unwrap_or_default();
        assert!(
            text.contains("has not ended for 10 s") && text.contains("Healthy: fine"),
            "{text}"
        );
        // No second round meanwhile.
        checks.start();
        assert!(checks.running.is_some());
        host.shutdown();
    }

    #[test]
    fn a_long_report_is_cut_saying_so() {
        let long = "é".repeat(30_000);
        let r = bounded(
            HealthReport::degraded(long.clone())
                .with_error(long)
                .with_data("rows", "x".repeat(5_000)),
        );
        let description = r.description.unwrap_or_default();
        assert!(description.len() < MAX_TEXT + 400, "{}", description.len());
        assert!(description.contains("60000 bytes; the registry keeps the first 512"));
        assert!(description.contains("its figures, 5011 bytes, left out"));
        let error = r.error.unwrap_or_default();
        assert!(error.len() < MAX_TEXT + 300 && error.contains("60000 bytes"));
        assert!(r.data.is_empty());
        // Short ones whole.
        let short = HealthReport::unhealthy("disk full").with_data("free", 0);
        assert_eq!(bounded(short.clone()), short);
    }
}
