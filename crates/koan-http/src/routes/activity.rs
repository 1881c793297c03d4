//! What happened lately, for the dashboard and `koanctl`: a service's last runs, the
//! host's recent events, finished work per second and per hour, and the instances
//! of the cluster.

use koan::transport::HostLink as _;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::query::{NoParams, Params};

/// The query of `GET /api/events/recent`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecentParams {
    service: Option<String>,
    correlation_id: Option<String>,
    limit: Option<String>,
}

/// `GET /api/services/{name}/history`: the service's last runs, newest first, and
/// its action counts.
pub(crate) async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.service(&name).history().await?).into_response())
}

/// `GET /api/stats/throughput`: succeeded and failed runs and actions per second (the
/// last 120 s) and per hour (the last 24 h), counted in memory since the host started.
pub(crate) async fn throughput(
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.throughput()).into_response())
}

/// `GET /api/events/recent?service=&correlation_id=&limit=`: the host's last events,
/// newest first. Behind the token, like the live stream (payloads may be private).
pub(crate) async fn recent_events(
    State(state): State<AppState>,
    Params(query): Params<RecentParams>,
) -> Result<Response, ApiError> {
    let limit = match &query.limit {
        None => koan::event::RECENT_EVENTS,
        Some(v) => crate::query::limit("limit", v, koan::event::RECENT_EVENTS)?,
    };
    let service = query.service.as_ref();
    let correlation = query.correlation_id.as_ref();
    let recent = state.host.recent_events();
    if let Some(s) = service {
        known_service(&state.host, s, &recent).await?;
    }
    let events: Vec<_> = recent
        .into_iter()
        .filter(|e| service.is_none_or(|s| e.service().eq_ignore_ascii_case(s)))
        .filter(|e| correlation.is_none_or(|c| e.correlation_id() == Some(c.as_str())))
        .take(limit)
        .collect();
    Ok(Json(events).into_response())
}

/// Refuses a `service` filter that names no service this host runs, none any
/// host of its cluster runs as far as it knows, and none of the kept events came
/// from: 404, as the service's own event stream answers (a typo listed nothing,
/// as if the service had been quiet). A service gone since its events were kept
/// stays a filter.
async fn known_service(
    host: &koan::HostHandle,
    service: &str,
    recent: &[koan::event::EventEnvelope],
) -> Result<(), ApiError> {
    let named = |s: &str| s.eq_ignore_ascii_case(service);
    if host.canonical_name(service).is_some() || recent.iter().any(|e| named(e.service())) {
        return Ok(());
    }
    let elsewhere = host.instances().await.unwrap_or_default();
    if elsewhere
        .iter()
        .any(|i| i.services.iter().any(|x| named(&x.name)))
    {
        return Ok(());
    }
    // Its error names the service and the services this host runs.
    host.status(service)?;
    Ok(())
}

/// `GET /api/instances`: the hosts of the cluster with their services, heartbeat age
/// and load (without a cluster transport, only this host).
pub(crate) async fn instances(
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let own = state.host.host_id();
    let liveness = state.host.liveness();
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let late_after = liveness.map(|l| ms(l.late_after));
    let local = state.host.statuses();
    let mut out = vec![instance(
        state.host.instance_name(),
        true,
        false,
        (now, now, None),
        &local,
    )];
    let mut registry_error = None;
    match state.host.instances().await {
        Ok(list) => {
            for i in list {
                if own.as_deref() == Some(i.host_id.as_str()) {
                    continue;
                }
                out.push(instance(
                    i.host_id,
                    false,
                    i.stale,
                    (i.seen_at, now, late_after),
                    &i.services,
                ));
            }
        }
        Err(e) => registry_error = Some(e.message().to_owned()),
    }
    Ok(Json(json!({
        "instances": out,
        "stale_after_ms": late_after,
        "gone_after_ms": liveness.map(|l| ms(l.gone_after)),
        "registry_error": registry_error,
    }))
    .into_response())
}

/// `stale`: the transport could not refresh its view (the broker is unreachable),
/// or the heartbeat, seen at `seen_at`, is older than `late_after` ms at `now`
/// (the transport's [`Liveness`](koan::transport::Liveness)).
fn instance(
    name: String,
    local: bool,
    stale: bool,
    (seen_at, now, late_after): (chrono::DateTime<Utc>, chrono::DateTime<Utc>, Option<i64>),
    services: &[koan::status::ServiceStatus],
) -> Value {
    let age = (now - seen_at).num_milliseconds().max(0);
    let in_flight: usize = services.iter().map(|s| s.in_flight).sum();
    let queued: usize = services.iter().map(|s| s.queue_depth).sum();
    json!({
        "name": name,
        "local": local,
        "seen_at": seen_at,
        "heartbeat_age_ms": age,
        "stale": stale || late_after.is_some_and(|late| age > late),
        "load": { "in_flight": in_flight, "queue_depth": queued },
        "services": services.iter().map(|s| json!({
            "name": s.name, "kind": s.kind, "state": s.state,
            "in_flight": s.in_flight, "queue_depth": s.queue_depth,
        })).collect::<Vec<_>>(),
    })
}
