//! `/health`, `/health/live`, `/health/ready` in the IETF health-check format
//! (`application/health+json`, `pass`/`warn`/`fail`): degraded answers 200,
//! unhealthy 503.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use koan::health::{HealthReport, HealthStatus};
use serde_json::{Value, json};

use crate::AppState;

pub(crate) fn health_json(code: StatusCode, body: Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/health+json")],
        body.to_string(),
    )
        .into_response()
}

/// With a token configured, a request without it gets each check's status but not
/// its `output` or `error`: a health check's error can carry what a service's
/// history does (a connection string with its password), and `/health` stays open
/// for probes. A wrong token is refused ([`crate::auth::details`]).
pub(crate) async fn overall(State(state): State<AppState>, req: Request) -> Response {
    let details = match crate::auth::details(&state, &req) {
        Ok(details) => details,
        Err(refused) => return refused.closing(),
    };
    let h = state.host.health().await;
    let mut checks = serde_json::Map::new();
    for s in &h.services {
        let mut check = check("service", &s.report, details);
        check.insert("critical".into(), json!(s.critical));
        checks.insert(format!("{}:health", s.service), json!([check]));
    }
    if let Some(t) = &h.transport {
        let check = check("component", t, details);
        checks.insert("transport:connection".into(), json!([check]));
    }
    if let Some(j) = &h.jobs {
        let check = check("datastore", j, details);
        checks.insert("jobs:store".into(), json!([check]));
    }
    let code = if h.status == HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut body = json!({ "status": h.status.as_check_status(), "checks": checks });
    if !details {
        // Said, or a withheld output reads as a check that has none (a re-probe).
        body["notes"] = json!(["each check's output and error are given with the token"]);
    }
    health_json(code, body)
}

/// One check of `/health` for `report`: its status, and with `details` its
/// `output` (the description, else the error) and its `error` when it has one,
/// as a service's own health gives it (only the output was given; a probe).
fn check(
    component_type: &str,
    report: &HealthReport,
    details: bool,
) -> serde_json::Map<String, Value> {
    let output = report.description.as_ref().or(report.error.as_ref());
    let mut check = serde_json::Map::new();
    check.insert("componentType".into(), json!(component_type));
    check.insert("status".into(), json!(report.status.as_check_status()));
    check.insert("output".into(), json!(output.filter(|_| details)));
    if let Some(error) = report.error.as_ref().filter(|_| details) {
        check.insert("error".into(), json!(error));
    }
    check
}

pub(crate) async fn live(State(state): State<AppState>) -> Response {
    if state.host.live().await {
        health_json(StatusCode::OK, json!({ "status": "pass" }))
    } else {
        health_json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "fail", "output": "the host has stopped or a critical service failed" }),
        )
    }
}

/// Its reasons, as `/health`'s outputs, only with the token when one is configured:
/// a failing job store's reason carries the store's error (a review). A wrong token
/// is refused, ready or not ([`crate::auth::details`]).
pub(crate) async fn ready(State(state): State<AppState>, req: Request) -> Response {
    let details = match crate::auth::details(&state, &req) {
        Ok(details) => details,
        Err(refused) => return refused.closing(),
    };
    let r = state.host.ready().await;
    if r.ready {
        return health_json(StatusCode::OK, json!({ "status": "pass" }));
    }
    if !details {
        let output = format!(
            "not ready: {} reason(s), given with the token",
            r.reasons.len()
        );
        return health_json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "fail", "output": output }),
        );
    }
    health_json(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "status": "fail", "output": r.reasons.join("; "), "notes": r.reasons }),
    )
}
