//! `/api/services…`: listing, status, health, and calling actions.

use koan::transport::HostLink as _;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use koan::{action::ActionRequest, health::HealthStatus, status::ServiceState};
use serde::Serialize;
use serde_json::{Value, json};

use super::call_headers;
use crate::AppState;
use crate::error::ApiError;
use crate::query::{NoParams, Params, TokenInQuery};

/// One row of `GET /api/services`.
#[derive(Serialize)]
struct ServiceRow {
    name: String,
    kind: koan::service::ServiceKind,
    description: Option<String>,
    state: ServiceState,
    health: HealthStatus,
    /// The sentence of its health report, if it gave one.
    health_description: Option<String>,
    enabled: bool,
    critical: bool,
    schedule: Option<String>,
    runs: u64,
    failures: u64,
    /// Actions that succeeded and failed: the work of a background service, whose
    /// run lasts as long as the host (so its `runs` stays 0).
    actions_succeeded: u64,
    actions_failed: u64,
    restarts: u32,
    queue_depth: usize,
    in_flight: usize,
    last_run: Option<koan::status::RunRecord>,
    next_run: Option<Value>,
    actions: Vec<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let health = state.host.health().await;
    let own = state.host.host_id();
    let mut rows = Vec::new();
    for status in state.host.statuses() {
        let info = state.host.service(&status.name).info().await?;
        let own_health = health.services.iter().find(|h| h.service == status.name);
        let h = own_health.map_or(HealthStatus::Healthy, |h| h.report.status);
        let said = own_health.and_then(|h| h.report.description.clone());
        let history = state.host.history(&status.name)?;
        let row = ServiceRow {
            name: status.name.clone(),
            kind: status.kind,
            description: info.description,
            state: status.state,
            health: h,
            health_description: said,
            enabled: status.enabled,
            critical: status.critical,
            schedule: info.schedule,
            runs: status.runs,
            failures: status.failures,
            actions_succeeded: history.actions_succeeded,
            actions_failed: history.actions_failed,
            restarts: status.restarts,
            queue_depth: status.queue_depth,
            in_flight: status.in_flight,
            last_run: status.last_run,
            next_run: status.next_run.map(|t| json!(t)),
            actions: info.actions.into_iter().map(|a| a.name).collect(),
        };
        let mut v = serde_json::to_value(row).unwrap_or(Value::Null);
        if let (Some(id), Some(m)) = (&own, v.as_object_mut()) {
            m.insert("host".into(), json!(id));
        }
        rows.push(v);
    }
    // Services of the other hosts of the cluster, as their heartbeats announce them.
    for instance in state.host.instances().await.unwrap_or_default() {
        if own.as_deref() == Some(instance.host_id.as_str()) {
            continue;
        }
        for s in &instance.services {
            // As its host's own health check said (a service degraded by its
            // check read healthy here, judged from its run counts; a probe).
            let health = instance.health_of(s);
            let said = instance
                .health
                .get(&s.name)
                // Not a sentence made before the service failed.
                .filter(|r| r.status == health)
                .and_then(|r| r.description.clone());
            rows.push(json!({
                "name": s.name, "kind": s.kind, "description": null, "state": s.state,
                "health": health, "health_description": said, "enabled": s.enabled, "critical": s.critical, "schedule": null,
                "runs": s.runs, "failures": s.failures, "restarts": s.restarts,
                "queue_depth": s.queue_depth, "in_flight": s.in_flight, "last_run": s.last_run,
                "next_run": s.next_run, "actions": [], "host": instance.host_id, "remote": true,
                "stale": instance.stale,
            }));
        }
    }
    Ok(Json(rows))
}

pub(crate) async fn info(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.service(&name).info().await?).into_response())
}

pub(crate) async fn status(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.service(&name).status().await?).into_response())
}

pub(crate) async fn health(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    let h = state.host.service(&name).health().await?;
    let code = if h.report.status == HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": h.report.status.as_check_status(),
        "service": h.service,
        "critical": h.critical,
        "description": h.report.description,
        "error": h.report.error,
        "data": h.report.data,
    });
    Ok(crate::routes::health::health_json(code, body))
}

/// The longest `timeout` a call may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// The query of an action call.
struct CallQuery {
    priority: i32,
    timeout: Option<Duration>,
    wait: bool,
    /// A stored job, not before this long from now.
    delay: Option<Duration>,
    /// A stored job, not before this time (with `delay` too: the later).
    at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The query parameters an action call takes.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallParams {
    priority: Option<String>,
    timeout: Option<String>,
    wait: Option<String>,
    delay: Option<String>,
    at: Option<String>,
    /// Refused when present: only event streams take `?token=`.
    #[serde(rename = "token")]
    _token: Option<TokenInQuery>,
}

impl CallParams {
    /// Whether a poke route with these parameters is a plain hand-over: no
    /// `delay` or `at`, `wait` not asked for (a poke's default), and no
    /// `priority` or `timeout` (which a joined poke would not honour).
    pub(crate) fn plain_handover(&self) -> bool {
        self.delay.is_none()
            && self.at.is_none()
            && self.priority.is_none()
            && self.timeout.is_none()
            && self.wait.as_deref().is_none_or(|w| w == "false")
    }
}

/// `now`: the host's clock's (a test's paused one too), which `at` is read against.
fn parse_query(q: &CallParams, now: chrono::DateTime<chrono::Utc>) -> Result<CallQuery, ApiError> {
    let mut out = CallQuery {
        priority: 0,
        timeout: None,
        wait: true,
        delay: None,
        at: None,
    };
    if let Some(v) = &q.priority {
        out.priority = v.trim().parse().map_err(|_| {
            ApiError::bad_request("invalid_parameters", format!("query parameter `priority` must be a whole number from {} to {} (higher runs first), not `{v}`", i32::MIN, i32::MAX))
        })?;
    }
    if let Some(v) = &q.timeout {
        let d = koan::schedule::parse_duration(v).map_err(|e| {
            ApiError::bad_request(
                "invalid_parameters",
                format!("query parameter `timeout`: {}", e.message()),
            )
        })?;
        if d.is_zero() {
            return Err(ApiError::bad_request(
                "invalid_parameters",
                "query parameter `timeout` must be longer than zero",
            ));
        }
        if d > MAX_TIMEOUT {
            return Err(ApiError::bad_request(
                "invalid_parameters",
                format!(
                    "query parameter `timeout` = `{v}` is longer than the 7 days allowed; use `wait=false` for longer work"
                ),
            ));
        }
        out.timeout = Some(d);
    }
    if let Some(v) = &q.wait {
        out.wait = super::call_query::wait_value(v)?;
    }
    if let Some(v) = &q.delay {
        let d = koan::schedule::parse_duration(v).map_err(|e| {
            ApiError::bad_request(
                "invalid_parameters",
                format!("query parameter `delay`: {}", e.message()),
            )
        })?;
        if d > MAX_DELAY {
            return Err(ApiError::bad_request(
                "invalid_parameters",
                "query parameter `delay` is longer than the 365 days allowed",
            ));
        }
        out.delay = Some(d);
    }
    if let Some(v) = &q.at {
        out.at = Some(super::call_query::at_value(v, now)?);
    }
    Ok(out)
}

/// How long `wait=true` waits for a scheduled job's outcome when the call gives no
/// `timeout`.
const SCHEDULED_WAIT: Duration = Duration::from_secs(60);

/// The longest `delay` a job may ask for, and how far ahead its `at` may be.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(365 * 86_400);

/// The `Idempotency-Key` header, when given: visible ASCII, 1 to 200 characters.
/// The answer to a call that waited: serialized as it is, not built as a JSON map
/// first (B7's profile: the map's inserts and drops per request). Its fields in
/// the order the map had them (alphabetical).
#[derive(serde::Serialize)]
struct Answered<'a> {
    action: &'a str,
    correlation_id: &'a str,
    result: Value,
    service: &'a str,
}

pub(crate) async fn run_action(
    state: &AppState,
    headers: &HeaderMap,
    query: &CallParams,
    service: &str,
    action: &str,
    params: Value,
    poke: Option<&str>,
) -> Result<Response, ApiError> {
    let mut q = parse_query(query, state.host.now())?;
    // The poke routes (`poke` is their message) hand the work over and answer at
    // once, as a stored job; `wait=true` waits for the outcome instead.
    // So do calls that schedule (`delay`, `at`) unless they ask to wait.
    let scheduled = q.delay.is_some() || q.at.is_some();
    if (poke.is_some() || scheduled) && query.wait.is_none() {
        q.wait = false;
    }
    // Answer with the service's own spelling of its name.
    let service = state.host.canonical_name(service).unwrap_or(service);
    let mut req: ActionRequest = state
        .host
        .service(service)
        .action(action, params)
        .priority(q.priority);
    // A scheduled call that waits: `timeout` bounds the wait, not the job's
    // runs. As the runs' deadline too, each attempt of a job due in 1 s waited
    // for 2 s was cut at 2 s and the job died, though the wait had ended (or,
    // due after it, never begun; found by a probe).
    if let Some(t) = q.timeout
        && !(q.wait && scheduled)
    {
        req = req.timeout(t);
    }
    let given = call_headers::correlation(headers)?;
    if q.wait && !scheduled {
        if call_headers::has_idempotency_key(headers) {
            // A call that waits is not stored: a key would not stop a second run.
            return Err(ApiError::bad_request(
                "invalid_parameters",
                "header `Idempotency-Key` makes the call a job, which a waiting call (`wait=true`, the default here) is not: add `wait=false` (or `delay`/`at`) to have a repeat return the first job, or leave the header out",
            ));
        }
        // Known before the answer: an error names it too.
        let cid = given.unwrap_or_else(koan::action::new_correlation_id);
        let out = req
            .correlation_id(&cid)
            .execute()
            .await
            .map_err(|e| outcome_unknown(e, service, action).for_call(&cid))?;
        // Borrowed, not copied: the answer is built while `out` lives.
        let cid = out.correlation_id();
        let body = Answered {
            action,
            correlation_id: cid,
            result: out.json()?,
            service,
        };
        Ok(call_headers::with_correlation(
            Json(body).into_response(),
            cid,
        ))
    } else {
        // Known before the answer, as a waiting call's: a refusal names it too
        // (found by a probe).
        let cid = given.unwrap_or_else(koan::action::new_correlation_id);
        req = req.correlation_id(&cid);
        // `delay` and `at` both hold: the job runs no sooner than the later of the two.
        let now = chrono::Utc::now();
        let due = match (q.delay, q.at) {
            (Some(d), None) => {
                req = req.delay(d);
                chrono::Duration::from_std(d).ok().map(|d| now + d)
            }
            (Some(d), Some(at)) => {
                let due = chrono::Duration::from_std(d).map_or(at, |d| at.max(now + d));
                req = req.at(due);
                Some(due)
            }
            (None, Some(at)) => {
                req = req.at(at);
                Some(at)
            }
            (None, None) => None,
        };
        if let Some(k) = call_headers::idempotency_key(headers).map_err(|e| e.for_call(&cid))? {
            req = req.idempotency_key(k);
        }
        // Answered only once the job store has the job.
        let ticket = req
            .enqueue()
            .await
            .map_err(|e| ApiError::from(e).for_call(&cid))?;
        let mut body = json!({
            "id": ticket.id(),
            "correlation_id": ticket.correlation_id(),
            "status_url": format!("/api/jobs/{}", ticket.id()),
            "created": ticket.created(),
        });
        if let Some(what) = poke {
            body["message"] = json!(format!("Service '{service}' {what}"));
        }
        let cid = ticket.correlation_id().to_owned();
        if q.wait {
            // A scheduled job with `wait=true`: its outcome once it ran, if that comes
            // within the wait; otherwise the 202 says where the stored job is.
            let limit = q.timeout.unwrap_or(SCHEDULED_WAIT);
            // A job due after the wait ends cannot finish within it: answer at once.
            let reachable = due
                .is_none_or(|due| chrono::Duration::from_std(limit).is_ok_and(|l| due <= now + l));
            let waited = if reachable {
                tokio::time::timeout(limit, ticket.outcome()).await.ok()
            } else {
                None
            };
            if let Some(out) = waited {
                let out = out.map_err(|e| ApiError::from(e).for_call(&cid))?;
                let body = json!({
                    "service": service,
                    "action": action,
                    "correlation_id": cid,
                    "result": out.json()?,
                });
                return Ok(call_headers::with_correlation(
                    Json(body).into_response(),
                    &cid,
                ));
            }
            body["outcome"] = json!(
                "pending: the job did not finish within the wait; it stays stored, see status_url"
            );
        }
        Ok(call_headers::with_correlation(
            (StatusCode::ACCEPTED, Json(body)).into_response(),
            &cid,
        ))
    }
}

/// A call that timed out may still finish (its handler had a grace to stop, and may
/// have done its work): the answer says so instead of claiming it failed.
fn outcome_unknown(e: koan::Error, service: &str, action: &str) -> ApiError {
    // Known not to have started (it timed out in its mailbox): its message says so.
    if e.kind() != koan::error::ErrorKind::Timeout || e.not_started() {
        return e.into();
    }
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!(
            "{} — the outcome is unknown: the handler of `{}` of `{}` may have finished its work, may still run, or may never have started (a handler is told to stop at the call's deadline; in another process only when the call gave `timeout`). Look for its correlation id (in this answer) in the events (/api/events) and logs; to get a recorded outcome, call with `wait=false` (a job: GET /api/jobs/{{id}})",
            e.message(),
            action.escape_debug(),
            service.escape_debug()
        ),
    )
}

pub(crate) async fn act(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    Params(query): Params<CallParams>,
    mut req: Request,
) -> Result<Response, ApiError> {
    // The whole request, not `HeaderMap` and `Bytes` extractors: those copy the
    // headers and read the body a second time.
    let params = crate::body::json_params(&mut req)?;
    run_action(&state, req.headers(), &query, &name, &action, params, None).await
}

/// [`act`] for a request admission matched and read itself ([`crate::admit`]): the
/// same query, then the same body, then the same call, each refused as `act`'s
/// extractors and body read refuse it.
pub(crate) async fn act_read(
    state: &AppState,
    req: &axum::http::request::Parts,
    name: &str,
    action: &str,
    body: Option<axum::body::Bytes>,
) -> Result<Response, ApiError> {
    // No query: the parameters all absent, as the parse of "" gives them (B7's
    // profile: ≈ 200 instructions for the parse of nothing).
    let query: CallParams = match req.uri.query() {
        None => CallParams::default(),
        q => crate::query::parse(q)?,
    };
    let params = crate::body::params_of(body.as_ref())?;
    run_action(state, &req.headers, &query, name, action, params, None).await
}
