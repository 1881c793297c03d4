//! The cluster registry: heartbeats of every host in the KV bucket `koan_registry`,
//! and the query responders (status, health, info) of local services.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use koan::status::{RunOutcome, ServiceStatus};
use koan::{Error, HostHandle, transport::Instance, transport::RemoteQuery};
use serde_json::Value;

use crate::health_report::{HealthChecks, Reports};
use crate::subjects;
use crate::transport::{NatsTransport, unavailable};
use crate::wire::Reply;

/// Announces this host's services now, with `health`, their last health reports.
pub(crate) async fn announce(
    t: &NatsTransport,
    host: &HostHandle,
    health: &Reports,
) -> Result<(), Error> {
    let instance = Instance::new(t.inner.host_id.clone(), host.statuses())
        .actions(host.action_names())
        .events(host.event_names())
        .health(health.clone());
    put(t, instance).await?;
    // The events emitted before (a startup service's, say) go out now: before
    // it, other hosts refused them, not knowing the service (found by a probe).
    t.inner.announced.notify_one();
    Ok(())
}

/// Announces this host every heartbeat, and soon (within a tenth of the lease)
/// after the `next_run` of a singleton it holds moved: the tick ended, and the
/// entry names the next one again (see [`mark_started`]). Each heartbeat starts
/// a round of the services' health checks; a round that changed a verdict or a
/// sentence is announced as soon as it ends.
pub(crate) async fn heartbeats(t: NatsTransport, host: HostHandle) {
    let mut beat = tokio::time::interval(t.inner.opts.heartbeat);
    let look = (t.inner.opts.lease / 10).max(Duration::from_millis(10));
    let mut look = tokio::time::interval(look);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut checks = HealthChecks::new(host.clone());
    let mut announced = Vec::new();
    loop {
        tokio::select! {
            _ = beat.tick() => checks.start(),
            changed = checks.ended() => {
                if !changed {
                    continue;
                }
            }
            _ = look.tick() => {
                if held_runs(&t, &host) == announced {
                    continue;
                }
            }
        }
        announced = held_runs(&t, &host);
        let beat = announce(&t, &host, &checks.reports()).await;
        if let Err(e) = &beat {
            t.inner
                .refusals
                .note(crate::storage::HEARTBEAT, e.message());
            tracing::warn!(error = %e, "registry heartbeat failed");
        }
        if let Ok(mut failing) = t.inner.heartbeat_failing.lock() {
            *failing = beat.err().map(|e| e.message().chars().take(300).collect());
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

/// Room left in a registry message for the KV put's headers.
const HEADROOM: usize = 4 * 1024;

/// What an error text left out of a heartbeat says instead (shorter than any
/// text it replaces).
const LEFT_OUT: &str =
    "(left out of the registry: too large for the broker; the service's own status has it)";

/// `instance` as its registry entry, within `max` bytes: its services' error
/// texts (each at most 8 KiB, but one per service and one per last run) and
/// their health reports' texts and figures are left out when the entry would not fit — a run's 1.2 MB error failed every
/// heartbeat, and the whole host dropped out of the cluster (found by a probe).
/// An entry too large without them is refused, saying why.
fn encode_within(instance: &mut Instance, max: usize) -> Result<Vec<u8>, Error> {
    let body = serde_json::to_vec(&*instance).unwrap_or_default();
    // 0: the broker's limit not known yet (no connection so far).
    if max == 0 || body.len() <= max {
        return Ok(body);
    }
    let leave_out = |text: &mut String| {
        if text.len() > LEFT_OUT.len() {
            LEFT_OUT.clone_into(text);
        }
    };
    for report in instance.health.values_mut() {
        for text in [&mut report.description, &mut report.error]
            .into_iter()
            .flatten()
        {
            leave_out(text);
        }
        report.data.clear();
    }
    for s in &mut instance.services {
        if let Some(text) = &mut s.last_error {
            leave_out(text);
        }
        if let Some(run) = &mut s.last_run {
            match &mut run.outcome {
                RunOutcome::Failed { error: text } | RunOutcome::Panicked { message: text } => {
                    leave_out(text);
                }
                _ => {}
            }
        }
    }
    let body = serde_json::to_vec(&*instance).unwrap_or_default();
    if body.len() <= max {
        return Ok(body);
    }
    Err(unavailable(format!(
        "cannot announce to the registry: this host's entry is {} bytes, more than the broker takes ({max} bytes and its headers: `max_payload`), for its {} services' names, actions and events; raise the server's `max_payload`, or run fewer services per host",
        body.len(),
        instance.services.len()
    )))
}

async fn put(t: &NatsTransport, mut instance: Instance) -> Result<(), Error> {
    mark_started(t, &mut instance.services);
    let max = t
        .inner
        .client
        .server_info()
        .max_payload
        .saturating_sub(HEADROOM);
    let body = encode_within(&mut instance, max)?;
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

/// Answers one query about a local service, in at most `max` bytes (0: no
/// limit): a history too large keeps its newest runs that fit, and another
/// answer too large is an error saying so (a 2.5 MB history was dropped unsaid:
/// its asker waited its 5 s and was told "no answer"; a probe).
pub(crate) async fn answer_within(
    host: &HostHandle,
    service: &str,
    what: &str,
    max: usize,
) -> Reply {
    let reply = answer(host, service, what).await;
    let len = reply.bytes().len();
    if max == 0 || len <= max {
        return reply;
    }
    if what == RemoteQuery::History.as_str()
        && let Ok(mut history) = host.service(service).history().await
    {
        while !history.runs.is_empty() {
            let keep = history.runs.len() / 2;
            history.runs.truncate(keep);
            let cut = Reply::of(Ok(serde_json::to_value(&history).unwrap_or_default()));
            if cut.bytes().len() <= max {
                return cut;
            }
        }
    }
    Reply::of(Err(Error::new(
        koan::error::ErrorKind::ServiceUnavailable,
        format!(
            "the {what} of `{service}` is {len} bytes, more than the broker takes ({max} bytes and its headers: `max_payload`); read it from its instance's own HTTP API"
        ),
    )))
}

/// Answers one query about a local service.
async fn answer(host: &HostHandle, service: &str, what: &str) -> Reply {
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
        "history" => svc
            .history()
            .await
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        other => Err(Error::new(
            koan::error::ErrorKind::InvalidParameters,
            format!(
                "unknown query `{other}`; accepted: {}",
                RemoteQuery::ALL.map(RemoteQuery::as_str).join(", ")
            ),
        )),
    };
    Reply::of(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host whose `n` services each failed with an error of `len` bytes (the
    /// most a status keeps is 8 KiB; a probe's was 1.2 MB before that cap).
    fn failing(n: usize, len: usize) -> Instance {
        let error = "x".repeat(len);
        let services = (0..n)
            .map(|i| {
                serde_json::from_value::<ServiceStatus>(serde_json::json!({
                    "name": format!("S{i}"), "kind": "periodic", "state": "running",
                    "enabled": true, "critical": false, "runs": 3, "failures": 3,
                    "consecutive_failures": 3, "restarts": 0, "queue_depth": 0,
                    "in_flight": 0, "last_error": error,
                    "last_run": {"reason": "scheduled", "started_at": "2026-12-07T12:00:00Z",
                                 "duration_ms": 5, "outcome": "failed", "error": error},
                }))
                .expect("a status")
            })
            .collect();
        Instance::new("h", services)
    }

    /// Fails each tick with a 4 KB error.
    #[koan::service(every = "1s", discover = false)]
    #[derive(Default)]
    struct Failing;

    impl koan::PeriodicService for Failing {
        async fn tick(&self, _cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
            Err("e".repeat(4000).into())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_history_too_large_for_the_broker_keeps_its_newest_runs() -> anyhow::Result<()> {
        let host = koan::testing::host().instance(Failing).build()?.start();
        koan::testing::wait_runs(&host, "Failing", 20).await;
        let whole = answer_within(&host, "Failing", "history", 0).await.bytes();
        assert!(whole.len() > 80_000, "{}", whole.len());
        let cut = answer_within(&host, "Failing", "history", 30_000).await;
        let bytes = cut.bytes();
        assert!(bytes.len() <= 30_000, "{}", bytes.len());
        let history: koan::status::ServiceHistory = serde_json::from_value(cut.into_result()?)?;
        assert!(!history.runs.is_empty() && history.runs.len() < 20);
        // The newest kept.
        let newest = host.history("Failing")?.runs[0].started_at;
        assert_eq!(history.runs[0].started_at, newest);
        // Another answer too large: an error saying so.
        let e = answer_within(&host, "Failing", "status", 100)
            .await
            .into_result();
        let e = e.expect_err("too large");
        assert!(e.message().contains("more than the broker takes"), "{e}");
        Ok(())
    }

    #[test]
    fn an_entry_too_large_for_the_broker_leaves_its_error_texts_out() {
        // Fits: kept whole.
        let mut small = failing(2, 100);
        let body = encode_within(&mut small, 64 * 1024).expect("fits");
        assert!(String::from_utf8_lossy(&body).contains(&"x".repeat(100)));
        // 64 services with 8 KiB errors twice each: past a 1 MB `max_payload`.
        let mut large = failing(64, 8 * 1024);
        let body = encode_within(&mut large, 1024 * 1024 - HEADROOM).expect("fits without texts");
        let back: Instance = serde_json::from_slice(&body).expect("an entry");
        assert_eq!(back.services.len(), 64);
        for s in &back.services {
            assert_eq!(s.last_error.as_deref(), Some(LEFT_OUT));
            let run = s.last_run.as_ref().expect("a last run");
            assert_eq!(
                run.outcome,
                RunOutcome::Failed {
                    error: LEFT_OUT.to_owned()
                }
            );
            assert_eq!(s.failures, 3);
        }
        // Too large without them too: refused, saying why.
        let e = encode_within(&mut failing(64, 10), 2048).expect_err("too large");
        assert!(
            e.message().contains("more than the broker takes")
                && e.message().contains("64 services"),
            "{e}"
        );
    }
}
