//! The seam through which calls reach services hosted in other processes.
//! `koan-nats` implements it; the runtime uses it when a service is not local.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::event::EventEnvelope;
use crate::health::{HealthReport, HealthStatus};
use crate::job::{JobCounts, JobPage, JobQuery, JobRecord, RetryFrom};
use crate::registry::ServiceStatus;
pub use crate::util::BoxFuture;
pub use crate::util::Sparse;

mod link;
pub use link::HostLink;

/// How long past a remote call's own timeout (given to the serving instance, which
/// gives the call up at the same deadline) its caller waits for that instance's
/// answer: a round trip. Without it the caller's own timer nearly always came
/// first, and 55 of 58 calls the serving host knew had never started were
/// answered "the outcome is unknown" instead of "did not start … calling again is
/// safe" (a re-probe). A tenth of the timeout, from 50 ms to 500 ms.
pub fn reply_margin(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// An action call bound for another process. Parameters are always JSON on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteCall {
    /// The service's name, shared with the request that made the call (a copy per
    /// call was one more allocation on B8's round trip).
    pub service: Arc<str>,
    /// The action's name.
    pub action: String,
    /// The parameters.
    pub params: Value,
    /// Higher runs first.
    pub priority: i32,
    /// Deadline, queue time included.
    pub timeout: Option<Duration>,
    /// The correlation id.
    pub correlation_id: String,
}

/// How a transport's cluster tells a live instance from one that went silent, as its
/// listings apply it: an instance whose last announcement is older than
/// `late_after` missed one (`/api/instances` marks it stale); one older than
/// `gone_after` has left the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Liveness {
    /// An instance silent this long missed an announcement.
    pub late_after: Duration,
    /// An instance silent this long is gone.
    pub gone_after: Duration,
}

impl Liveness {
    /// Late after `late_after`, gone after `gone_after`.
    pub fn new(late_after: Duration, gone_after: Duration) -> Self {
        Liveness {
            late_after,
            gone_after,
        }
    }
}

/// What a remote query asks for (more may come: a transport answers the ones it
/// knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RemoteQuery {
    /// [`ServiceStatus`].
    Status,
    /// [`ServiceHealth`](crate::health::ServiceHealth).
    Health,
    /// [`ServiceInfo`](crate::service::ServiceInfo).
    Info,
    /// [`ServiceHistory`](crate::status::ServiceHistory).
    History,
}

impl RemoteQuery {
    /// Every query, in the order the wire names them.
    pub const ALL: [RemoteQuery; 4] = [
        RemoteQuery::Status,
        RemoteQuery::Health,
        RemoteQuery::Info,
        RemoteQuery::History,
    ];

    /// `status`, `health`, `info` or `history`.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteQuery::Status => "status",
            RemoteQuery::Health => "health",
            RemoteQuery::Info => "info",
            RemoteQuery::History => "history",
        }
    }
}

/// One host of the cluster as announced in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Instance {
    /// The host's id.
    pub host_id: String,
    /// When it last announced itself.
    pub seen_at: DateTime<Utc>,
    /// The services it runs, with their status.
    pub services: Vec<ServiceStatus>,
    /// The action names of each of its services (built-ins included), by service
    /// name: a job enqueued elsewhere for an action no instance announced is
    /// refused at once. Absent from hosts older than this field: their services'
    /// actions are not known, and nothing is refused for them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, Vec<String>>,
    /// The event names each of its services declares, by service name: an event
    /// from another process that its service's instances do not declare is not
    /// delivered. Absent from hosts older than this field (nothing is refused).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, Vec<String>>,
    /// Each service's last health report, by service name, as its host's own
    /// health check gave it (its texts cut short: the entry is written every
    /// heartbeat). Absent from hosts older than this field, and for a service
    /// not checked yet: [`Instance::health_of`] then judges from the status.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub health: BTreeMap<String, HealthReport>,
    /// Set when this view could not be refreshed (the broker is unreachable): the
    /// last known state, not a current one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

impl Instance {
    /// A host seen now, running `services`.
    pub fn new(host_id: impl Into<String>, services: Vec<ServiceStatus>) -> Self {
        Instance {
            host_id: host_id.into(),
            seen_at: Utc::now(),
            services,
            actions: BTreeMap::new(),
            events: BTreeMap::new(),
            health: BTreeMap::new(),
            stale: false,
        }
    }

    /// The same host, announcing the action names of its services.
    pub fn actions(mut self, actions: BTreeMap<String, Vec<String>>) -> Self {
        self.actions = actions;
        self
    }

    /// The same host, announcing the event names its services declare.
    pub fn events(mut self, events: BTreeMap<String, Vec<String>>) -> Self {
        self.events = events;
        self
    }

    /// The same host, announcing its services' last health reports.
    pub fn health(mut self, health: BTreeMap<String, HealthReport>) -> Self {
        self.health = health;
        self
    }

    /// The health of `service`, one of [`services`](Self::services): unhealthy
    /// once failed, whatever its last report said (a report made before the
    /// failure is announced beside it until the next round of checks ends: a
    /// failed service read healthy there; a review); else the status of the
    /// report its host announced; without one (a host older than the field, or
    /// a service not checked yet), judged from its status alone — degraded
    /// after a failed run.
    pub fn health_of(&self, service: &ServiceStatus) -> HealthStatus {
        if service.state == crate::status::ServiceState::Failed {
            return HealthStatus::Unhealthy;
        }
        if let Some(report) = self.health.get(&service.name) {
            return report.status;
        }
        if service.consecutive_failures > 0 {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    /// The same host, last seen at `seen_at`.
    pub fn seen_at(mut self, seen_at: DateTime<Utc>) -> Self {
        self.seen_at = seen_at;
        self
    }
}

/// What a durable enqueue tells the transport besides the call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DurableJob {
    /// The job's id, which the queue de-duplicates on.
    pub id: String,
    /// Not to run before this time (`None`: at once).
    pub run_at: Option<DateTime<Utc>>,
    /// The caller's idempotency key (the id is made from it), for the handler's
    /// [`JobInfo`](crate::job::JobInfo) and the job's record.
    pub idempotency_key: Option<String>,
    /// The actions to run after the call's, in order, as one job (a chain): set
    /// only when the transport [keeps chains](Transport::keeps_chains).
    pub then: Vec<crate::job::JobStep>,
}

impl DurableJob {
    /// Job `id`, to run at once, without an idempotency key.
    pub fn new(id: impl Into<String>) -> Self {
        DurableJob {
            id: id.into(),
            run_at: None,
            idempotency_key: None,
            then: Vec::new(),
        }
    }
}

fn unsupported(what: &str) -> Error {
    Error::new(
        ErrorKind::ServiceUnavailable,
        format!("this transport does not support {what}"),
    )
}

/// Carries calls, events and queries to services that this host does not run.
///
/// Only [`Transport::call`] is required; the rest default to "not supported".
pub trait Transport: Send + Sync + 'static {
    /// Runs `call` on an instance that hosts the service and returns its JSON result.
    /// Errors keep their [`ErrorKind`]; no instance is `ServiceUnavailable`.
    fn call(&self, call: RemoteCall) -> BoxFuture<'_, Result<Value>>;

    /// [`call`](Self::call) through the host's shared handle, in a future that owns
    /// it. The default wraps `call`'s future in one of its own; a transport that
    /// builds its call's future around the `Arc` itself saves each remote call that
    /// second box (koan-nats does).
    fn call_shared(self: Arc<Self>, call: RemoteCall) -> BoxFuture<'static, Result<Value>> {
        Box::pin(async move { self.call(call).await })
    }

    /// Accepts `call` durably as the job `job` names (redelivered until done,
    /// de-duplicated by its id): `true` when stored now, `false` when a job with
    /// that id was stored before. An error of kind [`ErrorKind::Timeout`] means the
    /// outcome is unknown: the job may be stored (and run once); repeating with the
    /// same id never runs it twice. A job with a `run_at` is supported when
    /// [`keeps_delayed`](Self::keeps_delayed) says so.
    fn enqueue(&self, call: RemoteCall, job: DurableJob) -> BoxFuture<'_, Result<bool>> {
        let _ = (call, job);
        Box::pin(async { Err(unsupported("durable enqueue")) })
    }

    /// Whether [`enqueue`](Self::enqueue) keeps delayed jobs (`run_at`).
    fn keeps_delayed(&self) -> bool {
        false
    }

    /// Whether [`enqueue`](Self::enqueue) keeps chains of actions (`then`).
    fn keeps_chains(&self) -> bool {
        false
    }

    /// Whether jobs of `service`, which this host runs, go to this transport's
    /// durable queue rather than the host's own job store: `true` when the queue is
    /// shared by every instance of the cluster and this host serves `service` there
    /// (so any live instance can run the job, not only this one). Jobs that the queue
    /// cannot keep (delayed ones and chains, unless it [keeps](Self::keeps_delayed)
    /// [them](Self::keeps_chains)) stay in the host's store.
    fn shares_jobs_of(&self, service: &str) -> bool {
        let _ = service;
        false
    }

    /// Waits for the outcome of the durably enqueued action `id`. Interest is
    /// registered when this is called, not when the future is first polled: the host
    /// calls it *before* [`enqueue`](Self::enqueue), so an outcome written at once
    /// is not missed.
    fn outcome(&self, id: &str) -> BoxFuture<'static, Result<Value>> {
        let _ = id;
        Box::pin(async { Err(unsupported("outcomes of enqueued actions")) })
    }

    /// The cluster's record of job `id`, one that this transport's durable queue
    /// keeps (accepted by any host): `None` when it has none.
    fn job(&self, id: &str) -> BoxFuture<'_, Result<Option<JobRecord>>> {
        let _ = id;
        Box::pin(async { Ok(None) })
    }

    /// A page of the cluster's job records, newest first (by id, as
    /// [`JobStore::list`](crate::job::JobStore::list)): `None` when the transport
    /// keeps none. A transport may take a moment to read the records the first
    /// time (a view of them it keeps only while it is read), and marks the page
    /// `stale` when it could not.
    fn jobs<'a>(&'a self, query: &'a JobQuery) -> BoxFuture<'a, Option<JobPage>> {
        let _ = query;
        Box::pin(async { None })
    }

    /// How many of the cluster's job records are in each state (all services, or
    /// one): `None` when the transport keeps none.
    fn job_counts<'a>(&'a self, service: Option<&'a str>) -> BoxFuture<'a, Option<JobCounts>> {
        let _ = service;
        Box::pin(async { None })
    }

    /// The ids of the cluster's dead jobs (of one service, or all), read from the
    /// records themselves rather than a view of them, so that none is missed where
    /// a view holds only some ([`JobPage::partial`]): what
    /// [`Jobs::retry_all_dead`](crate::job::Jobs::retry_all_dead) reads then. Empty
    /// when the transport keeps no jobs.
    fn dead_jobs<'a>(&'a self, service: Option<&'a str>) -> BoxFuture<'a, Result<Vec<String>>> {
        let _ = service;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Cancels job `id` of the cluster's queue: it will not run, and a running one
    /// is stopped through its token. `None` when the transport has no such job; a
    /// `JobState` error for a final one.
    fn cancel_job(&self, id: &str) -> BoxFuture<'_, Result<Option<JobRecord>>> {
        let _ = id;
        Box::pin(async { Ok(None) })
    }

    /// Runs job `id` of the cluster's queue again (a dead, cancelled or succeeded
    /// one, or only a dead one, as `from` says): its record is `queued` again and
    /// one more run is allowed. `None` when the transport has no such job; a
    /// `JobState` error for one in another state, or that may still run.
    fn retry_job(&self, id: &str, from: RetryFrom) -> BoxFuture<'_, Result<Option<JobRecord>>> {
        let _ = (id, from);
        Box::pin(async { Ok(None) })
    }

    /// Forgets the record of job `id` of the cluster's queue: `false` when the
    /// transport has no such job; a `JobState` error for one that may still run.
    fn delete_job(&self, id: &str) -> BoxFuture<'_, Result<bool>> {
        let _ = id;
        Box::pin(async { Ok(false) })
    }

    /// Publishes an event emitted by a local service (fire and forget).
    fn publish(&self, event: &EventEnvelope) {
        let _ = event;
    }

    /// Asks an instance hosting `service` for its status, health or info.
    fn query(&self, service: &str, query: RemoteQuery) -> BoxFuture<'_, Result<Value>> {
        let _ = (service, query);
        Box::pin(async { Err(unsupported("remote queries")) })
    }

    /// This host's id in the cluster, if the transport gives hosts ids.
    fn host_id(&self) -> Option<String> {
        None
    }

    /// Every host of the cluster with its services.
    fn instances(&self) -> BoxFuture<'_, Result<Vec<Instance>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// How [`instances`](Self::instances) tells a live instance from a silent one
    /// (`None`: the transport lists no other instances).
    fn liveness(&self) -> Option<Liveness> {
        None
    }

    /// The connection's health, if the transport has one to report (`/health`
    /// shows it; a lost connection makes the host degraded, not unhealthy).
    fn health(&self) -> Option<crate::health::HealthReport> {
        None
    }

    /// Whether some instance of the cluster has announced `service` (it may be down
    /// now): `None` when the transport cannot tell (no view of the cluster yet).
    /// `enqueue()` refuses a job for a service the cluster never announced.
    fn knows(&self, service: &str) -> Option<bool> {
        let _ = service;
        None
    }

    /// Whether another live instance of the cluster takes new calls of `service`
    /// now (started, neither failed nor stopping). A call made on a host whose own
    /// instance failed for good goes there instead of being refused (a host of a
    /// cluster whose instance had failed refused its callers' share of the calls
    /// while the others could serve them).
    fn serves_elsewhere(&self, service: &str) -> bool {
        let _ = service;
        false
    }

    /// Every action name the cluster's instances announced for `service` (since
    /// this host joined): `None` when the transport cannot tell (no view yet, or an
    /// instance that announces no action names). `enqueue()` refuses a job for an
    /// action none of them has, as a local service's would be.
    fn actions_of(&self, service: &str) -> Option<Vec<String>> {
        let _ = service;
        None
    }

    /// Asked right before each scheduled tick of the singleton `service`: whether
    /// this host may run it. A transport with leases confirms its lease here with a
    /// compare-and-set, so a holder that was frozen past its lease (and replaced)
    /// does not run the tick too.
    fn may_run(&self, service: &str) -> BoxFuture<'_, bool> {
        let _ = service;
        Box::pin(async { true })
    }

    /// Asked right before a poke (`trigger`, `check-queue`, `process-batch`) of the
    /// singleton `service` runs on this host: whether this host holds its lease. A
    /// transport with leases renews it with a compare-and-set here, as for a tick,
    /// without counting the poke as one of the schedule's ticks. When it says no,
    /// a poke made on this host is sent to the cluster ([`call`](Self::call)),
    /// which takes it to the holder, and one that came from another process is
    /// refused as `unavailable`.
    fn may_poke(&self, service: &str) -> BoxFuture<'_, bool> {
        let _ = service;
        Box::pin(async { true })
    }
}
