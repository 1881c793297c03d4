//! The cluster registry: heartbeats of every host in the KV bucket `koan_registry`,
//! and the query responders (status, health, info) of local services.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use koan::{Error, HostHandle, status::ServiceStatus, transport::Instance, transport::RemoteQuery};
use serde_json::Value;

use crate::subjects;
use crate::transport::{NatsTransport, unavailable};
use crate::wire::Reply;

/// Announces this host's services, now.
pub(crate) async fn announce(t: &NatsTransport, host: &HostHandle) -> Result<(), Error> {
    let instance = Instance::new(t.inner.host_id.clone(), host.statuses())
        .actions(host.action_names())
        .events(host.event_names());
    put(t, instance).await?;
    // The events emitted before (a startup service's, say) go out now: before
    // it, other hosts refused them, not knowing the service (found by a probe).
    t.inner.announced.notify_one();
    Ok(())
}

/// Announces this host every heartbeat, and soon (within a tenth of the lease)
/// after the `next_run` of a singleton it holds moved: the tick ended, and the
/// entry names the next one again (see [`mark_started`]).
pub(crate) async fn heartbeats(t: NatsTransport, host: HostHandle) {
    let mut beat = tokio::time::interval(t.inner.opts.heartbeat);
    let look = (t.inner.opts.lease / 10).max(Duration::from_millis(10));
    let mut look = tokio::time::interval(look);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut announced = Vec::new();
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            _ = look.tick() => {
                if held_runs(&t, &host) == announced {
                    continue;
                }
            }
        }
        announced = held_runs(&t, &host);
        if let Err(e) = announce(&t, &host).await {
            t.inner
                .refusals
                .note(crate::storage::HEARTBEAT, e.message());
            tracing::warn!(error = %e, "registry heartbeat failed");
        }
    }
}

/// The next runs of the singletons whose lease this host holds.
fn held_runs(t: &NatsTransport, host: &HostHandle) -> Vec<Option<DateTime<Utc>>> {
    let Ok(held) = t.inner.leases_held.lock() else {
        return Vec::new();
    };
    if !held.values().any(|l| l.leader.load(Ordering::Acquire)) {
        return Vec::new();
    }
    host.statuses()
        .into_iter()
        .filter(|s| {
            held.get(&subjects::token(&s.name))
                .is_some_and(|l| l.leader.load(Ordering::Acquire))
        })
        .map(|s| s.next_run)
        .collect()
}

/// Announces again what this host announced last (as its view heard it), with the
/// singleton ticks started since: right after a tick's lease confirmation.
pub(crate) async fn reannounce(t: &NatsTransport) -> Result<(), Error> {
    let Some(mut instance) = t.view().last_of(&t.inner.host_id) else {
        return Ok(());
    };
    instance.seen_at = Utc::now();
    instance.stale = false;
    put(t, instance).await
}

/// A singleton's `next_run` names the tick being run until the run ends; once the
/// holder confirmed that tick, it is announced as none, so that a host taking over
/// after this one died knows the tick was not missed.
fn mark_started(t: &NatsTransport, services: &mut [ServiceStatus]) {
    let Ok(held) = t.inner.leases_held.lock() else {
        return;
    };
    for s in services {
        if let (Some(due), Some(lease)) = (s.next_run, held.get(&subjects::token(&s.name)))
            && lease.started(due)
        {
            s.next_run = None;
        }
    }
}

async fn put(t: &NatsTransport, mut instance: Instance) -> Result<(), Error> {
    mark_started(t, &mut instance.services);
    let body = serde_json::to_vec(&instance).unwrap_or_default();
    t.inner
        .registry
        .put(subjects::key(&t.inner.host_id), body.into())
        .await
        .map_err(|e| {
            // The broker's JetStream storage full (10023 "insufficient resources"):
            // said so, with what to do (a restart on a full broker said only the
            // code; found by a probe).
            let full = e.to_string().contains("10023");
            let hint = if full {
                ": the broker's JetStream storage is full (free space, or raise its `max_file_store`, or limit the streams that filled it)"
            } else {
                ""
            };
            unavailable(format!("cannot announce to the registry: {e}{hint}"))
        })?;
    Ok(())
}

/// Withdraws this host from the registry.
pub(crate) async fn withdraw(t: &NatsTransport) {
    let _ = t
        .inner
        .registry
        .delete(subjects::key(&t.inner.host_id))
        .await;
}

/// Answers one query about a local service.
pub(crate) async fn answer(host: &HostHandle, service: &str, what: &str) -> Reply {
    let svc = host.service(service);
    let result: Result<Value, Error> = match what {
        "status" => svc
            .status()
            .await
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        "health" => svc
            .health()
            .await
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        "info" => svc
            .info()
            .await
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        other => Err(Error::new(
            koan::error::ErrorKind::InvalidParameters,
            format!(
                "unknown query `{other}`; accepted: {}, {}, {}",
                RemoteQuery::Status.as_str(),
                RemoteQuery::Health.as_str(),
                RemoteQuery::Info.as_str()
            ),
        )),
    };
    Reply::of(result)
}
