//! Every error answer is JSON: `{ "error": kind, "message": … }`, with the status the
//! kind calls for.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use koan::error::ErrorKind;
use serde::Serialize;

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: String,
    message: String,
    /// The call's correlation id, when the error answers a call: its events and
    /// log lines carry it (a timeout's message says to look for them).
    correlation_id: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
}

impl ApiError {
    /// An error with an explicit status and kind.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: kind.to_owned(),
            message: message.into(),
            correlation_id: None,
        }
    }

    /// The same error, answering the call `id`: in the body's `correlation_id` and
    /// the `X-Correlation-Id` header, as a success names it.
    pub(crate) fn for_call(mut self, id: &str) -> Self {
        self.correlation_id = Some(id.to_owned());
        self
    }

    /// The HTTP status of a runtime error kind.
    pub fn status_of(kind: ErrorKind) -> StatusCode {
        match kind {
            ErrorKind::InvalidParameters | ErrorKind::Config => StatusCode::BAD_REQUEST,
            ErrorKind::UnknownService
            | ErrorKind::UnknownAction
            | ErrorKind::UnknownEvent
            | ErrorKind::UnknownActionId
            | ErrorKind::UnknownJob => StatusCode::NOT_FOUND,
            ErrorKind::Disabled | ErrorKind::JobState | ErrorKind::ServiceState => {
                StatusCode::CONFLICT
            }
            ErrorKind::Busy => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::ShuttingDown
            | ErrorKind::ServiceUnavailable
            | ErrorKind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn bad_request(kind: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, kind, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// The error kind, as in the body's `error`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The message, as in the body's `message`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The answer with `Connection: close`: for a refusal sent before the request's
    /// body was read, so the server does not wait for the rest of that body.
    pub(crate) fn closing(self) -> Response {
        let mut r = self.into_response();
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        r
    }
}

impl From<koan::Error> for ApiError {
    fn from(e: koan::Error) -> Self {
        ApiError {
            status: ApiError::status_of(e.kind()),
            kind: e.kind().as_str().to_owned(),
            message: e.to_string(),
            correlation_id: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.kind,
            message: &self.message,
            correlation_id: self.correlation_id.as_deref(),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        let headers = r.headers_mut();
        if let Some(v) = self
            .correlation_id
            .as_deref()
            .and_then(|id| axum::http::HeaderValue::from_str(id).ok())
        {
            headers.insert(axum::http::HeaderName::from_static("x-correlation-id"), v);
        }
        // RFC 9110: a 401 names the scheme it wants (there was none; found by a
        // probe).
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"koan\""),
            );
        }
        // Nothing ran: the caller may try again, and is told when (`busy` said
        // "retry later" without a `Retry-After`; found by a probe).
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    use super::ApiError;

    #[test]
    fn a_busy_answer_says_when_to_retry_and_names_its_call() {
        let busy = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", "full").for_call("c-1");
        let r = busy.into_response();
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(
            r.headers().get("x-correlation-id").map(|v| v.as_bytes()),
            Some(&b"c-1"[..])
        );
        let other = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "x");
        let r = other.into_response();
        assert!(
            r.headers().get("retry-after").is_none(),
            "an outcome may be unknown"
        );
        assert!(r.headers().get("x-correlation-id").is_none());
    }
}
