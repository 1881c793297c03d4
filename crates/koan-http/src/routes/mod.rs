//! The route table.

mod activity;
mod call_headers;
mod call_query;
mod coalesce;
mod events;
mod health;
mod job_filters;
mod jobs;
mod seed;
mod services;
mod supervision;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::AppState;

pub(crate) use services::act_read;

/// The routes, without the admission rules ([`crate::admit`]) in front of them.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/services/{name}/actions/{action}", post(services::act))
        .route("/api/services/{name}/trigger", post(seed::trigger))
        .route("/api/services/{name}/check-queue", post(seed::check_queue))
        .route("/api/services/{name}/restart", post(supervision::restart))
        .route(
            "/api/services/{name}/process-batch",
            post(seed::process_batch),
        )
        .merge(private(&state))
        .merge(streams(&state))
        .merge(open(&state))
        .fallback(not_found)
        .with_state(state)
}

/// Reads that need the token: every `/api` read but the API's description. Job
/// records and events may carry private data; a service's status, history and
/// health carry its runs' errors (a connection string with its password, served to
/// anyone while only jobs and events were behind the token; found by a probe).
/// The page, its assets, `/health*` (for probes) and `/metrics` (no caller's or
/// handler's text) stay open.
fn private(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/services", get(services::list))
        .route("/api/services/{name}", get(services::info))
        .route("/api/services/{name}/status", get(services::status))
        .route("/api/services/{name}/health", get(services::health))
        .route("/api/services/{name}/history", get(activity::history))
        .route("/api/stats/throughput", get(activity::throughput))
        .route("/api/instances", get(activity::instances))
        .route("/api/events/recent", get(activity::recent_events))
        .route("/api/actions/{id}", get(jobs::get))
        .route("/api/jobs", get(jobs::list))
        .route("/api/jobs/counts", get(jobs::counts))
        .route("/api/jobs/retry-dead", post(jobs::retry_dead))
        .route("/api/jobs/{id}", get(jobs::get).merge(delete(jobs::delete)))
        .route("/api/jobs/{id}/retry", post(jobs::retry))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel))
        .route_layer(from_fn_with_state(state.clone(), crate::auth::private))
}

/// Reads open without the token: the page, its assets, `/health*` (for probes),
/// `/metrics` (no caller's or handler's text) and the API's description. A wrong
/// token is refused there too ([`crate::auth::open`]).
fn open(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(crate::dashboard::page))
        .route("/assets/{file}", get(crate::dashboard::asset))
        .route("/health", get(health::overall))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route_layer(from_fn_with_state(state.clone(), crate::auth::open))
}

/// Live event streams: the token, also as `?token=` (browsers' `EventSource`).
fn streams(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/events", get(events::all_stream))
        .route("/api/services/{name}/events", get(events::service_stream))
        .route_layer(from_fn_with_state(state.clone(), crate::auth::stream))
}

pub(crate) fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    // `HttpOptions::validate` refuses `*`, which `AllowOrigin::list` would panic on.
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter(|o| o.trim() != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("x-correlation-id"),
                header::HeaderName::from_static("idempotency-key"),
            ]),
    )
}

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    state.scrapes.answer(&state.host).await
}

async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.get(&state.host).await,
    )
}

async fn not_found(uri: axum::http::Uri) -> crate::ApiError {
    crate::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route `{}`; the API is described at /api/openapi.json",
            uri.path()
        ),
    )
}
