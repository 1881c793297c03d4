//! What travels: headers of calls, the reply body, and events.

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use koan::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) const H_ACTION: &str = "Koan-Action";
pub(crate) const H_SERVICE: &str = "Koan-Service";
pub(crate) const H_PRIORITY: &str = "Koan-Priority";
pub(crate) const H_TIMEOUT_MS: &str = "Koan-Timeout-Ms";
pub(crate) const H_CORRELATION: &str = "Koan-Correlation-Id";
pub(crate) const H_ORIGIN: &str = "Koan-Origin";
pub(crate) const H_ACTION_ID: &str = "Koan-Action-Id";
pub(crate) const H_MSG_ID: &str = "Nats-Msg-Id";

pub(crate) fn header(h: Option<&HeaderMap>, name: &str) -> Option<String> {
    h?.get(name).map(|v| v.as_str().to_owned())
}

/// The reply to a call: a result or an error.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ok: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
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

/// An event on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireEvent {
    pub(crate) service: String,
    pub(crate) event: String,
    pub(crate) correlation_id: Option<String>,
    pub(crate) time: DateTime<Utc>,
    pub(crate) seq: u64,
    pub(crate) payload: Value,
}

impl WireEvent {
    pub(crate) fn of(env: &koan::EventEnvelope) -> WireEvent {
        WireEvent {
            service: env.service().to_owned(),
            event: env.name().to_owned(),
            correlation_id: env.correlation_id().map(str::to_owned),
            time: env.time(),
            seq: env.seq(),
            payload: env.payload_json(),
        }
    }

    pub(crate) fn into_envelope(self) -> koan::EventEnvelope {
        koan::EventEnvelope::remote(
            &self.service,
            &self.event,
            self.correlation_id.as_deref(),
            self.time,
            self.seq,
            self.payload,
        )
    }
}

/// A durable job on the wire (the body of a `KOAN_WORK` message).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) service: String,
    pub(crate) action: String,
    pub(crate) params: Value,
    pub(crate) priority: i32,
    pub(crate) timeout_ms: Option<u64>,
    /// When the job's time is up (Unix milliseconds): time waiting in the stream
    /// counts, as it does in a local mailbox.
    #[serde(default)]
    pub(crate) deadline_unix_ms: Option<u64>,
    pub(crate) correlation_id: String,
}

/// A stored outcome of a durable job.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) attempts: i64,
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
