//! Bearer-token checks, as route layers: every mutating request, and every `/api`
//! read but the API's description (job records, events, services' status and
//! history, event streams), need the token — checked before
//! any body is read; the comparison takes constant time and the token is never logged.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::error::ApiError;

/// Refuses a mutating request (anything but `GET`, `HEAD`, `OPTIONS`) without the
/// token, before any handler or extractor reads its body.
pub(crate) fn require_token(state: &AppState, req: &Request) -> Result<(), ApiError> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    check(state.options.token.as_deref(), req.headers(), None)
}

/// The layer of private routes: the token is needed for reads too.
pub(crate) async fn private(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check(state.options.token.as_deref(), req.headers(), None) {
        Ok(()) => next.run(req).await,
        // A token in the query is read by event streams only: say so, or the
        // caller who gave it is told only that it is missing.
        Err(_) if query_token(&req).is_some() && authorization(req.headers()).is_none() => {
            ApiError::unauthorized(
                "this route reads the token from `Authorization: Bearer <token>` only; `?token=` is read by event streams alone",
            )
            .closing()
        }
        Err(e) => e.closing(),
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

/// The layer of event streams: as [`private`], but the token may also come as
/// `?token=`, since a browser's `EventSource` cannot set headers.
pub(crate) async fn stream(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let query_token = query_token(&req);
    match check(
        state.options.token.as_deref(),
        req.headers(),
        query_token.as_deref(),
    ) {
        Ok(()) => next.run(req).await,
        Err(e) => e.closing(),
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Checks `Authorization: Bearer …` (or, for browsers' `EventSource`, which cannot set
/// headers, a `token` query parameter) against the configured token.
pub(crate) fn check(
    expected: Option<&str>,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let header = authorization(headers);
    if header.is_some_and(|v| v.to_str().is_err()) {
        return Err(ApiError::unauthorized(
            "the `Authorization` header is not visible ASCII text: send `Authorization: Bearer <token>`",
        ));
    }
    let given = header
        .and_then(|v| v.to_str().ok())
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .or(query_token);
    match given {
        None => Err(ApiError::unauthorized(
            "this route needs `Authorization: Bearer <token>` (the token configured as `koan.http.token` or KOAN_HTTP_TOKEN; koanctl takes it as `--token`, `--token @file` or KOAN_TOKEN)",
        )),
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("the bearer token is wrong")),
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
