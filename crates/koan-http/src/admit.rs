//! Admission: what every request passes before its route — the origin, then the
//! token, then the body, so nothing is read for a request that will be refused — and
//! what every answer passes after it: errors made JSON ([`json_errors`]).
//!
//! The rules are [`admit`]; they are wired two ways. The server runs [`Admitted`]: the
//! rules, then the routes, as one service per connection. [`crate::router`] (for users
//! who mount the API in their own axum app) has them as a layer on every route. B7's
//! profiles: each axum layer on a route (`from_fn`, `map_response`, a body limit) clones
//! and boxes the rest of the route's stack per request — ≈ 5,000 instructions of a
//! 45,000-instruction request for the three this replaced.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The routes with the rules as a layer of each (and CORS, when configured): what
/// [`crate::router`] returns.
pub(crate) fn layered(state: AppState) -> Router {
    let cors = crate::routes::cors(&state.options.cors_origins);
    let mut r = crate::routes::routes(state.clone()).layer(from_fn_with_state(
        state,
        |State(s): State<AppState>, req, next: Next| async move {
            admit(&s, req, |req| next.run(req)).await
        },
    ));
    if let Some(cors) = cors {
        r = r.layer(cors);
    }
    r
}

/// The rules, then `run` with the admitted request, then errors made JSON.
async fn admit<F: Future<Output = Response>>(
    state: &AppState,
    req: Request,
    run: impl FnOnce(Request) -> F,
) -> Response {
    let answer = match admitted(state, req).await {
        Ok(req) => run(req).await,
        Err(refused) => refused,
    };
    json_errors(answer).await
}

async fn admitted(state: &AppState, req: Request) -> Result<Request, Response> {
    if let Err(e) = crate::guard::same_site_only(state, &req) {
        return Err(e.closing());
    }
    if let Err(e) = crate::auth::require_token(state, &req) {
        return Err(e.closing());
    }
    crate::body::read_json_body(state, req).await
}

/// The server's service: [`admit`], then the routes.
#[derive(Clone)]
pub(crate) struct Admitted {
    state: AppState,
    routes: Router,
}

impl Admitted {
    pub(crate) fn new(state: AppState) -> Self {
        Admitted {
            routes: crate::routes::routes(state.clone()),
            state,
        }
    }
}

impl<B> tower_service::Service<axum::http::Request<B>> for Admitted
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let req = req.map(axum::body::Body::new);
            let Admitted { state, mut routes } = this;
            Ok(admit(&state, req, |req| async move {
                match tower_service::Service::call(&mut routes, req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            })
            .await)
        })
    }
}

/// Every error answer is JSON, including those axum makes itself (a wrong method, a
/// path that does not decode): `{ "error": kind, "message": … }`, other headers kept.
async fn json_errors(resp: Response) -> Response {
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
