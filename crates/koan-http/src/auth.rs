//! Bearer-token checks, as route layers: every mutating request, and every `/api`
//! read but the API's description (job records, events, services' status and
//! history, event streams), need the token — checked before any body is read; the
//! routes open without it refuse a wrong one. The comparison takes constant time. A
//! refusal is logged (sparsely: a flood does not flood the log), the token never.

use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use koan::transport::Sparse;

use crate::AppState;
use crate::error::ApiError;

/// Refuses a mutating request (anything but `GET`, `HEAD`, `OPTIONS`) without the
/// token, before any handler or extractor reads its body.
pub(crate) fn require_token(state: &AppState, req: &Request) -> Result<(), ApiError> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    verdict(state.options.token.as_deref(), req.headers(), None).map_err(|why| refuse(req, why))
}

/// The layer of private routes: the token is needed for reads too.
pub(crate) async fn private(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match verdict(state.options.token.as_deref(), req.headers(), None) {
        Ok(()) => next.run(req).await,
        // A token in the query is read by event streams only: say so, or the
        // caller who gave it is told only that it is missing.
        Err(Refusal::Missing)
            if query_token(&req).is_some() && authorization(req.headers()).is_none() =>
        {
            refuse(&req, Refusal::InQuery).closing()
        }
        Err(why) => refuse(&req, why).closing(),
    }
}

/// The layer of event streams: as [`private`], but the token may also come as
/// `?token=`, since a browser's `EventSource` cannot set headers.
pub(crate) async fn stream(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let query_token = query_token(&req);
    match verdict(
        state.options.token.as_deref(),
        req.headers(),
        query_token.as_deref(),
    ) {
        Ok(()) => next.run(req).await,
        Err(why) => refuse(&req, why).closing(),
    }
}

/// The layer of routes open without the token (the page, `/health*`, `/metrics`,
/// the API's description): a token given but not accepted is refused, as
/// [`details`] says. They answered it as if none had been sent, and the operator
/// who mistyped it had no hint (found by a probe).
pub(crate) async fn open(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match details(&state, &req) {
        Ok(_) => next.run(req).await,
        Err(refused) => refused.closing(),
    }
}

/// For a route open without the token that says more with it (`/health`,
/// `/health/ready`): whether `req` has its details — with the token, or when none
/// is configured. A token given but not accepted is refused as on every route that
/// reads it: it got the anonymous answer, and the operator who mistyped it no hint
/// (found by a probe).
pub(crate) fn details(state: &AppState, req: &Request) -> Result<bool, ApiError> {
    match verdict(state.options.token.as_deref(), req.headers(), None) {
        Ok(()) => Ok(true),
        Err(Refusal::Missing) => Ok(false),
        Err(why) => Err(refuse(req, why)),
    }
}

/// The `token` query parameter, if any.
fn query_token(req: &Request) -> Option<String> {
    req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    })
}

/// The `Authorization` header's value, if one was sent.
fn authorization(headers: &HeaderMap) -> Option<&axum::http::HeaderValue> {
    headers.get(axum::http::header::AUTHORIZATION)
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Why a request's token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No bearer token.
    Missing,
    /// A bearer token that is not the configured one.
    Wrong,
    /// An `Authorization` header no token could be read from.
    Unreadable,
    /// No bearer token, but one in `?token=`, which only event streams read.
    InQuery,
}

/// How to give the token, said by every refusal.
const HOW: &str = "`Authorization: Bearer <token>` (the token configured as `koan.http.token` or KOAN_HTTP_TOKEN; koanctl takes it as `--token`, `--token @file` or KOAN_TOKEN)";

impl Refusal {
    /// The answer's message: what was wrong, and how to give the token.
    fn message(self) -> String {
        match self {
            Refusal::Missing => format!("this route needs {HOW}"),
            Refusal::Wrong => format!(
                "the bearer token is wrong: it is not the one configured on this host; send {HOW}"
            ),
            Refusal::Unreadable => {
                format!("the `Authorization` header is not visible ASCII text: send {HOW}")
            }
            Refusal::InQuery => format!(
                "this route reads the token from {HOW} only; `?token=` is read by event streams alone"
            ),
        }
    }

    /// What the log says of it.
    fn logged(self) -> &'static str {
        match self {
            Refusal::Missing => "no bearer token",
            Refusal::Wrong => "a wrong bearer token",
            Refusal::Unreadable => "an `Authorization` header that is not visible ASCII",
            Refusal::InQuery => "a token in `?token=`, which only event streams read",
        }
    }
}

/// Refusals of each kind, logged at the 1st, 2nd, 4th, … of it: a flood of bad
/// tokens is seen without flooding the log.
static REFUSED: [Sparse; 4] = [const { Sparse::new() }; 4];

/// The answer to `req`, refused for `why`; logged as a warning with its route and
/// peer, never the token. A host refusing bad tokens said nothing, so an operator
/// could not see an attack or a misconfigured client (found by a probe).
fn refuse(req: &Request, why: Refusal) -> ApiError {
    if let Some(n) = REFUSED[why as usize].hit() {
        let route = req
            .extensions()
            .get::<OriginalUri>()
            .map_or(req.uri().path(), |u| u.path());
        let peer = crate::peer::of(req).map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        tracing::warn!(
            route = %route,
            peer = %peer,
            times = n,
            "refused a request: {} (said at the 1st, 2nd, 4th, … such refusal; `times` counts them all)",
            why.logged()
        );
    }
    ApiError::unauthorized(why.message())
}

/// Checks `Authorization: Bearer …` (or, for browsers' `EventSource`, which cannot set
/// headers, a `token` query parameter) against the configured token.
fn verdict(
    expected: Option<&str>,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(), Refusal> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let header = authorization(headers);
    if header.is_some_and(|v| v.to_str().is_err()) {
        return Err(Refusal::Unreadable);
    }
    let given = header
        .and_then(|v| v.to_str().ok())
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .or(query_token);
    match given {
        None => Err(Refusal::Missing),
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(Refusal::Wrong),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
