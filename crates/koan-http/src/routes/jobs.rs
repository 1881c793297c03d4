//! `/api/jobs…`: stored jobs, behind the token when one is set (their parameters and
//! results may be private).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use koan::{job::JobQuery, job::JobState};
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

/// The longest id, service or action name a query may carry.
const MAX_NAME: usize = 200;

fn bounded<'a>(key: &str, v: &'a str) -> Result<&'a str, ApiError> {
    if v.is_empty() || v.len() > MAX_NAME {
        return Err(ApiError::bad_request(
            "invalid_parameters",
            format!("query parameter `{key}` must have 1 to {MAX_NAME} characters"),
        ));
    }
    Ok(v)
}

/// The optional `service` query parameter of `counts` and `retry-dead`.
fn service_filter(query: &HashMap<String, String>) -> Result<Option<&str>, ApiError> {
    query
        .get("service")
        .map(|s| bounded("service", s))
        .transpose()
}

fn parse_list_query(q: &HashMap<String, String>) -> Result<JobQuery, ApiError> {
    let mut out = JobQuery::default();
    for (k, v) in q {
        match k.as_str() {
            "state" => {
                out.state = Some(JobState::parse(v).ok_or_else(|| {
                    let all: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::bad_request(
                        "invalid_parameters",
                        format!(
                            "query parameter `state` must be one of {}, not `{}`",
                            all.join(", "),
                            v.escape_debug()
                        ),
                    )
                })?);
            }
            "service" => out.service = Some(bounded(k, v)?.to_owned()),
            "action" => out.action = Some(bounded(k, v)?.to_owned()),
            "correlation_id" => out.correlation_id = Some(bounded(k, v)?.to_owned()),
            "cursor" => out.cursor = Some(bounded(k, v)?.to_owned()),
            "limit" => {
                let n: usize = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=500).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_parameters",
                            "query parameter `limit` must be a whole number from 1 to 500",
                        )
                    })?;
                out.limit = Some(n);
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_parameters",
                    format!(
                        "unknown query parameter `{}`; accepted: state, service, action, correlation_id, limit, cursor",
                        other.escape_debug()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// `GET /api/jobs?state=&service=&action=&correlation_id=&limit=&cursor=`: newest
/// first.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = parse_list_query(&query)?;
    let page = state.host.jobs().list(q).await?;
    Ok(Json(page).into_response())
}

/// `GET /api/jobs/counts?service=`: how many jobs are in each state.
pub(crate) async fn counts(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let service = service_filter(&query)?;
    let counts = state.host.jobs().counts(service).await?;
    let by_state: serde_json::Map<String, serde_json::Value> = counts
        .by_state
        .iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect();
    Ok(Json(json!({
        "durable": state.host.jobs().is_durable(),
        "store": state.host.jobs().store_name(),
        "counts": by_state,
    }))
    .into_response())
}

/// `GET /api/jobs/{id}` (also `/api/actions/{id}`, the older name).
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.jobs().get(bounded("id", &id)?).await?).into_response())
}

/// `POST /api/jobs/{id}/retry`.
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.jobs().retry(bounded("id", &id)?).await?).into_response())
}

/// `POST /api/jobs/{id}/cancel`.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.jobs().cancel(bounded("id", &id)?).await?).into_response())
}

/// `DELETE /api/jobs/{id}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.host.jobs().delete(bounded("id", &id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/jobs/retry-dead?service=`: every dead job runs again.
pub(crate) async fn retry_dead(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let service = service_filter(&query)?;
    let n = state.host.jobs().retry_all_dead(service).await?;
    Ok(Json(json!({ "retried": n })).into_response())
}
