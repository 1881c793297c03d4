//! The runner's upkeep between claims: forgetting old final jobs (retention) and
//! publishing the counts of jobs by state.

use crate::host::HostInner;

/// Forgets old final jobs (retention by age and by size).
pub(super) async fn purge(host: &HostInner) {
    let jobs = &host.jobs;
    let now = host.config.clock.now();
    let older = now
        - chrono::Duration::from_std(jobs.settings.retention).unwrap_or(chrono::Duration::days(7));
    match jobs
        .store
        .purge(older, jobs.settings.retention_max_bytes)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "forgot old finished jobs (retention)"),
        Err(e) => tracing::warn!(error = %e, "could not purge old jobs"),
    }
}

/// Publishes the counts of jobs by state (`koan_jobs{state}`).
pub(super) async fn publish_counts(host: &HostInner) {
    if let Ok(counts) = host.jobs.store.counts(None).await {
        for (state, n) in counts.by_state {
            metrics::gauge!("koan_jobs", "state" => state.as_str()).set(n as f64);
        }
    }
}
