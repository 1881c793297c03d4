//! `/health`, `/health/live`, `/health/ready` in the IETF health-check format
//! (`application/health+json`, `pass`/`warn`/`fail`): degraded answers 200,
//! unhealthy 503.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koan::health::HealthStatus;
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
/// its `output`: a health check's error can carry what a service's history does (a
/// connection string with its password), and `/health` stays open for probes.
pub(crate) async fn overall(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let details = crate::auth::check(state.options.token.as_deref(), &headers, None).is_ok();
    let output = |text: Option<String>| if details { text } else { None };
    let h = state.host.health().await;
    let mut checks = serde_json::Map::new();
    for s in &h.services {
        checks.insert(
            format!("{}:health", s.service),
            json!([{
                "componentType": "service",
                "status": s.report.status.as_check_status(),
                "critical": s.critical,
                "output": output(s.report.description.clone().or_else(|| s.report.error.clone())),
            }]),
        );
    }
    if let Some(t) = &h.transport {
        checks.insert(
            "transport:connection".into(),
            json!([{
                "componentType": "component",
                "status": t.status.as_check_status(),
                "output": output(t.description.clone().or_else(|| t.error.clone())),
            }]),
        );
    }
    if let Some(j) = &h.jobs {
        checks.insert(
            "jobs:store".into(),
            json!([{
                "componentType": "datastore",
                "status": j.status.as_check_status(),
                "output": output(j.description.clone().or_else(|| j.error.clone())),
            }]),
        );
    }
    let code = if h.status == HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut body = json!({ "status": h.status.as_check_status(), "checks": checks });
    if !details {
        // Said, or a withheld output reads as a check that has none (a re-probe).
        body["notes"] = json!(["each check's output is given with the token"]);
    }
    health_json(code, body)
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
/// a failing job store's reason carries the store's error (a review).
pub(crate) async fn ready(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let r = state.host.ready().await;
    if r.ready {
        return health_json(StatusCode::OK, json!({ "status": "pass" }));
    }
    if crate::auth::check(state.options.token.as_deref(), &headers, None).is_err() {
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
