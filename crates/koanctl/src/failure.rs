//! Why a command failed: its exit code, and its words as a terminal shows them.

use std::fmt;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::output::printable;

/// Why a command failed, which also decides the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad local input: an invalid `--params`, an unreadable file, a malformed URL.
    Input(String),
    /// The server answered with an error status.
    Api {
        /// The error kind from the body (`unknown_service`, …).
        kind: String,
        /// The message from the body.
        message: String,
        /// The error document `--json` prints on stdout: the server's when it names
        /// an `error` kind, else `{"error": kind, "message": message}`; `None` when
        /// the answer is printed already (an unhealthy host's health document).
        document: Option<Value>,
        /// Whether the body was not a koan error document (an object with `error`
        /// and `message`): another server's page, a proxy's, or nothing.
        foreign: bool,
        /// The correlation id of the call the error answers (the body's
        /// `correlation_id`, else `X-Correlation-Id`): shown under the message, which
        /// may tell the operator to look for it.
        correlation: Option<String>,
    },
    /// The server could not be reached, or the connection broke.
    Connect {
        /// The URL that was tried.
        url: String,
        /// The underlying cause.
        detail: String,
    },
    /// The server was reached but let koanctl down: no answer within the deadline, an
    /// event stream gone quiet or closed. The whole message.
    Stalled(String),
    /// Anything else: an answer that is not what the API promises.
    Other(String),
    /// The answer was printed, but the host said it is not current (a cluster's
    /// job listing or counts from a view it could not bring up to date): a
    /// warning, and exit 5, so that a script does not take it for the truth.
    Stale(String),
}

impl Failure {
    /// The process exit code of this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Input(_) => 2,
            Failure::Api { .. } => 3,
            Failure::Connect { .. } | Failure::Stalled(_) => 4,
            Failure::Stale(_) => 5,
            Failure::Other(_) => 1,
        }
    }
}

/// The most characters of a server's error message printed as text.
pub(crate) const MAX_MESSAGE: usize = 2_000;

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Input(m) | Failure::Stalled(m) | Failure::Other(m) | Failure::Stale(m) => {
                f.write_str(m)
            }
            // The server's words, kept to one line of plain text and cut at
            // `MAX_MESSAGE` characters (`--json` has them whole): a 15 MB message
            // went to the terminal whole (found by a probe).
            Failure::Api {
                kind,
                message,
                foreign,
                correlation,
                ..
            } => {
                let shown = printable(message);
                let n = shown.chars().count();
                if n <= MAX_MESSAGE {
                    write!(f, "{}: {shown}", printable(kind))?;
                } else {
                    let cut: String = shown.chars().take(MAX_MESSAGE).collect();
                    write!(
                        f,
                        "{}: {cut}… ({n} characters; --json has them all)",
                        printable(kind)
                    )?;
                }
                // A timed-out call's message says "look for its correlation id (in
                // this answer)": it was in the answer, never shown (a probe).
                if let Some(id) = correlation {
                    write!(f, "\ncorrelation id: {}", printable(id))?;
                }
                if *foreign {
                    f.write_str(FOREIGN_HINT)?;
                }
                Ok(())
            }
            Failure::Connect { url, detail } => write!(
                f,
                "cannot reach the koan control plane at {url}: {detail}\n\
                 hint: is the host running? point koanctl at it with --url or KOAN_URL"
            ),
        }
    }
}

impl std::error::Error for Failure {}

/// Said under an error whose body is not a koan error document: an HTML 404 of
/// another server was shown as `http_404: <!DOCTYPE…`, exit 3, with no word of
/// `--url`, which an answer without the promised fields gets (found by a probe).
const FOREIGN_HINT: &str = "\nhint: that is not a koan error (a koan host answers an \
    error with JSON `{\"error\", \"message\"}`): does --url (or KOAN_URL) point at a koan \
    host, or did a proxy in front of it answer?";

/// The error body standing for an error answer that is not JSON: its text, cut, as a
/// JSON string (which [`api_error`] reads as no koan error document).
pub(crate) fn text_error(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    Value::String(text.trim().chars().take(500).collect())
}

/// The body of a success, or the [`Failure`] an error status stands for.
pub(crate) fn check(status: StatusCode, body: Value) -> Result<Value, Failure> {
    if status.is_success() {
        Ok(body)
    } else {
        Err(api_error(status, &body))
    }
}

/// The [`Failure::Api`] of an error answer `{ "error": kind, "message": … }`; of
/// another body, `http_<status>` and its text ([`text_error`]) or the status's
/// reason, with a hint that `--url` may not point at a koan host.
pub(crate) fn api_error(status: StatusCode, body: &Value) -> Failure {
    let foreign = !(body.get("error").is_some_and(Value::is_string)
        && body.get("message").is_some_and(Value::is_string));
    let kind = body
        .get("error")
        .and_then(Value::as_str)
        .map_or_else(|| format!("http_{}", status.as_u16()), str::to_owned);
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| body.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let reason = status.canonical_reason().unwrap_or("error");
            format!("the server answered {} {reason}", status.as_u16())
        });
    let document = if body.get("error").is_some_and(Value::is_string) {
        body.clone()
    } else {
        json!({ "error": kind, "message": message })
    };
    let correlation = body
        .get("correlation_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Failure::Api {
        kind,
        message,
        document: Some(document),
        foreign,
        correlation,
    }
}

impl Failure {
    /// This failure, an API error without a correlation id of its body's, given
    /// `id` (the answer's `X-Correlation-Id`, or the one sent).
    pub(crate) fn with_correlation(self, id: Option<&str>) -> Failure {
        match self {
            Failure::Api {
                kind,
                message,
                document,
                foreign,
                correlation: None,
            } => Failure::Api {
                kind,
                message,
                document,
                foreign,
                correlation: id.map(str::to_owned),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn error_bodies_become_api_failures() {
        let f = api_error(
            StatusCode::NOT_FOUND,
            &json!({ "error": "unknown_service", "message": "no service `x`" }),
        );
        assert_eq!(f.to_string(), "unknown_service: no service `x`");
        assert_eq!(f.exit_code(), 3);
        // A body that is not a koan error is named, and `--url` questioned.
        let f = api_error(StatusCode::BAD_GATEWAY, &json!(null));
        assert_eq!(
            f.to_string(),
            format!("http_502: the server answered 502 Bad Gateway{FOREIGN_HINT}")
        );
        let f = api_error(StatusCode::NOT_FOUND, &text_error(b" <!DOCTYPE html>\n"));
        assert_eq!(
            f.to_string(),
            format!("http_404: <!DOCTYPE html>{FOREIGN_HINT}")
        );
        let Failure::Api { document, .. } = f else {
            panic!("an API failure")
        };
        assert_eq!(
            document,
            Some(json!({ "error": "http_404", "message": "<!DOCTYPE html>" }))
        );
        // A call's correlation id, in the answer, is shown under the message.
        let f = api_error(
            StatusCode::GATEWAY_TIMEOUT,
            &json!({ "error": "timeout", "message": "look for it", "correlation_id": "c\u{1b}7" }),
        );
        assert_eq!(
            f.to_string(),
            "timeout: look for it\ncorrelation id: c\\u{1b}7"
        );
        let f = api_error(
            StatusCode::GATEWAY_TIMEOUT,
            &json!({ "error": "timeout", "message": "m" }),
        );
        assert_eq!(
            f.with_correlation(Some("h-1")).to_string(),
            "timeout: m\ncorrelation id: h-1"
        );
        // A long message is cut when shown as text; the document keeps it whole.
        let long = "m".repeat(1_000_000);
        let f = api_error(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "invalid_parameters", "message": long }),
        );
        let text = f.to_string();
        assert!(text.len() < MAX_MESSAGE + 200, "{}", text.len());
        assert!(text.ends_with("… (1000000 characters; --json has them all)"));
        let Failure::Api { document, .. } = f else {
            panic!("an API failure")
        };
        assert_eq!(
            document.map(|d| d["message"].as_str().map(str::len)),
            Some(Some(1_000_000))
        );
    }
}
