//! What travels: headers of calls, the reply body, durable jobs and events — the
//! contract written down in `docs/wire.md` (Koan-Wire version 1).

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use koan::{Error, error::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod job;
mod legacy;
#[cfg(test)]
mod schema;

pub(crate) use job::{Job, Retry, Unreadable};

/// The version of the wire protocol this crate speaks.
pub(crate) const VERSION: &str = "1";

pub(crate) const H_WIRE: &str = "Koan-Wire";
pub(crate) const H_ACTION: &str = "Koan-Action";
pub(crate) const H_SERVICE: &str = "Koan-Service";
pub(crate) const H_PRIORITY: &str = "Koan-Priority";
pub(crate) const H_TIMEOUT_MS: &str = "Koan-Timeout-Ms";
pub(crate) const H_DEADLINE: &str = "Koan-Deadline-Unix-Ms";
pub(crate) const H_CORRELATION: &str = "Koan-Correlation-Id";
pub(crate) const H_ORIGIN: &str = "Koan-Origin";
pub(crate) const H_ACTION_ID: &str = "Koan-Action-Id";
pub(crate) const H_RUNS_BEFORE: &str = "Koan-Runs-Before";
pub(crate) const H_RUN_AT: &str = "Koan-Run-At-Unix-Ms";
pub(crate) const H_IDEMPOTENCY_KEY: &str = "Koan-Idempotency-Key";
pub(crate) const H_THEN: &str = "Koan-Then";
pub(crate) const H_ERROR: &str = "Koan-Error";
pub(crate) const H_ERROR_MESSAGE: &str = "Koan-Error-Message";
pub(crate) const H_MSG_ID: &str = "Nats-Msg-Id";

/// The error code of a request in a wire version this instance does not speak.
pub(crate) const UNSUPPORTED_VERSION: &str = "unsupported_wire_version";

pub(crate) fn header(h: Option<&HeaderMap>, name: &str) -> Option<String> {
    h?.get(name).map(|v| v.as_str().to_owned())
}

/// `s` as a header value: NATS headers cannot carry line breaks (the client panics
/// on them), so control characters become spaces.
pub(crate) fn header_value(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The refusal of a request whose `Koan-Wire` header names a version other than
/// this one; `None` when the header is absent (version 1) or says `1`.
pub(crate) fn refuse_version(h: Option<&HeaderMap>) -> Option<Reply> {
    let v = header(h, H_WIRE)?;
    if v.trim() == VERSION {
        return None;
    }
    Some(Reply::refused(
        UNSUPPORTED_VERSION,
        format!(
            "`{H_WIRE}: {v}` is not spoken here: this instance speaks Koan-Wire version {VERSION} (see docs/wire.md)"
        ),
    ))
}

/// The headers of every reply: the version, and the correlation id echoed.
pub(crate) fn reply_headers(correlation: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(H_WIRE, VERSION);
    if let Some(c) = correlation {
        h.insert(H_CORRELATION, header_value(c));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_never_hold_line_breaks() {
        assert_eq!(header_value("plain-id"), "plain-id");
        assert_eq!(header_value("a\r\nb"), "a  b");
    }

    #[test]
    fn only_version_1_is_spoken() {
        assert!(refuse_version(None).is_none());
        let mut h = HeaderMap::new();
        h.insert(H_WIRE, "1");
        assert!(refuse_version(Some(&h)).is_none());
        for other in ["2", "0", "one"] {
            h.insert(H_WIRE, other);
            let refusal = refuse_version(Some(&h)).expect("refused");
            assert_eq!(refusal.error.as_deref(), Some(UNSUPPORTED_VERSION));
            assert!(refusal.message.as_deref().unwrap_or("").contains(other));
        }
    }
}

/// The reply to a call or a query, and the body of a stored outcome: a result or an
/// error. Exactly one of `ok` and `error` is set (`ok` may be `null`).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct Reply {
    /// The result (JSON), when the request succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ok: Option<Value>,
    /// The error code, when it failed: a koan error kind (`invalid_parameters`,
    /// `unknown_action`, `handler_error`, …) or `unsupported_wire_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// What went wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}

impl Reply {
    pub(crate) fn of(result: Result<Value, Error>) -> Reply {
        match result {
            Ok(v) => Reply {
                ok: Some(v),
                error: None,
                message: None,
            },
            Err(e) => Reply {
                ok: None,
                error: Some(e.kind().as_str().to_owned()),
                message: Some(e.to_string()),
            },
        }
    }

    /// A refusal with a wire-level error code.
    pub(crate) fn refused(code: &str, message: String) -> Reply {
        Reply {
            ok: None,
            error: Some(code.to_owned()),
            message: Some(message),
        }
    }

    /// The error code and message of a failure (empty for a success), as dead
    /// letters carry them.
    pub(crate) fn reason(&self) -> (String, String) {
        (
            self.error.clone().unwrap_or_default(),
            self.message.clone().unwrap_or_default(),
        )
    }

    pub(crate) fn into_result(self) -> Result<Value, Error> {
        match self.error {
            None => Ok(self.ok.unwrap_or(Value::Null)),
            Some(kind) => Err(Error::new(
                ErrorKind::parse(&kind).unwrap_or(ErrorKind::Handler),
                self.message.unwrap_or(kind),
            )),
        }
    }

    pub(crate) fn bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }
}

/// An event on the wire, published on `koan.evt.<service>.<event>`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct WireEvent {
    /// The service that emitted it.
    pub(crate) service: String,
    /// The event's name as declared (`TranslationCompleted`).
    pub(crate) event: String,
    /// The correlation id of the action that emitted it, if any.
    pub(crate) correlation_id: Option<String>,
    /// When it was emitted (RFC 3339).
    #[cfg_attr(test, schemars(with = "String", extend("format" = "date-time")))]
    pub(crate) time: DateTime<Utc>,
    /// Its number among the emitting host's events.
    pub(crate) seq: u64,
    /// The event's payload.
    pub(crate) payload: Value,
}

impl WireEvent {
    pub(crate) fn of(env: &koan::event::EventEnvelope) -> WireEvent {
        WireEvent {
            service: env.service().to_owned(),
            event: env.name().to_owned(),
            correlation_id: env.correlation_id().map(str::to_owned),
            time: env.time(),
            seq: env.seq(),
            payload: env.payload_json(),
        }
    }

    pub(crate) fn into_envelope(self) -> koan::event::EventEnvelope {
        koan::event::EventEnvelope::remote(
            &self.service,
            &self.event,
            self.correlation_id.as_deref(),
            self.time,
            self.seq,
            self.payload,
        )
    }
}

/// The outcome of a durable job, stored in the KV bucket `koan_outcomes` under the
/// job's id.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct Outcome {
    /// The job's id (its `Nats-Msg-Id`).
    pub(crate) id: String,
    /// The host that ran it.
    pub(crate) host: String,
    /// Deliveries of the job, this one included.
    pub(crate) attempts: i64,
    /// Its result or error.
    #[serde(flatten)]
    pub(crate) reply: Reply,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
