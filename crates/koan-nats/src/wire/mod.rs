//! What travels: headers of calls, the reply body, durable jobs and events — the
//! contract written down in `docs/wire.md` (Koan-Wire version 1).

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use chrono::{DateTime, Utc};
use koan::{Error, error::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod job;
pub(crate) mod lead;
mod legacy;
#[cfg(test)]
mod schema;

pub(crate) use job::{Job, Retry, Unreadable};

/// The version of the wire protocol this crate speaks.
pub(crate) const VERSION: &str = "1";

// Header names as `HeaderName`s made at compile time: a `&str` name is parsed and
// copied into a new buffer on every insert and look-up (B8's profile: five headers a
// call, ≈ 1,700 instructions each).
pub(crate) const H_WIRE: HeaderName = HeaderName::from_static("Koan-Wire");
pub(crate) const H_ACTION: HeaderName = HeaderName::from_static("Koan-Action");
pub(crate) const H_SERVICE: HeaderName = HeaderName::from_static("Koan-Service");
pub(crate) const H_PRIORITY: HeaderName = HeaderName::from_static("Koan-Priority");
pub(crate) const H_TIMEOUT_MS: HeaderName = HeaderName::from_static("Koan-Timeout-Ms");
pub(crate) const H_DEADLINE: HeaderName = HeaderName::from_static("Koan-Deadline-Unix-Ms");
pub(crate) const H_CORRELATION: HeaderName = HeaderName::from_static("Koan-Correlation-Id");
pub(crate) const H_ORIGIN: HeaderName = HeaderName::from_static("Koan-Origin");
pub(crate) const H_ACTION_ID: HeaderName = HeaderName::from_static("Koan-Action-Id");
pub(crate) const H_RUNS_BEFORE: HeaderName = HeaderName::from_static("Koan-Runs-Before");
pub(crate) const H_RUN_AT: HeaderName = HeaderName::from_static("Koan-Run-At-Unix-Ms");
pub(crate) const H_IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("Koan-Idempotency-Key");
pub(crate) const H_THEN: HeaderName = HeaderName::from_static("Koan-Then");
pub(crate) const H_ERROR: HeaderName = HeaderName::from_static("Koan-Error");
pub(crate) const H_ERROR_MESSAGE: HeaderName = HeaderName::from_static("Koan-Error-Message");
pub(crate) const H_MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");

/// The error code of a request in a wire version this instance does not speak.
pub(crate) const UNSUPPORTED_VERSION: &str = "unsupported_wire_version";

pub(crate) fn header(h: Option<&HeaderMap>, name: HeaderName) -> Option<String> {
    header_str(h, name).map(str::to_owned)
}

/// A header's value, borrowed.
pub(crate) fn header_str(h: Option<&HeaderMap>, name: HeaderName) -> Option<&str> {
    h?.get(name).map(|v| v.as_str())
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
    refuse(header_str(h, H_WIRE))
}

/// [`refuse_version`] of a `Koan-Wire` header already found.
pub(crate) fn refuse(wire: Option<&str>) -> Option<Reply> {
    let v = wire?;
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

/// [`reply_headers`] with the correlation id given owned: moved into the map as it
/// is when it needs no change (no copy per call).
pub(crate) fn reply_headers_owned(correlation: String) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(H_WIRE, VERSION);
    let value = if correlation.chars().any(char::is_control) {
        header_value(&correlation)
    } else {
        correlation
    };
    h.insert(H_CORRELATION, value);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_known_not_to_have_started_says_so_across_the_wire() {
        let unstarted = Error::new(ErrorKind::Timeout, "queued too long").never_started();
        for (sent, said) in [
            (unstarted, true),
            (Error::new(ErrorKind::Timeout, "ran too long"), false),
        ] {
            let bytes = Reply::of(Err(sent)).bytes();
            assert_eq!(
                std::str::from_utf8(&bytes).is_ok_and(|b| b.contains("not_started")),
                said
            );
            let back = Reply::read(&bytes).expect("a reply").expect_err("an error");
            assert_eq!(back.not_started(), said, "{back}");
        }
    }

    #[test]
    fn header_values_never_hold_line_breaks() {
        assert_eq!(header_value("plain-id"), "plain-id");
        assert_eq!(header_value("a\r\nb"), "a  b");
    }

    #[test]
    fn reply_headers_echo_the_correlation_id_either_way() {
        for id in ["plain-id", "a\tb"] {
            let (borrowed, owned) = (reply_headers(Some(id)), reply_headers_owned(id.to_owned()));
            assert_eq!(borrowed, owned);
            assert_eq!(header_str(Some(&owned), H_WIRE), Some(VERSION));
        }
        assert_eq!(
            header_str(Some(&reply_headers_owned("a\tb".to_owned())), H_CORRELATION),
            Some("a b")
        );
    }

    /// A success is written as serde writes it, and read as serde reads it; so is
    /// every other body, through `Reply`.
    #[test]
    fn a_reply_is_written_and_read_as_serde_would() {
        use serde_json::json;
        let by_serde = |b: &[u8]| serde_json::from_slice::<Reply>(b).map(Reply::into_result);
        for v in [
            json!(6),
            json!(null),
            json!("a \"quoted\" }"),
            json!({"ok": 1, "error": "x"}),
            json!([1, {"b": null}]),
        ] {
            let reply = Reply::of(Ok(v.clone()));
            let bytes = reply.bytes();
            assert_eq!(
                bytes,
                serde_json::to_vec(&reply).expect("serializes"),
                "{v}"
            );
            assert_eq!(Reply::read(&bytes).expect("reads").expect("a success"), v);
        }
        let failure = Reply::of(Err(Error::new(ErrorKind::Handler, "no")));
        assert_eq!(
            failure.bytes(),
            serde_json::to_vec(&failure).expect("serializes")
        );
        let bodies: [&[u8]; 9] = [
            br#"{"ok":1,"error":"handler_error","message":"m"}"#,
            br#"{"error":"unknown_action","message":"m"}"#,
            br#"{ "ok" : 1 }"#,
            br#"{"ok":"}"}"#,
            br#"{"ok":1}}"#,
            br#"{"ok":}"#,
            br#"{"ok":1,}"#,
            br#"{"ok""#,
            b"",
        ];
        for body in bodies {
            let text = String::from_utf8_lossy(body);
            match (Reply::read(body), by_serde(body)) {
                (Ok(Ok(a)), Ok(Ok(b))) => assert_eq!(a, b, "{text}"),
                (Ok(Err(a)), Ok(Err(b))) => {
                    assert_eq!((a.kind(), a.message()), (b.kind(), b.message()), "{text}");
                }
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{text}: {a:?} here, {b:?} by serde"),
            }
        }
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Set (`true`) on a `timeout` when the action is known never to have
    /// started, and never to start: it timed out while it waited in its service's
    /// mailbox, so calling again is safe. Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) not_started: bool,
}

impl Reply {
    pub(crate) fn of(result: Result<Value, Error>) -> Reply {
        match result {
            Ok(v) => Reply {
                ok: Some(v),
                error: None,
                message: None,
                not_started: false,
            },
            Err(e) => Reply {
                ok: None,
                error: Some(e.kind().as_str().to_owned()),
                message: Some(e.to_string()),
                not_started: e.not_started(),
            },
        }
    }

    /// A refusal with a wire-level error code.
    pub(crate) fn refused(code: &str, message: String) -> Reply {
        Reply {
            ok: None,
            error: Some(code.to_owned()),
            message: Some(message),
            not_started: false,
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
            Some(kind) => {
                let e = Error::new(
                    ErrorKind::parse(&kind).unwrap_or(ErrorKind::Handler),
                    self.message.unwrap_or(kind),
                );
                Err(if self.not_started && e.kind() == ErrorKind::Timeout {
                    e.never_started()
                } else {
                    e
                })
            }
        }
    }

    pub(crate) fn bytes(&self) -> bytes::Bytes {
        // Room for a short reply at once (no regrowth for `{"ok":…}`).
        let mut out = Vec::with_capacity(64);
        let written = match self {
            // A success, the usual reply, written around its value: the bytes serde
            // writes for it, without its map (see `read`).
            Reply {
                ok: Some(v),
                error: None,
                message: None,
                not_started: false,
            } => {
                out.extend_from_slice(OK_START);
                let w = serde_json::to_writer(&mut out, v);
                out.push(b'}');
                w
            }
            other => serde_json::to_writer(&mut out, other),
        };
        match written {
            Ok(()) => out.into(),
            Err(_) => bytes::Bytes::new(),
        }
    }

    /// The result a reply's `body` carries. A success as this crate writes it
    /// (`{"ok":…}`, nothing else) is read around its value, without the envelope's
    /// map (B8's round trip, with the write in `bytes`: about 700 instructions
    /// fewer, by callgrind); any other body through `Reply`, whatever its spacing or
    /// fields.
    pub(crate) fn read(body: &[u8]) -> Result<Result<Value, Error>, serde_json::Error> {
        // `{"ok":` + one whole JSON value + `}` is exactly the object whose one
        // field is `ok`: a value followed by more (`1,"error":"x"`) does not parse.
        if let Some(inner) = body
            .strip_prefix(OK_START)
            .and_then(|b| b.strip_suffix(b"}"))
            && let Ok(v) = serde_json::from_slice::<Value>(inner)
        {
            return Ok(Ok(v));
        }
        serde_json::from_slice::<Reply>(body).map(Reply::into_result)
    }
}

/// How a success's reply starts, as serde writes it.
const OK_START: &[u8] = b"{\"ok\":";

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
