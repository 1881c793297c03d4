//! Admission: what every request passes before its route — the origin, then the
//! token, then the body, so nothing is read for a request that will be refused — and
//! what every answer passes after it: errors made JSON ([`json_errors`]).
//!
//! The rules are [`admit`]; they are wired two ways. The server runs [`Admitted`]: the
//! rules, then the routes, as one service per connection (the action route, the one
//! called most, answered by it without the router: [`action_route`]). [`crate::router`] (for users
//! who mount the API in their own axum app) has them as a layer on every route. B7's
//! profiles: each axum layer on a route (`from_fn`, `map_response`, a body limit) clones
//! and boxes the rest of the route's stack per request — ≈ 5,000 instructions of a
//! 45,000-instruction request for the three this replaced.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::headers::Seen;

/// The routes with the rules as a layer of each (and CORS, when configured): what
/// [`crate::router`] returns.
pub(crate) fn layered(state: AppState) -> Router {
    let cors = crate::routes::cors(&state.options.cors_origins);
    let mut r = crate::routes::routes(state.clone()).layer(from_fn_with_state(
        state,
        |State(s): State<AppState>, req, next: Next| async move {
            admit(&s, req, |req, body| next.run(crate::body::stash(req, body))).await
        },
    ));
    if let Some(cors) = cors {
        r = r.layer(cors);
    }
    r
}

/// The rules, then `run` with the admitted request and its body read, then errors
/// made JSON.
async fn admit<F: Future<Output = Response>>(
    state: &AppState,
    req: Request,
    run: impl FnOnce(Request, Option<Bytes>) -> F,
) -> Response {
    let answer = match rules(state, &req) {
        Ok(declared) => match crate::body::read_json_body(state, req, declared).await {
            Ok((req, body)) => run(req, body).await,
            Err(refused) => refused,
        },
        Err(refused) => refused.closing(),
    };
    let mut answer = if is_json_or_success(&answer) {
        answer
    } else {
        json_errors(answer).await
    };
    answer_headers(answer.headers_mut());
    answer
}

/// Every answer is kept by no cache (job records, action results, run errors
/// and events may be private) nor read as another type than it says: the API's
/// answers had neither header (a probe), then the action route's and the
/// refusals' still had not (its re-probe); an answer that sets its own (the
/// dashboard's page, an event stream) keeps it.
fn answer_headers(h: &mut axum::http::HeaderMap) {
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
}

/// The longest path any route takes: two names or ids of at most 200 bytes, each
/// percent-encoded (three bytes a byte), and the route's words.
const MAX_PATH: usize = 2048;

/// The origin and the token, checked from one pass over the headers, which also
/// says what the body will be. B7's profile: the guard's and the body's eight header
/// look-ups (≈ 1,550 instructions) are one scan, and these checks are not part of
/// a future moved into the caller's.
fn rules(state: &AppState, req: &Request) -> Result<crate::body::Declared, crate::ApiError> {
    let path = req.uri().path().len();
    if path > MAX_PATH {
        // Refused before a route could echo a 60 KB name in its 404.
        return Err(crate::ApiError::new(
            axum::http::StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the path has {path} bytes; no route's is longer than {MAX_PATH} (names and ids have at most 200 bytes)"
            ),
        ));
    }
    let seen = Seen::scan(req.headers());
    crate::guard::same_site_only(state, req.method(), &seen)?;
    crate::auth::require_token(state, req)?;
    Ok(crate::body::Declared::of(&seen, req))
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
            let shared = &state;
            Ok(admit(shared, req, |req, body| async move {
                let (parts, unread) = req.into_parts();
                let req = match action_route(&parts) {
                    Some((name, action)) => {
                        return served_action(shared, &parts, name, action, body).await;
                    }
                    None => crate::body::stash(Request::from_parts(parts, unread), body),
                };
                match tower_service::Service::call(&mut routes, req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            })
            .await)
        })
    }
}

/// The service and action of exactly `POST /api/services/{name}/actions/{action}`
/// whose two names need no decoding (no `%`): the requests [`Admitted`] answers
/// without its router. Any other request (another method, path or spelling) goes
/// through the router, which answers it as before.
fn action_route(req: &Parts) -> Option<(&str, &str)> {
    if req.method != Method::POST {
        return None;
    }
    let rest = req.uri.path().strip_prefix("/api/services/")?;
    let (name, rest) = rest.split_once('/')?;
    let action = rest.strip_prefix("actions/")?;
    let plain = |s: &str| !s.is_empty() && !s.bytes().any(|b| b == b'/' || b == b'%');
    (plain(name) && plain(action)).then_some((name, action))
}

/// The answer the router gives the action route, without the router's second
/// match, its URL-parameter and body extensions, and the `Path` extractor's decoding.
/// B7's profile: the connection task's 35,226 instructions a request became 27,833.
async fn served_action(
    state: &AppState,
    req: &Parts,
    name: &str,
    action: &str,
    body: Option<Bytes>,
) -> Response {
    let mut answer = crate::routes::act_read(state, req, name, action, body)
        .await
        .into_response();
    set_content_length(&mut answer);
    answer
}

/// What axum's route future does to every answer of a route (`set_content_length`
/// in axum 0.8's `routing/route.rs`): a `Content-Length` from an exact body size,
/// when the answer has none, so the headers are the router's, in its order.
fn set_content_length(resp: &mut Response) {
    use axum::body::HttpBody as _;
    if resp.headers().contains_key(header::CONTENT_LENGTH) {
        return;
    }
    if let Some(size) = resp.body().size_hint().exact() {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
}

/// An answer [`json_errors`] leaves as it is: not an error, or already JSON. Checked
/// before its future is made (B7's profile: that future, which holds a whole
/// `Response` and a body read, was built and moved for every answer).
fn is_json_or_success(resp: &Response) -> bool {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return true;
    }
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ct.starts_with("application/json") || ct.starts_with("application/health+json")
}

/// Every error answer is JSON, including those axum makes itself (a wrong method, a
/// path that does not decode): `{ "error": kind, "message": … }`, other headers kept.
async fn json_errors(resp: Response) -> Response {
    if is_json_or_success(&resp) {
        return resp;
    }
    let status = resp.status();
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
