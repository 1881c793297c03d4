//! The headers of an action call: `X-Correlation-Id` (given, and answered) and
//! `Idempotency-Key`, each checked and taken only when given once.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use crate::error::ApiError;

/// Header `name` (spelled `label`) when given once; given twice, which one is meant
/// is not known: refused rather than the first one taken.
fn once<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    label: &str,
) -> Result<Option<&'a HeaderValue>, ApiError> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_parameters",
            format!("header `{label}` is given more than once: send it once"),
        ));
    }
    Ok(first)
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = once(headers, &IDEMPOTENCY_KEY, "Idempotency-Key")? else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s)
            if !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            Ok(Some(s.to_owned()))
        }
        _ => Err(ApiError::bad_request(
            "invalid_parameters",
            "header `Idempotency-Key` must have 1 to 200 visible ASCII characters",
        )),
    }
}

pub(super) fn correlation(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    // By a `HeaderName` made once: a `&str` is parsed into one on every look-up.
    match once(headers, &X_CORRELATION_ID, "X-Correlation-Id")? {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_parameters",
                    "header `X-Correlation-Id` must be visible ASCII",
                )
            })?;
            // The one rule, as NATS's `Koan-Correlation-Id` follows it.
            koan::action::check_correlation_id(s).map_err(|why| {
                ApiError::bad_request(
                    "invalid_parameters",
                    format!("header `X-Correlation-Id` {why}"),
                )
            })?;
            Ok(Some(s.to_owned()))
        }
    }
}

static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

pub(super) fn with_correlation(mut r: Response, cid: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cid) {
        r.headers_mut().insert(&X_CORRELATION_ID, v);
    }
    r
}

/// Whether the call names itself: an `X-Correlation-Id` or an `Idempotency-Key`
/// (a poke that does is stored as its own job, not joined to another: its id
/// must find it, its key must stop a second run).
pub(super) fn names_itself(headers: &HeaderMap) -> bool {
    headers.contains_key(&X_CORRELATION_ID) || headers.contains_key(&IDEMPOTENCY_KEY)
}

/// Whether the call carries an `Idempotency-Key` (a waiting call refuses one).
pub(super) fn has_idempotency_key(headers: &HeaderMap) -> bool {
    headers.contains_key(&IDEMPOTENCY_KEY)
}
