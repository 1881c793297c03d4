//! Where a step goes: the local service (prepared as a mailbox job or a built-in
//! poke), or the transport; and the refusals on the way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::context::JobMeta;
use super::correlation::Correlation;
use super::mailbox::Job;
use super::metrics::rejected;
use super::request::Target;
use super::step::{Limits, Step, StepAction};
use super::table::Resolved;
use crate::error::{Error, ErrorKind, Result};
use crate::host::{HostHandle, HostInner};
use crate::payload::Payload;
use crate::registry::ServiceCell;
use crate::schedule::PokeStart;
use crate::transport::RemoteCall;
use crate::util::fmt_duration;

/// Hands a built-in poke to a periodic service's driver; with a `timeout`, its run
/// is cancelled at that deadline as an action's would be.
pub(super) fn poke_cell(
    cell: &ServiceCell,
    poke: crate::schedule::Poke,
    timeout: Option<Duration>,
) -> Result<(crate::schedule::PokeReceipt, &'static str)> {
    let control = cell.control.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::UnknownAction,
            format!("`{}` is not periodic", cell.spec.name),
        )
    })?;
    let action = poke.action_name();
    let deadline = timeout.map(|t| crate::util::after(Instant::now(), t));
    Ok((control.poke(&cell.spec.name, poke, deadline)?, action))
}

pub(crate) fn local_cell(host: &HostInner, target: &Target) -> Result<Arc<ServiceCell>> {
    find_local(host, target)
        .cloned()
        .ok_or_else(|| host.registry.unknown(target.name(host)))
}

/// The local cell behind a target, without building an error when there is none
/// (a remote call must not pay for listing the local services). Borrowed: the hot
/// path takes a count on the cell (shared by every caller) only when it keeps it.
pub(super) fn find_local<'h>(host: &'h HostInner, target: &Target) -> Option<&'h Arc<ServiceCell>> {
    match target {
        Target::Type(t) => host
            .registry
            .by_type(t.0)
            .or_else(|| host.registry.by_name(&t.1)),
        Target::Name(name) => host.registry.by_name(name),
        Target::Local(i) => host.registry.all().get(*i),
    }
}

pub(super) enum Prepared {
    Job(Job),
    Builtin(crate::schedule::Poke, Option<Duration>),
}

/// Counts a refusal of `action` and passes the error on.
/// The metric label is the declared name (or a built-in's), never the caller's
/// string: an undeclared name is counted as `<unknown>`.
pub(super) fn reject(cell: &ServiceCell, action: &str, e: Error) -> Error {
    let declared = cell
        .spec
        .actions
        .get(action)
        .map(|entry| &*entry.name)
        .or_else(|| crate::well_known::actions::poke(action));
    rejected(
        &cell.spec.name,
        declared.unwrap_or(super::metrics::UNKNOWN),
        e.kind(),
    );
    e
}

// Always inlined: returned by value, its `Job` would cost the call path one more
// copy (≈ 30 instructions) each time the inliner decides against it.
#[inline(always)]
pub(super) fn prepare(
    host: &HostInner,
    cell: &Arc<ServiceCell>,
    mut step: Step,
    correlation: &Correlation,
    job: Option<JobMeta>,
) -> Result<Prepared> {
    let name = match &step.action {
        StepAction::Declared(index) => {
            let index = *index;
            return prepare_declared(host, cell, index, step, correlation, job).map(Prepared::Job);
        }
        StepAction::Named(name) => name,
    };
    admit(host, cell, &step.action, job.is_some())?;
    let entry = match cell
        .spec
        .actions
        .resolve(&cell.spec.name, name, &mut step.params)
        .map_err(|e| reject(cell, name, e))?
    {
        Resolved::Builtin(poke) => return Ok(Prepared::Builtin(poke, step.timeout())),
        Resolved::Declared(entry) => entry,
    };
    job_of(cell, entry, step, correlation, job).map(Prepared::Job)
}

/// `step`, of the declared action numbered `index` (found when the request was
/// made, in this service's table), as its job: never a built-in, so no `Prepared`
/// to move the job out of.
#[inline(always)]
pub(super) fn prepare_declared(
    host: &HostInner,
    cell: &Arc<ServiceCell>,
    index: usize,
    step: Step,
    correlation: &Correlation,
    job: Option<JobMeta>,
) -> Result<Job> {
    admit(host, cell, &step.action, job.is_some())?;
    let entry = cell.spec.actions.entries.get(index).ok_or_else(|| {
        Error::new(
            ErrorKind::UnknownAction,
            format!("`{}` declares no action number {index}", cell.spec.name),
        )
    })?;
    job_of(cell, entry, step, correlation, job)
}

/// Refuses a step of a disabled service, and one of a stopping host unless it is a
/// stored job's run (the runner decides whether it may still run).
#[inline(always)]
fn admit(host: &HostInner, cell: &ServiceCell, action: &StepAction, stored: bool) -> Result<()> {
    if let Some(reason) = &cell.spec.disabled {
        let e = Error::new(
            ErrorKind::Disabled,
            format!(
                "service `{}` is disabled ({reason}); action `{}` was not run",
                cell.spec.name,
                action.name(Some(cell))
            ),
        );
        return Err(reject(cell, action.name(Some(cell)), e));
    }
    // Its supervisor gave up on it: a call is refused, not answered by a service
    // its status says failed (a probe's call to a `Failed` service answered Ok).
    // A stored job still runs: its work was accepted, and its handler is there.
    if cell.life.failed() && !stored {
        let e = Error::new(
            ErrorKind::ServiceUnavailable,
            format!(
                "service `{}` failed for good on this host (its supervisor gave up on it; its status has the last error): action `{}` was not run; this host's instance takes calls again once an operator restarts it (POST /api/services/{{name}}/restart, koanctl restart) or the host restarts",
                cell.spec.name,
                action.name(Some(cell))
            ),
        );
        return Err(reject(cell, action.name(Some(cell)), e));
    }
    if host.stopping.load(Ordering::Acquire) && !stored {
        let e = host.refusal(&format!(
            "action `{}` of `{}`",
            action.name(Some(cell)),
            cell.spec.name
        ));
        return Err(reject(cell, action.name(Some(cell)), e));
    }
    Ok(())
}

/// The job of `step`, an action of `entry`, its parameters decoded.
#[inline(always)]
fn job_of(
    cell: &ServiceCell,
    entry: &super::table::ActionEntry,
    mut step: Step,
    correlation: &Correlation,
    job: Option<JobMeta>,
) -> Result<Job> {
    let Limits { timeout, cancel } = step.take_limits();
    let Step {
        params, priority, ..
    } = step;
    let what = || format!("action `{}` of `{}`", entry.name, cell.spec.name);
    let params = entry
        .decode_params(params.unwrap_or(Payload::Unit), &what)
        .map_err(|e| reject(cell, &entry.name, e))?;
    Ok(Job {
        action: entry.index,
        params,
        priority,
        // Tokio's clock is read only for a deadline (see `Moment`).
        deadline: timeout.map(|t| crate::util::after(Instant::now(), t)),
        timeout: super::mailbox::Limit::new(timeout),
        correlation: correlation.clone(),
        job: job.map(Box::new),
        cancel_on: cancel,
        reply: None,
        claim: None,
        enqueued_at: crate::clock::moment(),
        answered: false,
        by_worker: false,
        detached: false,
    })
}

pub(super) async fn wait_poke(
    receipt: crate::schedule::PokeReceipt,
    service: &str,
    action: &str,
    timeout: Option<Duration>,
) -> Result<Payload> {
    let fut = receipt.outcome(service);
    let outcome = wait_poke_inner(fut, service, timeout).await;
    super::metrics::poke_finished(service, action, &outcome);
    Ok(Payload::of(outcome?))
}

async fn wait_poke_inner(
    fut: impl std::future::Future<Output = Result<crate::schedule::TriggerOutcome>>,
    service: &str,
    timeout: Option<Duration>,
) -> Result<crate::schedule::TriggerOutcome> {
    Ok(match timeout {
        None => fut.await?,
        Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "the run of `{service}` did not finish within {}",
                    fmt_duration(t)
                ),
            )
        })??,
    })
}

/// The local cell behind a target, if this host runs it.
pub(crate) fn local_cell_pub(host: &HostHandle, target: &Target) -> Option<Arc<ServiceCell>> {
    find_local(&host.inner, target).cloned()
}

/// The action of a local service declared under exactly `name` (not another
/// spelling of it), found without copying the name.
/// Its place in the service's table.
pub(crate) fn declared_local(host: &HostHandle, target: &Target, name: &str) -> Option<usize> {
    find_local(&host.inner, target)?
        .spec
        .actions
        .get(name)
        .filter(|entry| *entry.name == *name)
        .map(|entry| entry.index)
}

pub(super) fn remote_call(
    service: Arc<str>,
    step: Step,
    correlation: &Correlation,
) -> Result<RemoteCall> {
    let timeout = step.timeout();
    let params = match step.params {
        Some(p) => p.into_json()?,
        None => Value::Null,
    };
    Ok(RemoteCall {
        service,
        // A declared action is a local service's: never sent.
        action: step.action.into_string(None),
        params,
        timeout,
        priority: step.priority,
        correlation_id: correlation.to_text(),
    })
}

/// The transport that decides where a poke of `cell` runs: `Some` when `cell` is a
/// cluster singleton, `action` one of its built-in pokes (in any spelling, and
/// not overridden by a declared action) and the host has a transport. Its runs,
/// poked or scheduled, are the lease holder's ([`super::singleton`]).
pub(super) fn singleton_poke<'h>(
    host: &'h HostInner,
    cell: &ServiceCell,
    action: &str,
) -> Option<&'h Arc<dyn crate::transport::Transport>> {
    if !cell.spec.options.singleton || cell.spec.actions.declares(action) {
        return None;
    }
    crate::well_known::actions::poke(action)?;
    host.transport.as_ref()
}

/// A built-in poke of a local periodic service, straight to its driver (the by-name
/// action path costs more than the wake-up itself). `None` when the regular path must
/// answer: not local, not periodic, overridden by a declared action, disabled, or the
/// host is stopping (that path says why).
pub(crate) async fn poke_direct(
    host: &HostHandle,
    target: &Target,
    poke: crate::schedule::Poke,
) -> Option<Result<crate::schedule::TriggerOutcome>> {
    let cell = find_local(&host.inner, target)?;
    let control = cell.control.as_ref()?;
    let action = poke.action_name();
    if cell.spec.disabled.is_some()
        || host.inner.stopping.load(Ordering::Acquire)
        || cell.spec.actions.declares(action)
        || singleton_poke(&host.inner, cell, action).is_some()
    {
        return None;
    }
    // An idle driver with nothing queued: the caller runs the poke itself.
    let outcome = match control.poke_or_run(&cell.spec.name, poke) {
        Ok(PokeStart::Here(here, poke)) => {
            crate::schedule::run_here(cell, control, here, poke).await
        }
        Ok(PokeStart::Queued(receipt)) => receipt.outcome(&cell.spec.name).await,
        Err(e) => Err(e),
    };
    super::metrics::poke_finished(&cell.spec.name, action, &outcome);
    Some(outcome)
}
