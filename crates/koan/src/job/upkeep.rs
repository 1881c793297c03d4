//! The runner's upkeep between claims: forgetting old final jobs (retention) and
//! publishing the counts of jobs by state; and the record of a run's end, tried
//! again while the store refuses it.

use crate::host::HostInner;

/// Forgets final jobs: those that ended more than `retention` ago, then the
/// oldest while the final jobs weigh more than `retention_max_bytes`. Two calls,
/// so that the log says which rule forgot how many (it called jobs forgotten
/// seconds after they ended "old", a probe).
pub(super) async fn purge(host: &HostInner) {
    let jobs = &host.jobs;
    let now = host.config.clock.now();
    let retention =
        chrono::Duration::from_std(jobs.settings.retention).unwrap_or(chrono::Duration::days(7));
    let by_age = jobs.store.purge(now - retention, u64::MAX).await;
    // No job ended before the earliest time: this call forgets by size alone.
    let budget = jobs.settings.retention_max_bytes;
    let by_size = jobs
        .store
        .purge(chrono::DateTime::<chrono::Utc>::MIN_UTC, budget)
        .await;
    match (by_age, by_size) {
        (Ok(by_age), Ok(by_size)) => {
            let hours = retention.num_hours();
            if let Some(said) = forgotten(by_age, by_size, hours, budget / (1024 * 1024)) {
                tracing::info!(by_age, by_size, "{said} (retention)");
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "could not forget finished jobs (retention)")
        }
    }
}

/// What a pass forgot, by age (older than `hours`) and by size (past `budget_mb`),
/// each rule said only when it forgot some: by size alone it said "forgot 0
/// finished jobs that ended over 168 h ago, and 2 more, …" (a probe). `None` when
/// nothing was forgotten.
fn forgotten(by_age: u64, by_size: u64, hours: i64, budget_mb: u64) -> Option<String> {
    let jobs = |n: u64| if n == 1 { "job" } else { "jobs" };
    let old = format!(
        "{by_age} finished {} that ended over {hours} h ago",
        jobs(by_age)
    );
    let budget = format!("past the finished jobs' budget of {budget_mb} MB");
    match (by_age, by_size) {
        (0, 0) => None,
        (_, 0) => Some(format!("forgot {old}")),
        (0, _) => Some(format!(
            "forgot {by_size} finished {}, the oldest, {budget}",
            jobs(by_size)
        )),
        (_, _) => Some(format!(
            "forgot {old}, and {by_size} more, the oldest, {budget}"
        )),
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

/// Records a run's end (`how`), trying again while the store refuses it (a full
/// disk, a lock held elsewhere), for up to half a lease: a job whose run is over
/// must not run again because its outcome could not be written at once (seen in a
/// probe, 3 of 4 such jobs ran twice, their history blaming their host). Past
/// that, or while the host stops, the last refusal is the answer.
pub(super) async fn finish(
    host: &HostInner,
    claim: &super::store::Claim,
    how: super::store::Finish,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::error::Result<bool> {
    let jobs = &host.jobs;
    let until = tokio::time::Instant::now() + jobs.settings.lease / 2;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match jobs.store.finish(claim, how.clone(), now).await {
            Err(e)
                if tokio::time::Instant::now() + pause < until
                    && !host.stop_request.is_cancelled() =>
            {
                tracing::warn!(job = %claim.id, error = %e, "could not record the job's outcome; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            answer => return answer,
        }
    }
}

/// How long a job of a service no one here runs is due before it is said.
const UNSERVED_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(1);
/// How often it is said again, per service.
const UNSERVED_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Says, every 10 minutes per service, that jobs of a service no enabled instance of
/// this host runs have been due for a minute: after an upgrade renamed a service,
/// its stored jobs waited for ever with no word in the log, the health or the
/// dashboard (found by a probe). Another process sharing the store may run them,
/// hence a warning, not a failure. Stores that cannot tell cheaply
/// (`live_services` is `None`) say nothing.
pub(super) async fn unserved(
    host: &HostInner,
    runs: impl Fn(&str) -> bool,
    said: &mut std::collections::HashMap<String, std::time::Instant>,
) {
    let Ok(Some(live)) = host.jobs.store.live_services().await else {
        return;
    };
    let now = host.config.clock.now();
    for (service, due) in live {
        if runs(&service) || now - due < UNSERVED_AFTER {
            continue;
        }
        if said
            .get(&service)
            .is_some_and(|t| t.elapsed() < UNSERVED_EVERY)
        {
            continue;
        }
        said.insert(service.clone(), std::time::Instant::now());
        let why = match host.registry.by_name(&service) {
            Some(cell) if cell.spec.disabled.is_some() => "the service is disabled here",
            Some(_) => "the service runs here but takes no jobs",
            None => "no service of that name runs here",
        };
        tracing::warn!(
            service = %service.escape_debug(),
            due_since = %due,
            "jobs of this service are waiting: {why}; they run once a host running it shares this store (a service renamed by an upgrade: run its old name, or cancel and delete its jobs)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::forgotten;

    /// Each rule is said only when it forgot some, in the singular for one.
    #[test]
    fn a_pass_says_what_each_rule_forgot() {
        assert_eq!(forgotten(0, 0, 168, 256), None);
        assert_eq!(
            forgotten(3, 0, 168, 256).as_deref(),
            Some("forgot 3 finished jobs that ended over 168 h ago")
        );
        assert_eq!(
            forgotten(0, 1, 168, 256).as_deref(),
            Some("forgot 1 finished job, the oldest, past the finished jobs' budget of 256 MB")
        );
        assert_eq!(
            forgotten(1, 120, 168, 256).as_deref(),
            Some(
                "forgot 1 finished job that ended over 168 h ago, and 120 more, the oldest, \
                 past the finished jobs' budget of 256 MB"
            )
        );
    }
}
