//! Request bodies: JSON only, no larger than `body_limit`, and sent within
//! `body_read_timeout`. The body is read here, once, after the token and the origin
//! were checked; handlers take it already in memory ([`json_params`]), not through a
//! second read of a new body (B7's profile: collecting it again cost ≈ 3,000
//! instructions a request).

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::headers::Seen;

/// What the request's headers say about its body, read before the request is
/// taken apart (admission's one pass over the headers, [`Seen`]).
pub(crate) struct Declared {
    has_body: bool,
    is_json: bool,
    /// Why a body declared as JSON still cannot be read as such: another charset
    /// than UTF-8, or a `Content-Encoding` (a gzip body was refused as "not valid
    /// JSON at line 1 column 1", a UTF-16 one read as UTF-8; seen in a probe).
    unreadable: Option<String>,
    length: Option<u64>,
}

impl Declared {
    pub(crate) fn of(seen: &Seen<'_>, req: &Request) -> Self {
        let is_json = is_json(seen.content_type);
        Declared {
            has_body: has_body(seen, req),
            is_json,
            unreadable: if is_json { unreadable(seen) } else { None },
            length: seen
                .content_length
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok()),
        }
    }
}

/// What keeps a body declared as JSON from being read as UTF-8 JSON.
fn unreadable(seen: &Seen<'_>) -> Option<String> {
    if let Some(enc) = seen.content_encoding
        && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Some(format!(
            "a request body is read as it is sent: `Content-Encoding: {}` is not accepted; send the JSON uncompressed",
            String::from_utf8_lossy(enc.as_bytes()).escape_debug()
        ));
    }
    let ct = seen.content_type?.to_str().ok()?;
    let charset = ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"'))
    })?;
    (!charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8")).then(|| {
        format!(
            "a request body must be UTF-8 JSON: `charset={}` is not accepted; send it as UTF-8 (or without a charset)",
            charset.escape_debug()
        )
    })
}

/// Reads the body of a request that has one, within the deadline and the limit,
/// after checking that it is declared as JSON: the request (its body taken when it
/// was read) and the body read, if any. [`stash`] keeps it with the request for a
/// route; the action route served by admission ([`crate::admit`]) takes it as is.
pub(crate) async fn read_json_body(
    state: &AppState,
    req: Request,
    declared: Declared,
) -> Result<(Request, Option<Bytes>), Response> {
    if !declared.has_body {
        return Ok((req, None));
    }
    if !declared.is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a request body must be JSON, sent with `Content-Type: application/json`",
        )
        .closing());
    }
    if let Some(why) = declared.unreadable {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            why,
        )
        .closing());
    }
    let limit = state.options.body_limit;
    if declared.length.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit).closing());
    }
    let (parts, body) = req.into_parts();
    let read = to_bytes(body, limit);
    let bytes = match state.options.body_read_timeout {
        Some(deadline) => match tokio::time::timeout(deadline, read).await {
            Ok(r) => r,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {deadline:?} (`koan.http.body_read_timeout`)"
                    ),
                )
                .closing());
            }
        },
        None => read.await,
    };
    match bytes {
        Ok(bytes) => Ok((Request::from_parts(parts, Body::empty()), Some(bytes))),
        Err(e) if is_length_limit(&e) => Err(too_large(limit).closing()),
        Err(e) => Err(ApiError::bad_request(
            "bad_request",
            format!("cannot read the request body: {e}"),
        )
        .closing()),
    }
}

/// `axum::body::to_bytes`, the same limit and errors, without its list of chunks: a
/// body of one chunk (B7's: the whole body arrived with the head) is that chunk.
/// B7's profile: `collect()`'s queue, its drop and its copy out ≈ 600 instructions.
async fn to_bytes(body: Body, limit: usize) -> Result<Bytes, axum::Error> {
    use http_body_util::BodyExt as _;
    let mut body = http_body_util::Limited::new(body, limit);
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(axum::Error::new)?.into_data() else {
            continue;
        };
        match &mut joined {
            Some(all) => all.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut all = Vec::with_capacity(first.len() + data.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(joined.map_or(first, Bytes::from))
}

/// The body [`read_json_body`] read, kept with the request for its handler.
#[derive(Clone)]
struct ReadBody(Bytes);

/// The request with the body [`read_json_body`] read, for its route.
pub(crate) fn stash(mut req: Request, body: Option<Bytes>) -> Request {
    if let Some(bytes) = body {
        req.extensions_mut().insert(ReadBody(bytes));
    }
    req
}

/// The request's JSON body as parameters: `null` when it has none (or only
/// whitespace), a 400 naming the JSON error when it does not parse.
pub(crate) fn json_params(req: &mut Request) -> Result<Value, ApiError> {
    let body = req.extensions_mut().remove::<ReadBody>().map(|b| b.0);
    params_of(body.as_ref())
}

/// A body read ([`read_json_body`]) as parameters, as [`json_params`] answers.
pub(crate) fn params_of(body: Option<&Bytes>) -> Result<Value, ApiError> {
    let Some(bytes) = body else {
        return Ok(Value::Null);
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    crate::strict_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        )
    })
}

/// A route that takes no request body (`retry`, `cancel`, `retry-dead`,
/// `restart`): one sent is refused, naming what was sent, before the route acts.
/// A `{"reason": …}` sent to `cancel` was dropped without a word, and the job
/// cancelled as if it had not been sent (found by a probe).
pub(crate) struct NoBody;

/// How much of a refused body its refusal quotes.
const QUOTED: usize = 80;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        let Some(ReadBody(bytes)) = parts.extensions.remove::<ReadBody>() else {
            return Ok(NoBody);
        };
        // Whitespace alone is no body, as a call's parameters read it.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(NoBody);
        }
        let text = String::from_utf8_lossy(&bytes);
        // Quoted as sent (JSON's quotes unescaped), control characters escaped.
        let mut quoted = String::new();
        for c in text.chars().take(QUOTED) {
            if c.is_control() {
                quoted.extend(c.escape_default());
            } else {
                quoted.push(c);
            }
        }
        let more = if text.chars().nth(QUOTED).is_some() {
            "…"
        } else {
            ""
        };
        Err(ApiError::bad_request(
            "invalid_parameters",
            format!(
                "`{} {}` takes no request body; {} byte(s) were sent: `{}{more}`; send the request without one",
                parts.method,
                parts.uri.path(),
                bytes.len(),
                quoted
            ),
        ))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the request body is larger than the configured limit of {limit} bytes (`koan.http.body_limit_bytes`)"
        ),
    )
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether the request carries a body: a non-zero `Content-Length`, any
/// `Transfer-Encoding`, or a body not known to be empty (HTTP/2 declares neither,
/// when the router is mounted in a user's own server).
fn has_body(seen: &Seen<'_>, req: &Request) -> bool {
    use axum::body::HttpBody as _;
    if seen.transfer_encoding {
        return true;
    }
    match seen.content_length {
        Some(v) => v.as_bytes() != b"0",
        None => !req.body().is_end_stream(),
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    // The usual spelling, without the parse below (B7's profile: ≈ 550 instructions).
    if ct.as_bytes() == b"application/json" {
        return true;
    }
    let Ok(ct) = ct.to_str() else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim();
    let Some(sub) = essence
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .and_then(|_| essence.get(12..))
    else {
        return false;
    };
    sub.eq_ignore_ascii_case("json")
        || sub
            .len()
            .checked_sub(5)
            .and_then(|i| sub.get(i..))
            .is_some_and(|s| s.eq_ignore_ascii_case("+json"))
}
