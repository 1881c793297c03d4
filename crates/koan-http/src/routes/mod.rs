//! The route table.

mod activity;
mod events;
mod health;
mod jobs;
mod seed;
mod services;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::AppState;

pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.options.body_limit;
    let cors = cors(&state.options.cors_origins);
    let mut r = Router::new()
        .route("/", get(crate::dashboard::page))
        .route("/assets/{file}", get(crate::dashboard::asset))
        .route("/api/services", get(services::list))
        .route("/api/services/{name}", get(services::info))
        .route("/api/services/{name}/status", get(services::status))
        .route("/api/services/{name}/health", get(services::health))
        .route("/api/services/{name}/actions/{action}", post(services::act))
        .route("/api/services/{name}/trigger", post(seed::trigger))
        .route("/api/services/{name}/check-queue", post(seed::check_queue))
        .route(
            "/api/services/{name}/process-batch",
            post(seed::process_batch),
        )
        .route("/api/services/{name}/history", get(activity::history))
        .route("/api/stats/throughput", get(activity::throughput))
        .route("/api/instances", get(activity::instances))
        .merge(private(&state))
        .merge(streams(&state))
        .route("/health", get(health::overall))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(from_fn_with_state(state.clone(), admit))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state);
    if let Some(cors) = cors {
        r = r.layer(cors);
    }
    r
}

/// What every request passes before its route: the origin, then the token, then
/// the body — so nothing is read for a request that will be refused. One layer, not
/// three: each `from_fn` layer clones the rest of the stack per request (B7's
/// profile: the clones and drops were ≈ 4 % of the server's time).
async fn admit(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Err(e) = crate::guard::same_site_only(&state, &req) {
        return e.closing();
    }
    if let Err(e) = crate::auth::require_token(&state, &req) {
        return e.closing();
    }
    match crate::body::read_json_body(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// Reads that need the token: job records (results may be private) and the events
/// kept on the host.
fn private(state: &AppState) -> Router<AppState> {
    Router::new()
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

/// Live event streams: the token, also as `?token=` (browsers' `EventSource`).
fn streams(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/events", get(events::all_stream))
        .route("/api/services/{name}/events", get(events::service_stream))
        .route_layer(from_fn_with_state(state.clone(), crate::auth::stream))
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state.host).await,
    )
}

async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(crate::openapi::document(&state.host).await)
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

/// Every error answer is JSON, including those axum makes itself (a wrong method, a
/// path that does not decode): `{ "error": kind, "message": … }`, other headers kept.
async fn json_errors(resp: axum::response::Response) -> axum::response::Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") || ct.starts_with("application/health+json") {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let kind = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        _ => "error",
    };
    let message = if text.is_empty() {
        match status.as_u16() {
            405 => {
                "this route does not take that method; the API is described at /api/openapi.json"
                    .to_owned()
            }
            _ => status.canonical_reason().unwrap_or("error").to_owned(),
        }
    } else {
        text
    };
    let mut out = crate::ApiError::new(status, kind, message).into_response();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in parts.headers.iter() {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out
}
