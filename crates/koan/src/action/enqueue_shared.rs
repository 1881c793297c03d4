//! Jobs kept by the transport's durable queue, which every instance of the cluster
//! reads: the job of a service in another process, and in cluster mode the job of a
//! service this host runs too, so that any live instance runs it should this host die.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::enqueue::checked_step;
use super::request::ActionRequest;
use crate::error::{Error, ErrorKind, Result};
use crate::host::HostInner;
use crate::job::{JobStep, JobTicket, NewJob, keyed_job_id, new_job_id};
use crate::payload::Payload;
use crate::registry::ServiceCell;
use crate::transport::{DurableJob, RemoteCall, Transport};

impl ActionRequest {
    /// Whether this job of the local service `cell` goes to the cluster's shared
    /// queue: the transport shares the service's jobs (this host serves it there),
    /// and the job is one the queue can keep — due now or later, one action or a
    /// chain, as the transport keeps them.
    pub(super) fn shared(&self, inner: &HostInner, cell: &ServiceCell) -> bool {
        inner.transport.as_ref().is_some_and(|t| {
            t.shares_jobs_of(&cell.spec.name)
                && (self.when().is_none() || t.keeps_delayed())
                && (self.steps.len() == 1 || t.keeps_chains())
        })
    }

    /// Checks the job against the local service (as for the local store), then
    /// hands it to the transport's shared queue.
    pub(super) async fn enqueue_shared(
        mut self,
        inner: &Arc<HostInner>,
        cell: &Arc<ServiceCell>,
        correlation: Arc<str>,
    ) -> Result<JobTicket> {
        let Some(transport) = inner.transport.clone() else {
            return Err(Error::new(
                ErrorKind::ServiceUnavailable,
                format!(
                    "jobs of `{}` cannot go to the cluster's queue: no transport",
                    cell.spec.name
                ),
            ));
        };
        let run_at = match self.when() {
            Some(when) => Some(when.run_at(inner.config.clock.now())?),
            None => None,
        };
        // Each step checked against the local service, as for the local store.
        let mut steps = std::mem::take(&mut self.steps).into_iter();
        let first = steps.next().ok_or_else(|| {
            Error::new(
                ErrorKind::UnknownAction,
                format!("no action given for `{}`", cell.spec.name),
            )
        })?;
        let priority = first.priority;
        let JobStep {
            action,
            params,
            timeout_ms,
        } = checked_step(inner, cell, first)?;
        let then = steps
            .map(|step| checked_step(inner, cell, step))
            .collect::<Result<Vec<_>>>()?;
        let call = RemoteCall {
            service: Arc::clone(&cell.spec.name),
            action,
            params,
            priority,
            timeout: timeout_ms.map(std::time::Duration::from_millis),
            correlation_id: correlation.to_string(),
        };
        let ticket = hand_over(
            inner,
            transport,
            call,
            Later {
                idempotency_key: self.take_idempotency_key(),
                run_at,
                then,
            },
            correlation,
        )
        .await?;
        if ticket.created() {
            metrics::counter!("koan_jobs_enqueued_total", "service" => cell.spec.name.to_string())
                .increment(1);
        }
        Ok(ticket)
    }
}

/// What a job handed to the transport carries besides its first call.
pub(super) struct Later {
    pub(super) idempotency_key: Option<String>,
    /// When it may run (`None`: at once).
    pub(super) run_at: Option<DateTime<Utc>>,
    /// The actions after the first, in order.
    pub(super) then: Vec<JobStep>,
}

/// Hands `call` (and what `later` adds) to the transport's durable queue, to run
/// at once or at its `run_at`; the ticket's outcome comes from the transport. This
/// host keeps the job's record (`GET /api/jobs/{id}`).
pub(super) async fn hand_over(
    inner: &Arc<HostInner>,
    transport: Arc<dyn Transport>,
    call: RemoteCall,
    later: Later,
    correlation: Arc<str>,
) -> Result<JobTicket> {
    let Later {
        idempotency_key,
        run_at,
        then,
    } = later;
    // A key names one job of the service: its repeats are de-duplicated by id.
    let id: Arc<str> = match &idempotency_key {
        Some(key) => Arc::from(keyed_job_id(&call.service, key)),
        None => Arc::from(new_job_id()),
    };
    let now = inner.config.clock.now();
    let record = NewJob {
        id: id.to_string(),
        service: call.service.to_string(),
        steps: std::iter::once(JobStep {
            action: call.action.clone(),
            params: call.params.clone(),
            timeout_ms: call.timeout.map(crate::util::millis_up),
        })
        .chain(then.iter().cloned())
        .collect(),
        priority: call.priority,
        correlation_id: correlation.to_string(),
        idempotency_key: idempotency_key.clone(),
        created_at: now,
        run_at: run_at.unwrap_or(now),
        max_attempts: 1,
    }
    .into_record();
    // Waiting starts before the job exists, so its outcome cannot slip by.
    let wait = transport.outcome(&id);
    let mut job = DurableJob::new(id.to_string());
    job.run_at = run_at;
    job.idempotency_key = idempotency_key.clone();
    job.then = then;
    let created = match transport.enqueue(call, job).await {
        Ok(created) => created,
        Err(e) if e.kind() == ErrorKind::Timeout => {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{} — the outcome is unknown: job {id} may be stored and would then run once. {}",
                    e.message(),
                    match &idempotency_key {
                        Some(k) => format!(
                            "Repeating the call with the same idempotency key (`{}`) is safe: it never runs twice",
                            k.escape_debug()
                        ),
                        None => "Give calls an idempotency key to repeat them safely".to_owned(),
                    }
                ),
            ));
        }
        Err(e) => return Err(e),
    };
    if created || inner.jobs.remote.get(&id).is_none() {
        inner.jobs.remote.insert(record);
    }
    let (mut tx, rx) = oneshot::channel();
    let (host, id2) = (Arc::clone(inner), Arc::clone(&id));
    tokio::spawn(async move {
        // Answered when the job ends, as a host's own store's ticket is: its
        // timeout counts from its run's start (docs/jobs.md), not from here (a
        // ticket answered `timeout` at the enqueue's time plus the timeout while
        // the job still waited to run, and then ran; a re-probe).
        let outcome = wait;
        // The ticket dropped (enqueued and left to run): no one awaits the
        // outcome, so this host stops waiting for it. A pending job then costs it
        // no task and no read of the outcome's key (it cost 2 KB and a task each,
        // and a read a minute, until the job ended); its record is the cluster's.
        let r = tokio::select! {
            r = outcome => r.map(Payload::Json),
            () = tx.closed() => return,
        };
        host.jobs.remote.finish(&id2, &r, host.config.clock.now());
        let _ = tx.send(r);
    });
    Ok(JobTicket::remote(id, correlation, created, rx))
}
