//! The host's job runner: claims due jobs of the services this host runs, renews
//! their claims while they run, and records each outcome under its claim.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::record::{JobInfo, JobRecord, JobState, RetryPolicy};
use super::store::{ClaimRequest, Claimed, Finish, JobStore, cut_result, lease_from};
use super::ticket::Waiters;
use crate::action::{ActionRequest, ErrorBody, Target};
use crate::error::{Error, ErrorKind, Result};
use crate::host::{HostHandle, HostInner};
use crate::payload::Payload;
use crate::registry::ServiceCell;

/// The runner's settings (`background_services.jobs` in configuration).
#[derive(Debug, Clone)]
pub(crate) struct JobSettings {
    /// How long a claim holds without a heartbeat.
    pub(crate) lease: Duration,
    /// How often the runner looks at the store when nothing wakes it.
    pub(crate) poll: Duration,
    /// Results larger than this (as JSON) are cut and flagged.
    pub(crate) result_max_bytes: usize,
    /// Final jobs older than this are forgotten.
    pub(crate) retention: Duration,
    /// Final jobs are forgotten, oldest first, while they weigh more (live jobs
    /// do not count: retention cannot forget them).
    pub(crate) retention_max_bytes: u64,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            result_max_bytes: 64 * 1024,
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The job side of a host: its store, who waits for which job, and the runner's
/// state.
pub(crate) struct JobRunner {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) settings: JobSettings,
    pub(crate) waiters: Waiters,
    /// Jobs handed to the transport (services in other processes).
    pub(crate) remote: super::remote::RemoteJobs,
    /// The jobs of this host's store running here, stopped at a cancel.
    pub(crate) running_jobs: super::running::Running,
    wake: Notify,
    pub(super) changed: Notify,
    /// Set when the runner must take no more jobs.
    pub(super) closing: AtomicBool,
    /// Cancelled when the host stops with a durable store: the running jobs'
    /// handlers are told to stop (`shutdown.rs`).
    pub(super) halt: CancellationToken,
    /// Whether the store answered the last pass.
    pub(crate) store_health: super::store_health::StoreHealth,
    pub(super) running: AtomicUsize,
    /// The claims of the runs in progress, put back at the grace's end
    /// (`shutdown.rs`).
    pub(super) in_hand: super::shutdown::InHand,
    instance: String,
}

impl JobRunner {
    pub(crate) fn new(store: Arc<dyn JobStore>, settings: JobSettings) -> Self {
        JobRunner {
            store,
            settings,
            waiters: Waiters::default(),
            remote: super::remote::RemoteJobs::default(),
            running_jobs: super::running::Running::default(),
            wake: Notify::new(),
            changed: Notify::new(),
            closing: AtomicBool::new(false),
            halt: CancellationToken::new(),
            store_health: super::store_health::StoreHealth::default(),
            running: AtomicUsize::new(0),
            in_hand: super::shutdown::InHand::default(),
            instance: format!("{}-{}", crate::host::machine_name(), std::process::id()),
        }
    }

    /// This host as named on the attempts of the jobs it runs (`hostname-pid`).
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// A job was stored or changed by hand: look at the store now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether the host's shutdown told the running jobs' handlers to stop.
    pub(crate) fn halted(&self) -> bool {
        self.halt.is_cancelled()
    }

    /// The retry policy of `action` of `cell` (declared, or configured over it).
    pub(crate) fn policy(&self, cell: &ServiceCell, action: &str) -> RetryPolicy {
        cell.spec
            .actions
            .get(action)
            .map_or_else(RetryPolicy::default, |e| e.retry)
    }
}

/// Services of this host that can run jobs.
pub(super) fn job_services(host: &HostInner) -> Vec<String> {
    host.registry
        .all()
        .iter()
        .filter(|c| {
            c.spec.disabled.is_none() && (!c.spec.actions.is_empty() || c.control.is_some())
        })
        .map(|c| c.spec.name.to_string())
        .collect()
}

/// The runner's task: runs until the host stops claiming.
pub(crate) async fn run(host: Arc<HostInner>) {
    let jobs = &host.jobs;
    let cells: Vec<Arc<ServiceCell>> = host
        .registry
        .all()
        .iter()
        .filter(|c| {
            c.spec.disabled.is_none() && (!c.spec.actions.is_empty() || c.control.is_some())
        })
        .cloned()
        .collect();
    if cells.is_empty() {
        // No service here takes jobs: the store's due jobs are still said (an
        // upgrade that left none was silent; a review).
        let mut said = HashMap::new();
        super::upkeep::unserved(&host, |_| false, &mut said).await;
        return;
    }
    let busy: Vec<Arc<AtomicUsize>> = cells.iter().map(|_| Arc::default()).collect();
    let index: HashMap<&str, usize> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| (&*c.spec.name, i))
        .collect();
    let mut last_purge: Option<Instant> = None;
    let mut last_counts: Option<Instant> = None;
    let mut unserved_said = HashMap::new();
    loop {
        if jobs.closing.load(Ordering::Acquire) {
            return;
        }
        if last_purge.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            last_purge = Some(Instant::now());
            super::upkeep::purge(&host).await;
            let runs = |service: &str| index.contains_key(service);
            super::upkeep::unserved(&host, runs, &mut unserved_said).await;
        }
        if last_counts.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            last_counts = Some(Instant::now());
            super::upkeep::publish_counts(&host).await;
        }
        let mut store_failed: Option<String> = None;
        // Services with a slot still free after their claim: the next due job that
        // matters is theirs (a full service is woken by its next finished job).
        let mut free_after: Vec<String> = Vec::new();
        // The services with a free slot, the only ones that can take a job; with more
        // than one, the time each one's first job falls due, when the store can tell
        // (`JobStore::live_services`): one question to the store a pass instead of a
        // claim per service, which took a worker 4 to 7 ms a pass at 10,000 services
        // with no jobs at all (B6, docs/benchmarks/round-18.md). With one, its
        // claim is the one question (B9: a pass per finished job).
        let open: Vec<usize> = (0..cells.len())
            .filter(|&i| free_slots(&cells[i], &busy[i]) > 0)
            .collect();
        let asked: Vec<(usize, Option<DateTime<Utc>>)> = if open.len() < 2 {
            open.into_iter().map(|i| (i, None)).collect()
        } else {
            match jobs.store.live_services().await {
                Ok(Some(live)) => {
                    let mut v: Vec<_> = live
                        .iter()
                        .filter_map(|(service, at)| {
                            Some((*index.get(service.as_str())?, Some(*at)))
                        })
                        .collect();
                    v.sort_unstable_by_key(|(i, _)| *i);
                    v
                }
                Ok(None) => open.into_iter().map(|i| (i, None)).collect(),
                Err(e) => {
                    tracing::debug!(error = %e, "could not ask the store for due jobs; trying again shortly");
                    store_failed = Some(e.message().to_owned());
                    Vec::new()
                }
            }
        };
        for (i, first_due) in asked {
            let (cell, busy) = (&cells[i], &busy[i]);
            let free = free_slots(cell, busy);
            if free == 0 || jobs.closing.load(Ordering::Acquire) {
                continue;
            }
            let now = host.config.clock.now();
            if first_due.is_some_and(|at| at > now) {
                // Nothing to claim yet: its first job's time counts for the next look.
                free_after.push(cell.spec.name.to_string());
                continue;
            }
            let request = ClaimRequest {
                service: cell.spec.name.to_string(),
                limit: free,
                now,
                lease_until: lease_from(now, jobs.settings.lease),
                instance: jobs.instance.clone(),
            };
            match jobs.store.claim(request).await {
                Ok(claimed) => {
                    if claimed.len() < free {
                        free_after.push(cell.spec.name.to_string());
                    }
                    for c in claimed {
                        if c.record.state != JobState::Running {
                            dead_at_claim(&host, cell, &c.record);
                            continue;
                        }
                        busy.fetch_add(1, Ordering::AcqRel);
                        jobs.running.fetch_add(1, Ordering::AcqRel);
                        let (host2, cell2, busy2) =
                            (Arc::clone(&host), Arc::clone(cell), Arc::clone(busy));
                        tokio::spawn(async move {
                            run_claimed(&host2, &cell2, c).await;
                            busy2.fetch_sub(1, Ordering::AcqRel);
                            host2.jobs.running.fetch_sub(1, Ordering::AcqRel);
                            host2.jobs.changed.notify_waiters();
                            host2.jobs.wake();
                        });
                    }
                }
                Err(e) => {
                    tracing::debug!(service = %cell.spec.name, error = %e, "could not claim jobs; trying again shortly");
                    store_failed = Some(e.message().to_owned());
                }
            }
        }
        // Sleep until the next job is due, a job is stored or one finishes (with
        // every slot taken, only a finished job frees one: no need to look sooner,
        // nor to ask the store when the next job is due).
        let mut wait = jobs.settings.poll;
        let failed = store_failed.is_some();
        jobs.store_health.note(store_failed);
        if !failed
            && !free_after.is_empty()
            && let Ok(Some(at)) = jobs.store.next_due(&free_after).await
        {
            let now = host.config.clock.now();
            let until = (at - now).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until.max(Duration::from_millis(5)));
        }
        tokio::select! {
            _ = jobs.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How many more of `cell`'s jobs may run now, with `busy` of them running.
fn free_slots(cell: &ServiceCell, busy: &AtomicUsize) -> usize {
    cell.spec
        .options
        .max_concurrency
        .saturating_sub(busy.load(Ordering::Acquire))
}

/// Runs one claimed job: renews its claim while it runs, then records the outcome.
async fn run_claimed(host: &Arc<HostInner>, cell: &Arc<ServiceCell>, claimed: Claimed) {
    let Claimed { claim, record } = claimed;
    let jobs = &host.jobs;
    let wait = (host.config.clock.now() - record.run_at)
        .to_std()
        .unwrap_or(Duration::ZERO);
    metrics::histogram!("koan_job_queue_wait_seconds", "service" => cell.spec.name.to_string())
        .record(wait.as_secs_f64());
    // `fence` fires when the claim is lost; the handler's token (a child of the
    // service's) is cancelled then too.
    let fence = CancellationToken::new();
    let token = cell.life.token.child_token();
    let _held = jobs.in_hand.hold(&claim, record.run_at);
    let heartbeat = tokio::spawn(super::heartbeat::renew(
        Arc::clone(host),
        claim.clone(),
        fence.clone(),
        token.clone(),
    ));
    // A cancel on this host stops it at once, as a lost claim does. An earlier
    // run of the job here still stopping (cancelled, then retried) ends first;
    // a cancel of this one meanwhile stops the wait.
    let (registered, before) = jobs
        .running_jobs
        .register_after(&record.id, [fence.clone(), token.clone()]);
    // (The host's stop ends the wait too: the job is put back, not started.)
    let mut halted = false;
    if let Some(before) = before {
        tokio::select! {
            () = before.cancelled() => {}
            () = fence.cancelled() => {}
            () = jobs.halt.cancelled() => halted = true,
        }
    }
    let outcome = if fence.is_cancelled() {
        Err(lost_claim(&record.id))
    } else if halted {
        Err(Error::new(
            ErrorKind::ShuttingDown,
            format!("job `{}` was not started: its host is stopping", record.id),
        ))
    } else {
        run_steps(host, cell, &record, &fence, token).await
    };
    // A cancel from now on waits for this outcome (the handler's work is done).
    registered.finishing();
    heartbeat.abort();
    if fence.is_cancelled() {
        if registered.cancelled() {
            tracing::info!(job = %record.id, service = %cell.spec.name, "job was cancelled while it ran; its outcome is not recorded");
        } else {
            tracing::warn!(job = %record.id, service = %cell.spec.name, "job's claim was lost while it ran (it lapsed, or it was cancelled on another host); its outcome is not recorded");
        }
        return;
    }
    let now = host.config.clock.now();
    // Its handler ended at its token as the host stopped (the run's own failure
    // otherwise, decided as any: told to stop at the grace's start, a real
    // failure meanwhile must still count; found by a review).
    let stopping = cell.life.token.is_cancelled() || jobs.halt.is_cancelled();
    let cut = outcome
        .as_ref()
        .is_err_and(|e| e.kind() == crate::error::ErrorKind::ShuttingDown);
    let how = if stopping && cut {
        // Cut short by the host stopping: it runs again after the restart, in
        // its place (before the jobs accepted after it).
        Finish::Stopped { at: record.run_at }
    } else {
        decide(host, cell, &record, &outcome, now)
    };
    let final_state = match &how {
        Finish::Succeeded { .. } => Some(JobState::Succeeded),
        Finish::Dead { .. } => Some(JobState::Dead),
        _ => None,
    };
    match super::upkeep::finish(host, &claim, how, now).await {
        Ok(true) => {
            if let Some(state) = final_state {
                metrics::counter!("koan_jobs_finished_total", "service" => cell.spec.name.to_string(), "state" => state.as_str()).increment(1);
                // Said in the log, as the cluster's dead letters are: a job dead of
                // a parameter shape or an action the new build lacks was seen only
                // in the API and a metric (found by a probe of an upgrade).
                if let (JobState::Dead, Err(e)) = (state, &outcome) {
                    tracing::error!(job = %record.id, service = %cell.spec.name, action = %record.action, attempts = record.attempts, error = %e, "job is dead: it runs again only if retried by hand");
                }
                jobs.waiters.answer(&record.id, &outcome);
            }
        }
        Ok(false) => {
            tracing::warn!(job = %record.id, "job's claim was taken before its outcome was recorded; the newer claim decides");
        }
        Err(e) => {
            tracing::error!(job = %record.id, error = %e, "could not record the job's outcome, after trying for half a lease; it runs again once its claim lapses");
        }
    }
}

/// Reports a job the store set dead at its claim: its host stopped in each of its
/// attempts (`apply_claim`).
fn dead_at_claim(host: &HostInner, cell: &ServiceCell, record: &JobRecord) {
    let outcome = super::ticket::outcome_of(record)
        .unwrap_or_else(|| Err(Error::new(ErrorKind::Handler, "job is dead")));
    let why = outcome.as_ref().err().map(ToString::to_string);
    tracing::error!(job = %record.id, service = %cell.spec.name, attempts = record.attempts, error = why.as_deref().unwrap_or_default(), "job is dead: its host stopped without an outcome in each of its attempts");
    metrics::counter!("koan_jobs_finished_total", "service" => cell.spec.name.to_string(), "state" => JobState::Dead.as_str()).increment(1);
    host.jobs.waiters.answer(&record.id, &outcome);
}

/// How the outcome of a run is recorded.
fn decide(
    host: &HostInner,
    cell: &ServiceCell,
    record: &JobRecord,
    outcome: &Result<Payload>,
    now: DateTime<Utc>,
) -> Finish {
    let jobs = &host.jobs;
    let e = match outcome {
        Ok(payload) => {
            let value = payload.to_json().unwrap_or_else(|e| {
                serde_json::Value::String(format!("result could not be serialized: {e}"))
            });
            let (result, truncated) = cut_result(value, jobs.settings.result_max_bytes);
            return Finish::Succeeded { result, truncated };
        }
        Err(e) => e,
    };
    // Not really run: the host is stopping, or the service was full.
    // (A stopped one keeps its place; a busy one waits a moment, not to spin.)
    if e.kind() == ErrorKind::ShuttingDown {
        return Finish::Release { at: record.run_at };
    }
    if e.kind() == ErrorKind::Busy {
        return Finish::Release {
            at: now + chrono::Duration::milliseconds(100),
        };
    }
    let error = ErrorBody::from(e);
    if super::transition::never_retried(e.kind()) || record.attempts >= record.max_attempts {
        return Finish::Dead { error };
    }
    let policy = jobs.policy(cell, &record.action);
    let delay = policy.delay(record.attempts);
    Finish::Retry {
        error,
        at: now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(1)),
    }
}

/// Runs the job's actions in order through the regular call path.
async fn run_steps(
    host: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    record: &JobRecord,
    fence: &CancellationToken,
    token: CancellationToken,
) -> Result<Payload> {
    let info = Arc::new(JobInfo {
        id: record.id.clone(),
        attempt: record.attempts,
        idempotency_key: record.idempotency_key.clone(),
    });
    let handle = HostHandle::from_inner(Arc::clone(host));
    // An id a record kept from before ids were checked, refused now, would fail
    // every run: the run goes under a new one instead (found by a review).
    let correlation = match crate::action::check_correlation_id(&record.correlation_id) {
        Ok(()) => record.correlation_id.clone(),
        Err(_) => crate::action::new_correlation_id(),
    };
    let mut req = ActionRequest::new(handle, Target::Name(Arc::clone(&cell.spec.name)))
        .correlation_id(correlation);
    for step in record.steps() {
        req = req
            .action(step.action, step.params)
            .priority(record.priority);
        if let Some(ms) = step.timeout_ms {
            req = req.timeout(Duration::from_millis(ms));
        }
    }
    let run = req
        .for_job(crate::action::JobMeta { info, token })
        .execute();
    let mut run = std::pin::pin!(run);
    tokio::select! {
        r = &mut run => r.map(|o| o.into_payload()),
        () = fence.cancelled() => {
            // Its handler was told through its token; the run is waited for (up
            // to a lease, as long as its claim would have held it), so that the
            // job's next run here (a retry) does not run beside it, and a handler
            // that never stops does not hold its slot for good.
            let lease = host.jobs.settings.lease;
            if tokio::time::timeout(lease, run).await.is_err() {
                tracing::warn!(job = %record.id, service = %cell.spec.name, lease = %crate::util::fmt_duration(lease), "a cancelled job's handler did not stop within a lease of being told; it is no longer waited for (a retry may run beside it)");
            }
            Err(lost_claim(&record.id))
        }
    }
}

/// A run's outcome when its claim was lost (it lapsed, or the job was cancelled).
fn lost_claim(id: &str) -> Error {
    Error::new(
        ErrorKind::JobState,
        format!("job `{id}` lost its claim while running"),
    )
}
