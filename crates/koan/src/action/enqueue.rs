//! Handing work over without waiting for it: `enqueue()` stores a job first (it
//! survives the process), `spawn()` only queues it in memory.

use std::sync::Arc;

use super::context::current_correlation;
use super::correlation::{Correlation, new_id};
use super::deadline::push_with_deadline;
use super::enqueue_shared::{Later, hand_over};
use super::request::{ActionOutput, ActionRequest, ActionTicket, When};
use super::route::{
    Prepared, find_local, local_cell, poke_cell, prepare, reject, remote_call, wait_poke,
};
use super::step::Step;
use super::table::Resolved;
use crate::error::{Error, ErrorKind, Result};
use crate::host::HostInner;
use crate::job::{JobStep, JobTicket, NewJob, new_job_id, same_call};
use crate::payload::Payload;
use crate::registry::ServiceCell;

impl ActionRequest {
    /// Stores the work as a job and returns once the store has it: the job runs even
    /// if this process stops first (with a durable store), at least once, retried by
    /// its action's policy. Refusals (unknown service or action, bad parameters,
    /// disabled, shutting down, store unavailable) come back at once, and then
    /// nothing was stored.
    ///
    /// `.delay()` / `.at()` set when it may run; `.idempotency_key()` makes a
    /// repeated enqueue return the first job.
    pub async fn enqueue(mut self) -> Result<JobTicket> {
        let inner = Arc::clone(&self.host.inner);
        if self.steps.len() == 0 {
            return Err(Error::new(
                ErrorKind::UnknownAction,
                format!(
                    "no action given for `{}`; add one with `.action(name, params)`",
                    self.target.name(&inner)
                ),
            ));
        }
        let correlation = self
            .take_correlation()?
            .or_else(current_correlation)
            .unwrap_or_else(new_id);
        if let Some(cell) = find_local(&inner, &self.target).cloned() {
            // In cluster mode, where any live instance can run it.
            if self.shared(&inner, &cell) {
                return self.enqueue_shared(&inner, &cell, correlation).await;
            }
            return self.store_job(&inner, &cell, correlation).await;
        }
        let Some(transport) = inner.transport.clone() else {
            return Err(inner.registry.unknown(self.target.name(&inner)));
        };
        // A job for a service the cluster never announced would wait forever.
        if transport.knows(self.target.name(&inner)) == Some(false) {
            let e = inner.registry.unknown(self.target.name(&inner));
            return Err(Error::new(
                ErrorKind::UnknownService,
                format!(
                    "{} (here), and no instance of the cluster has announced it: nothing would run the job",
                    e.message()
                ),
            ));
        }
        // A queue that delivers at once cannot keep a job asked for later.
        if let Some(when) = self.when().filter(|_| !transport.keeps_delayed()) {
            let asked = match when {
                When::After(d) => format!("a delay ({d:?})"),
                When::At(at) => format!("a time to run at ({at})"),
            };
            return Err(Error::new(
                ErrorKind::InvalidParameters,
                format!(
                    "`{}` runs in another process, whose durable queue runs jobs at once: {asked} cannot be kept; enqueue it without one when it is due",
                    self.target.name(&inner)
                ),
            ));
        }
        let run_at = match self.when() {
            Some(when) => Some(when.run_at(inner.config.clock.now())?),
            None => None,
        };
        if self.steps.len() > 1 && !transport.keeps_chains() {
            return Err(Error::new(
                ErrorKind::InvalidParameters,
                format!(
                    "a chain of actions of `{}` (a service in another process) cannot be enqueued as one job; enqueue each action",
                    self.target.name(&inner)
                ),
            ));
        }
        // A service elsewhere: the transport's durable queue keeps the job.
        let given = Correlation::Given(Arc::clone(&correlation));
        let mut steps = std::mem::take(&mut self.steps).into_iter();
        let Some(first) = steps.next() else {
            return Err(inner.registry.unknown(self.target.name(&inner)));
        };
        let call = remote_call(self.target.shared_name(&inner), first, &given)?;
        let then = steps
            .map(|step| {
                let c = remote_call(self.target.shared_name(&inner), step, &given)?;
                Ok(JobStep {
                    action: c.action,
                    params: c.params,
                    timeout_ms: c.timeout.map(crate::util::millis_up),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let actions = std::iter::once(&call.action).chain(then.iter().map(|s| &s.action));
        check_announced(&*transport, self.target.name(&inner), actions)?;
        let later = Later {
            idempotency_key: self.take_idempotency_key(),
            run_at,
            then,
        };
        hand_over(&inner, transport, call, later, correlation).await
    }

    /// Checks each step against the local service and stores the job.
    async fn store_job(
        mut self,
        inner: &Arc<HostInner>,
        cell: &Arc<ServiceCell>,
        correlation: Arc<str>,
    ) -> Result<JobTicket> {
        let priority = self.steps.iter().next().map_or(0, |s| s.priority);
        let mut steps = Vec::with_capacity(self.steps.len());
        for step in std::mem::take(&mut self.steps) {
            steps.push(checked_step(inner, cell, step)?);
        }
        let now = inner.config.clock.now();
        let run_at = match self.when() {
            None => now,
            Some(when) => when.run_at(now)?,
        };
        let max_attempts = inner.jobs.policy(cell, &steps[0].action).max_attempts;
        // A repeat under a key must be the same call; kept to compare with the first.
        let idempotency_key = self.take_idempotency_key();
        let asked = idempotency_key.as_ref().map(|_| steps.clone());
        let job = NewJob {
            id: new_job_id(),
            service: cell.spec.name.to_string(),
            steps,
            priority,
            correlation_id: correlation.to_string(),
            idempotency_key,
            created_at: now,
            run_at,
            max_attempts,
        };
        let pushed = match inner.jobs.store.push(job).await {
            Ok(p) => {
                inner.jobs.store_health.note_push(None);
                p
            }
            Err(e) => {
                if e.kind() == crate::error::ErrorKind::StoreUnavailable {
                    inner
                        .jobs
                        .store_health
                        .note_push(Some(e.message().to_owned()));
                }
                return Err(e);
            }
        };
        if let Some(asked) = asked.filter(|_| !pushed.created) {
            same_call(&pushed.record, &cell.spec.name, &asked)?;
        }
        if pushed.created {
            metrics::counter!("koan_jobs_enqueued_total", "service" => cell.spec.name.to_string())
                .increment(1);
            inner.jobs.wake();
        }
        Ok(JobTicket::stored(
            self.host.handle(),
            &pushed.record,
            pushed.created,
        ))
    }

    /// Hands the work to its service and returns at once, with a ticket whose
    /// outcome can be awaited. Nothing is stored: the work is lost if this process
    /// stops (use [`ActionRequest::enqueue`] for work that must survive).
    /// Rejections (unknown, disabled, busy, bad parameters) come back at once. The
    /// work runs whether or not the ticket is kept.
    pub fn spawn(mut self) -> Result<ActionTicket> {
        let correlation = self
            .take_correlation()?
            .or_else(current_correlation)
            .unwrap_or_else(new_id);
        let given = Correlation::Given(Arc::clone(&correlation));
        let inner = Arc::clone(&self.host.inner);
        let (tx, rx) = super::reply::channel();
        if self.steps.len() == 1
            && let Ok(cell) = local_cell(&inner, &self.target)
            && let Some(step) = self.steps.take_single()
        {
            // Local single actions are accepted (or refused) right here.
            accept_local(&inner, &cell, step, &given, tx)?;
            return Ok(ActionTicket {
                correlation_id: correlation,
                rx,
            });
        }
        // Unknown here and no transport to look elsewhere: refuse now, not later.
        if inner.transport.is_none() && find_local(&inner, &self.target).is_none() {
            return Err(inner.registry.unknown(self.target.name(&inner)));
        }
        // Chains and remote calls run on a task of their own.
        self.set_correlation(Arc::clone(&correlation));
        tokio::spawn(async move {
            let r = self.execute().await.map(ActionOutput::into_payload);
            let _ = tx.send(r);
        });
        Ok(ActionTicket {
            correlation_id: correlation,
            rx,
        })
    }
}

fn accept_local(
    inner: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    step: Step,
    correlation: &Correlation,
    tx: super::reply::ReplyTx,
) -> Result<()> {
    match prepare(inner, cell, step, correlation, None)? {
        Prepared::Job(mut job) => {
            let Some(deadline) = job.deadline else {
                job.reply = Some(tx);
                job.detached = true;
                return cell.queue.mailbox.push(job);
            };
            let answer = push_with_deadline(cell, job, deadline)?;
            tokio::spawn(async move {
                // A job dropped unanswered leaves the ticket unanswered too.
                if let Some(r) = answer.await {
                    let _ = tx.send(r);
                }
            });
            Ok(())
        }
        Prepared::Builtin(poke, timeout) => {
            let (receipt, action) = poke_cell(cell, poke, timeout)?;
            let name = Arc::clone(&cell.spec.name);
            tokio::spawn(async move {
                let _ = tx.send(wait_poke(receipt, &name, action, timeout).await);
            });
            Ok(())
        }
    }
}

/// A step as stored: its action found (by its declared name) and its parameters
/// checked against the handler's type, so a bad job is refused now, not run later.
pub(super) fn checked_step(inner: &HostInner, cell: &ServiceCell, step: Step) -> Result<JobStep> {
    let timeout = step.timeout();
    let Step {
        action, mut params, ..
    } = step;
    if let Some(reason) = &cell.spec.disabled {
        let e = Error::new(
            ErrorKind::Disabled,
            format!(
                "service `{}` is disabled ({reason}); action `{}` was not enqueued",
                cell.spec.name,
                action.name(Some(cell))
            ),
        );
        return Err(reject(cell, action.name(Some(cell)), e));
    }
    if inner.stopping.load(std::sync::atomic::Ordering::Acquire) {
        let e = inner.refusal(&format!(
            "action `{}` of `{}`",
            action.name(Some(cell)),
            cell.spec.name
        ));
        return Err(reject(cell, action.name(Some(cell)), e));
    }
    let json = match params.take() {
        Some(p) => p.into_json()?,
        None => serde_json::Value::Null,
    };
    let name = action.into_string(Some(cell));
    let mut probe = Some(Payload::Json(json.clone()));
    let stored_name = match cell
        .spec
        .actions
        .resolve(&cell.spec.name, &name, &mut probe)
        .map_err(|e| reject(cell, &name, e))?
    {
        Resolved::Declared(entry) => {
            let what = || format!("action `{}` of `{}`", entry.name, cell.spec.name);
            entry
                .decode_params(Payload::Json(json.clone()), &what)
                .map_err(|e| reject(cell, &entry.name, e))?;
            entry.name.to_string()
        }
        Resolved::Builtin(poke) => poke.action_name().to_owned(),
    };
    Ok(JobStep {
        action: stored_name,
        params: json,
        timeout_ms: timeout.map(crate::util::millis_up),
    })
}

/// A job for an action that no instance of the cluster announced for `service` is
/// refused at once, as a local service's unknown action is: stored, it would only
/// have been dead at its first run. Nothing is refused when the transport cannot
/// tell (no view yet, or an instance too old to announce its actions).
fn check_announced<'a>(
    transport: &dyn crate::transport::Transport,
    service: &str,
    actions: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let Some(known) = transport.actions_of(service) else {
        return Ok(());
    };
    for action in actions {
        // As a host resolves it: a declared name in any spelling, or a built-in
        // poke by one of its own (`trigger-now`).
        let key = super::table::normalized(action);
        let poke = crate::well_known::actions::poke(action);
        let found = known
            .iter()
            .any(|k| super::table::normalized(k) == key || Some(k.as_str()) == poke);
        if !found {
            return Err(Error::new(
                ErrorKind::UnknownAction,
                format!(
                    "service `{service}` (in another process) has no action `{}`; the actions its instances announced: {}",
                    action.escape_debug(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}
