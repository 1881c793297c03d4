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
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with an explicit status and kind.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: kind.to_owned(),
            message: message.into(),
        }
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
            ErrorKind::Disabled | ErrorKind::JobState => StatusCode::CONFLICT,
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
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.kind,
            message: &self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}
